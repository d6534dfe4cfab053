"""The frozen open_clip image tower: chosen by name, loaded from a pretrained tag, a local file, or random init."""
from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import open_clip
import torch
from open_clip.transform import PreprocessCfg, image_transform_v2
from torch import nn
from torchvision import transforms as T

from guie.errors import GuieError, did_you_mean

MODEL_CONFIG_DIR = Path(__file__).parent / "model_configs"
# Registered through open_clip's own config mechanism, so "guie-tiny" is a model name like any other.
open_clip.add_model_config(MODEL_CONFIG_DIR)
# Your own architectures: folders of open_clip model config JSON files, separated by os.pathsep.
for _folder in filter(None, os.environ.get("GUIE_MODEL_CONFIGS", "").split(os.pathsep)):
    if Path(_folder).is_dir():
        open_clip.add_model_config(Path(_folder))

WEIGHT_SUFFIXES = (".bin", ".pt", ".pth", ".safetensors", ".ckpt", ".npz")
INTERPOLATION = {"bicubic": T.InterpolationMode.BICUBIC, "bilinear": T.InterpolationMode.BILINEAR,
                 "nearest": T.InterpolationMode.NEAREST}


@dataclass(frozen=True)
class BackboneSpec:
    """Which backbone: an open_clip model name plus a pretrained tag, a weights file, or 'none'."""

    name: str
    pretrained: str = "none"
    seed: int = 0  # random-init seed, used when pretrained == "none"

    @property
    def is_file(self) -> bool:
        return self.pretrained != "none" and (
            os.sep in self.pretrained or self.pretrained.endswith(WEIGHT_SUFFIXES) or os.path.exists(self.pretrained)
        )

    def validate(self) -> BackboneSpec:
        """Check the name and the pretrained value without building anything."""
        models = open_clip.list_models()
        if self.name not in models:
            raise GuieError(
                f"unknown backbone {self.name!r}{did_you_mean(self.name, models)}; "
                "run `python -c \"import open_clip; print(open_clip.list_models())\"` for all names"
            )
        if self.is_file:
            if not Path(self.pretrained).is_file():
                raise GuieError(f"pretrained weights file {self.pretrained!r} does not exist; pass an existing "
                                ".bin/.pt/.safetensors file, a pretrained tag, or 'none'")
        elif self.pretrained != "none":
            tags = open_clip.list_pretrained_tags_by_model(self.name)
            if self.pretrained not in tags:
                known = ", ".join(tags) if tags else "none for this model"
                raise GuieError(
                    f"unknown pretrained tag {self.pretrained!r} for {self.name}{did_you_mean(self.pretrained, tags)}; "
                    f"known tags: {known}; or pass a weights file path or 'none'"
                )
        return self

    def fingerprint(self) -> str:
        """A stable identity of architecture and weights, for cache keys: a hash of the open_clip model
        config, plus the tag (and seed), or the weights file's size and edge hashes."""
        arch = hashlib.sha256(json.dumps(open_clip.get_model_config(self.name), sort_keys=True).encode()).hexdigest()[:12]
        if not self.is_file:
            return f"{self.name}@{arch}/{self.pretrained}" + (f"/seed{self.seed}" if self.pretrained == "none" else "")
        return f"{self.name}@{arch}/file:{file_fingerprint(self.pretrained)}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def file_fingerprint(path: str, edge: int = 1 << 20) -> str:
    """Size plus a hash of the first and last MiB: cheap on multi-GB checkpoints, changes when the file does."""
    size = os.path.getsize(path)
    digest = hashlib.sha256(str(size).encode())
    with open(path, "rb") as fh:
        digest.update(fh.read(edge))
        if size > edge:
            fh.seek(max(edge, size - edge))
            digest.update(fh.read(edge))
    return f"{size}-{digest.hexdigest()[:16]}"


