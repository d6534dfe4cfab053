"""What a ``--backbone`` value names, read without importing open_clip or timm.

Four kinds: an open_clip model name (``ViT-H-14``, ``guie-tiny``); open_clip's own schemas
``hf-hub:ORG/REPO`` and ``local-dir:PATH`` (a folder with ``open_clip_config.json`` and the
weights); and ``timm:NAME`` for a timm image model (``NAME`` a ``timm.list_models()`` name, with an
optional ``.TAG`` as timm spells pretrained weights, or a guie timm config). Also the folders of
model configs guie registers, and the one-line description of a backbone spec that logs and the
model card print.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

OPEN_CLIP, HF_HUB, LOCAL_DIR, TIMM = "open_clip", "hf-hub", "local-dir", "timm"
PREFIXES = {HF_HUB: "hf-hub:", LOCAL_DIR: "local-dir:", TIMM: "timm:"}
# The ``pretrained`` of a spec whose schema brings its own weights (open_clip ignores --pretrained there).
HUB_WEIGHTS = "hub"
FOLDER_WEIGHTS = "folder"
SCHEMA_WEIGHTS = {HF_HUB: HUB_WEIGHTS, LOCAL_DIR: FOLDER_WEIGHTS}
# --pretrained when not given, for an open_clip name: the tag of the default backbone, ViT-H-14.
DEFAULT_OPEN_CLIP_PRETRAINED = "laion2b_s32b_b79k"
MODEL_CONFIG_DIR = Path(__file__).parent / "model_configs"


def backbone_kind(name: str) -> str:
    """``open_clip``, ``hf-hub``, ``local-dir`` or ``timm``, from the prefix of ``name``."""
    return next((kind for kind, prefix in PREFIXES.items() if name.startswith(prefix)), OPEN_CLIP)


def identifier(name: str) -> str:
    """``name`` without its schema prefix (the repo id, the folder, the timm name)."""
    kind = backbone_kind(name)
    return name[len(PREFIXES[kind]):] if kind in PREFIXES else name


def model_config_folders() -> list[Path]:
    """guie's own config folder, then the folders in ``GUIE_MODEL_CONFIGS`` (os.pathsep-separated) that exist.

    Each holds open_clip model configs (``NAME.json`` with embed_dim, vision_cfg, text_cfg) and guie
    timm configs (``NAME.json`` with a ``timm`` key, see ``guie.model.timm_backbone``)."""
    extra = [Path(p) for p in filter(None, os.environ.get("GUIE_MODEL_CONFIGS", "").split(os.pathsep))]
    return [MODEL_CONFIG_DIR] + [p for p in extra if p.is_dir()]


def describe_backbone(spec: dict[str, Any]) -> str:
    """A backbone spec (``BackboneSpec.to_dict()``, or just name and pretrained) in words, e.g.
    ``open_clip `ViT-H-14` (`laion2b_s32b_b79k`)``, ``timm `vit_base_patch14_dinov2` (`lvd142m`) at 448 px``,
    ``open_clip `hf-hub:timm/ViT-B-16-SigLIP2` (hub revision `1a2b3c4d5e6f`)``. A local folder is named by
    its last part only (the path may be private)."""
    name, pretrained = str(spec.get("name", "")), spec.get("pretrained")
    kind = backbone_kind(name)
    if kind == LOCAL_DIR:
        text = f"open_clip `local-dir:.../{Path(identifier(name)).name}` (the folder's weights)"
    elif kind == HF_HUB:
        revision = spec.get("revision")
        text = f"open_clip `{name}`" + (f" (hub revision `{revision[:12]}`)" if revision else "")
    else:
        library = "timm" if kind == TIMM else "open_clip"
        shown = identifier(name) if kind == TIMM else name
        if pretrained and (os.sep in str(pretrained) or str(pretrained).startswith(".")):
            pretrained = f"file {Path(str(pretrained)).name}"
        text = f"{library} `{shown}`" + (f" (`{pretrained}`)" if pretrained else "")
    if spec.get("image_size"):
        text += f" at {spec['image_size']} px"
    return text
