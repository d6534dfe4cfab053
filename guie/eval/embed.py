"""Embedding images with the models under evaluation: a guie run folder (eager) or a TorchScript submission.

* A run folder or its ``model.pt``: the frozen backbone's features (open_clip's own eval
  transform, view 0) from the feature cache guie-train fills (:func:`guie.features.extract.ensure_features`,
  keyed per image by path, size and mtime), computing only the images it lacks (the backbone is
  loaded only then; under torchrun each rank computes its share), then each run's projection.
  Several run folders that share a backbone (a class-count sweep, say) read or compute each
  image's features once. The cache stores float16 features, as training reads them; without a
  cache folder (``cache_dir`` None) the images go straight through the eager embedder
  (:func:`guie.model.embedder.load_embedder`) in float32, batched through the one tower loop
  (:func:`guie.features.forward.forward_images`: inference mode, CUDA autocast when on GPU).
* A stage-2 run (model.pt carries fine-tuned backbone blocks): its features are not the frozen
  ones, so it always takes the direct path, a forward of its own fine-tuned tower; the cache is
  neither read nor written for it.
* A ``saved_model.pt`` or a ``submission.zip`` holding one: ``torch.jit.load``, and each image
  fed as the competition host did: PIL -> RGB -> uint8 tensor ``(1, 3, H, W)`` at its original
  size (PILToTensor), taking ``output[0]`` flattened to float32.

Every embedding is L2-normalised afterwards, so inner product ranks equal Euclidean ranks.
Images PIL cannot read are reported, not embedded; a model that fails on a readable image
is an error (the host would have failed on it too).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from guie.artifacts import CHECKPOINT, TAKES_EVAL_MODEL, identify, load_torchscript
from guie.data.images import load_rgb
from guie.data.records import unique_name
from guie.distributed import DistContext
from guie.errors import GuieError
from guie.features.extract import BackboneOnDemand, ensure_features, project_features
from guie.features.forward import UNREADABLE, decode_workers, forward_images
from guie.model.backbone import load_backbone, resolve_device
from guie.model.model_file import backbone_spec_of, projection_from, read_model_file


@dataclass(frozen=True)
class ModelRef:
    """One model to evaluate: its display name, the file to load, and how ("eager" or "torchscript")."""

    name: str
    path: Path
    kind: str
    source: str  # what the user passed

    def describe(self) -> dict[str, str]:
        return {"name": self.name, "path": self.source, "kind": self.kind}


def resolve_model(arg: str | Path) -> ModelRef:
    """The ModelRef of ``arg``: what it is comes from ``guie.artifacts.identify`` (a run folder or its
    model.pt: eager; a saved_model.pt, a submission.zip or an export folder: torchscript). Raises its
    GuieError for anything else."""
    artifact = identify(arg, TAKES_EVAL_MODEL)
    kind = "eager" if artifact.model_kind == CHECKPOINT else "torchscript"
    return ModelRef(artifact.name, artifact.model_file, kind, str(arg))


def resolve_models(args: Sequence[str | Path]) -> list[ModelRef]:
    """ModelRefs with unique names (``name-2``, ... for repeats)."""
    if not args:
        raise GuieError("no model given; pass a run folder, a saved_model.pt or a submission.zip")
    refs: list[ModelRef] = []
    used: set[str] = set()
    for arg in args:
        ref = resolve_model(arg)
        name = unique_name(ref.name, used)
        refs.append(ModelRef(name, ref.path, ref.kind, ref.source))
    return refs


class HostImageDataset(Dataset):
    """Items ``(uint8 tensor (3, H, W) at original size, position, ok)``, made as the host made them."""

    def __init__(self, paths: Sequence[str]) -> None:
        self.paths = list(paths)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int, bool]:
        from torchvision.transforms.functional import pil_to_tensor

        try:
            return pil_to_tensor(load_rgb(self.paths[i])), i, True
        except Exception:  # noqa: BLE001 - any decode failure is a bad image, reported by the caller
            return torch.zeros(3, 1, 1, dtype=torch.uint8), i, False


@dataclass
class Embeddings:
    """Per model, an ``(N, d)`` float32 array of unit rows (zeros for unreadable images); plus the unreadable ones.

    ``features_cached`` and ``features_computed`` count, over the run folders' backbones, the images
    whose frozen features came from the feature cache and those the backbone computed in this call
    (into the cache; under torchrun, by all ranks together).
    """

    vectors: dict[str, np.ndarray]
    bad: dict[int, str]  # position -> reason
    warnings: list[str]
    features_cached: int = 0
    features_computed: int = 0


def l2_normalise(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(norms, 1e-12)).astype(np.float32)


def _embed_eager_group(refs: list[ModelRef], paths: Sequence[str], device: torch.device, batch_size: int,
                       workers: int, bad: dict[int, str]) -> dict[str, np.ndarray]:
    from guie.model.embedder import load_embedder

    embedder, backbone = load_embedder(refs[0].path, device)
    projections = {refs[0].name: embedder.projection}
    for ref in refs[1:]:
        projections[ref.name] = projection_from(read_model_file(ref.path)).to(device)
    out = {name: np.zeros((len(paths), p.dim), np.float32) for name, p in projections.items()}
    label = refs[0].name if len(refs) == 1 else f"{len(refs)} models on {backbone.spec.name}"
    for batch in forward_images(backbone, paths, device, batch_size, workers, desc=f"embed ({label})"):
        for i in batch.unreadable.tolist():
            bad[i] = UNREADABLE
        if len(batch.positions):
            hw = batch.sizes.to(device)  # for projections trained with size features
            with torch.inference_mode():
                for name, projection in projections.items():
                    out[name][batch.positions] = projection(batch.features, hw).float().cpu().numpy()
    return out


def _embed_cached_group(refs: list[ModelRef], models: dict[str, dict], paths: Sequence[str], device: torch.device,
                        batch_size: int, workers: int, cache_dir: Path, dist: DistContext,
                        log: Callable[[str], None], bad: dict[int, str]) -> tuple[dict[str, np.ndarray] | None, int]:
    """Run folders on one frozen backbone: features from the cache (the missing ones computed into it,
    each rank its share), then each projection; returns (vectors by name, None off rank 0; images computed)."""
    spec = backbone_spec_of(models[refs[0].name], refs[0].path)
    projections = {ref.name: projection_from(models[ref.name]).to(device) for ref in refs}
    label = refs[0].name if len(refs) == 1 else f"{len(refs)} models on {spec.name}"
    feats = ensure_features(paths, spec, 0, cache_dir, BackboneOnDemand(spec, device, load_backbone, log),
                            batch_size=batch_size, num_workers=workers, device=device, log=lambda _: None, dist=dist,
                            need_sizes=any(p.size_features for p in projections.values()))
    log(f"backbone features of {len(paths)} images ({label}): {len(paths) - feats.computed} from the feature cache, "
        f"{feats.computed} computed (cache {cache_dir})")
    if not dist.is_main:
        return None, feats.computed
    bad.update(feats.bad)
    good = np.setdiff1d(np.arange(len(paths), dtype=np.int64), np.fromiter(feats.bad, np.int64, len(feats.bad)))
    out = {}
    for name, projection in projections.items():
        out[name] = np.zeros((len(paths), projection.dim), np.float32)
        out[name][good] = project_features(projection, feats.views[0], good, device, feats.sizes)
    return out, feats.computed


def _embed_torchscript(ref: ModelRef, paths: Sequence[str], device: torch.device, workers: int,
                       bad: dict[int, str], warnings: list[str]) -> np.ndarray:
    module = load_torchscript(ref.path, device, shown_as=repr(ref.source),
                              fix="pass a TorchScript saved_model.pt made by this or an older torch")
    rows: dict[int, np.ndarray] = {}
    dim: int | None = None
    loader = DataLoader(HostImageDataset(paths), batch_size=None, num_workers=workers, shuffle=False)
    with tqdm(total=len(paths), desc=f"embed ({ref.name}, one image at a time)", unit="img",
              dynamic_ncols=True) as bar, torch.inference_mode():
        for x, i, ok in loader:
            bar.update(1)
            if not ok:
                bad[int(i)] = "unreadable or corrupt image"
                continue
            try:
                vec = module(x.unsqueeze(0).to(device))[0].flatten().float().cpu().numpy()
            except Exception as exc:  # noqa: BLE001 - TorchScript raises RuntimeError subclasses for anything
                first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else ""
                raise GuieError(f"model {ref.name!r} fails on image {paths[int(i)]!r} of size "
                                f"{tuple(x.shape[1:])} ({type(exc).__name__}: {first}); the host would fail too: "
                                "fix the module") from None
            if dim is None:
                dim = len(vec)
            elif len(vec) != dim:
                raise GuieError(f"model {ref.name!r} returns {len(vec)} values for {paths[int(i)]!r} but {dim} "
                                "for earlier images; its output must have one fixed size")
            if not np.isfinite(vec).all():
                raise GuieError(f"model {ref.name!r} returns non-finite values for {paths[int(i)]!r}; fix the module")
            rows[int(i)] = vec
    out = np.zeros((len(paths), dim or 0), np.float32)
    for i, vec in rows.items():
        out[i] = vec
    if rows:
        norms = np.linalg.norm(out[list(rows)], axis=1)
        if np.abs(norms - 1).max() > 1e-3:
            warnings.append(f"{ref.name}: outputs are not L2-normalised (norms {norms.min():.3g} to {norms.max():.3g}); "
                            "guie-eval normalises them, but the host ranked raw outputs by Euclidean distance")
        if dim and dim > 64:
            warnings.append(f"{ref.name}: outputs have {dim} values; the competition allowed at most 64")
    return out


def embed_with_models(refs: Sequence[ModelRef], paths: Sequence[str], device: str | torch.device = "auto",
                      batch_size: int = 64, workers: int | None = None,
                      log: Callable[[str], None] = print, cache_dir: str | Path | None = None,
                      dist: DistContext | None = None) -> Embeddings | None:
    """Unit-length embeddings of ``paths`` under every model to evaluate in ``refs``: float32 ``(N, d)``
    per model name, zero rows for the unreadable images listed in ``Embeddings.bad``.

    Run folders read their backbone's features from the feature cache in ``cache_dir`` (view 0,
    computing only the missing images; see the module docstring for stage-2 runs), or with
    ``cache_dir`` None run the eager embedder directly; eager models sharing a backbone run it once
    per image. ``workers`` None: the default decode workers. Under torchrun (``dist`` of several
    ranks) every rank computes its share of the missing features and only rank 0 embeds and
    returns; the other ranks return None. Raises GuieError when a TorchScript model fails on a
    readable image or changes its output size.
    """
    dist = dist or DistContext()
    dev = dist.device(device if isinstance(device, torch.device) else resolve_device(device))
    n_workers = decode_workers(workers)
    bad: dict[int, str] = {}
    warnings: list[str] = []
    vectors: dict[str, np.ndarray] = {}
    models = {ref.name: read_model_file(ref.path) for ref in refs if ref.kind == "eager"}
    cached_groups: dict[str, list[ModelRef]] = {}
    direct_groups: dict[str, list[ModelRef]] = {}
    for ref in refs:
        if ref.kind == "eager":
            data = models[ref.name]
            key = repr((sorted(data["backbone"].items()), sorted(data["preprocess_cfg"].items())))
            if data.get("backbone_finetuned"):  # stage 2: its own tower, never the frozen features
                direct_groups.setdefault(f"stage2:{ref.path.resolve()}", []).append(ref)
            elif cache_dir is None:
                direct_groups.setdefault(key, []).append(ref)
            else:
                cached_groups.setdefault(key, []).append(ref)
    computed = 0
    for group in cached_groups.values():
        log(f"embedding {len(paths)} images with {', '.join(r.name for r in group)} (eager, {dev}, feature cache)")
        out, n = _embed_cached_group(group, models, paths, dev, batch_size, n_workers, Path(cache_dir), dist, log, bad)
        computed += n
        vectors.update(out or {})
    if not dist.is_main:
        return None
    for key, group in direct_groups.items():
        stage2 = "; stage 2: its fine-tuned blocks, not the cached features" if key.startswith("stage2:") else ""
        log(f"embedding {len(paths)} images with {', '.join(r.name for r in group)} (eager, {dev}{stage2})")
        vectors.update(_embed_eager_group(group, paths, dev, batch_size, n_workers, bad))
    for ref in refs:
        if ref.kind == "torchscript":
            log(f"embedding {len(paths)} images with {ref.name} (TorchScript, one image at a time as the host did)")
            vectors[ref.name] = _embed_torchscript(ref, paths, dev, n_workers, bad, warnings)
    cached = len(paths) * len(cached_groups) - computed
    return Embeddings({r.name: l2_normalise(vectors[r.name]) for r in refs}, bad, warnings, cached, computed)
