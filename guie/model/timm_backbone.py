"""timm image models as frozen backbones: ``--backbone timm:NAME``.

``NAME`` is a ``timm.list_models()`` architecture, optionally with its pretrained tag as timm spells
it (``vit_base_patch14_dinov2.lvd142m``), or a guie timm config: a ``NAME.json`` in a model config
folder (``guie.model.backbone_names.model_config_folders``) holding
``{"timm": {"model": ARCH, "kwargs": {...}, "pretrained_cfg": {...}}}``, a timm architecture with
constructor arguments and an overlay on its pretrained config (how the tests shrink DINOv2, EVA and
ConvNeXt; architectures are data, as open_clip's configs are).

The tower is ``timm.create_model(..., num_classes=0)``: its output is the model's pooled features.
Weights: a pretrained tag (its file fetched from the Hugging Face hub through ``guie.model.hub``,
pinned to a commit), a local weights file (a timm state dict, run through the architecture's
own ``checkpoint_filter_fn`` where its module has one), or none (random init from the seed). Both
load strictly (the classifier of an ImageNet checkpoint is dropped, as timm does for
``num_classes=0``), so a misfit file is an error, not a silent random init. ``image_size`` runs the
model at another resolution: ``set_input_size`` after the weights are in, so the position embedding
is resampled once, at load (timm's ``resample_abs_pos_embed``); a model without it (a ConvNeXt) runs
at any size as it is. Preprocessing is the model's own pretrained config as
``timm.data.resolve_data_config`` gives it (input size, interpolation, mean, std, crop_pct, crop_mode).
"""
from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import torch
from torch import nn

from guie.errors import GuieError, did_you_mean
from guie.model.backbone_names import model_config_folders
from guie.model.hub import HubFiles, find_files, split_hub_id

# timm's own order for a hub repo's weights (timm.models._hub.load_state_dict_from_hf).
TIMM_HUB_WEIGHTS = ("model.safetensors", "pytorch_model.bin")
CROP_MODES = {"center": "shortest", "squash": "squash"}  # timm crop_mode -> the exported graph's resize mode


@dataclass(frozen=True)
class TimmModel:
    """What a ``timm:NAME`` builds: an architecture, its constructor arguments, an overlay on its pretrained
    config, and the guie timm config it came from (None for a plain timm name)."""

    arch: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    overlay: dict[str, Any] = field(default_factory=dict)
    config: str | None = None

    def identity(self) -> str:
        """A hash of everything that shapes the network and its preprocessing."""
        data = {"arch": self.arch, "kwargs": self.kwargs, "overlay": self.overlay}
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:12]


def timm_configs() -> dict[str, dict[str, Any]]:
    """The guie timm configs of every model config folder, by file stem (later folders win)."""
    found: dict[str, dict[str, Any]] = {}
    for folder in model_config_folders():
        for path in sorted(folder.glob("*.json")):
            try:
                data = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            if isinstance(data, dict) and isinstance(data.get("timm"), dict):
                found[path.stem] = data["timm"]
    return found


def split_tag(name: str) -> tuple[str, str | None]:
    """``arch.tag`` -> (arch, tag); a name without a dot -> (name, None)."""
    arch, _, tag = name.partition(".")
    return arch, tag or None


@cache
def _architectures() -> frozenset[str]:
    import timm

    return frozenset(timm.list_models())


def timm_model(name: str) -> TimmModel:
    """The model a timm name (without ``timm:`` and without a tag) stands for. GuieError when unknown."""
    configs = timm_configs()
    if name in configs:
        entry = configs[name]
        if not isinstance(entry.get("model"), str):
            raise GuieError(f"guie timm config {name!r} has no \"model\" (a timm architecture name); fix the JSON")
        return TimmModel(entry["model"], dict(entry.get("kwargs") or {}), dict(entry.get("pretrained_cfg") or {}), name)
    if name not in _architectures():
        raise GuieError(f"unknown timm model {name!r}{did_you_mean(name, sorted(_architectures() | set(configs)))}; "
                        "run `python -c \"import timm; print(timm.list_models('*dino*'))\"` for names")
    return TimmModel(name)


def pretrained_tags(arch: str) -> list[str]:
    """The pretrained tags timm knows for ``arch``, default first."""
    import timm

    return [n.partition(".")[2] for n in timm.list_pretrained(f"{arch}.*") if n.partition(".")[0] == arch]


def default_tag(arch: str) -> str | None:
    """timm's default pretrained tag of ``arch`` (what ``pretrained=True`` loads), or None."""
    tags = pretrained_tags(arch)
    return tags[0] if tags else None


def check_tag(model: TimmModel, tag: str) -> None:
    """GuieError unless ``tag`` is one of ``model.arch``'s pretrained tags."""
    tags = pretrained_tags(model.arch)
    if tag not in tags:
        known = ", ".join(tags[:12]) + (" ..." if len(tags) > 12 else "") if tags else "none for this model"
        raise GuieError(f"unknown timm pretrained tag {tag!r} for {model.arch}{did_you_mean(tag, tags)}; known tags: "
                        f"{known}; or pass a weights file path or 'none'")


def hub_weights(model: TimmModel, tag: str, revision: str | None,
                log: Callable[[str], None] | None) -> HubFiles:
    """Where tag ``tag``'s weights are on the Hugging Face hub, pinned to a commit (``guie.model.hub``)."""
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(f"{model.arch}.{tag}")
    if cfg is None or not cfg.hf_hub_id:
        raise GuieError(f"timm has no Hugging Face hub copy of {model.arch}.{tag} (only "
                        f"{getattr(cfg, 'url', None) or 'no download'}); download the file yourself and pass "
                        "--pretrained FILE")
    repo, pinned = split_hub_id(cfg.hf_hub_id)
    names = (cfg.hf_hub_filename,) if cfg.hf_hub_filename else TIMM_HUB_WEIGHTS
    return find_files(repo, [names], f"timm:{model.arch}.{tag}", revision=revision or pinned, log=log,
                      local=f"pass the weights file ({names[0]} of {repo}) as --pretrained FILE")


