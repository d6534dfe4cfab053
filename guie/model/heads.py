"""Margin heads (ArcFace family): small interchangeable modules, ``head(embeddings, labels) -> logits``."""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from guie.errors import GuieError, did_you_mean


class MarginHead(nn.Module):
    """Shared base: class-centre weights and cosine similarity. Subclasses add their margin."""

    def __init__(self, dim: int, num_classes: int, scale: float = 30.0, margin: float = 0.3, subcenters: int = 1):
        super().__init__()
        self.dim, self.num_classes, self.subcenters = dim, num_classes, subcenters
        self.scale, self.margin = float(scale), float(margin)
        self.weight = nn.Parameter(torch.empty(num_classes * subcenters, dim))
        nn.init.xavier_uniform_(self.weight)

    def cosine(self, embeddings: torch.Tensor) -> torch.Tensor:
        """Cosine of each embedding to each class (the best sub-centre when there are several)."""
        cos = F.linear(F.normalize(embeddings), F.normalize(self.weight))
        if self.subcenters > 1:
            cos = cos.view(-1, self.num_classes, self.subcenters).amax(dim=2)
        return cos

    def apply_margin(self, cos_target: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Scaled logits with the margin applied to each row's target class only."""
        cos = self.cosine(embeddings).float()
        target = cos.gather(1, labels.view(-1, 1))
        logits = cos.scatter(1, labels.view(-1, 1), self.apply_margin(target))
        return logits * self.scale

    def config(self) -> dict[str, Any]:
        return {"dim": self.dim, "num_classes": self.num_classes, "scale": self.scale,
                "margin": self.margin, "subcenters": self.subcenters}


class ArcFaceHead(MarginHead):
    """ArcFace (Deng et al. 2019): target logit cos(theta + m).

    Past theta = pi - m, cos(theta + m) would stop decreasing; there the usual linear
    fallback cos(theta) - m*sin(m) keeps the logit monotonic in theta.
    """

    def apply_margin(self, cos_target: torch.Tensor) -> torch.Tensor:
        m = self.margin
        if m == 0.0:
            return cos_target
        sin = torch.sqrt((1.0 - cos_target.pow(2)).clamp(min=0.0))
        with_margin = cos_target * math.cos(m) - sin * math.sin(m)
        return torch.where(cos_target > math.cos(math.pi - m), with_margin, cos_target - math.sin(math.pi - m) * m)


class SubCenterArcFaceHead(ArcFaceHead):
    """Sub-center ArcFace (Deng et al. 2020): K centres per class, the closest one counts."""

    def __init__(self, dim: int, num_classes: int, scale: float = 30.0, margin: float = 0.3, subcenters: int = 3):
        super().__init__(dim, num_classes, scale, margin, subcenters)


class CosFaceHead(MarginHead):
    """CosFace / additive margin (Wang et al. 2018): target logit cos(theta) - m (1st place GUIE 2022)."""

    def apply_margin(self, cos_target: torch.Tensor) -> torch.Tensor:
        return cos_target - self.margin


HEADS: dict[str, type[MarginHead]] = {"arcface": ArcFaceHead, "subcenter": SubCenterArcFaceHead,
                                      "cosface": CosFaceHead}


def margin_at_epoch(schedule: tuple[float, float, float] | None, base: float, epoch: int) -> float:
    """The dynamic margin of ``epoch`` (0-based): start + step * epoch, capped; ``base`` without a schedule."""
    if schedule is None:
        return base
    start, step, cap = schedule
    return min(cap, start + step * epoch)


def parse_margin_schedule(text: str | None) -> tuple[float, float, float] | None:
    """``"start:step:cap"`` -> floats (2nd place GUIE 2022 used 0.1:0.1:0.8)."""
    if not text:
        return None
    try:
        start, step, cap = (float(v) for v in text.split(":"))
    except ValueError:
        raise GuieError(f"--margin-schedule {text!r} is not START:STEP:CAP, e.g. 0.1:0.1:0.8") from None
    if not (0 <= start <= cap < 1.6 and step >= 0):
        raise GuieError(f"--margin-schedule {text!r} needs 0 <= START <= CAP < 1.6 and STEP >= 0")
    return start, step, cap


def build_head(kind: str, dim: int, num_classes: int, scale: float, margin: float, subcenters: int) -> MarginHead:
    """The margin head registered under ``kind``."""
    if kind not in HEADS:
        raise GuieError(f"unknown head {kind!r}{did_you_mean(kind, HEADS)}; choose one of: {', '.join(HEADS)}")
    if kind == "subcenter":
        return SubCenterArcFaceHead(dim, num_classes, scale, margin, subcenters)
    return HEADS[kind](dim, num_classes, scale, margin)
