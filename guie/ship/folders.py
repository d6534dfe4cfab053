"""The two folders guie-package writes: the Kaggle dataset (model + card) and the Kaggle notebook.

``BUILD/dataset`` and ``BUILD/kernel`` are exactly what ``kaggle datasets create -p`` /
``kaggle datasets version -p`` and ``kaggle kernels push -p`` take. Both are assembled in a
staging folder inside BUILD and renamed into place, so an earlier package is replaced whole or
not at all. Nothing from the environment (credentials included) is ever written into them.
"""
from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from guie.artifacts import (
    DATASET_DIR,
    DATASET_METADATA,
    EXPORT_DIR,
    KERNEL_DIR,
    KERNEL_METADATA,
    MODEL_CARD,
    PACKAGE_STAGING_PREFIX,
    SAVED_MODEL,
    VERIFY_REPORT,
)
from guie.errors import GuieError
from guie.export.file_facts import file_facts
from guie.fileio import (
    file_sha256,
    output_folder,
    staging_folder,
    write_json,
    write_text,
    writing_into,
)
from guie.model.backbone_names import describe_backbone
from guie.ship.kaggle_ids import (
    GUIE_COMPETITION,
    KaggleRef,
    check_competition,
    check_dataset_subtitle,
    check_dataset_title,
    check_kernel_title,
    check_license,
    parse_dataset_id,
    parse_kernel_id,
    title_from_slug,
)
from guie.ship.notebook import build_notebook, write_notebook
from guie.ship.source import ModelSource, resolve_source
from guie.version import __version__

DATASET_SUBTITLE = "TorchScript 64-D universal image embedder, packaged by guie"
_MARKERS = {DATASET_DIR: DATASET_METADATA, KERNEL_DIR: KERNEL_METADATA, EXPORT_DIR: VERIFY_REPORT}


@dataclass(frozen=True)
class PackageSpec:
    """Validated names and switches of one package."""

    dataset: KaggleRef
    kernel: KaggleRef
    title: str
    kernel_title: str
    competition: str = GUIE_COMPETITION
    license: str = "other"
    gpu: bool = False
    public: bool = False

    @classmethod
    def create(cls, dataset: str, kernel: str, *, title: str | None = None, kernel_title: str | None = None,
               competition: str = GUIE_COMPETITION, license: str = "other", gpu: bool = False,
               public: bool = False) -> PackageSpec:
        ds, kn = parse_dataset_id(dataset), parse_kernel_id(kernel)
        return cls(
            dataset=ds, kernel=kn,
            title=check_dataset_title(title if title is not None else title_from_slug(ds.slug),
                                      "--title" if title is not None else "dataset title (from the slug)"),
            kernel_title=check_kernel_title(kernel_title if kernel_title is not None else title_from_slug(kn.slug),
                                            kn, "--kernel-title" if kernel_title is not None else "notebook title"),
            competition=check_competition(competition), license=check_license(license), gpu=gpu, public=public)

    @property
    def code_file(self) -> str:
        return f"{self.kernel.slug}.ipynb"


@dataclass
class PackageResult:
    build: Path
    dataset_dir: Path
    kernel_dir: Path
    spec: PackageSpec
    source: ModelSource
    sha256: str
    size: int


def dataset_metadata(spec: PackageSpec, description: str) -> dict[str, Any]:
    """dataset-metadata.json: what ``kaggle datasets create``/``version`` read."""
    return {
        "title": spec.title,
        "subtitle": check_dataset_subtitle(DATASET_SUBTITLE),
        "id": str(spec.dataset),
        "licenses": [{"name": spec.license}],
        "description": description,
    }


