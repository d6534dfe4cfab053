"""The trainable projection from frozen backbone features to the L2-normalised embedding."""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


class Projection(nn.Module):
    """standardise features -> dropout -> linear -> optional BatchNorm -> L2 normalise.

    The standardisation uses per-dimension mean and std of the training features (buffers
    set once by ``set_feature_stats``, saved with the weights). Frozen-backbone features
    often share a large common component; removing it before the linear layer is what lets
    a small head separate classes, and it is a plain affine op in the exported graph.
    """

    def __init__(self, in_dim: int, dim: int = 64, batchnorm: bool = False, dropout: float = 0.0):
        super().__init__()
        self.in_dim, self.dim, self.use_batchnorm, self.p_dropout = in_dim, dim, batchnorm, dropout
        self.dropout = nn.Dropout(dropout)
        self.linear = nn.Linear(in_dim, dim)
        self.bn = nn.BatchNorm1d(dim) if batchnorm else nn.Identity()
        self.register_buffer("feature_mean", torch.zeros(in_dim))
        self.register_buffer("feature_inv_std", torch.ones(in_dim))

    @torch.no_grad()
    def set_feature_stats(self, mean: torch.Tensor, std: torch.Tensor, eps: float = 1e-6) -> None:
        """Fix the input standardisation from training-feature statistics."""
        self.feature_mean.copy_(mean)
        self.feature_inv_std.copy_(1.0 / (std + eps))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        x = (features.float() - self.feature_mean) * self.feature_inv_std
        x = self.bn(self.linear(self.dropout(x)))
        return F.normalize(x, dim=-1)

    def config(self) -> dict[str, Any]:
        return {"in_dim": self.in_dim, "dim": self.dim, "batchnorm": self.use_batchnorm, "dropout": self.p_dropout}
