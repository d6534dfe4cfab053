"""The one inference loop over an image tower: images -> DataLoader -> inference mode -> autocast -> tower.

Feature extraction (the cache), guie-eval's eager models and stage 2's fine-tuned tower all
embed images through :func:`forward_images`, so they decode, batch, cast and count bad images
the same way. The policies live here once: DataLoader workers (:func:`decode_workers`),
pinned memory on CUDA, and mixed precision (:func:`tower_autocast`: bf16 on CUDA where the GPU
supports it, else fp16; full float32 on CPU, so CPU results are exact and repeatable).
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from guie.data.images import ImageDataset, default_workers
from guie.model.backbone import Backbone, augment_transform
from guie.model.bounded_transform import bounded_eval_transform

UNREADABLE = "unreadable or corrupt image"


def decode_workers(workers: int | None) -> int:
    """DataLoader workers for image decoding: ``workers`` as given, or :func:`default_workers` for None."""
    return default_workers() if workers is None else workers


def tower_autocast(device: torch.device) -> torch.autocast:
    """Mixed precision for the image tower on ``device``: bf16 on CUDA when supported, else fp16; off on CPU."""
    use_amp = device.type == "cuda"
    dtype = torch.bfloat16 if use_amp and torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast(device.type, dtype=dtype, enabled=use_amp)


def image_dataset(backbone: Backbone, paths: Sequence[str], view: int = 0,
                  keys: Sequence[str] | None = None) -> ImageDataset:
    """``paths`` under ``backbone``'s preprocessing: view 0 its own eval transform, view k >= 1 the k-th
    seeded augmented view (seeded per image by ``keys``, default the paths)."""
    cfg = backbone.preprocess_cfg
    transform = bounded_eval_transform(cfg) if view == 0 else augment_transform(cfg)
    return ImageDataset(paths, transform, backbone.image_size, view=view, keys=keys)


@dataclass
class ForwardBatch:
    """One batch through the tower, for the readable images only.

    ``positions`` ``(n,)`` int64 are the images' positions in the input list, ascending;
    ``features`` ``(n, D)`` float32 on the tower's device; ``sizes`` ``(n, 2)`` int32 on CPU, the
    images' original (height, width) in pixels; ``unreadable`` ``(m,)`` int64, the positions of
    this batch's images PIL could not read (no features, see :data:`UNREADABLE`).
    """

    positions: np.ndarray
    features: torch.Tensor
    sizes: torch.Tensor
    unreadable: np.ndarray

    def __len__(self) -> int:
        """Images the batch covered, readable or not."""
        return len(self.positions) + len(self.unreadable)


def forward_images(backbone: Backbone, paths: Sequence[str], device: torch.device, batch_size: int = 64,
                   workers: int | None = None, view: int = 0, keys: Sequence[str] | None = None,
                   desc: str | None = None, bar: tqdm | None = None) -> Iterator[ForwardBatch]:
    """Run ``backbone.visual`` over ``paths`` in order, ``batch_size`` images at a time, yielding a
    :class:`ForwardBatch` per batch.

    Images are decoded by ``workers`` DataLoader processes (None: :func:`decode_workers`) under
    view ``view`` (see :func:`image_dataset`); the tower runs under ``torch.inference_mode`` and
    :func:`tower_autocast`, neither of which stays active between batches: a caller that computes
    on the features (a projection, say) opens its own ``torch.inference_mode``. ``desc`` shows a
    tqdm bar counting images (``bar``: an open bar to advance instead, e.g. one over several calls).
    An unreadable image is reported, never raised; a tower that fails on a readable one raises as
    torch does.
    """
    dataset = image_dataset(backbone, paths, view, keys)
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=decode_workers(workers), shuffle=False,
                        pin_memory=device.type == "cuda", persistent_workers=False)
    with contextlib.nullcontext(bar) if bar is not None else \
            tqdm(total=len(dataset), desc=desc, unit="img", dynamic_ncols=True, disable=desc is None) as bar:
        for pixels, pos, ok, sizes in loader:
            ok = ok.bool()
            features = torch.zeros((0, backbone.feature_dim), dtype=torch.float32, device=device)
            if ok.any():
                with torch.inference_mode():
                    with tower_autocast(device):
                        out = backbone.visual(pixels[ok].to(device, non_blocking=True))
                    features = out.float()
            yield ForwardBatch(pos[ok].numpy(), features, sizes[ok], pos[~ok].numpy())
            bar.update(len(pos))
