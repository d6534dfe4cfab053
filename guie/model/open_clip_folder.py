"""open_clip's ``local-dir:PATH`` and ``hf-hub:ORG/REPO`` schemas, as guie checks them before any work.

Both are a folder (for the hub, the cache's snapshot of one commit) holding ``open_clip_config.json``
(``{"model_cfg": {...}, "preprocess_cfg": {...}}``, as ``open_clip.push_to_hf_hub`` writes it) and
the weights. open_clip 3.3 builds them with ``create_model("local-dir:PATH")``; guie checks the same
files first, so a missing one is a one-line error instead of open_clip's random-init warning, and
names the weights file open_clip will load (for the feature-cache identity).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from guie.errors import GuieError

OPEN_CLIP_CONFIG = "open_clip_config.json"
# What an hf-hub: repo must hold, each group in the order open_clip tries it (pretrained.download_pretrained_from_hf).
HUB_FILES = ((OPEN_CLIP_CONFIG,), ("open_clip_model.safetensors", "open_clip_pytorch_model.bin"))
# open_clip 3.3's choice of the weights file in a folder (factory._find_checkpoint_in_dir): these names in this
# order, else the first *.safetensors, then *.bin, then *.pth by name.
PREFERRED_WEIGHTS = ("open_clip_model.safetensors", "open_clip_pytorch_model.safetensors",
                     "open_clip_pytorch_model.bin", "open_clip_pytorch_model.pth",
                     "model.safetensors", "pytorch_model.bin", "pytorch_model.pth", "model.pth")
FOLDER_HINT = (f"a local-dir: folder holds {OPEN_CLIP_CONFIG} (with model_cfg) and the weights, e.g. "
               "open_clip_model.safetensors, as open_clip.push_to_hf_hub or `huggingface-cli download ORG/REPO "
               "--local-dir PATH` writes them")


def folder_weights(folder: Path) -> Path | None:
    """The weights file open_clip loads from ``folder`` (module constants), or None when there is none."""
    for name in PREFERRED_WEIGHTS:
        if (folder / name).is_file():
            return folder / name
    for pattern in ("*.safetensors", "*.bin", "*.pth"):
        found = sorted(p for p in folder.glob(pattern) if p.is_file())
        if found:
            return found[0]
    return None


def read_config(folder: Path, label: str) -> dict[str, Any]:
    """``open_clip_config.json`` of ``folder``; GuieError naming ``label`` when it is missing or unusable."""
    path = folder / OPEN_CLIP_CONFIG
    if not path.is_file():
        raise GuieError(f"{label} has no {OPEN_CLIP_CONFIG}; {FOLDER_HINT}")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise GuieError(f"{path} is not valid JSON ({exc}); fix or download it again") from None
    if not isinstance(config, dict) or not isinstance(config.get("model_cfg"), dict) \
            or not isinstance(config["model_cfg"].get("vision_cfg"), dict):
        raise GuieError(f"{path} has no model_cfg with a vision_cfg; it is not an open_clip model config")
    return config


def check_folder(folder: Path, label: str) -> tuple[dict[str, Any], Path]:
    """The config and the weights file of a local-dir: folder; GuieError, one line, for what is missing."""
    if not folder.is_dir():
        raise GuieError(f"{label}: no such folder; {FOLDER_HINT}")
    config = read_config(folder, label)
    weights = folder_weights(folder)
    if weights is None:
        raise GuieError(f"{label} holds {OPEN_CLIP_CONFIG} but no weights file (.safetensors, .bin or .pth); "
                        "put the model's weights beside it, e.g. open_clip_model.safetensors")
    return config, weights


def folder_preprocess(config: dict[str, Any], image_size: int | None) -> dict[str, Any]:
    """What open_clip's create_model makes of the config's preprocessing: its defaults (PreprocessCfg)
    under ``preprocess_cfg``, the size from ``vision_cfg.image_size`` or ``image_size``."""
    from dataclasses import asdict

    from open_clip.transform import PreprocessCfg, merge_preprocess_dict

    cfg = merge_preprocess_dict(asdict(PreprocessCfg()), config.get("preprocess_cfg") or {})
    cfg["size"] = image_size or config["model_cfg"]["vision_cfg"].get("image_size", 224)
    return cfg
