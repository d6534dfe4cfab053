"""The physical floor the other benchmarks compare against: one backbone forward over pre-decoded tensors."""
from __future__ import annotations

import torch

from guie.data.images import load_rgb
from guie.model.backbone import Backbone, eval_transform


def predecode(backbone: Backbone, paths: list[str]) -> torch.Tensor:
    """Every image decoded and preprocessed up front, as one tensor."""
    transform = eval_transform(backbone.preprocess_cfg)
    return torch.stack([transform(load_rgb(p)) for p in paths])


def pure_forward(backbone: Backbone, pixels: torch.Tensor, batch: int = 64) -> None:
    """Forward the frozen tower over ``pixels`` in batches, as feature extraction does."""
    with torch.inference_mode():
        for s in range(0, len(pixels), batch):
            backbone.visual(pixels[s:s + batch])
