"""Embedding ensembles (4th place GUIE 2022): several runs' embeddings concatenated, then a PCA to 64-D,
exported as one module.

The PCA is fitted on the members' embeddings of a seeded sample of the first run's training
images, each image fed as the host feeds it (uint8, original size, one at a time), so the
fit sees exactly what the exported module computes.
"""
from __future__ import annotations

import json
import random
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from guie.artifacts import RUN_CONFIG
from guie.data import load_source
from guie.data.images import load_rgb
from guie.errors import GuieError
from guie.export.build import build_submission_module
from guie.export.submission_module import SubmissionModule


class EnsembleModule(nn.Module):
    """Members' unit embeddings, concatenated, centred, projected on the PCA axes, L2-normalised."""

    def __init__(self, members: Sequence[SubmissionModule], mean: torch.Tensor, components: torch.Tensor):
        super().__init__()
        self.members = nn.ModuleList(members)
        self.register_buffer("pca_mean", mean.float())
        self.register_buffer("pca_components", components.float())  # (concatenated dim, output dim)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.dim() == 3:
            images = images.unsqueeze(0)
        parts: list[torch.Tensor] = []
        for member in self.members:
            parts.append(member(images))
        z = torch.cat(parts, dim=1)
        return F.normalize((z - self.pca_mean) @ self.pca_components, dim=-1)


def fit_pca(z: np.ndarray, dim: int) -> tuple[np.ndarray, np.ndarray, float]:
    """Mean, the top ``dim`` principal axes (columns), and the share of variance they keep."""
    if len(z) <= dim:
        raise GuieError(f"the ensemble PCA needs more than {dim} images to fit {dim} axes, got {len(z)}; "
                        "raise --ensemble-images or use runs with more training images")
    mean = z.mean(0)
    _, s, vt = np.linalg.svd(z - mean, full_matrices=False)
    kept = float((s[:dim] ** 2).sum() / (s ** 2).sum())
    return mean, vt[:dim].T, kept


def fitting_images(run: Path, n: int, seed: int) -> list[str]:
    """A seeded sample of the run's training images (from its config.json data sources)."""
    config = (run if run.is_dir() else run.parent) / RUN_CONFIG
    if not config.is_file():
        raise GuieError(f"{str(run)!r} has no {RUN_CONFIG} to find its training images; pass run folders")
    specs = json.loads(config.read_text())["data"]
    paths = sorted({r.path for spec in specs for r in load_source(spec).records if r.split == "train"})
    random.Random(seed).shuffle(paths)
    return paths[:n]


def build_ensemble(runs: Sequence[str | Path], dim: int = 64, images: int = 2000, seed: int = 0,
                   chunk: int = 32, log: Callable[[str], None] = print) -> tuple[EnsembleModule, dict[str, Any]]:
    """Members, PCA fit and the eager ensemble module, with a description for verify.json."""
    if len(runs) < 2:
        raise GuieError("an ensemble needs at least two runs")
    if images <= dim:  # checked before any image is embedded
        raise GuieError(f"--ensemble-images {images} is too few: the PCA to {dim}-D needs more than {dim} images")
    members, infos = [], []
    for run in runs:
        module, _, info = build_submission_module(run, chunk=chunk)
        members.append(module)
        infos.append(info)
    paths = fitting_images(Path(runs[0]), images, seed)
    log(f"fitting the ensemble PCA on {len(paths)} training images of {runs[0]}")
    z = []
    with torch.inference_mode():
        for path in tqdm(paths, desc="ensemble PCA", unit="img", dynamic_ncols=True):
            try:
                img = load_rgb(path)
            except Exception:  # noqa: BLE001 - unreadable images are skipped from the fit
                continue
            x = torch.from_numpy(np.array(img, dtype=np.uint8)).permute(2, 0, 1).unsqueeze(0)
            z.append(torch.cat([m(x) for m in members], dim=1)[0].numpy())
    mean, components, kept = fit_pca(np.stack(z).astype(np.float64), dim)
    module = EnsembleModule(members, torch.from_numpy(mean), torch.from_numpy(components)).eval()
    info = {"dim": dim, "fp16": False, "tta": "none", "members": infos,
            "ensemble": {"runs": [str(Path(r).resolve()) for r in runs], "method": "pca",
                         "fit_images": len(z), "variance_kept": kept,
                         "concatenated_dim": int(sum(i["dim"] for i in infos))}}
    log(f"PCA {info['ensemble']['concatenated_dim']} -> {dim} keeps {kept:.1%} of the variance")
    return module, info



