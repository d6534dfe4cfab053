"""guie-compat: load a submission file in other PyTorch releases, as the host would, and compare outputs.

Each requested torch release gets its own virtual environment (guie.export.torch_envs). The file is
loaded there with plain ``torch.jit.load`` in a fresh isolated interpreter (guie.export.fresh's
runner, which imports nothing but torch), fed the host-style images (guie.export.host_images:
uint8 ``(1, 3, H, W)`` of several sizes one at a time, and one batch), as the GUIE host fed them,
and its outputs are compared with the outputs of the torch running guie.
"""
from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from guie.artifacts import (
    SUBMISSION,
    TAKES_TORCHSCRIPT,
    VERIFY_REPORT,
    extract_saved_model,
    friendly_load_error,
    identify,
    load_torchscript,
    read_report,
)
from guie.errors import GuieError
from guie.export.fresh import FreshResult, TensorInput, run_fresh
from guie.export.torch_envs import ensure_env, parse_release, resolve_versions
from guie.fileio import file_sha256, write_json
from guie.paths import cache_root

MATCH_LIMIT = 1e-4


@dataclass
class CompatRow:
    """One line of the matrix: did the file load and run in this torch, and how close were its outputs."""

    torch: str
    python: str
    device: str
    loads: bool
    max_abs_diff: float | None = None
    seconds: float | None = None
    error: str | None = None

    @property
    def passed(self) -> bool:
        return self.loads and self.max_abs_diff is not None and self.max_abs_diff <= MATCH_LIMIT

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"passed": self.passed}


def run_error(result: FreshResult) -> str | None:
    """Why a release's run does not count as loading and running the file, or None: the load error, a
    crashed interpreter (with the usual cause), the first input that raised or gave no float32 tensor."""
    if result.error is not None:
        if result.error.stage == "died":
            return (f"{result.error}; a file plainly scripted by a newer torch does this: export it again with "
                    "guie-export")
        return str(result.error)
    for item in result.inputs:
        if item.error is not None:
            return str(item.error)
        for run in item.runs:
            if not run.is_tensor:
                return f"RuntimeError: output {run.type}, not a tensor"
            if run.dtype != "torch.float32":
                return f"RuntimeError: output dtype {run.dtype}, expected float32"
    return None


def compare(result: FreshResult, reference: list[Any]) -> float:
    """Largest absolute difference between the runner's outputs and the reference tensors (inf when a
    shape differs)."""
    worst = 0.0
    for got, ref in zip(result.inputs, reference, strict=True):
        y = got.runs[0].values
        if y is None or tuple(y.shape) != tuple(ref.shape):
            return float("inf")
        worst = max(worst, float(np.abs(y - ref.detach().cpu().numpy()).max()))
    return worst


def check_file(file: str | Path, versions: list[str], python: str | None = None, device: str = "cpu",
               log: Callable[[str], None] = print) -> list[CompatRow]:
    """guie-compat: the matrix for a saved_model.pt, a submission.zip or an export folder, printed as a
    table through ``log`` and recorded (``record_results``). Raises GuieError for a bad FILE or version."""
    import torch

    versions = resolve_versions(list(versions))  # a bad version fails before any environment is built
    if device == "cuda" and not torch.cuda.is_available():
        raise GuieError(f"--device cuda needs a CUDA device, and this torch {torch.__version__} sees none; run "
                        "guie-compat on a machine with a GPU, or leave --device at cpu")
    artifact = identify(file, TAKES_TORCHSCRIPT)
    path = artifact.model_file
    with tempfile.TemporaryDirectory(prefix="guie-compat-") as tmp:
        model_path = extract_saved_model(path, Path(tmp)) if artifact.model_kind == SUBMISSION else path
        log(f"checking {path} in torch {', '.join(versions)} ({device}); reference: this torch {torch.__version__}")
        log(TABLE_HEADER)
        rows = run_matrix(model_path, versions, python, device, log, shown_as=path)
        record_results(model_path, rows, torch.__version__, beside=path.parent)
    failed = [row.torch for row in rows if not row.passed]
    log(f"{len(rows) - len(failed)} of {len(rows)} releases load the file and match within {MATCH_LIMIT:.0e}"
        + (f"; failed: {', '.join(failed)}" if failed else ""))
    return rows


