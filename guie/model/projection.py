"""The trainable projection from frozen backbone features (and optionally image sizes) to the L2-normalised embedding."""
from __future__ import annotations

from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import nn

SIZE_FEATURES = ("log_height", "log_width", "aspect")
SIZE_FEATURE_DIM = len(SIZE_FEATURES)


def size_encoding(sizes: torch.Tensor) -> torch.Tensor:
    """Original image sizes ``(N, 2)`` as (height, width) -> ``(N, 3)``: log height, log width, width / height.

    Logs keep a 40-pixel icon and a 4,000-pixel photo a few standard deviations apart; sides are
    clamped to 8..8192 pixels and the aspect ratio to 1/8..8, so one odd image cannot dominate
    the embedding. The aspect ratio is not a linear function of the logs: it adds a nonlinearity.
    """
    hw = sizes.float().clamp(8.0, 8192.0)
    aspect = (hw[:, 1:2] / hw[:, 0:1]).clamp(0.125, 8.0)
    return torch.cat([hw.log(), aspect], dim=1)


class Projection(nn.Module):
    """[size features] -> standardise -> dropout -> linear -> optional BatchNorm -> L2 normalise.

    The standardisation uses per-dimension mean and std of the training inputs (buffers set
    once by ``set_feature_stats``, saved with the weights). Frozen-backbone features often share
    a large common component; removing it before the linear layer is what lets a small head
    separate classes, and it is a plain affine op in the exported graph. With
    ``size_features`` (5th place GUIE 2022) the encoded original image size is appended to the
    backbone features first, so ``forward`` then needs ``sizes``.
    """

    def __init__(self, in_dim: int, dim: int = 64, batchnorm: bool = False, dropout: float = 0.0,
                 size_features: bool = False):
        super().__init__()
        self.in_dim, self.dim, self.use_batchnorm, self.p_dropout = in_dim, dim, batchnorm, dropout
        self.size_features = size_features
        self.input_dim = in_dim + (SIZE_FEATURE_DIM if size_features else 0)
        self.dropout = nn.Dropout(dropout)
        self.linear = nn.Linear(self.input_dim, dim)
        self.bn = nn.BatchNorm1d(dim) if batchnorm else nn.Identity()
        self.register_buffer("feature_mean", torch.zeros(self.input_dim))
        self.register_buffer("feature_inv_std", torch.ones(self.input_dim))

    @torch.no_grad()
    def set_feature_stats(self, mean: torch.Tensor, std: torch.Tensor, eps: float = 1e-6) -> None:
        """Fix the input standardisation from training-input statistics.

        A dimension that never varied in training (every image the same size, say) gets weight 0:
        dividing by its near-zero std would blow up any input that differs from the training value.
        """
        self.feature_mean.copy_(mean)
        self.feature_inv_std.copy_(torch.where(std > eps, 1.0 / (std + eps), torch.zeros_like(std)))

    def inputs(self, features: torch.Tensor, sizes: Optional[torch.Tensor] = None) -> torch.Tensor:  # noqa: UP045 - TorchScript
        """The projection's raw input: the features, with the encoded sizes appended when enabled."""
        x = features.float()
        if self.size_features:
            if sizes is None:
                raise ValueError("this projection was trained with size features: pass the images' (height, width)")
            x = torch.cat([x, size_encoding(sizes.to(x.device))], dim=1)
        return x

    def forward(self, features: torch.Tensor, sizes: Optional[torch.Tensor] = None) -> torch.Tensor:  # noqa: UP045 - TorchScript
        x = (self.inputs(features, sizes) - self.feature_mean) * self.feature_inv_std
        x = self.bn(self.linear(self.dropout(x)))
        return F.normalize(x, dim=-1)

    def config(self) -> dict[str, Any]:
        return {"in_dim": self.in_dim, "dim": self.dim, "batchnorm": self.use_batchnorm, "dropout": self.p_dropout,
                "size_features": self.size_features}
