"""Check a submission.zip the way the GUIE host used it: the named checks, on what the fresh-interpreter
runner (guie.export.fresh) saw when it loaded saved_model.pt with plain torch, guie unimportable.

Fed, as the host did (PIL open, convert("RGB"), uint8 ``(1, 3, H, W)`` at the original size,
``model(x)[0]``): the given image files one at a time, then guie-export's host-style test images
(guie.export.host_images: tiny, non-square, model-size, large, extreme aspect, and the batch's
images), so smoke checks at least what export verified; then, as batches, the largest group of
same-sized given images (up to 8, when there are 3 or more) and the host-style batch.

Checks, in order: zip-layout, load, forward, output-type, shape (1, 64), dtype float32, finite,
unit-norm, then deterministic (the first given images and the host-style ones twice),
batch-independent (each batch equals its images one at a time) and distinct (the given images do
not all map to one vector). An image PIL cannot open fails the check ``input-image``, naming the
file: a problem with the images, not with the model. The runner itself failing (it crashed, the
timeout passed, guie was importable) is ``host-check``.
"""
from __future__ import annotations

import sys
import tempfile
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from guie.artifacts import SAVED_MODEL, is_submission_layout
from guie.export.fresh import FreshResult, ImageInput, InputResult, RunOutput, run_fresh
from guie.export.host_images import write_host_images

DIM = 64
NORM_TOL = 1e-3
REPEAT_TOL = 1e-5
BATCH_TOL = 1e-4
REPEATED = 4  # the first given images fed twice (deterministic)
MAX_BATCH = 8
INPUT_CHECK = "input-image"  # an image the runner cannot open: the user's file, not the package
RUNNER_CHECK = "host-check"  # the runner did not give a result to check
HOST_NAME = "host-style test image"


class CheckFailed(Exception):
    """A named check failed: ``name`` (e.g. ``shape``) and ``detail``, one line naming the input."""

    def __init__(self, name: str, detail: str) -> None:
        super().__init__(detail)
        self.name, self.detail = name, detail


@dataclass(frozen=True)
class HostView:
    """What the host would have got: one embedding per given image (float32 ``(N, 64)``, in order) and the
    torch release that loaded the file."""

    embeddings: np.ndarray
    torch_version: str | None


def image_size(path: str) -> tuple[int, int] | None:
    """(width, height) from the image's header, or None when PIL cannot read it (the runner reports why)."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            return img.size
    except Exception:  # noqa: BLE001 - the runner opens it again and names the problem
        return None


def same_size_group(images: Sequence[str]) -> list[int]:
    """Indices of the largest group of same-sized images (first found on ties), at most MAX_BATCH."""
    by_size: dict[tuple[int, int], list[int]] = {}
    for i, path in enumerate(images):
        size = image_size(path)
        if size is not None:
            by_size.setdefault(size, []).append(i)
    return max(by_size.values(), key=len)[:MAX_BATCH] if by_size else []


def summarise(result: InputResult | FreshResult) -> str:
    """The error as ``Type: line``, the line being the last of a multi-line message (TorchScript tracebacks)."""
    error = result.error
    return f"{error.type}: {error.last_line[:300]}" if error else ""


def check_output(out: RunOutput, rows: int, where: str) -> None:
    """CheckFailed (output-type, shape, dtype, finite or unit-norm) unless ``out`` is a float32 ``(rows, 64)``
    tensor of finite unit-norm rows."""
    if not out.is_tensor:
        raise CheckFailed("output-type", f"the model returned {out.type}, not a tensor, on {where}")
    if tuple(out.shape) != (rows, DIM):
        raise CheckFailed("shape", f"output shape {tuple(out.shape)} on {where}, expected ({rows}, {DIM})")
    if out.dtype != "torch.float32":
        raise CheckFailed("dtype", f"output dtype {out.dtype} on {where}, expected torch.float32")
    if not bool(np.isfinite(out.values).all()):
        raise CheckFailed("finite", f"the output holds NaN or inf on {where}")
    norms = np.linalg.norm(out.values.astype(np.float64), axis=1)
    worst = int(np.abs(norms - 1).argmax())
    if abs(norms[worst] - 1) > NORM_TOL:
        raise CheckFailed("unit-norm", f"output norm {norms[worst]:.4f} on {where}, expected 1 (L2-normalised, "
                                       f"tolerance {NORM_TOL})")


def forwarded(item: InputResult, where: str) -> RunOutput:
    """The input's first output; CheckFailed ``forward`` when the model raised on it."""
    if item.error is not None:
        raise CheckFailed("forward", f"the model raised on {where}: {summarise(item)}")
    return item.runs[0]


@dataclass(frozen=True)
class HostPlan:
    """The runner's inputs and the role of each, by index into ``inputs``."""

    inputs: list[ImageInput]
    given: list[int]  # one per given image, in order
    host: list[int]  # the host-style singles (each size, then the batch's images)
    batches: list[tuple[int, list[int]]]  # (the batch, the singles of its images)


