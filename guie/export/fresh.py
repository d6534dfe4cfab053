"""Checks in a fresh interpreter, through the one runner (fresh_runner.py): a model file loaded and fed
there as the GUIE host did, with guie unimportable, and what it saw brought back.

Used by guie-export's fresh-process reload (this interpreter), guie-compat's matrix (each torch
release's environment) and guie-smoke's host check (this interpreter); the smoke test's notebook
kernel boots through the same runner (:func:`kernel_argv`). Every child gets this environment
without the secrets (:data:`SECRET_ENV`).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from guie.errors import GuieError
from guie.export.fresh_runner import GUARD_MESSAGE

RUNNER = Path(__file__).with_name("fresh_runner.py")
# Never handed to a child interpreter (runner or notebook kernel): none of them needs credentials.
SECRET_ENV = ("KAGGLE_KEY", "KAGGLE_USERNAME", "KAGGLE_API_TOKEN", "KAGGLE_CONFIG_DIR", "WANDB_API_KEY")
INLINE_VALUES = 1 << 16  # outputs up to this many numbers come back inside the JSON, larger ones as raw float32


@dataclass(frozen=True)
class TensorInput:
    """A uint8 tensor (e.g. ``(N, 3, H, W)``) fed as it is, ``runs`` times."""

    name: str
    tensor: Any  # torch.Tensor, uint8
    runs: int = 1


@dataclass(frozen=True)
class ImageInput:
    """Image files opened as the GUIE host did (PIL, convert("RGB"), uint8 ``(1, 3, H, W)``); several files of
    one size are stacked into one ``(N, 3, H, W)`` batch. Fed ``runs`` times."""

    name: str
    paths: tuple[str, ...]
    runs: int = 1


@dataclass(frozen=True)
class ChildError:
    """A failure in the child: ``stage`` load (the model file), input (an image file or raw tensor),
    forward (the model raised), died (the interpreter crashed) or timeout."""

    type: str
    first_line: str
    last_line: str
    stage: str
    file: str | None = None  # the image file that could not be opened (stage input)
    detail: str = ""  # the child's traceback, for debugging

    def __str__(self) -> str:
        return self.first_line if self.stage in ("died", "timeout") else f"{self.type}: {self.first_line}"


@dataclass(frozen=True)
class RunOutput:
    """What one call of the model returned: ``type`` (``Tensor`` or another type's name); for a tensor its
    shape, dtype (e.g. ``torch.float32``) and values as float32 of that shape; seconds of the call."""

    type: str
    seconds: float
    shape: tuple[int, ...] | None = None
    dtype: str | None = None
    values: np.ndarray | None = None

    @property
    def is_tensor(self) -> bool:
        return self.shape is not None


@dataclass(frozen=True)
class InputResult:
    """One plan input: the shape fed (None when it could not be made), each run's output, the error."""

    name: str
    input_shape: tuple[int, ...] | None
    runs: list[RunOutput]
    error: ChildError | None


@dataclass
class FreshResult:
    """What the child saw. ``error`` is set when nothing ran: the model did not load (stage load), the
    interpreter died or the timeout passed; per-input failures are in ``inputs``."""

    python: str | None
    torch: str | None
    error: ChildError | None
    inputs: list[InputResult] = field(default_factory=list)
    load_seconds: float | None = None
    run_seconds: float | None = None
    wall_seconds: float = 0.0
    guie_import_error: str | None = None  # what ``import guie`` raised in the child at the end
    guie_modules: list[str] = field(default_factory=list)  # guie modules the child had imported (none)
    profiling_executor: bool | None = None  # TorchScript's executor in the child: profiling (True) or simple

    @property
    def loaded(self) -> bool:
        return self.error is None

    @property
    def guie_refused(self) -> bool:
        """Whether the child proved guie unimportable: its guard refused ``import guie`` and nothing of guie
        was imported. Unknown (False) when the child died."""
        return self.guie_import_error == GUARD_MESSAGE and not self.guie_modules


def python_flags(python: str = sys.executable) -> list[str]:
    """``-I`` (isolated: no PYTHONPATH, user site or script folder), except for this interpreter when its
    torch lives in the user site, which -I would hide.

    Isolation alone does not hide guie (an editable install's finder sits in site-packages): the
    runner's guard does that.
    """
    import importlib.util
    import site

    if python != sys.executable:
        return ["-I"]
    spec = importlib.util.find_spec("torch")
    user_site = site.getusersitepackages() if site.ENABLE_USER_SITE else None
    if spec and spec.origin and user_site and str(spec.origin).startswith(str(user_site)):
        return []
    return ["-I"]


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This process's environment without :data:`SECRET_ENV`, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if k not in SECRET_ENV}
    env.update(extra or {})
    return env


def kernel_argv() -> list[str]:
    """A jupyter kernel spec's argv: ipykernel on this interpreter, booted by the runner with guie refused."""
    return [sys.executable, *python_flags(), str(RUNNER), "kernel", "-f", "{connection_file}"]


def write_plan(model_file: Path, plan: list[TensorInput | ImageInput], device: str, folder: Path,
               profiling_executor: bool = True) -> Path:
    """The runner's plan file in ``folder``, raw uint8 files beside it for tensor inputs; GuieError for
    a tensor input that is not uint8 or a plan input of another type. ``profiling_executor`` False runs
    TorchScript's simple executor (see :func:`run_fresh`)."""
    entries: list[dict[str, Any]] = []
    for i, item in enumerate(plan):
        entry: dict[str, Any] = {"name": item.name, "runs": int(item.runs)}
        if isinstance(item, TensorInput):
            if str(item.tensor.dtype) != "torch.uint8":
                raise GuieError(f"fresh-interpreter input {item.name!r} is {item.tensor.dtype}; the runner feeds uint8 "
                                "tensors, as the host did")
            raw = folder / f"input-{i}.u8"
            raw.write_bytes(item.tensor.contiguous().cpu().numpy().tobytes())
            entry["tensor"] = {"shape": list(item.tensor.shape), "file": str(raw)}
        elif isinstance(item, ImageInput):
            entry["images"] = [str(p) for p in item.paths]
        else:
            raise GuieError(f"fresh-interpreter input {item!r} is neither a TensorInput nor an ImageInput")
        entries.append(entry)
    path = folder / "plan.json"
    path.write_text(json.dumps({"model": str(Path(model_file).resolve()), "device": device,
                                "inline_values": INLINE_VALUES, "profiling_executor": bool(profiling_executor),
                                "inputs": entries}))
    return path


def _child_error(record: dict[str, Any] | None) -> ChildError | None:
    if not record:
        return None
    return ChildError(record["type"], record["first_line"], record["last_line"], record["stage"],
                      record.get("file"), record.get("detail", ""))


def read_result(out: Path) -> FreshResult:
    """The runner's JSON (and raw float32 files) at ``out`` as a FreshResult."""
    data = json.loads(out.read_text())
    inputs = []
    for item in data.get("inputs", []):
        runs = []
        for run in item.get("runs", []):
            values = None
            if "shape" in run:
                flat = (np.fromfile(run["file"], dtype=np.float32) if "file" in run
                        else np.asarray(run["values"], dtype=np.float32))
                values = flat.reshape(run["shape"])
            runs.append(RunOutput(run["type"], run["seconds"], tuple(run["shape"]) if "shape" in run else None,
                                  run.get("dtype"), values))
        shape = tuple(item["input_shape"]) if item.get("input_shape") is not None else None
        inputs.append(InputResult(item["name"], shape, runs, _child_error(item.get("error"))))
    return FreshResult(data.get("python"), data.get("torch"), _child_error(data.get("error")), inputs,
                       data.get("load_seconds"), data.get("run_seconds"),
                       guie_import_error=data.get("guie_import_error"), guie_modules=data.get("guie_modules", []),
                       profiling_executor=data.get("profiling_executor"))


def died_reason(stderr: str, returncode: int) -> str:
    """Why an interpreter died without a result: a C++ abort's ``what():`` text (an old loader's assert),
    else the last line of stderr, else the exit code."""
    lines = stderr.strip().splitlines()
    return next((line.split("what():", 1)[1].strip() for line in lines if "what():" in line),
                lines[-1] if lines else f"exit code {returncode}")


def run_fresh(python: str, model_file: Path, plan: list[TensorInput | ImageInput], device: str = "cpu",
              timeout: float = 600.0, profiling_executor: bool = True) -> FreshResult:
    """Load ``model_file`` (TorchScript, or a ``.pt2`` torch.export program) with interpreter ``python`` in
    a fresh process that cannot import guie, feed it ``plan`` and return what it saw.

    ``python`` is this interpreter or another environment's (Python 3.7+, torch 1.11+); run with
    :func:`python_flags`, in an empty working folder, with :func:`child_env`. ``device`` cuda moves
    the loaded model to the GPU and feeds CPU tensors. Never raises for what happens in the child
    (a crash or the timeout comes back as ``error``); GuieError for a bad plan. ``profiling_executor``
    (default, as the host ran it) True; False runs TorchScript's simple executor, the same graph without
    the per-shape profiling and optimisation (in torch 1.11 about 12 s for the second input shape of a
    small tower): for checks of many towers at once, where the load and the numbers are the question.
    """
    with tempfile.TemporaryDirectory(prefix="guie-fresh-") as tmp:
        folder = Path(tmp)
        plan_file = write_plan(model_file, plan, device, folder, profiling_executor)
        out = folder / "result.json"
        start = time.perf_counter()
        try:
            res = subprocess.run([python, *python_flags(python), str(RUNNER), "run", str(plan_file), str(out)],
                                 capture_output=True, text=True, cwd=tmp, env=child_env(), timeout=timeout)
        except subprocess.TimeoutExpired:
            return FreshResult(None, None, ChildError("TimeoutExpired", f"no result within {timeout:.0f} s",
                                                      f"no result within {timeout:.0f} s", "timeout"),
                               wall_seconds=time.perf_counter() - start)
        if not out.is_file():  # the interpreter died (a C++ assert in an old loader aborts the process)
            reason = died_reason(res.stderr, res.returncode)
            message = f"the process died (exit {res.returncode}): {reason[:200]}"
            return FreshResult(None, None, ChildError("ProcessDied", message, message, "died", detail=res.stderr[-4000:]),
                               wall_seconds=time.perf_counter() - start)
        result = read_result(out)
        result.wall_seconds = time.perf_counter() - start
        return result
