"""The run's ``model.pt``: everything needed to rebuild the embedder given the backbone weights."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from guie.artifacts import TAKES_RUN, identify
from guie.errors import GuieError
from guie.fileio import torch_save
from guie.model.backbone import BackboneSpec
from guie.model.backbone_names import LOCAL_DIR
from guie.model.heads import MarginHead
from guie.model.projection import Projection

MODEL_FORMAT = "guie-model/1"


def save_model_file(path: str | Path, *, backbone: BackboneSpec, preprocess_cfg: dict[str, Any],
                    projection: Projection, head: MarginHead, head_kind: str, classes: list[str],
                    config: dict[str, Any], version: str,
                    raw_weights: dict[str, dict[str, torch.Tensor]] | None = None,
                    backbone_finetuned: dict[str, torch.Tensor] | None = None) -> None:
    """Write model.pt atomically. With --ema, ``projection``/``head`` hold the averaged weights
    (the ones every later stage uses) and ``raw_weights`` the last optimiser step's. After stage 2,
    ``backbone_finetuned`` holds the fine-tuned image-tower weights that replace the pretrained ones."""
    torch_save({
        "format": MODEL_FORMAT,
        "guie_version": version,
        "backbone": backbone.to_dict(),
        # what the features were made with: a local weights file or local-dir: folder is checked against it
        # whenever the run's backbone is rebuilt (backbone_spec_of)
        "backbone_fingerprint": backbone.fingerprint(),
        "preprocess_cfg": {k: list(v) if isinstance(v, tuple) else v for k, v in preprocess_cfg.items()},
        "projection": {"config": projection.config(), "state_dict": projection.state_dict()},
        "head": {"kind": head_kind, "config": head.config(), "state_dict": head.state_dict()},
        "classes": list(classes),
        "config": config,
        **({"raw_weights": raw_weights} if raw_weights else {}),
        **({"backbone_finetuned": backbone_finetuned} if backbone_finetuned else {}),
    }, path)


def read_model_file(path: str | Path) -> dict[str, Any]:
    """Load a model.pt (or the one inside a run folder), refusing missing or foreign files clearly.

    The path is resolved by ``guie.artifacts.identify`` (what a run folder and a checkpoint are);
    the format check is this stage's own. Raises GuieError in one line."""
    path = identify(path, TAKES_RUN).model_file
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for foreign or truncated files
        raise GuieError(f"{str(path)!r} is not a readable guie model file ({type(exc).__name__}); "
                        "pass the model.pt written by guie-train") from None
    if not isinstance(data, dict) or data.get("format") != MODEL_FORMAT:
        raise GuieError(f"{str(path)!r} is not a guie model file (expected format {MODEL_FORMAT}); "
                        "pass the model.pt written by guie-train")
    return data


def backbone_spec_of(data: dict[str, Any], path: str | Path) -> BackboneSpec:
    """The backbone a model file (``data``, read from ``path``) was trained on, checked against the weights
    on disk now: a ``--pretrained FILE`` or a ``local-dir:`` folder whose weights changed since training
    (the fingerprint of ``BackboneSpec.fingerprint``: size and edge hashes of the weights, the config's
    hash) would give other features than the projection was trained on. Raises GuieError, one line.
    Files written before the fingerprint was recorded are taken as they are."""
    spec = BackboneSpec(**data["backbone"])
    recorded = data.get("backbone_fingerprint")
    if recorded is not None and (spec.kind == LOCAL_DIR or spec.is_file):  # hub weights are pinned by commit
        now = spec.validate().fingerprint()  # a missing folder or file: its own one line
        if now != recorded:
            raise GuieError(f"the backbone weights of {str(path)!r} changed since it was trained ({spec.name}: "
                            f"recorded {recorded}, now {now}); put back the weights the run was trained on, or "
                            "train a new run on these")
    return spec


def projection_from(data: dict[str, Any]) -> Projection:
    """Rebuild the trained projection, in eval mode."""
    projection = Projection(**data["projection"]["config"])
    projection.load_state_dict(data["projection"]["state_dict"])
    return projection.eval()