def host_plan(images: Sequence[str], folder: Path) -> HostPlan:
    """The given images one at a time (the first REPEATED twice), the host-style images written to
    ``folder`` one at a time (each size twice), then the batches: the largest group of 3 or more
    same-sized given images, and the host-style batch (each twice)."""
    files = write_host_images(folder)
    inputs = [ImageInput(path, (path,), runs=2 if i < REPEATED else 1) for i, path in enumerate(images)]
    given = list(range(len(inputs)))
    inputs += [ImageInput(HOST_NAME, (str(path),), runs=2) for path in files.singles]
    members = list(range(len(inputs), len(inputs) + len(files.batch)))
    inputs += [ImageInput(HOST_NAME, (str(path),)) for path in files.batch]
    host = list(range(len(given), len(inputs)))
    group = same_size_group(images)
    wanted = [(group, [images[i] for i in group])] if len(group) >= 3 else []
    wanted.append((members, [str(p) for p in files.batch]))
    batches = []
    for singles, paths in wanted:
        batches.append((len(inputs), singles))
        inputs.append(ImageInput(f"a batch of {len(paths)} images", tuple(paths), runs=2))
    return HostPlan(inputs, given, host, batches)


def judge(result: FreshResult, plan: HostPlan, passed: list[str]) -> np.ndarray:
    """The named checks on the runner's result, in order, appending each passed one's name to ``passed``;
    the given images' embeddings, float32 ``(N, 64)``. CheckFailed naming the first that fails."""
    if result.error is not None and result.error.stage in ("died", "timeout"):
        raise CheckFailed(RUNNER_CHECK, f"the checker did not finish: {result.error}")
    if result.error is not None:
        raise CheckFailed("load", f"torch.jit.load failed: {summarise(result)}")
    if not result.guie_refused:
        raise CheckFailed(RUNNER_CHECK, "guie was importable in the checker's interpreter "
                                        f"({result.guie_import_error or 'import guie succeeded'})")
    passed.append("load")
    items = result.inputs
    for item in items:
        if item.error is not None and item.error.stage == "input":
            if item.error.file is None:  # stacking, not opening, failed: the plan's fault
                raise CheckFailed(RUNNER_CHECK, f"{item.name}: {summarise(item)}")
            raise CheckFailed(INPUT_CHECK, f"cannot open the image {item.error.file}: {summarise(item)}")

    for i in plan.given + plan.host:
        where = where_of(items[i])
        check_output(forwarded(items[i], where), 1, where)
    passed += ["forward", "output-type", "shape", "dtype", "finite", "unit-norm"]
    emb = np.stack([items[i].runs[0].values[0] for i in plan.given]).astype(np.float32)

    for item in items:
        if item.error is None and len(item.runs) > 1 and item.runs[0].is_tensor and item.runs[1].is_tensor:
            diff = float(np.abs(item.runs[1].values - item.runs[0].values).max())
            if diff > REPEAT_TOL:
                raise CheckFailed("deterministic", f"the same input twice gave outputs {diff:.2e} apart "
                                                   f"({where_of(item)}); tolerance {REPEAT_TOL}")
    passed.append("deterministic")

    for b, singles in plan.batches:
        where = where_of(items[b])
        out = forwarded(items[b], where)
        check_output(out, len(singles), where)
        diff = float(np.abs(out.values - np.concatenate([items[i].runs[0].values for i in singles])).max())
        if diff > BATCH_TOL:
            raise CheckFailed("batch-independent", f"{where} gave outputs up to {diff:.2e} away from the same "
                                                   f"images one at a time; tolerance {BATCH_TOL}")
    passed.append("batch-independent")

    if len(emb) >= 2:
        cos = emb @ emb.T
        spread = float(cos[~np.eye(len(emb), dtype=bool)].min())
        if spread > 0.9999:
            raise CheckFailed("distinct", f"all {len(emb)} images map to the same vector (lowest cosine "
                                          f"{spread:.5f}); the model ignores its input")
    passed.append("distinct")
    return emb


def where_of(item: InputResult) -> str:
    """An input as a message names it: ``PATH (WxH)``, or ``a batch of 4 images of 131x97``."""
    shape = item.input_shape
    if not shape:
        return item.name
    return f"{item.name} of {shape[-1]}x{shape[-2]}" if shape[0] > 1 else f"{item.name} ({shape[-1]}x{shape[-2]})"


def run_checks(zip_path: str | Path, images: Sequence[str], passed: list[str], work: Path | None = None,
               timeout: float = 600.0) -> HostView:
    """Every check on ``zip_path`` fed ``images`` (paths), appending each passed check's name to ``passed``;
    CheckFailed naming the first that fails. The runner uses this interpreter (guie.export.fresh's
    rules: isolated, secrets left out) and ``work`` (default: a temporary folder) for the
    extracted model and the host-style images."""
    with tempfile.TemporaryDirectory(prefix="guie-host-check-", dir=work) as tmp:
        with zipfile.ZipFile(zip_path) as zf:
            names = zf.namelist()
            if not is_submission_layout(names):
                raise CheckFailed("zip-layout", f"submission.zip holds {names}; the host reads only {SAVED_MODEL} "
                                                "at its root")
            passed.append("zip-layout")
            model = Path(zf.extract(SAVED_MODEL, tmp))  # from a file, not from memory: a ViT-H is gigabytes
        plan = host_plan(list(images), Path(tmp) / "host-images")
        result = run_fresh(sys.executable, model, plan.inputs, timeout=timeout)
    emb = judge(result, plan, passed)
    return HostView(emb, result.torch)