def kernel_metadata(spec: PackageSpec) -> dict[str, Any]:
    """kernel-metadata.json; every switch written out (the client defaults enable_internet to true)."""
    return {
        "id": str(spec.kernel),
        "title": spec.kernel_title,
        "code_file": spec.code_file,
        "language": "python",
        "kernel_type": "notebook",
        "is_private": not spec.public,
        "enable_gpu": spec.gpu,
        "enable_tpu": False,
        "enable_internet": False,
        "dataset_sources": [str(spec.dataset)],
        "competition_sources": [spec.competition],
        "kernel_sources": [],
        "model_sources": [],
    }


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def model_card(spec: PackageSpec, source: ModelSource, sha256: str, size: int) -> str:
    """README.md of the dataset (also its Kaggle description): contract, backbone, config, CV scores."""
    cfg, verify = source.config, source.verify
    lines = [
        f"# {spec.title}",
        "",
        "A universal image embedder for the Kaggle competition "
        f"[{spec.competition}](https://www.kaggle.com/competitions/{spec.competition}), packaged by guie "
        f"{__version__}. The notebook [{spec.kernel}](https://www.kaggle.com/code/{spec.kernel}) turns it "
        "into `submission.zip`.",
        "",
        "## Model",
        f"- File: `{SAVED_MODEL}` (TorchScript, {size / 1e6:.1f} MB, sha256 `{sha256}`)",
        "- Input: uint8 RGB images `(N, 3, H, W)` of any size (or one `(3, H, W)` image)",
        "- Output: `(N, 64)` float32, L2-normalised (inner product = cosine)",
    ]
    # the run's resolved spec (kind, weights, hub revision, image size), else its --backbone and --pretrained
    backbone = cfg.get("backbone_spec") if isinstance(cfg.get("backbone_spec"), dict) else None
    name = cfg.get("backbone") or verify.get("backbone")
    if backbone is None and name:
        backbone = {"name": name, "pretrained": cfg.get("pretrained") or verify.get("pretrained")}
    if backbone:
        lines.append(f"- Backbone: {describe_backbone(backbone)}, frozen")
    if cfg:
        keys = ("head", "dim", "classes", "epochs", "batch_size", "lr", "margin", "margin_schedule", "scale",
                "aug_views", "ema", "domain_loss", "size_features", "stage2_blocks", "seed")
        # options left at off (None, False, 0) are not shown; dim and seed always are
        shown = ", ".join(f"{k} {cfg[k]}" for k in keys
                          if cfg.get(k) is not None and (cfg[k] not in (False, 0) or k in ("dim", "seed")))
        sources = sorted({str(d).split(":", 1)[0] for d in cfg.get("data", [])})
        lines.append(f"- Config: {shown}" + (f"; data: {', '.join(sources)}" if sources else ""))
    if source.torch_version:
        lines.append(f"- Exported with torch {source.torch_version}"
                     + (f"; max abs diff to the eager model {verify['max_abs_diff_vs_eager']:.1e}"
                        if isinstance(verify.get("max_abs_diff_vs_eager"), float) else ""))
    if source.file_version is not None:
        lines.append(f"- TorchScript file format version {source.file_version} (PyTorch 1.11 reads up to 9)")
    passed = [c for c in source.compat if c.get("passed")]
    failed = [c for c in source.compat if not c.get("passed")]
    if passed:
        lines.append("- Loads with plain `torch.jit.load` and gives the same embedding (checked with guie-compat, "
                     "max abs diff): " + ", ".join(f"PyTorch {c['torch']} {c['device']} ({c['max_abs_diff']:.1e})"
                                                  for c in passed))
    if failed:
        lines.append("- Fails in: " + ", ".join(f"PyTorch {c['torch']} {c['device']} ({c.get('error') or 'outputs differ'})"
                                                 for c in failed))
    if not source.compat:
        lines.append("- Not checked in other PyTorch releases (`guie-compat saved_model.pt --torch 1.11.0`)")
    preprocess = verify.get("preprocess") if isinstance(verify.get("preprocess"), dict) else {}
    inside = ([f"test-time augmentation {preprocess['tta']}"] if preprocess.get("tta", "none") != "none" else []) \
        + (["size features from the input's height and width"] if preprocess.get("size_features") else [])
    if inside:
        lines.append(f"- Inside the graph: {', '.join(inside)}")
    holdout = source.eval.get("holdout") if isinstance(source.eval.get("holdout"), dict) else None
    if holdout:
        lines += ["", "## CV scores (held-out split of the training data)",
                  "| metric | value |", "| --- | --- |"]
        lines += [f"| {k} | {_fmt(holdout[k])} |" for k in ("mP@5", "P@1", "mAP@5", "random_projection_mP@5",
                                                            "queries", "index") if k in holdout]
    lines += [
        "",
        "## Use",
        "```python",
        "import torch",
        f'model = torch.jit.load("/kaggle/input/{spec.dataset.slug}/{SAVED_MODEL}", map_location="cpu").eval()',
        "x = torch.from_numpy(rgb_uint8_hwc).permute(2, 0, 1).unsqueeze(0)  # (1, 3, H, W) uint8",
        "embedding = model(x)[0]  # 64 float32 values, unit norm",
        "```",
        "",
        "## Licence",
        f"Dataset licence: `{spec.license}`. Weights derived from a pretrained backbone also keep the "
        "terms of that backbone's weights.",
    ]
    return "\n".join(lines) + "\n"


def _check_replaceable(build: Path, names: tuple[str, ...]) -> None:
    """Only folders an earlier guie-package wrote may be replaced."""
    for name in names:
        target = build / name
        if target.exists() and not (target / _MARKERS[name]).is_file():
            raise GuieError(f"{str(target)!r} exists and is not a folder guie-package wrote (no {_MARKERS[name]}); "
                            "pass another --out")


def _swap_in(new: Path, target: Path, trash: Path) -> None:
    if target.exists():
        target.rename(trash / target.name)
    new.rename(target)


