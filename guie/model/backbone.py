"""The frozen image tower: chosen by name, loaded from a pretrained tag, a local file, or random init.

Kinds (``guie.model.backbone_names``): an open_clip model name with ``--pretrained`` a tag, a
weights file or ``none``; open_clip's ``hf-hub:ORG/REPO`` and ``local-dir:PATH`` schemas, which
bring their own weights (``guie.model.open_clip_folder``, ``guie.model.hub``); and ``timm:NAME``
(``guie.model.timm_backbone``). ``image_size`` runs any of them at another resolution (open_clip's
``force_image_size``, timm's ``set_input_size``), the position embedding resampled once at load.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import open_clip
import torch
from open_clip.transform import PreprocessCfg, image_transform_v2
from torch import nn
from torchvision import transforms as T

from guie.errors import GuieError, did_you_mean
from guie.model import timm_backbone
from guie.model.backbone_names import (
    DEFAULT_OPEN_CLIP_PRETRAINED,
    HF_HUB,
    LOCAL_DIR,
    MODEL_CONFIG_DIR,  # noqa: F401 - where guie-tiny lives, imported from here
    OPEN_CLIP,
    PREFIXES,
    SCHEMA_WEIGHTS,
    TIMM,
    backbone_kind,
    identifier,
    model_config_folders,
)
from guie.model.hub import find_files, snapshot_folder
from guie.model.open_clip_folder import (
    HUB_FILES,
    OPEN_CLIP_CONFIG,
    check_folder,
    folder_preprocess,
    read_config,
)

# Registered through open_clip's own config mechanism, so "guie-tiny" is a model name like any other; then
# your own architectures: folders of open_clip model config JSON files in GUIE_MODEL_CONFIGS (os.pathsep).
for _folder in model_config_folders():
    open_clip.add_model_config(_folder)

WEIGHT_SUFFIXES = (".bin", ".pt", ".pth", ".safetensors", ".ckpt", ".npz")
INTERPOLATION = {"bicubic": T.InterpolationMode.BICUBIC, "bilinear": T.InterpolationMode.BILINEAR,
                 "nearest": T.InterpolationMode.NEAREST}
MAX_IMAGE_SIZE = 4096
# the hub's repo ids: ORG/NAME, each of letters, digits, '-', '_', '.' (huggingface_hub's validate_repo_id)
HUB_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
SCHEMA_LOCAL = "bring the repo's files as --backbone local-dir:PATH (hf download ORG/REPO --local-dir PATH)"


@dataclass(frozen=True)
class BackboneSpec:
    """Which backbone: a name of one of the kinds (module docstring) and its weights.

    ``pretrained``: an open_clip or timm pretrained tag, a weights file, or ``none`` (random init from
    ``seed``); for ``hf-hub:`` and ``local-dir:`` the marker ``hub`` / ``folder`` (the schema brings
    its weights). ``image_size``: run the tower at this many pixels a side instead of its config's.
    ``revision``: the Hugging Face hub commit the weights were taken from (``hf-hub:`` and timm tags),
    pinned by :meth:`validate`. Build one from user options with :meth:`resolve`.
    """

    name: str
    pretrained: str = "none"
    seed: int = 0  # random-init seed, used when pretrained == "none"
    image_size: int | None = None
    revision: str | None = None

    @property
    def kind(self) -> str:
        """``open_clip``, ``hf-hub``, ``local-dir`` or ``timm``."""
        return backbone_kind(self.name)

    @property
    def is_file(self) -> bool:
        return self.kind in (OPEN_CLIP, TIMM) and self.pretrained != "none" and (
            os.sep in self.pretrained or self.pretrained.endswith(WEIGHT_SUFFIXES) or os.path.exists(self.pretrained)
        )

    @classmethod
    def resolve(cls, backbone: str, pretrained: str | None = None, image_size: int | None = None, seed: int = 0,
                log: Callable[[str], None] | None = None) -> BackboneSpec:
        """The validated spec for ``--backbone``, ``--pretrained`` (None: not given) and ``--image-size``.

        Not given, ``pretrained`` is ``laion2b_s32b_b79k`` for an open_clip name (the default ViT-H-14's
        tag), the schema's own weights for ``hf-hub:``/``local-dir:``, the tag in ``timm:ARCH.TAG``, or
        timm's default tag for ``timm:ARCH`` (``none`` for a guie timm config). A ``local-dir:`` path is
        made absolute. Raises GuieError (one line) for a --pretrained the schema does not take, a tag
        given twice, and everything :meth:`validate` refuses.
        """
        kind = backbone_kind(backbone)
        if kind in PREFIXES and not identifier(backbone).strip():
            raise GuieError(f"--backbone {backbone!r} names nothing after {PREFIXES[kind]!r}; e.g. "
                            + {HF_HUB: "hf-hub:timm/ViT-B-16-SigLIP2", LOCAL_DIR: "local-dir:/models/siglip2",
                               TIMM: "timm:vit_base_patch14_dinov2.lvd142m"}[kind])
        if kind == OPEN_CLIP:
            spec = cls(backbone, DEFAULT_OPEN_CLIP_PRETRAINED if pretrained is None else pretrained, seed, image_size)
        elif kind in SCHEMA_WEIGHTS:
            if pretrained not in (None, SCHEMA_WEIGHTS[kind]):
                source = "hub repo" if kind == HF_HUB else "folder"
                raise GuieError(f"--pretrained {pretrained} does not apply to {backbone}: the weights come from the "
                                f"{source} (open_clip ignores --pretrained for {kind}:); drop --pretrained")
            name = backbone
            if kind == LOCAL_DIR:
                name = PREFIXES[LOCAL_DIR] + str(Path(identifier(backbone)).expanduser().resolve())
            spec = cls(name, SCHEMA_WEIGHTS[kind], seed, image_size)
        else:
            arch, tag = timm_backbone.split_tag(identifier(backbone))
            if tag and pretrained is not None and pretrained != tag:
                raise GuieError(f"--backbone {backbone} names the timm weights {tag!r} and --pretrained {pretrained!r} "
                                "names others; pass one of them")
            chosen = pretrained if pretrained is not None else tag
            if chosen is None:
                model = timm_backbone.timm_model(arch)
                chosen = "none" if model.config else timm_backbone.default_tag(arch)
                if chosen is None:
                    raise GuieError(f"timm has no pretrained weights for {arch}; pass --pretrained none (random init) "
                                    "or --pretrained FILE")
            spec = cls(PREFIXES[TIMM] + arch, chosen, seed, image_size)
        return spec.validate(log)

    def validate(self, log: Callable[[str], None] | None = None) -> BackboneSpec:
        """Check the name, the weights and the image size without building anything (timm: built on the meta
        device, which costs neither memory nor compute); return the spec, with the hub ``revision`` pinned
        where the weights come from the Hugging Face hub (checked there with a bounded wait and a progress
        line on ``log``, or found in the cache; ``guie.model.hub``). Raises GuieError, one line."""
        size = self.image_size
        if size is not None and (isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= MAX_IMAGE_SIZE):
            raise GuieError(f"--image-size {size!r} is not a size in pixels (1 to {MAX_IMAGE_SIZE}); pass e.g. 448")
        kind = self.kind
        if kind in SCHEMA_WEIGHTS and self.pretrained != SCHEMA_WEIGHTS[kind]:
            raise GuieError(f"--pretrained {self.pretrained} does not apply to {self.name}: the schema brings its own "
                            "weights; drop --pretrained")
        if kind == LOCAL_DIR:
            check_folder(Path(identifier(self.name)), self.name)
            return self
        if kind == HF_HUB:
            repo = identifier(self.name).partition("@")[0]
            if not HUB_REPO_ID.match(repo):
                raise GuieError(f"--backbone {self.name!r}: {repo!r} is not a Hugging Face repo id (ORG/REPO, letters, "
                                "digits, '-', '_' and '.'); e.g. hf-hub:timm/ViT-B-16-SigLIP2")
            files = find_files(identifier(self.name), HUB_FILES, self.name, revision=self.revision, log=log,
                               local=SCHEMA_LOCAL)
            return dataclasses.replace(self, revision=files.commit)
        if kind == TIMM:
            return self._validate_timm(log)
        models = open_clip.list_models()
        if self.name not in models:
            raise GuieError(
                f"unknown backbone {self.name!r}{did_you_mean(self.name, models)}; "
                "run `python -c \"import open_clip; print(open_clip.list_models())\"` for all names, or use "
                "hf-hub:ORG/REPO, local-dir:PATH or timm:NAME"
            )
        self._check_file()
        if not self.is_file and self.pretrained != "none":
            tags = open_clip.list_pretrained_tags_by_model(self.name)
            if self.pretrained not in tags:
                known = ", ".join(tags) if tags else "none for this model"
                raise GuieError(
                    f"unknown pretrained tag {self.pretrained!r} for {self.name}{did_you_mean(self.pretrained, tags)}; "
                    f"known tags: {known}; or pass a weights file path or 'none'"
                )
        return self

    def _check_file(self) -> None:
        if self.is_file and not Path(self.pretrained).is_file():
            raise GuieError(f"pretrained weights file {self.pretrained!r} does not exist; pass an existing "
                            ".bin/.pt/.safetensors file, a pretrained tag, or 'none'")

    def _validate_timm(self, log: Callable[[str], None] | None) -> BackboneSpec:
        arch, tag = timm_backbone.split_tag(identifier(self.name))
        if tag:
            raise GuieError(f"backbone spec {self.name!r} carries the tag {tag!r} in its name; build it with "
                            "BackboneSpec.resolve (or pass the tag as pretrained)")
        model = timm_backbone.timm_model(arch)
        self._check_file()
        spec, weights_tag = self, None
        if not self.is_file and self.pretrained != "none":
            timm_backbone.check_tag(model, self.pretrained)
            weights_tag = self.pretrained
            files = timm_backbone.hub_weights(model, self.pretrained, self.revision, log)
            spec = dataclasses.replace(self, revision=files.commit)
        try:
            network = timm_backbone.create(model, weights_tag, self.seed, "meta")
        except Exception as exc:  # noqa: BLE001 - a guie timm config's kwargs can fail any way
            raise GuieError(f"timm cannot build {self.name} ({type(exc).__name__}: {str(exc).strip()[:160]}); "
                            "fix the guie timm config's kwargs") from None
        if self.image_size:
            timm_backbone.set_image_size(network, self.image_size, self.name)
        return spec

    def fingerprint(self) -> str:
        """A stable identity of architecture and weights, for cache keys: a hash of the model config (open_clip's,
        the folder's, or the timm architecture and its arguments), plus the tag (and seed), the hub commit,
        or the weights file's size and edge hashes; and the image size when it is not the config's."""
        size = f"/size{self.image_size}" if self.image_size else ""
        kind = self.kind
        if kind == HF_HUB:
            # a hub commit is immutable: it fixes both the config and the weights
            return f"{self.name}/rev:{self.revision}{size}"
        if kind == LOCAL_DIR:
            config, weights = check_folder(Path(identifier(self.name)), self.name)
            arch = config_hash({k: config.get(k) for k in ("model_cfg", "preprocess_cfg")})
            return f"local-dir@{arch}/file:{file_fingerprint(str(weights))}{size}"
        if kind == TIMM:
            arch = timm_backbone.timm_model(identifier(self.name)).identity()
            weights = (f"file:{file_fingerprint(self.pretrained)}" if self.is_file else
                       f"none/seed{self.seed}" if self.pretrained == "none" else f"{self.pretrained}@{self.revision}")
            return f"{self.name}@{arch}/{weights}{size}"
        arch = config_hash(open_clip.get_model_config(self.name))
        if not self.is_file:
            return (f"{self.name}@{arch}/{self.pretrained}" + (f"/seed{self.seed}" if self.pretrained == "none" else "")
                    + size)
        return f"{self.name}@{arch}/file:{file_fingerprint(self.pretrained)}{size}"

    @property
    def cache_label(self) -> str:
        """A short, file-system-safe name for folders keyed by this backbone (an open_clip name as it was:
        '/' made '_'; a local folder by its last part)."""
        if self.kind == OPEN_CLIP:
            return self.name.replace("/", "_")
        ident = Path(identifier(self.name)).name if self.kind == LOCAL_DIR else identifier(self.name)
        return re.sub(r"[^A-Za-z0-9._-]+", "_", f"{self.kind}_{ident}")[:80]

    def to_dict(self) -> dict[str, Any]:
        """name, pretrained and seed, plus image_size and revision when set (model.pt, verify.json)."""
        return {k: v for k, v in asdict(self).items() if v is not None or k not in ("image_size", "revision")}


def config_hash(config: Any) -> str:
    """12 hex digits of the SHA-256 of ``config`` as sorted JSON."""
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:12]


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
    """The image-tower family of a backbone name: which classes build its image tower.

    ``open_clip:vit``, ``open_clip:modified_resnet``, ``open_clip:coca`` (a ViT with attentional
    pooling), ``open_clip:hf`` (a Hugging Face image tower), or ``timm:<timm module>`` for timm
    towers (``timm:vision_transformer``, ``timm:eva``, ...), with ``:map`` appended for
    attention-pooled (MAP) heads; for ``local-dir:`` and ``hf-hub:`` the family of the folder's
    config; for ``timm:NAME`` (a timm model used directly, with timm's own pooling) ``timm:<module>``
    with ``:direct`` appended. Raises GuieError for an unknown name.
    """
    kind = backbone_kind(name)
    if kind == TIMM:
        arch, _ = timm_backbone.split_tag(identifier(name))
        return timm_backbone.family(timm_backbone.timm_model(arch)) + ":direct"
    if kind == LOCAL_DIR:
        cfg = read_config(Path(identifier(name)), name)["model_cfg"]
    else:
        cfg = open_clip.get_model_config(name)
    if cfg is None:
        raise GuieError(f"unknown backbone {name!r}{did_you_mean(name, open_clip.list_models())}")
    vision = cfg.get("vision_cfg", {})
    if vision.get("timm_model_name"):
        from timm.models import get_arch_name, is_model, model_entrypoint

        arch = get_arch_name(vision["timm_model_name"])
        module = "unknown"
        if is_model(arch):
            module = model_entrypoint(arch).__module__.rsplit(".", 1)[-1]
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
EXPORTABLE_CROP_MODES = tuple(timm_backbone.CROP_MODES)


def export_problem(name: str, preprocess_cfg: dict[str, Any]) -> str | None:
    """Why guie-export could not reproduce this preprocessing in the graph, or None when it can.

    ``preprocess_cfg`` needs ``size`` (int or (h, w)), ``resize_mode`` and ``interpolation``,
    as open_clip's ``visual.preprocess_cfg`` or ``expected_preprocess`` give them; a timm tower's
    also ``crop_pct`` and ``crop_mode`` (timm's ``center`` and ``squash`` are resize to
    int(size / crop_pct), then a centre crop; ``border`` pads, and is refused).
    """
    size = preprocess_cfg["size"]
    if "crop_mode" in preprocess_cfg and preprocess_cfg["crop_mode"] not in EXPORTABLE_CROP_MODES:
        return (f"backbone {name} uses timm crop_mode {preprocess_cfg['crop_mode']!r}; guie-export reproduces "
                f"timm's {' and '.join(EXPORTABLE_CROP_MODES)} crops only")
    if not 0 < preprocess_cfg.get("crop_pct", 1.0) <= 1:
        return (f"backbone {name} uses timm crop_pct {preprocess_cfg['crop_pct']} (above 1 pads the image); "
                "guie-export reproduces crop_pct up to 1 only")
    if not isinstance(size, int) and size[0] != size[1]:
        return f"backbone {name} has a non-square input {tuple(size)}; guie-export supports square inputs only"
    if preprocess_cfg["resize_mode"] not in EXPORTABLE_RESIZE_MODES:
        return (f"backbone {name} uses resize_mode {preprocess_cfg['resize_mode']!r}; guie-export supports "
                f"{', '.join(EXPORTABLE_RESIZE_MODES)}")
    if preprocess_cfg["interpolation"] not in EXPORTABLE_INTERPOLATIONS:
        return (f"backbone {name} uses {preprocess_cfg['interpolation']} resizing; guie-export reproduces "
                f"open_clip's {' and '.join(EXPORTABLE_INTERPOLATIONS)} resizing only")
    return None


def resize_before_crop(preprocess_cfg: dict[str, Any]) -> int:
    """timm's eval resize: the side to resize to before the centre crop, ``floor(size / crop_pct)``
    (timm.data.transforms_imagenet_eval); 0 for open_clip's preprocessing (resize straight to size)."""
    if "crop_pct" not in preprocess_cfg:
        return 0
    size = preprocess_cfg["size"]
    return math.floor((size if isinstance(size, int) else size[0]) / preprocess_cfg["crop_pct"])


def expected_preprocess(spec: BackboneSpec) -> dict[str, Any]:
    """The preprocessing this backbone will get, from its configs alone (nothing is built; a timm model on
    the meta device). open_clip names: the model config's image size, and interpolation and resize mode
    from the model config (``image_interpolation``, ``image_resize_mode``) or the pretrained tag's
    config, else open_clip's defaults (bicubic, shortest). ``local-dir:``/``hf-hub:``: the folder's
    ``open_clip_config.json`` as open_clip merges it. timm: ``timm_backbone.data_config``. The spec's
    ``image_size`` replaces the size."""
    kind = spec.kind
    if kind == TIMM:
        arch = identifier(spec.name)
        tag = None if spec.is_file or spec.pretrained == "none" else spec.pretrained
        network = timm_backbone.create(timm_backbone.timm_model(arch), tag, spec.seed, "meta")
        return timm_backbone.data_config(network, spec.image_size)
    if kind in SCHEMA_WEIGHTS:
        return folder_preprocess(read_config(schema_folder(spec, config_only=True), spec.name), spec.image_size)
    vision = (open_clip.get_model_config(spec.name) or {}).get("vision_cfg", {})
    tag: dict[str, Any] = {}
    if spec.pretrained != "none" and not spec.is_file:
        tag = open_clip.get_pretrained_cfg(spec.name, spec.pretrained) or {}
    return {"size": spec.image_size or vision.get("image_size", 224),
            "interpolation": vision.get("image_interpolation") or tag.get("interpolation") or "bicubic",
            "resize_mode": vision.get("image_resize_mode") or tag.get("resize_mode") or "shortest"}


def schema_folder(spec: BackboneSpec, config_only: bool = False) -> Path:
    """The folder open_clip reads a ``local-dir:`` or ``hf-hub:`` spec from: the local folder, or the hub
    cache's snapshot of the pinned revision with its files fetched (only the config with ``config_only``)."""
    if spec.kind == LOCAL_DIR:
        return Path(identifier(spec.name))
    from guie.model.hub import fetch

    files = find_files(identifier(spec.name), HUB_FILES, spec.name, revision=spec.revision, local=SCHEMA_LOCAL)
    return fetch(files, OPEN_CLIP_CONFIG).parent if config_only else snapshot_folder(files)


@dataclass
class Backbone:
    """A frozen image tower and the preprocessing open_clip (or timm) defines for it."""

    spec: BackboneSpec
    visual: nn.Module
    preprocess_cfg: dict[str, Any]
    feature_dim: int

    @property
    def image_size(self) -> tuple[int, int]:
        size = self.preprocess_cfg["size"]
        return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def load_backbone(spec: BackboneSpec, device: str | torch.device = "cpu") -> Backbone:
    """Build the model, load its weights, keep only the frozen image tower (for timm, the whole model with
    ``num_classes=0``). Raises GuieError for weights that do not fit or cannot be read."""
    spec = spec.validate()
    if spec.kind == TIMM:
        visual, preprocess_cfg, width = _load_timm(spec)
    else:
        visual, preprocess_cfg, width = _load_open_clip(spec)
    visual.eval().requires_grad_(False).to(device)
    return Backbone(spec, visual, preprocess_cfg, width)


def _load_open_clip(spec: BackboneSpec) -> tuple[nn.Module, dict[str, Any], int]:
    if spec.kind in SCHEMA_WEIGHTS:
        folder = schema_folder(spec)
        _, weights = check_folder(folder, spec.name)
        model = _guarded(spec, str(weights), lambda: _create(PREFIXES[LOCAL_DIR] + str(folder), spec.seed,
                                                             image_size=spec.image_size))
        width = int(read_config(folder, spec.name)["model_cfg"]["embed_dim"])
    elif spec.is_file:
        model = _guarded(spec, spec.pretrained, lambda: _create(spec.name, spec.seed, spec.pretrained, spec.image_size))
        width = feature_dim(spec.name)
    elif spec.pretrained == "none":
        model = _create(spec.name, spec.seed, image_size=spec.image_size)
        width = feature_dim(spec.name)
    else:
        try:
            model = _create(spec.name, spec.seed, spec.pretrained, spec.image_size)
        except RuntimeError as exc:
            if spec.image_size and "size mismatch" in str(exc):
                raise GuieError(_size_misfit(spec, str(exc))) from None
            raise GuieError(
                f"could not load pretrained weights {spec.name}/{spec.pretrained} ({str(exc)[:160]}); "
                "offline, download them once and pass the file with --pretrained PATH"
            ) from None
        width = feature_dim(spec.name)
    visual = model.visual
    if getattr(visual, "output_tokens", False):
        # CoCa's tower returns (pooled, tokens); CoCa's own encode_image embeds with the pooled output.
        visual.output_tokens = False
    preprocess_cfg = dict(visual.preprocess_cfg)
    del model  # only the image tower stays in memory
    return visual, preprocess_cfg, width


def _size_misfit(spec: BackboneSpec, text: str) -> str:
    return (f"the weights of {spec.name} do not fit its tower at --image-size {spec.image_size} "
            f"({text.strip().splitlines()[0][:160]}): this tower cannot change its input size; drop --image-size")


def _guarded(spec: BackboneSpec, weights: str, build: Callable[[], nn.Module]) -> nn.Module:
    """``build()``, with open_clip's and torch's failures to load ``weights`` as one-line GuieErrors."""
    try:
        return build()
    except Exception as exc:  # noqa: BLE001 - open_clip and torch report misfits and corrupt files many ways
        text = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        misfit = isinstance(exc, AssertionError | KeyError) or any(
            s in str(exc) for s in ("state_dict", "size mismatch", "Missing key", "Unexpected key"))
        if misfit and spec.image_size and "size mismatch" in str(exc):
            raise GuieError(_size_misfit(spec, str(exc))) from None
        if misfit:
            raise GuieError(
                f"weights file {weights!r} does not fit backbone {spec.name} ({text}); "
                "pass the weights made for that architecture or the matching --backbone"
            ) from None
        raise GuieError(f"could not read weights file {weights!r} ({type(exc).__name__}: {text}); "
                        "pass a .bin/.pt/.safetensors state dict") from None


def _create(name: str, seed: int, pretrained: str | None = None, image_size: int | None = None) -> nn.Module:
    """open_clip's create_model (``force_image_size`` = ``image_size``), random parts from ``seed``, without
    using or disturbing the caller's RNG state."""
    quiet = pretrained is None and backbone_kind(name) == OPEN_CLIP
    if quiet:
        logging.disable(logging.WARNING)  # open_clip warns that no weights were loaded: that is the point
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return open_clip.create_model(name, pretrained=pretrained, force_image_size=image_size,
                                          pretrained_image=False, pretrained_text=False)
    finally:
        if quiet:
            logging.disable(logging.NOTSET)


def _load_timm(spec: BackboneSpec) -> tuple[nn.Module, dict[str, Any], int]:
    arch = identifier(spec.name)
    model = timm_backbone.timm_model(arch)
    tag = None if spec.is_file or spec.pretrained == "none" else spec.pretrained
    network = timm_backbone.create(model, tag, spec.seed)
    if spec.is_file:
        timm_backbone.load_weights(network, spec.pretrained, spec.name)
    elif tag:
        from guie.model.hub import fetch

        files = timm_backbone.hub_weights(model, tag, spec.revision, None)
        timm_backbone.load_weights(network, fetch(files, files.files[0]), f"{spec.name}.{tag}")
    if spec.image_size:
        timm_backbone.set_image_size(network, spec.image_size, spec.name)
    return network, timm_backbone.data_config(network, spec.image_size), timm_backbone.feature_width(network)


def eval_transform(preprocess_cfg: dict[str, Any]) -> Callable:
    """The model's own inference transform (resize, crop, to tensor, mean/std): open_clip's, or timm's for a
    timm tower (its cfg carries ``crop_pct``)."""
    if "crop_pct" in preprocess_cfg:
        return timm_backbone.eval_transform(preprocess_cfg)
    return image_transform_v2(PreprocessCfg(**preprocess_cfg), is_train=False)


def augment_transform(preprocess_cfg: dict[str, Any], min_scale: float = 0.5) -> T.Compose:
    """Random resized crop and horizontal flip at the model's size, then its mean/std."""
    size = preprocess_cfg["size"]
    return T.Compose([
        T.RandomResizedCrop(size if isinstance(size, int) else tuple(size), scale=(min_scale, 1.0),
                            interpolation=INTERPOLATION[preprocess_cfg["interpolation"]]),
        T.RandomHorizontalFlip(),
        T.ToTensor(),
        T.Normalize(preprocess_cfg["mean"], preprocess_cfg["std"]),
    ])
