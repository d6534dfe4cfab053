"""Check a submission.zip the way the GUIE host used it; runs as a script in a fresh ``python -I``.

It imports no guie module, and as a script it cannot: a finder installed before the model is
loaded refuses guie, as the host had none (tests import run_checks in-process).

Usage: ``python -I host_check.py SUBMISSION_ZIP MANIFEST_JSON OUT_DIR``, the manifest being
``{"images": [paths...]}``. Writes ``OUT_DIR/result.json`` (checks passed, the first failure) and
``OUT_DIR/embeddings.npy`` (one row per image, host-style); exits 0 whenever it wrote a result.

Per image, as the host did: PIL open, convert("RGB"), uint8 ``(1, 3, H, W)`` at the original
size, ``model(x)[0]``. Checks, in order: zip-layout, load, forward, output-type, shape (1, 64),
dtype float32, finite, unit-norm, then deterministic (same input twice), batch-independent
(a batch of same-sized images equals one at a time) and distinct (not one vector for all).
An image PIL cannot open fails the check ``input-image``, naming the file: a problem with the
images, not with the model.
"""
import json
import sys
import tempfile
import zipfile

import numpy as np
import torch
from PIL import Image

DIM = 64
NORM_TOL = 1e-3
REPEAT_TOL = 1e-5
BATCH_TOL = 1e-4


class CheckFailed(Exception):
    def __init__(self, name, detail):
        super().__init__(detail)
        self.name, self.detail = name, detail


def load_host_image(path):
    """uint8 (1, 3, H, W), exactly what PILToTensor plus a batch axis gave the host."""
    with Image.open(path) as img:
        rgb = np.asarray(img.convert("RGB"), dtype=np.uint8)
    return torch.from_numpy(rgb.copy()).permute(2, 0, 1).contiguous().unsqueeze(0)


def load_images(paths):
    """Every image host-style; the first that cannot be opened fails the check ``input-image``, naming it."""
    inputs = []
    for path in paths:
        try:
            inputs.append(load_host_image(path))
        except Exception as exc:  # noqa: BLE001 - truncated, corrupt, decompression bomb: the file's problem
            raise CheckFailed("input-image", f"cannot open the image {path}: {type(exc).__name__}: "
                                             f"{summarise(exc)}") from None
    return inputs


def summarise(exc):
    """One line: the message, or the last line of a multi-line one (TorchScript tracebacks)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return (lines[-1] if lines else "")[:300]


def describe(path, x):
    return f"{path} ({x.shape[-1]}x{x.shape[-2]})"


def forward(model, x, where):
    try:
        with torch.no_grad():
            return model(x)
    except Exception as exc:  # noqa: BLE001 - any failure of the model is the finding
        raise CheckFailed("forward", f"the model raised on {where}: {type(exc).__name__}: {summarise(exc)}") from None


def check_output(out, rows, where):
    if not isinstance(out, torch.Tensor):
        raise CheckFailed("output-type", f"the model returned {type(out).__name__}, not a tensor, on {where}")
    if tuple(out.shape) != (rows, DIM):
        raise CheckFailed("shape", f"output shape {tuple(out.shape)} on {where}, expected ({rows}, {DIM})")
    if out.dtype != torch.float32:
        raise CheckFailed("dtype", f"output dtype {out.dtype} on {where}, expected torch.float32")
    if not bool(torch.isfinite(out).all()):
        raise CheckFailed("finite", f"the output holds NaN or inf on {where}")
    norms = out.norm(dim=1)
    worst = float((norms - 1).abs().max())
    if worst > NORM_TOL:
        raise CheckFailed("unit-norm", f"output norm {float(norms[(norms - 1).abs().argmax()]):.4f} on {where}, "
                                       f"expected 1 (L2-normalised, tolerance {NORM_TOL})")


def run_checks(zip_path, images, passed):
    with zipfile.ZipFile(zip_path) as zf, tempfile.TemporaryDirectory() as tmp:
        names = zf.namelist()
        if names != ["saved_model.pt"]:
            raise CheckFailed("zip-layout", f"submission.zip holds {names}; the host reads only saved_model.pt "
                                            "at its root")
        passed.append("zip-layout")
        try:  # from a file, not from memory: a ViT-H model is gigabytes
            model = torch.jit.load(zf.extract("saved_model.pt", tmp), map_location="cpu").eval()
        except Exception as exc:  # noqa: BLE001
            raise CheckFailed("load", f"torch.jit.load failed: {type(exc).__name__}: {summarise(exc)}") from None
    passed.append("load")

    inputs = load_images(images)
    embeddings = []
    for path, x in zip(images, inputs, strict=True):
        out = forward(model, x, describe(path, x))
        check_output(out, 1, describe(path, x))
        embeddings.append(out[0].flatten().numpy().astype(np.float32))
    passed += ["forward", "output-type", "shape", "dtype", "finite", "unit-norm"]
    emb = np.stack(embeddings)

    for i in range(min(4, len(inputs))):
        again = forward(model, inputs[i], describe(images[i], inputs[i]))[0].numpy()
        diff = float(np.abs(again - emb[i]).max())
        if diff > REPEAT_TOL:
            raise CheckFailed("deterministic", f"the same image twice gave outputs {diff:.2e} apart "
                                               f"({describe(images[i], inputs[i])}); tolerance {REPEAT_TOL}")
    passed.append("deterministic")

    by_size = {}
    for i, x in enumerate(inputs):
        by_size.setdefault(tuple(x.shape), []).append(i)
    group = max(by_size.values(), key=len)[:8]
    members = [inputs[i] for i in group]
    singles = [emb[i] for i in group]
    if len(members) < 3:  # no same-sized images: pair the first image with its mirror images
        members = [inputs[0], inputs[0].flip(-1), inputs[0].flip(-2)]
        singles = [forward(model, m, describe(images[0], m))[0].numpy() for m in members]
    batch = torch.cat(members)
    where = f"a batch of {len(members)} images of {batch.shape[-1]}x{batch.shape[-2]}"
    out = forward(model, batch, where)
    check_output(out, len(members), where)
    diff = float(np.abs(out.numpy() - np.stack(singles)).max())
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


def main(argv):
    zip_path, manifest_path, out_dir = argv
    images = json.loads(open(manifest_path, encoding="utf-8").read())["images"]
    passed, failed, emb = [], None, None
    try:
        emb = run_checks(zip_path, images, passed)
    except CheckFailed as exc:
        failed = {"check": exc.name, "detail": exc.detail}
    if emb is not None:
        np.save(f"{out_dir}/embeddings.npy", emb)
    result = {"passed": passed, "failed": failed, "torch_version": torch.__version__, "images": len(images)}
    with open(f"{out_dir}/result.json", "w", encoding="utf-8") as fh:
        json.dump(result, fh, indent=2)
    return 0


class _NoGuie:
    """Refuses any import of guie, as the host had none."""

    def find_spec(self, name, path=None, target=None):
        if name == "guie" or name.startswith("guie."):
            raise ModuleNotFoundError("guie is not installed at the host; the submission must not need it")
        return None


if __name__ == "__main__":
    sys.meta_path.insert(0, _NoGuie())  # before torch.jit.load could pull anything in
    sys.exit(main(sys.argv[1:]))
