"""The embedder: frozen image tower + trained projection, pixels in, L2-normalised 64-D out."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from guie.errors import GuieError
from guie.model.backbone import Backbone, load_backbone
from guie.model.model_file import backbone_spec_of, projection_from, read_model_file
from guie.model.projection import Projection


class Embedder(nn.Module):
    """Normalised pixel tensors ``(N, 3, S, S)`` -> embeddings ``(N, dim)``, unit length.

    ``sizes`` ``(N, 2)`` are the original (height, width) of the images, needed when the
    projection was trained with size features and ignored otherwise.
    """

    def __init__(self, visual: nn.Module, projection: Projection):
        super().__init__()
        self.visual = visual
        self.projection = projection

    def forward(self, pixels: torch.Tensor, sizes: torch.Tensor | None = None) -> torch.Tensor:
        return self.projection(self.visual(pixels), sizes)


def load_embedder(model: str | Path, device: str | torch.device = "cpu") -> tuple[Embedder, Backbone]:
    """Rebuild the eager embedder from a run folder or model.pt; also return its backbone (for preprocessing)."""
    data = read_model_file(model)
    backbone = load_backbone(backbone_spec_of(data, model), device)
    if data.get("backbone_finetuned"):
        # Stage 2 fine-tuned some blocks: those weights replace the pretrained ones.
        missing = set(data["backbone_finetuned"]) - set(backbone.visual.state_dict())
        if missing:
            raise GuieError(f"model file {str(model)!r} holds fine-tuned weights the backbone lacks "
                            f"(e.g. {sorted(missing)[0]}); it was made with another open_clip version")
        backbone.visual.load_state_dict(data["backbone_finetuned"], strict=False)
    embedder = Embedder(backbone.visual, projection_from(data)).to(device).eval()
    return embedder, backbone
