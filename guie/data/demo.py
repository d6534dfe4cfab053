"""The embedded demo data: scikit-learn's bundled handwritten digits written out as PNG class folders."""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from guie.data.imagefolder import scan_class_folders
from guie.data.records import SourceData, register_source
from guie.errors import GuieError
from guie.paths import cache_root

# digits-noisy: the same digits shifted by up to 2 pixels with Gaussian noise, a second
# (domain-shifted) task for guie-eval that needs no download either.
DEMO_SETS = ("digits", "digits-noisy")
DIGITS_SIZE = 32


def perturb(img: Image.Image, seed: int, shift: int = 2, noise: float = 10.0) -> Image.Image:
    """A seeded random shift (up to ``shift`` pixels) plus Gaussian pixel noise of std ``noise``."""
    rng = np.random.default_rng(seed)
    arr = np.roll(np.asarray(img, dtype=np.float32), tuple(rng.integers(-shift, shift + 1, 2)), axis=(0, 1))
    return Image.fromarray((arr + rng.normal(0.0, noise, arr.shape)).clip(0, 255).astype(np.uint8), mode="L")


def write_digits(dest: str | Path, per_class: int | None = None, size: int = DIGITS_SIZE,
                 noisy: bool = False) -> Path:
    """Write the 1,797 8x8 digits (or ``per_class`` of each) as ``size``-pixel RGB PNGs in ``dest/<digit>/``.

    The folder appears whole or not at all: it is written beside ``dest`` and renamed into place.
    """
    from sklearn.datasets import load_digits

    dest = Path(dest)
    if dest.is_dir():
        return dest
    digits = load_digits()
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        counts: dict[int, int] = {}
        for i, (pixels, target) in enumerate(zip(digits.images, digits.target, strict=True)):
            label = int(target)
            if per_class is not None and counts.get(label, 0) >= per_class:
                continue
            counts[label] = counts.get(label, 0) + 1
            gray = (np.asarray(pixels, dtype=np.float32) * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
            img = Image.fromarray(gray, mode="L").resize((size, size), Image.BICUBIC)
            img = (perturb(img, seed=i) if noisy else img).convert("RGB")
            folder = tmp / str(label)
            folder.mkdir(exist_ok=True)
            img.save(folder / f"{i:04d}.png")
        tmp.rename(dest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return dest


def demo_root(name: str) -> Path:
    """The cache folder of demo set ``name``, written on first use."""
    if name not in DEMO_SETS:
        raise GuieError(f"unknown demo data set {name!r}; known: {', '.join(DEMO_SETS)}")
    return write_digits(cache_root() / "demo" / name, noisy=name == "digits-noisy")


@register_source("demo", "the embedded demo data (demo:digits, demo:digits-noisy), written on first use; "
                         "needs no download")
def load_demo(name: str, spec: str) -> SourceData:
    root = demo_root(name)
    records, skipped = scan_class_folders(root, domain=name)
    return SourceData(spec, name, records, skipped)