def check_model_file(source: ModelSource, log: Callable[[str], None] = print, shipped: Path | None = None) -> None:
    """Check the file itself, whatever sits beside it: refuse one this torch cannot load, warn when it is
    not known to load in PyTorch 1.11 (the GUIE host's). Fills ``source.file_version`` and
    ``source.compat`` (the guie-compat checks known for this file: the export stage's
    ``file_facts``, plus those of a verify.json beside it that describes this very file). Raises
    GuieError on refusal."""
    path = source.model_path
    facts = file_facts(path)
    source.file_version = facts.format_version
    if facts.load_error is not None:
        raise GuieError(f"{source.origin} does not load in this torch {facts.torch_version} ({facts.load_error[:200]}); "
                        "export it again with guie-export and package that")
    if source.verify.get("sha256") not in (None, facts.sha256):
        log(f"note: the verify.json beside {source.origin} describes another file (sha256 differs); its facts are "
            "left out of the model card")
        source.verify = {}
    facts = facts.with_checks(source.verify.get("compat") or [])
    source.compat = list(facts.checks)
    host = facts.host_torch
    check_command = f"guie-compat {shipped or path} --torch {host}"
    if facts.too_new_for_host:
        log(f"warning: {path.name} has file format version {facts.format_version}; PyTorch {host} (the GUIE "
            f"host's) reads at most {facts.host_max_format_version}: export it again with this guie (portable by "
            "construction)")
    elif facts.loads_in_host is None:
        log(f"warning: {path.name} was not checked in PyTorch {host} (the GUIE host's): run {check_command}")
    elif not facts.loads_in_host:
        failed = next(c for c in facts.host_checks if not c["passed"])
        problem = failed.get("error") or f"outputs differ by {failed.get('max_abs_diff'):.1e}"
        log(f"warning: {path.name} fails in PyTorch {host} (the GUIE host's) on {failed['device']}: {problem}")


def build_package(source: str | Path, spec: PackageSpec, build: str | Path,
                  log: Callable[[str], None] = print) -> PackageResult:
    """Write ``build/dataset`` and ``build/kernel`` (and ``build/export`` for a run folder SOURCE)."""
    build = Path(build)
    if build.exists() and not build.is_dir():
        raise GuieError(f"--out {str(build)!r} is a file; pass a folder")
    _check_replaceable(build, (DATASET_DIR, KERNEL_DIR))
    with output_folder(build):  # a bad SOURCE leaves no empty BUILD folder behind
        return _build_package(source, spec, build, log)


PACKAGE_FULL_FIX = "free space there or pass another --out, then rerun (an earlier package there is kept as it was)"


def _build_package(source: str | Path, spec: PackageSpec, build: Path, log: Callable[[str], None]) -> PackageResult:
    # A staging folder left by a package that died is removed first; a full disk is one line naming BUILD.
    with staging_folder(build, PACKAGE_STAGING_PREFIX, log) as staging, writing_into(build, PACKAGE_FULL_FIX):
        model = resolve_source(source, staging, log)
        check_model_file(model, log, shipped=build / DATASET_DIR / SAVED_MODEL)
        dataset_dir, kernel_dir = staging / DATASET_DIR, staging / KERNEL_DIR
        dataset_dir.mkdir()
        shutil.copyfile(model.model_path, dataset_dir / SAVED_MODEL)
        sha256, size = file_sha256(dataset_dir / SAVED_MODEL), (dataset_dir / SAVED_MODEL).stat().st_size
        card = model_card(spec, model, sha256, size)
        write_text(dataset_dir / MODEL_CARD, card)
        write_json(dataset_dir / DATASET_METADATA, dataset_metadata(spec, card))
        write_notebook(kernel_dir / spec.code_file, build_notebook(str(spec.dataset), export_torch=model.torch_version))
        write_json(kernel_dir / KERNEL_METADATA, kernel_metadata(spec))

        names = tuple(n for n in (EXPORT_DIR, DATASET_DIR, KERNEL_DIR) if (staging / n).is_dir())
        _check_replaceable(build, names)
        trash = staging / ".replaced"
        trash.mkdir()
        for name in names:
            _swap_in(staging / name, build / name, trash)
    model.model_path = build / DATASET_DIR / SAVED_MODEL  # the staged original is gone
    log(f"dataset folder: {build / DATASET_DIR} ({spec.dataset}, {model.kind} {model.origin}, "
        f"{size / 1e6:.1f} MB)")
    log(f"kernel folder:  {build / KERNEL_DIR} ({spec.kernel}, notebook {spec.code_file}, internet off, "
        f"GPU {'on' if spec.gpu else 'off'})")
    return PackageResult(build, build / DATASET_DIR, build / KERNEL_DIR, spec, model, sha256, size)
