"""Small TorchScript models that follow the submission contract, and deliberately broken ones.

Stand-ins for guie-export's output: uint8 (N, 3, H, W) of any size (or (3, H, W)) -> float ->
resize to 32x32 -> flatten -> a fixed random linear map -> L2-normalise -> (N, 64) float32.
``write_export`` writes what the exporter writes: saved_model.pt, submission.zip, verify.json.
"""
from __future__ import annotations

import json
import warnings
import zipfile
from pathlib import Path

import torch
import torch.nn.functional as F


class ContractModel(torch.nn.Module):
    def __init__(self, dim: int = 64):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.register_buffer("weight", torch.randn(3 * 32 * 32, dim, generator=g) / 32.0)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 3:
            x = x.unsqueeze(0)
        x = F.interpolate(x.float() / 255.0, size=(32, 32), mode="bilinear", align_corners=False)
        return x.flatten(1) @ self.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.features(x), dim=1)


class WrongDim(ContractModel):
    def __init__(self):
        super().__init__(dim=32)


class NaNOutput(ContractModel):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.normalize(self.features(x), dim=1)
        return y + torch.full_like(y, float("nan"))


class Unnormalised(ContractModel):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x) * 3.0


class Noisy(ContractModel):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.features(x)
        return F.normalize(f + 0.1 * f.abs().mean() * torch.randn_like(f), dim=1)


class BatchDependent(ContractModel):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.features(x)
        return F.normalize(f + f.mean(0, keepdim=True), dim=1)


class Constant(ContractModel):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.features(x)
        return F.normalize(torch.ones_like(f) + 0.0 * f, dim=1)


class FixedSize(ContractModel):
    """Only takes 224x224 images, like a module traced at one size."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != 224 or x.shape[-2] != 224:
            raise RuntimeError("expected a 224x224 image")
        return F.normalize(self.features(x), dim=1)


def script(model: torch.nn.Module) -> torch.jit.ScriptModule:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit.script is deprecated in recent torch, still supported
        return torch.jit.script(model.eval())


def write_export(out: Path, model: torch.nn.Module | None = None) -> Path:
    """An export folder as guie-export writes it: saved_model.pt, submission.zip, verify.json."""
    out.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit.save is deprecated in recent torch, still supported
        torch.jit.save(script(model if model is not None else ContractModel()), str(out / "saved_model.pt"))
    with zipfile.ZipFile(out / "submission.zip", "w") as zf:
        zf.write(out / "saved_model.pt", arcname="saved_model.pt")
    (out / "verify.json").write_text(json.dumps({"torch_version": torch.__version__, "fmt": "torchscript",
                                                 "fp16": False, "max_abs_diff": 0.0}))
    return out