def resolve_device(name: str) -> torch.device:
    """auto: CUDA when present, else CPU."""
    if name == "cuda" and not torch.cuda.is_available():
        raise GuieError("--device cuda asked for, but no CUDA device is available; use --device cpu or auto")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def feature_dim(name: str) -> int:
    """The width of the image tower's output for an open_clip model name."""
    cfg = open_clip.get_model_config(name)
    if cfg is None:
        raise GuieError(f"unknown backbone {name!r}{did_you_mean(name, open_clip.list_models())}")
    return int(cfg["embed_dim"])


def tower_family(name: str) -> str:
    """The image-tower family of an open_clip model name: which classes build its image tower.

    ``open_clip:vit``, ``open_clip:modified_resnet``, ``open_clip:coca`` (a ViT with attentional
    pooling), ``open_clip:hf`` (a Hugging Face image tower), or ``timm:<timm module>`` for timm
    towers (``timm:vision_transformer``, ``timm:eva``, ...), with ``:map`` appended for
    attention-pooled (MAP) heads. Raises GuieError for an unknown name.
    """
    cfg = open_clip.get_model_config(name)
    if cfg is None:
        raise GuieError(f"unknown backbone {name!r}{did_you_mean(name, open_clip.list_models())}")
    vision = cfg.get("vision_cfg", {})
    if vision.get("timm_model_name"):
        from timm.models import get_arch_name, is_model

        arch = get_arch_name(vision["timm_model_name"])
        module = "unknown"
        if is_model(arch):
            import timm.models._registry as registry

            module = registry.model_entrypoint(arch).__module__.rsplit(".", 1)[-1]
        return f"timm:{module}" + (":map" if vision.get("timm_pool") == "map" else "")
    if vision.get("hf_model_name"):
        return "open_clip:hf"
    if isinstance(vision.get("layers"), (list, tuple)):
        return "open_clip:modified_resnet"
    if vision.get("attentional_pool"):
        return "open_clip:coca"
    return "open_clip:vit"


# What guie-export reproduces inside the graph (guie.export.submission_module); a backbone outside it is refused
# by guie-train before any folder is written, not by guie-export after hours of training.
EXPORTABLE_RESIZE_MODES = ("shortest", "squash")
EXPORTABLE_INTERPOLATIONS = ("bicubic", "bilinear")


def export_problem(name: str, preprocess_cfg: dict[str, Any]) -> str | None:
    """Why guie-export could not reproduce this preprocessing in the graph, or None when it can.

    ``preprocess_cfg`` needs ``size`` (int or (h, w)), ``resize_mode`` and ``interpolation``,
    as open_clip's ``visual.preprocess_cfg`` or ``expected_preprocess`` give them.
    """
    size = preprocess_cfg["size"]
    if not isinstance(size, int) and size[0] != size[1]:
        return f"backbone {name} has a non-square input {tuple(size)}; guie-export supports square inputs only"
    if preprocess_cfg["resize_mode"] not in EXPORTABLE_RESIZE_MODES:
        return (f"backbone {name} uses resize_mode {preprocess_cfg['resize_mode']!r}; guie-export supports "
                f"{', '.join(EXPORTABLE_RESIZE_MODES)}")
    if preprocess_cfg["interpolation"] not in EXPORTABLE_INTERPOLATIONS:
        return (f"backbone {name} uses {preprocess_cfg['interpolation']} resizing; guie-export reproduces "
                f"open_clip's {' and '.join(EXPORTABLE_INTERPOLATIONS)} resizing only")
    return None


