"""The one set of host-style test images: what guie-export verifies, guie-compat feeds every torch
release and guie-smoke feeds the packaged submission, so no two checks drift apart.

The GUIE host fed each image at its original size as uint8 ``(1, 3, H, W)`` (DESIGN.md, "What the
host did"); these are deterministic stand-ins of its kinds of size: tiny (7x5), non-square
(31x64), model-size (224x224), large (500x300), extreme aspect (1200x37), plus one ``(4, 3, 97,
131)`` batch for uses outside the host. Smooth gradients plus noise, like photos and scans.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

HOST_SIZES = [(7, 5), (31, 64), (224, 224), (500, 300), (1200, 37)]  # (H, W)
# Aspect 32:1, reported apart from the photo-like sizes: shrinking it to guie-tiny's 32 px, Pillow 13
# runs the vertical pass first (its rule for heights that shrink much more than widths), which an
# export that always ran the horizontal pass first missed by one grey level on 28% of pixels (1e-3
# on the embedding); with Pillow's order (guie.model.pillow_resize) it is 0.1% of pixels, as photos.
EXTREME_ASPECT_SIZES = [(1200, 37)]
BATCH = (4, 97, 131)  # (N, H, W)


def host_cases(seed: int = 0) -> list[torch.Tensor]:
    """The host's feeding as uint8 tensors: one ``(1, 3, H, W)`` image per size of HOST_SIZES, in that
    order, then the ``(4, 3, 97, 131)`` batch. The same tensors for the same seed, on any machine."""
    g = torch.Generator().manual_seed(seed)
    cases = []
    for n, h, w in [(1, h, w) for h, w in HOST_SIZES] + [BATCH]:
        yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
        base = torch.stack([yy, xx, 1 - (yy + xx) / 2]) * 190
        noise = torch.rand(n, 3, h, w, generator=g) * 65
        cases.append((base.unsqueeze(0) + noise).clamp(0, 255).to(torch.uint8))
    return cases


def host_images(seed: int = 0) -> dict[tuple[int, int], torch.Tensor]:
    """The single images of :func:`host_cases` by ``(H, W)``, each uint8 ``(3, H, W)``."""
    return {size: case[0] for size, case in zip(HOST_SIZES, host_cases(seed), strict=False)}


def photo_like(images: dict[tuple[int, int], torch.Tensor]) -> dict[tuple[int, int], torch.Tensor]:
    """``images`` without the sizes of EXTREME_ASPECT_SIZES."""
    return {size: img for size, img in images.items() if size not in EXTREME_ASPECT_SIZES}


def host_batch(seed: int = 0) -> torch.Tensor:
    """The batch of :func:`host_cases`: uint8 ``(4, 3, 97, 131)``."""
    return host_cases(seed)[-1]


@dataclass(frozen=True)
class HostImageFiles:
    """The host-style images as PNG files (lossless: PIL reads back the very tensors)."""

    singles: list[Path]  # one per size of HOST_SIZES, in that order
    batch: list[Path]  # the batch's images, one file each, all 97x131


def write_host_images(folder: Path, seed: int = 0) -> HostImageFiles:
    """The images of :func:`host_cases` as PNG files in ``folder`` (created), for feeding as image files."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)

    def save(img: torch.Tensor, name: str) -> Path:
        path = folder / name
        Image.fromarray(img.permute(1, 2, 0).contiguous().numpy()).save(path)
        return path

    cases = host_cases(seed)
    singles = [save(case[0], f"host-{h}x{w}.png") for (h, w), case in zip(HOST_SIZES, cases, strict=False)]
    batch = [save(img, f"host-batch-{i}-{BATCH[1]}x{BATCH[2]}.png") for i, img in enumerate(cases[-1])]
    return HostImageFiles(singles, batch)
