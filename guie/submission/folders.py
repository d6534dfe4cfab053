"""The two folders guie-package writes: the Kaggle dataset (model + card) and the Kaggle notebook.

``BUILD/dataset`` and ``BUILD/kernel`` are exactly what ``kaggle datasets create -p`` /
``kaggle datasets version -p`` and ``kaggle kernels push -p`` take. Both are assembled in a
staging folder inside BUILD and renamed into place, so an earlier package is replaced whole or
not at all. Nothing from the environment (credentials included) is ever written into them.
"""
from __future__ import annotations

import json
import re
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from guie.errors import GuieError
from guie.fileio import file_sha256, write_json, write_text
from guie.submission.kaggle_ids import (
    GUIE_COMPETITION,
    KaggleRef,
    check_competition,
    check_dataset_subtitle,
    check_dataset_title,
    check_kernel_title,
    check_license,
    check_licenses,
    parse_dataset_id,
    parse_kernel_id,
    title_from_slug,
)
from guie.submission.notebook import MODEL_FILENAME, build_notebook, write_notebook
from guie.submission.source import ModelSource, resolve_source
from guie.version import __version__

DATASET_DIR = "dataset"
KERNEL_DIR = "kernel"
EXPORT_DIR = "export"
DATASET_METADATA = "dataset-metadata.json"
KERNEL_METADATA = "kernel-metadata.json"
MODEL_CARD = "README.md"
DATASET_SUBTITLE = "TorchScript 64-D universal image embedder, packaged by guie"
HOST_TORCH = (1, 11)  # the PyTorch the GUIE 2022 host loaded submissions with
_MARKERS = {DATASET_DIR: DATASET_METADATA, KERNEL_DIR: KERNEL_METADATA, EXPORT_DIR: "verify.json"}


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


def version_tuple(version: str | None) -> tuple[int, int] | None:
    m = re.match(r"(\d+)\.(\d+)", version or "")
    return (int(m.group(1)), int(m.group(2))) if m else None


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
        f"- File: `{MODEL_FILENAME}` (TorchScript, {size / 1e6:.1f} MB, sha256 `{sha256}`)",
        "- Input: uint8 RGB images `(N, 3, H, W)` of any size (or one `(3, H, W)` image)",
        "- Output: `(N, 64)` float32, L2-normalised (inner product = cosine)",
    ]
    backbone = cfg.get("backbone") or verify.get("backbone")
    if backbone:
        pretrained = cfg.get("pretrained") or verify.get("pretrained")
        lines.append(f"- Backbone: open_clip `{backbone}`" + (f" (`{pretrained}`)" if pretrained else "") + ", frozen")
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
        f'model = torch.jit.load("/kaggle/input/{spec.dataset.slug}/{MODEL_FILENAME}", map_location="cpu").eval()',
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


def torch_skew_note(source: ModelSource) -> str | None:
    exported = version_tuple(source.torch_version)
    if exported and exported > HOST_TORCH:
        return (f"note: the model was saved by torch {source.torch_version}; the GUIE 2022 host loaded models "
                f"with PyTorch {'.'.join(map(str, HOST_TORCH))}, which may not read files from newer versions")
    return None


def build_package(source: str | Path, spec: PackageSpec, build: str | Path,
                  log: Callable[[str], None] = print) -> PackageResult:
    """Write ``build/dataset`` and ``build/kernel`` (and ``build/export`` for a run folder SOURCE)."""
    build = Path(build)
    if build.exists() and not build.is_dir():
        raise GuieError(f"--out {str(build)!r} is a file; pass a folder")
    _check_replaceable(build, (DATASET_DIR, KERNEL_DIR))
    build.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".guie-package-", dir=build))
    try:
        model = resolve_source(source, staging, log)
        note = torch_skew_note(model)
        if note:
            log(note)
        dataset_dir, kernel_dir = staging / DATASET_DIR, staging / KERNEL_DIR
        dataset_dir.mkdir()
        shutil.copyfile(model.model_path, dataset_dir / MODEL_FILENAME)
        sha256, size = file_sha256(dataset_dir / MODEL_FILENAME), (dataset_dir / MODEL_FILENAME).stat().st_size
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
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    model.model_path = build / DATASET_DIR / MODEL_FILENAME  # the staged original is gone
    log(f"dataset folder: {build / DATASET_DIR} ({spec.dataset}, {model.kind} {model.origin}, "
        f"{size / 1e6:.1f} MB)")
    log(f"kernel folder:  {build / KERNEL_DIR} ({spec.kernel}, notebook {spec.code_file}, internet off, "
        f"GPU {'on' if spec.gpu else 'off'})")
    return PackageResult(build, build / DATASET_DIR, build / KERNEL_DIR, spec, model, sha256, size)


def read_package(build: Path) -> tuple[Path, Path, dict[str, Any], dict[str, Any]]:
    """The two folders and their metadata, checked again (they may have been edited since packaging)."""
    dataset_dir, kernel_dir = build / DATASET_DIR, build / KERNEL_DIR
    metas = []
    for folder, name in ((dataset_dir, DATASET_METADATA), (kernel_dir, KERNEL_METADATA)):
        path = folder / name
        if not path.is_file():
            raise GuieError(f"{str(path)!r} is missing; build the folders with guie-package first")
        try:
            metas.append(json.loads(path.read_text(encoding="utf-8")))
        except ValueError as exc:
            raise GuieError(f"{str(path)!r} is not valid JSON ({exc})") from None
    ds_meta, kn_meta = metas
    dataset = parse_dataset_id(str(ds_meta.get("id", "")), "dataset-metadata.json id")
    check_dataset_title(str(ds_meta.get("title", "")), "dataset-metadata.json title")
    check_licenses(ds_meta.get("licenses"))
    kernel = parse_kernel_id(str(kn_meta.get("id", "")), "kernel-metadata.json id")
    check_kernel_title(str(kn_meta.get("title", "")), kernel, "kernel-metadata.json title")
    if str(dataset) not in kn_meta.get("dataset_sources", []):
        raise GuieError(f"kernel-metadata.json dataset_sources {kn_meta.get('dataset_sources')} lacks the model "
                        f"dataset {dataset}; rebuild the folders with guie-package")
    if kn_meta.get("enable_internet") is not False:
        raise GuieError("kernel-metadata.json must set enable_internet to false (the competition runs offline; "
                        "the client's default is true)")
    code_file = kernel_dir / str(kn_meta.get("code_file", ""))
    if not code_file.is_file():
        raise GuieError(f"the notebook {str(code_file)!r} named by kernel-metadata.json is missing")
    return dataset_dir, kernel_dir, ds_meta, kn_meta