def expected_preprocess(spec: BackboneSpec) -> dict[str, Any]:
    """The preprocessing open_clip will give this backbone, from its configs alone (nothing is built):
    the model config's image size, and interpolation and resize mode from the model config
    (``image_interpolation``, ``image_resize_mode``) or the pretrained tag's config, else open_clip's
    defaults (bicubic, shortest)."""
    vision = (open_clip.get_model_config(spec.name) or {}).get("vision_cfg", {})
    tag: dict[str, Any] = {}
    if spec.pretrained != "none" and not spec.is_file:
        tag = open_clip.get_pretrained_cfg(spec.name, spec.pretrained) or {}
    return {"size": vision.get("image_size", 224),
            "interpolation": vision.get("image_interpolation") or tag.get("interpolation") or "bicubic",
            "resize_mode": vision.get("image_resize_mode") or tag.get("resize_mode") or "shortest"}


@dataclass
class Backbone:
    """A frozen image tower and the preprocessing open_clip defines for it."""

    spec: BackboneSpec
    visual: nn.Module
    preprocess_cfg: dict[str, Any]
    feature_dim: int

    @property
    def image_size(self) -> tuple[int, int]:
        size = self.preprocess_cfg["size"]
        return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def load_backbone(spec: BackboneSpec, device: str | torch.device = "cpu") -> Backbone:
    """Build the open_clip model, load its weights, keep only the frozen image tower."""
    spec.validate()
    if spec.is_file:
        model = _create(spec.name, spec.seed)
        try:
            open_clip.load_checkpoint(model, spec.pretrained)
        except Exception as exc:  # noqa: BLE001 - open_clip and torch report misfits and corrupt files many ways
            text = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
            misfit = isinstance(exc, AssertionError | KeyError) or any(
                s in str(exc) for s in ("state_dict", "size mismatch", "Missing key", "Unexpected key"))
            if misfit:
                raise GuieError(
                    f"weights file {spec.pretrained!r} does not fit backbone {spec.name} ({text}); "
                    "pass the weights made for that architecture or the matching --backbone"
                ) from None
            raise GuieError(f"could not read weights file {spec.pretrained!r} ({type(exc).__name__}: {text}); "
                            "pass a .bin/.pt/.safetensors state dict") from None
    elif spec.pretrained == "none":
        model = _create(spec.name, spec.seed)
    else:
        try:
            model = open_clip.create_model(spec.name, pretrained=spec.pretrained)
        except RuntimeError as exc:
            raise GuieError(
                f"could not load pretrained weights {spec.name}/{spec.pretrained} ({str(exc)[:160]}); "
                "offline, download them once and pass the file with --pretrained PATH"
            ) from None
    visual = model.visual
    if getattr(visual, "output_tokens", False):
        # CoCa's tower returns (pooled, tokens); CoCa's own encode_image embeds with the pooled output.
        visual.output_tokens = False
    preprocess_cfg = dict(visual.preprocess_cfg)
    del model  # only the image tower stays in memory
    visual.eval().requires_grad_(False).to(device)
    return Backbone(spec, visual, preprocess_cfg, feature_dim(spec.name))


def _create(name: str, seed: int) -> nn.Module:
    """Random init from ``seed``, without using or disturbing the caller's RNG state."""
    logging.disable(logging.WARNING)  # open_clip warns that no weights were loaded: that is the point
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return open_clip.create_model(name, pretrained=None, pretrained_image=False, pretrained_text=False)
    finally:
        logging.disable(logging.NOTSET)


def eval_transform(preprocess_cfg: dict[str, Any]) -> T.Compose:
    """open_clip's own inference transform for this model (resize, crop, to tensor, mean/std)."""
    return image_transform_v2(PreprocessCfg(**preprocess_cfg), is_train=False)


def augment_transform(preprocess_cfg: dict[str, Any], min_scale: float = 0.5) -> T.Compose:
    """Random resized crop and horizontal flip at the model's size, then its mean/std."""
    cfg = PreprocessCfg(**preprocess_cfg)
    return T.Compose([
        T.RandomResizedCrop(cfg.size, scale=(min_scale, 1.0), interpolation=INTERPOLATION[cfg.interpolation]),
        T.RandomHorizontalFlip(),
        T.ToTensor(),
        T.Normalize(cfg.mean, cfg.std),
    ])
