"""guie-export: run folder -> verified saved_model.pt, submission.zip and verify.json, all or nothing."""
from __future__ import annotations

import shutil
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from guie.artifacts import (
    EXPORT_STAGING_PREFIX,
    SAVED_MODEL,
    SAVED_PROGRAM,
    SUBMISSION_ZIP,
    VERIFY_REPORT,
)
from guie.errors import GuieError
from guie.fileio import (
    check_room,
    file_sha256,
    output_folder,
    staging_folder,
    write_json,
    writing_into,
)
from guie.fsnames import nearest_text_folder
from guie.model.backbone_names import describe_backbone
from guie.version import __version__

FORMATS = ("torchscript", "program")


EXPORT_FULL_FIX = "free space there or pass another --out, then rerun"


def export_bytes_needed(module: torch.nn.Module, fmt: str) -> int:
    """Bytes an export of ``module`` needs free: its weights once for the model file (twice for TorchScript:
    submission.zip stores a copy), plus 10% and 2 MiB for the graph, the zip records and verify.json."""
    storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes()
                for t in module.state_dict().values() if isinstance(t, torch.Tensor)}
    weights = sum(storages.values())
    return int(weights * (2 if fmt == "torchscript" else 1) * 1.1) + (2 << 20)


def write_submission_zip(model_file: Path, zip_path: Path) -> None:
    """submission.zip holding ``saved_model.pt`` at its root and nothing else (the host's layout)."""
    with zipfile.ZipFile(zip_path, "w", compression=zipfile.ZIP_STORED) as zf:
        zf.write(model_file, arcname=SAVED_MODEL)


def export_run(model: str | Path, out_dir: str | Path, *, fp16: bool = False, fmt: str = "torchscript",
               log: Callable[[str], None] = print, chunk: int = 32, measure_speed: bool = True,
               tta: str = "none", check_torch: str | list[str] = "none") -> dict[str, Any]:
    """Export a run folder (or model.pt) and verify it; returns the verify report.

    Writes ``out_dir/saved_model.pt`` (``saved_model.pt2``, a torch.export program, for
    ``fmt="program"``; the chunked batch loop is left out there), for TorchScript
    also ``out_dir/submission.zip``, and ``out_dir/verify.json``. Everything is built and checked
    in a temporary folder first: a failed check leaves no model file or zip behind.
    ``check_torch`` (TorchScript only): torch releases the file must also load and match in
    (guie-compat's matrix), ``auto`` for 1.11.0 (the GUIE host's) when its environment is already
    built, or ``none``. Raises GuieError for bad options, VerificationError when a check fails.
    """
    from guie.export.build import build_submission_module
    from guie.export.torch_envs import resolve_versions

    if fmt not in FORMATS:
        raise GuieError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if chunk < 1:
        raise GuieError("--chunk must be at least 1")
    if fp16 and fmt == "torchscript":
        raise GuieError("--fp16 makes a TorchScript file that fails on CPU in PyTorch before 2.x (no half-precision "
                        "matmul, convolution or layer norm there; the GUIE host ran 1.11); export in fp32 (same "
                        "embedding, twice the file size) or use --fp16 with --program")
    versions = resolve_versions(check_torch) if fmt == "torchscript" else []
    # torch.export needs one pass over the batch: a Python loop over chunks would fix the batch size.
    eager, embedder, info = build_submission_module(model, fp16, chunk if fmt == "torchscript" else 0, tta)
    out = Path(out_dir)  # made only once the model has loaded: a wrong RUN leaves no empty folder behind
    extras = (["TTA " + info["tta"]] if info["tta"] != "none" else []) + (["size features"] if info["size_features"] else [])
    log(f"exporting {describe_backbone(info['backbone'])} + projection to "
        f"{info['dim']}-D as {fmt}{' (fp16 weights)' if fp16 else ''}{' with ' + ' and '.join(extras) if extras else ''}")
    return write_verified(eager, embedder, info, out, fmt, str(Path(model).resolve()), log, measure_speed,
                          check_torch=versions)


def export_ensemble(runs: list[str | Path], out_dir: str | Path, *, dim: int = 64, images: int = 2000,
                    seed: int = 0, log: Callable[[str], None] = print, chunk: int = 32,
                    measure_speed: bool = True, check_torch: str | list[str] = "none") -> dict[str, Any]:
    """Export several runs as one module: concatenated embeddings, PCA to ``dim``; verified like a single run
    (``check_torch`` as for ``export_run``)."""
    from guie.export.ensemble import build_ensemble
    from guie.export.torch_envs import resolve_versions

    versions = resolve_versions(check_torch)
    out = Path(out_dir)
    eager, info = build_ensemble(runs, dim=dim, images=images, seed=seed, chunk=chunk, log=log)
    log(f"exporting an ensemble of {len(runs)} runs to {dim}-D as torchscript")
    return write_verified(eager, None, info, out, "torchscript", [str(Path(r).resolve()) for r in runs], log,
                          measure_speed, reference=lambda x: eager(x), check_torch=versions)