def run_matrix(model_path: Path, versions: list[str], python: str | None = None, device: str = "cpu",
               log: Callable[[str], None] = print, shown_as: Path | None = None,
               profiling_executor: bool = True) -> list[CompatRow]:
    """Load the TorchScript file ``model_path`` in each torch release (building missing environments) and
    compare with this torch; one row per release, each also passed to ``log`` as it finishes.
    ``profiling_executor``: TorchScript's default executor there (True, as the host), or the simple one
    (guie.export.fresh.run_fresh).

    The reference outputs come from this process's torch on CPU. Raises GuieError when the file
    cannot be loaded or run here at all (nothing to compare against).
    """
    import torch

    from guie.export.host_images import host_cases

    cases = host_cases()
    fix = "nothing to compare against: export it again with guie-export"
    local = load_torchscript(model_path, shown_as=shown_as, fix=fix)
    try:
        with torch.no_grad():
            reference = [local(x).float() for x in cases]
    except Exception as exc:  # noqa: BLE001 - TorchScript raises RuntimeError subclasses for anything
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise GuieError(f"{shown_as or model_path} loads but does not run on the host's images in this torch "
                        f"{torch.__version__} ({first[:300]}); {fix}") from None
    plan = [TensorInput(f"host case {tuple(x.shape)}", x) for x in cases]
    rows = []
    for version in versions:
        env = ensure_env(version, python, log=log)
        result = run_fresh(env.python, model_path, plan, device, timeout=900, profiling_executor=profiling_executor)
        py = result.python or "?"
        problem = run_error(result)
        if problem is not None:
            rows.append(CompatRow(version, py, device, False, error=friendly_load_error(problem)))
        else:
            rows.append(CompatRow(version, py, device, True, compare(result, reference),
                                  round(result.load_seconds + result.run_seconds, 2)))
        log(format_row(rows[-1]))
    return rows


def format_row(row: CompatRow) -> str:
    """One table line: torch, python, device, loads, max abs diff, seconds or the error."""
    if not row.loads:
        return f"{row.torch:<10} {row.python:<8} {row.device:<6} {'no':<6} {'-':>12} {'-':>8}  {row.error}"
    verdict = "" if row.passed else f"  differs by more than {MATCH_LIMIT:.0e}"
    return (f"{row.torch:<10} {row.python:<8} {row.device:<6} {'yes':<6} {row.max_abs_diff:>12.2e} "
            f"{row.seconds:>8.2f}{verdict}")


TABLE_HEADER = f"{'torch':<10} {'python':<8} {'device':<6} {'loads':<6} {'max diff':>12} {'seconds':>8}"


def compat_record_path(sha256: str) -> Path:
    """Where the checks of one file (by content hash) are kept, so any copy of it can be looked up."""
    return cache_root() / "compat" / f"{sha256}.json"


def record_results(model: Path, rows: list[CompatRow], exporting_torch: str, beside: Path | None = None
                   ) -> dict[str, Any]:
    """Keep the matrix for this file: in the record keyed by its sha256 and, when a verify.json for the
    same file sits in ``beside`` (default: the file's folder), in that verify.json's ``compat`` list.
    Returns the merged record."""
    sha = file_sha256(model)
    record_file = compat_record_path(sha)
    record: dict[str, Any] = read_report(record_file) or {"sha256": sha, "reference_torch": exporting_torch,
                                                          "limit": MATCH_LIMIT, "checks": []}
    fresh = [r.to_dict() for r in rows]
    keys = {(r["torch"], r["device"]) for r in fresh}
    record["checks"] = [c for c in record.get("checks", []) if (c["torch"], c["device"]) not in keys] + fresh
    record["checks"].sort(key=lambda c: (parse_release(c["torch"]), c["device"]))
    write_json(record_file, record)
    verify = (beside or model.parent) / VERIFY_REPORT
    report = read_report(verify)
    if report.get("sha256") == sha:
        report["compat"] = record["checks"]
        write_json(verify, report)
    return record


def checked_versions(model: Path) -> list[dict[str, Any]]:
    """The compat checks known for this file: its verify.json's (when it describes this very file)
    and the record kept by hash. Each is a dict with torch, device, loads, passed, max_abs_diff."""
    sha = file_sha256(model)
    checks: dict[tuple[str, str], dict[str, Any]] = {}
    for source, key in ((compat_record_path(sha), "checks"), (model.parent / VERIFY_REPORT, "compat")):
        data = read_report(source)
        if data.get("sha256") != sha:
            continue
        for check in data.get(key) or []:
            checks[(check["torch"], check["device"])] = check
    return sorted(checks.values(), key=lambda c: (parse_release(c["torch"]), c["device"]))
