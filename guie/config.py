"""Typed run configuration: defaults, then a TOML file, then command-line options; validated in one place."""
from __future__ import annotations

from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import tomllib

from guie.errors import GuieError, did_you_mean

HEAD_CHOICES = ("arcface", "subcenter", "cosface")
EVAL_CHOICES = ("none", "holdout")
WANDB_CHOICES = ("off", "offline", "online")
DEVICE_CHOICES = ("auto", "cpu", "cuda")


def parse_class_counts(value: Any) -> list[int] | None:
    """``--classes`` as a list of counts: 4000, "4000", "1000,2000" or [1000, 2000]; None when unset."""
    if value is None:
        return None
    items = value if isinstance(value, list) else str(value).split(",")
    try:
        counts = [int(str(v).strip()) for v in items]
    except ValueError:
        raise GuieError(f"--classes {value!r} is not a count or comma-separated counts, e.g. 4000 or 1000,2000") from None
    if not counts or min(counts) < 1 or len(set(counts)) != len(counts):
        raise GuieError(f"--classes {value!r} needs distinct counts of at least 1")
    return counts


def opt(default: Any = MISSING, help: str = "", **meta: Any) -> Any:
    """A config field with its --help text (and click extras such as choices) in the metadata."""
    meta = {"help": help, **meta}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class TrainConfig:
    """Every guie-train option. Field names are the TOML keys; --kebab-case are the CLI options."""

    data: list[str] = opt([], "data source PREFIX:PATH, repeatable; each source is a domain "
                              "(imagefolder:DIR, csv:FILE, demo:digits, ...)", multiple=True)
    out: str | None = opt(None, "run folder to write (config, model.pt, metrics, eval)")
    backbone: str = opt("ViT-H-14", "open_clip model name (guie-tiny: the tiny offline test model), "
                                    "hf-hub:ORG/REPO or local-dir:PATH (open_clip's schemas), or timm:NAME[.TAG] "
                                    "(a timm image model, e.g. timm:vit_base_patch14_dinov2.lvd142m)")
    pretrained: str | None = opt(None, "pretrained tag (open_clip's, or timm's for timm:), a local weights file "
                                       "(.bin/.pt/.safetensors), or 'none' (random init); default: laion2b_s32b_b79k "
                                       "for an open_clip name, the tag in timm:NAME.TAG or timm's default; not taken "
                                       "by hf-hub: and local-dir:, which bring their weights")
    image_size: int | None = opt(None, "run the frozen tower at this many pixels a side (1 to 4096) instead of its config's "
                                       "(position embedding resampled once at load); part of the feature-cache key")
    classes: int | None = opt(None, "keep this many classes, most images first (seeded tie-break); all if unset. "
                                    "Several, comma-separated (1000,2000,4000), run a sweep: one run folder per "
                                    "count under --out, one feature cache, one comparison report", cli_type="str")
    min_per_class: int = opt(2, "drop classes with fewer images than this")
    max_per_class: int | None = opt(None, "keep at most this many images per class (seeded sample)")
    domain_max_per_class: list[str] = opt([], "per-domain cap DOMAIN=N overriding --max-per-class for that "
                                              "source's domain, repeatable (e.g. gldv2=20)", multiple=True)
    dim: int = opt(64, "embedding size")
    head: str = opt("arcface", "margin head", choices=HEAD_CHOICES)
    scale: float = opt(30.0, "margin head logit scale s")
    margin: float = opt(0.3, "margin m (radians for arcface/subcenter, cosine for cosface)")
    margin_schedule: str | None = opt(None, "dynamic margin START:STEP:CAP per epoch, e.g. 0.1:0.1:0.8 "
                                            "(2nd place GUIE 2022); overrides --margin")
    subcenters: int = opt(3, "sub-centres per class for --head subcenter")
    batchnorm: bool = opt(False, "BatchNorm after the projection")
    dropout: float = opt(0.0, "dropout on the features before the projection")
    size_features: bool = opt(False, "append each image's original height, width and aspect ratio to the frozen "
                                     "features before the projection (5th place GUIE 2022); the exported module "
                                     "computes them from its input's shape")
    epochs: int = opt(10, "training epochs over the cached features")
    batch_size: int = opt(256, "head training batch size")
    lr: float = opt(1e-3, "AdamW peak learning rate")
    weight_decay: float = opt(1e-4, "AdamW weight decay")
    warmup: float = opt(0.05, "share of steps spent in linear warm-up before the cosine decay")
    seed: int = opt(0, "seed for sampling, splits, views and training")
    stage2_blocks: int = opt(0, "after head training, fine-tune the last N backbone blocks on streamed images "
                                "(0: off; 1st/2nd place GUIE 2022)")
    stage2_lr_scale: float = opt(0.01, "stage 2 backbone learning rate as a multiple of --lr")
    stage2_epochs: int = opt(1, "stage 2 epochs")
    domain_loss: float = opt(0.0, "weight of an auxiliary domain classifier on the embedding (0: off)")
    ema: float | None = opt(None, "keep an exponential moving average of the head weights with this decay "
                                  "(e.g. 0.999) and use it for eval and export")
    aug_views: int = opt(0, "also cache this many augmented views per image (random resized crop, flip)")
    eval: str = opt("none", "after training: holdout (mP@5 on a held-out split of the training data) and/or "
                            "guie-eval task specs PREFIX:PATH, comma-separated (e.g. holdout,sop:/data/SOP)")
    holdout_frac: float = opt(0.2, "share of each class's images held out for --eval holdout")
    cache_dir: str | None = opt(None, "feature cache folder (default $GUIE_CACHE/features, else the user cache's "
                                      "guie/features: ~/.cache/guie/features on Linux)")
    extract_batch_size: int = opt(64, "images per backbone forward during feature extraction")
    shard_size: int = opt(4096, "images per feature-cache shard (a killed extraction resumes at the last shard)")
    workers: int | None = opt(None, "DataLoader workers for image decoding (default: cores - 1, at most 8)")
    device: str = opt("auto", "auto: CUDA when present (with autocast), else CPU", choices=DEVICE_CHOICES)
    max_bad_frac: float = opt(0.01, "fail when more than this share of images cannot be read")
    wandb: str = opt("off", "Weights & Biases logging; offline writes into the run folder", choices=WANDB_CHOICES)
    wandb_project: str = opt("guie", "W&B project name")

    def validate(self) -> TrainConfig:
        """Raise a one-line GuieError for the first invalid value."""
        if not self.data:
            raise GuieError("no data given; pass --data PREFIX:PATH (e.g. --data imagefolder:DIR, or demo:digits)")
        if not self.out:
            raise GuieError("no run folder given; pass --out DIR")
        checks = [
            (self.classes is None or self.classes >= 1, "--classes must be at least 1"),
            (self.min_per_class >= 1, "--min-per-class must be at least 1"),
            (self.max_per_class is None or self.max_per_class >= self.min_per_class,
             "--max-per-class must be at least --min-per-class"),
            (self.image_size is None or 1 <= self.image_size <= 4096, "--image-size must be 1 to 4096 pixels"),
            (self.dim >= 1, "--dim must be at least 1"),
            (self.head in HEAD_CHOICES, f"--head must be one of {', '.join(HEAD_CHOICES)}"),
            (self.scale > 0, "--scale must be positive"),
            (0 <= self.margin < 1.6, "--margin must be in [0, 1.6) radians"),
            (self.subcenters >= 1, "--subcenters must be at least 1"),
            (0 <= self.dropout < 1, "--dropout must be in [0, 1)"),
            (self.epochs >= 1, "--epochs must be at least 1"),
            (self.batch_size >= 2, "--batch-size must be at least 2"),
            (self.lr > 0, "--lr must be positive"),
            (self.weight_decay >= 0, "--weight-decay must be non-negative"),
            (0 <= self.warmup < 1, "--warmup must be in [0, 1)"),
            (self.aug_views >= 0, "--aug-views must be non-negative"),
            (self.ema is None or 0 < self.ema < 1, "--ema must be between 0 and 1, e.g. 0.999"),
            (self.domain_loss >= 0, "--domain-loss must be non-negative"),
            (self.stage2_blocks >= 0, "--stage2-blocks must be non-negative"),
            (0 < self.stage2_lr_scale <= 1, "--stage2-lr-scale must be in (0, 1], e.g. 0.01"),
            (self.stage2_epochs >= 1, "--stage2-epochs must be at least 1"),
            (bool(eval_parts(self.eval)), "--eval must be none, holdout, or task specs PREFIX:PATH, comma-separated"),
            (0 < self.holdout_frac < 1, "--holdout-frac must be between 0 and 1"),
            (self.extract_batch_size >= 1, "--extract-batch-size must be at least 1"),
            (self.shard_size >= 1, "--shard-size must be at least 1"),
            (self.workers is None or self.workers >= 0, "--workers must be non-negative"),
            (self.device in DEVICE_CHOICES, f"--device must be one of {', '.join(DEVICE_CHOICES)}"),
            (0 <= self.max_bad_frac <= 1, "--max-bad-frac must be in [0, 1]"),
            (self.wandb in WANDB_CHOICES, f"--wandb must be one of {', '.join(WANDB_CHOICES)}"),
        ]
        for ok, message in checks:
            if not ok:
                raise GuieError(message)
        from guie.model.heads import parse_margin_schedule

        parse_margin_schedule(self.margin_schedule)
        self.domain_caps()
        return self

    def domain_caps(self) -> dict[str, int]:
        """--domain-max-per-class DOMAIN=N entries as a dict."""
        caps = {}
        for item in self.domain_max_per_class:
            domain, sep, n = item.partition("=")
            if not sep or not domain or not n.isdigit() or int(n) < 1:
                raise GuieError(f"--domain-max-per-class {item!r} is not DOMAIN=N with N >= 1, e.g. gldv2=20")
            caps[domain] = int(n)
        return caps

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def eval_holdout(self) -> bool:
        """--eval asks for the held-out split of the training data."""
        return "holdout" in eval_parts(self.eval)

    @property
    def eval_tasks(self) -> list[str]:
        """--eval task specs, run through guie-eval on the finished model."""
        return [part for part in eval_parts(self.eval) if part not in EVAL_CHOICES]