def create(model: TimmModel, tag: str | None, seed: int, device: str | torch.device = "cpu") -> nn.Module:
    """The network with random weights from ``seed`` (the caller's RNG untouched), ``num_classes=0``, with
    tag ``tag``'s pretrained config (input size, mean, ...) under ``model.overlay``; built on ``device``
    (``meta`` builds without memory or compute, for checks)."""
    import timm

    with torch.random.fork_rng(devices=[]), torch.device(device):
        torch.manual_seed(seed)
        return timm.create_model(f"{model.arch}.{tag}" if tag else model.arch, pretrained=False, num_classes=0,
                                 pretrained_cfg_overlay=dict(model.overlay) or None, **model.kwargs)


def load_weights(network: nn.Module, path: str | Path, label: str) -> None:
    """A timm state dict file into ``network``, strictly, after the architecture's ``checkpoint_filter_fn``
    (where its module has one) and without the classifier weights a ``num_classes=0`` model lacks.
    GuieError naming the file for a misfit or an unreadable file."""
    from timm.models import load_state_dict

    try:
        state = load_state_dict(str(path))
    except Exception as exc:  # noqa: BLE001 - torch and safetensors report corrupt files many ways
        raise GuieError(f"could not read weights file {str(path)!r} ({type(exc).__name__}: "
                        f"{str(exc).strip()[:160]}); pass a timm .safetensors/.bin/.pth state dict") from None
    filter_fn = getattr(sys.modules.get(type(network).__module__), "checkpoint_filter_fn", None)
    try:
        if filter_fn is not None:
            state = filter_fn(state, network)
        own = network.state_dict()
        classifiers = network.pretrained_cfg.get("classifier") or ()
        for prefix in (classifiers,) if isinstance(classifiers, str) else classifiers:
            for key in (f"{prefix}.weight", f"{prefix}.bias"):
                if key not in own:
                    state.pop(key, None)
        network.load_state_dict(state, strict=True)
    except Exception as exc:  # noqa: BLE001 - misfits come as RuntimeError, KeyError, AssertionError ...
        text = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise GuieError(f"weights file {str(path)!r} does not fit backbone {label} ({text}); pass the weights made "
                        "for that architecture or the matching --backbone") from None


def set_image_size(network: nn.Module, size: int, label: str) -> None:
    """Run ``network`` at ``size`` x ``size``: ``set_input_size`` where the model has it (the position
    embedding resampled once, here), else as it is (a convolutional model). GuieError when a forward at
    that size fails, checked on the meta device when ``network`` is there."""
    try:
        if hasattr(network, "set_input_size"):
            network.set_input_size(img_size=(size, size))
        if next(network.parameters()).device.type == "meta":
            network(torch.zeros(1, 3, size, size, device="meta"))
    except Exception as exc:  # noqa: BLE001 - the model's own shape checks, any type
        text = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise GuieError(f"backbone {label} cannot run at --image-size {size} ({text}); pick a size it accepts") from None


def data_config(network: nn.Module, image_size: int | None) -> dict[str, Any]:
    """The preprocessing guie stores for a timm tower: ``timm.data.resolve_data_config`` of the model's own
    pretrained config (``image_size`` overriding its input size), in the keys guie's preprocessing
    carries everywhere (``size``, ``mean``, ``std``, ``interpolation``, ``resize_mode`` as in
    open_clip's cfg) plus timm's ``crop_pct`` and ``crop_mode``."""
    from timm.data import resolve_data_config

    args = {"input_size": (3, image_size, image_size)} if image_size else {}
    cfg = resolve_data_config(args, model=network)
    height, width = int(cfg["input_size"][1]), int(cfg["input_size"][2])
    return {"size": height if height == width else [height, width], "mode": "RGB",
            "mean": [float(v) for v in cfg["mean"]], "std": [float(v) for v in cfg["std"]],
            "interpolation": cfg["interpolation"], "resize_mode": CROP_MODES.get(cfg["crop_mode"], cfg["crop_mode"]),
            "fill_color": 0, "crop_pct": float(cfg["crop_pct"]), "crop_mode": cfg["crop_mode"]}


def feature_width(network: nn.Module) -> int:
    """The width of the pooled output of a ``num_classes=0`` timm model."""
    return int(getattr(network, "head_hidden_size", None) or network.num_features)


def family(model: TimmModel) -> str:
    """``timm:<module>`` of the architecture (``timm:vision_transformer``, ``timm:eva``, ``timm:convnext``)."""
    from timm.models import model_entrypoint

    return "timm:" + model_entrypoint(model.arch).__module__.rsplit(".", 1)[-1]


def eval_transform(cfg: dict[str, Any]) -> Callable:
    """timm's own PIL inference transform for a guie preprocess cfg of a timm tower (``data_config``)."""
    from timm.data import create_transform

    size = cfg["size"]
    return create_transform(input_size=(3, size, size) if isinstance(size, int) else (3, *size),
                            interpolation=cfg["interpolation"], mean=tuple(cfg["mean"]), std=tuple(cfg["std"]),
                            crop_pct=cfg["crop_pct"], crop_mode=cfg["crop_mode"], is_training=False)