def write_verified(eager: torch.nn.Module, embedder: Any, info: dict[str, Any], out: Path, fmt: str, source: Any,
                   log: Callable[[str], None], measure_speed: bool,
                   reference: Callable[[torch.Tensor], torch.Tensor] | None = None,
                   check_torch: list[str] | None = None) -> dict[str, Any]:
    """Save ``eager`` as ``fmt`` in a temporary folder, verify it (also in the ``check_torch`` releases),
    then move the files into ``out``."""
    with output_folder(out):  # a failed check leaves no empty folder behind either
        return _write_verified(eager, embedder, info, out, fmt, source, log, measure_speed, reference, check_torch)


def _write_verified(eager: torch.nn.Module, embedder: Any, info: dict[str, Any], out: Path, fmt: str, source: Any,
                    log: Callable[[str], None], measure_speed: bool,
                    reference: Callable[[torch.Tensor], torch.Tensor] | None,
                    check_torch: list[str] | None) -> dict[str, Any]:
    from guie.export.build import export_program, script
    from guie.export.portable import host_portability, minimum_torch, save_portable
    from guie.export.verify import verify_export

    # torch writes and reloads the file by path, which its C++ takes only as text: a folder named with
    # undecodable bytes gets its temporary folder in the nearest parent whose name is text.
    # A folder left by an export that died (killed, or aborted by torch) is removed first.
    with staging_folder(nearest_text_folder(out), EXPORT_STAGING_PREFIX, log) as tmp, \
            writing_into(out, EXPORT_FULL_FIX):
        # torch.jit.save aborts the whole process when the disk fills mid-write: refuse before, in one line
        files = "the TorchScript file and submission.zip" if fmt == "torchscript" else "the program file"
        check_room(out, export_bytes_needed(eager, fmt), files, EXPORT_FULL_FIX)
        if fmt == "torchscript":
            name = SAVED_MODEL
            scripted = script(eager)
            version = save_portable(scripted, tmp / name)
            portability = host_portability(scripted, version)
            if not portability["loads_in_1_11"]:
                backbone = describe_backbone(info["backbone"]) if "backbone" in info else "this model"
                raise GuieError(f"{backbone} cannot be made portable to PyTorch 1.11 (the GUIE host): "
                                f"{portability['reason']}; its file needs {minimum_torch(scripted, version)}; "
                                "choose another --backbone")
        else:
            name = SAVED_PROGRAM
            export_program(eager, tmp / name)
        checks = verify_export(tmp / name, eager, embedder, info, log, measure_speed=measure_speed,
                               reference=reference)
        if fmt == "torchscript":
            checks["host_portability"] = portability
            checks["compat"] = check_releases(tmp / name, check_torch or [], log)
            write_submission_zip(tmp / name, tmp / SUBMISSION_ZIP)
        report = {
            "format": fmt, "file": name, "file_size_bytes": (tmp / name).stat().st_size,
            "sha256": file_sha256(tmp / name), "torch_version": torch.__version__, "guie_version": __version__,
            "source": source, "preprocess": info, **checks,
        }
        for produced in (name, SUBMISSION_ZIP):
            if (tmp / produced).exists():
                shutil.move(tmp / produced, out / produced)  # a rename, unless the parent is another file system
        write_json(out / VERIFY_REPORT, report)
    size_mb = report["file_size_bytes"] / 2**20
    speed = report.get("images_per_s")
    log(f"wrote {out / name} ({size_mb:.1f} MiB)" + (f", {out / SUBMISSION_ZIP}" if fmt == "torchscript" else "")
        + f", {out / VERIFY_REPORT}" + (f"; {speed['exported']:.0f} img/s exported vs {speed['eager']:.0f} eager "
                                       f"(batch {speed['batch']})" if speed else ""))
    return report


def check_releases(path: Path, versions: list[str], log: Callable[[str], None]) -> list[dict[str, Any]]:
    """guie-compat's matrix on the file about to be written; VerificationError naming the first release
    that fails. The rows are also kept in the record guie-package reads (by the file's sha256)."""
    from guie.export.compat import TABLE_HEADER, record_results, run_matrix
    from guie.export.verify import VerificationError

    if not versions:
        log("not checked in other torch releases (the GUIE host ran PyTorch 1.11): add --check-torch 1.11.0, "
            "or run guie-compat on the file; the environment is built once")
        return []
    log(f"loading the file in torch {', '.join(versions)}:")
    log(TABLE_HEADER)
    rows = run_matrix(path, versions, log=log)
    record_results(path, rows, torch.__version__)
    for row in rows:
        if not row.passed:
            problem = row.error or f"outputs differ by {row.max_abs_diff:.2e} (limit 1e-04)"
            raise VerificationError(f"export verification failed: in torch {row.torch}: {problem}")
    return [row.to_dict() for row in rows]