def eval_parts(value: str) -> list[str]:
    """The comma-separated parts of --eval, each 'none', 'holdout' or a known PREFIX:PATH spec."""
    import guie.data  # noqa: F401 - registers the source prefixes split_spec checks against
    from guie.data.records import split_spec

    parts = [p.strip() for p in (value or "").split(",") if p.strip()]
    if not parts:
        raise GuieError("--eval is empty; pass none, holdout, or task specs PREFIX:PATH (comma-separated)")
    if "none" in parts and len(parts) > 1:
        raise GuieError(f"--eval {value!r} combines none with other evaluations; pass one or the other")
    for part in parts:
        if part not in EVAL_CHOICES and ":" not in part:
            raise GuieError(f"--eval {part!r} is neither none, holdout nor a task spec PREFIX:PATH"
                            f"{did_you_mean(part, EVAL_CHOICES)}")
        if part not in EVAL_CHOICES:
            split_spec(part)
    return parts


def config_fields() -> dict[str, Any]:
    """The TrainConfig fields by name."""
    return {f.name: f for f in fields(TrainConfig)}


def _coerce(name: str, value: Any, current: Any, type_str: str) -> Any:
    if value is None:
        return None
    expected = type_str.replace(" | None", "")
    bad = GuieError(f"config key {name!r} must be {expected}, got {value!r}; fix the config file")
    if expected == "bool":
        if not isinstance(value, bool):
            raise bad
    elif expected == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad
    elif expected == "float":
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise bad
        value = float(value)
    elif expected == "str":
        if not isinstance(value, str):
            raise bad
    elif expected == "list[str]":
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise bad
    return value


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Read a TOML config file into checked TrainConfig overrides (keys may use - or _)."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise GuieError(f"config file {str(path)!r} does not exist; pass an existing TOML file") from None
    except tomllib.TOMLDecodeError as exc:
        raise GuieError(f"config file {str(path)!r} is not valid TOML ({exc}); fix its syntax") from None
    if isinstance(raw.get("train"), dict):
        raw = {**{k: v for k, v in raw.items() if k != "train"}, **raw["train"]}
    known = config_fields()
    out: dict[str, Any] = {}
    for key, value in raw.items():
        name = key.replace("-", "_")
        if name not in known:
            raise GuieError(f"unknown key {key!r} in config file {str(path)!r}{did_you_mean(name, known)}; "
                            "keys are guie-train option names")
        if name == "classes" and isinstance(value, list | str):
            out[name] = value  # a sweep; parsed with parse_class_counts
            continue
        out[name] = _coerce(name, value, None, str(known[name].type))
    # Relative paths in a config file are relative to the file, so configs can travel with their data.
    if "data" in out:
        out["data"] = [_resolve_spec(spec, path.parent) for spec in out["data"]]
    if out.get("eval"):
        out["eval"] = ",".join(_resolve_spec(part.strip(), path.parent) for part in out["eval"].split(","))
    return out


def _resolve_spec(spec: str, base: Path) -> str:
    prefix, sep, rest = spec.partition(":")
    if sep and rest and prefix != "demo" and not Path(rest).expanduser().is_absolute():
        return f"{prefix}:{(base / rest).resolve()}"
    return spec


def build_config(file_values: dict[str, Any], cli_values: dict[str, Any]) -> TrainConfig:
    """Defaults < config file < command line."""
    values = {**file_values, **cli_values}
    return TrainConfig(**values)
