"""Image loading for feature extraction: PIL to RGB, a transform, and bad files flagged instead of raised."""
from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Callable, Sequence

import torch
from PIL import Image
from torch.utils.data import Dataset

from guie.fsnames import name_bytes


def default_workers() -> int:
    """DataLoader workers for image decoding: one per core, leaving one for the main process, at most 8."""
    return max(0, min(8, (os.cpu_count() or 1) - 1))


def load_rgb(path: str) -> Image.Image:
    """Open ``path`` with PIL and convert to RGB, as the competition host did."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PIL's DecompressionBomb and palette warnings
        with Image.open(path) as img:
            return img.convert("RGB")


def image_problem(path: str) -> str | None:
    """Why ``path`` cannot serve as an image (opened as the host did: PIL, then RGB), or None when it can.

    Truncated files, decompression bombs and anything else PIL refuses all come back as one short reason.
    """
    try:
        load_rgb(path)
    except Exception as exc:  # noqa: BLE001 - every decode failure is the same finding: an unusable file
        detail = " ".join(str(exc).split())
        return f"unreadable or corrupt image ({type(exc).__name__}: {detail[:120]})"
    return None


def view_seed(key: str, view: int) -> int:
    """A seed for augmented view ``view`` of the image ``key``, independent of batch order and workers."""
    return int.from_bytes(hashlib.sha256(name_bytes(f"{key}#{view}")).digest()[:8], "little") & 0x7FFF_FFFF_FFFF


class ImageDataset(Dataset):
    """Items are ``(image tensor, position, ok, original (height, width))``; unreadable images give a
    zero tensor, ok=False and size (0, 0)."""

    def __init__(self, paths: Sequence[str], transform: Callable, image_size: tuple[int, int],
                 view: int = 0, keys: Sequence[str] | None = None) -> None:
        self.paths = list(paths)
        self.keys = list(keys) if keys is not None else self.paths
        self.transform = transform
        self.image_size = image_size
        self.view = view

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int, bool, torch.Tensor]:
        try:
            img = load_rgb(self.paths[i])
            size = torch.tensor([img.height, img.width], dtype=torch.int32)
            if self.view == 0:
                x = self.transform(img)
            else:
                # Random augmentations draw from torch's global RNG: seed it per image and view.
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(view_seed(self.keys[i], self.view))
                    x = self.transform(img)
            return x, i, True, size
        except Exception:  # noqa: BLE001 - any decode failure is a bad image, counted by the caller
            return torch.zeros(3, *self.image_size), i, False, torch.zeros(2, dtype=torch.int32)
