"""Filling the feature cache: the frozen backbone over the images a cache does not hold yet.

:func:`ensure_features` returns per-view feature tables for a record list, running the backbone
only on missing images (each torchrun rank on its share, each share claimed block by block so that
other processes on the same cache never compute the same images: :func:`extract_claimed`);
:func:`extract_into` runs the backbone over a list of images (through
:func:`guie.features.forward.forward_images`) and writes the result to a cache in shards.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from guie.distributed import DistContext
from guie.features.cache import FeatureCache, FeatureTable, image_key, key_hashes
from guie.features.forward import UNREADABLE, forward_images
from guie.model.backbone import Backbone, BackboneSpec
from guie.model.backbone_names import describe_backbone
from guie.model.projection import Projection


def extract_into(cache: FeatureCache, paths: Sequence[str], keys: Sequence[str], backbone: Backbone,
                 view: int, batch_size: int, num_workers: int | None, device: torch.device,
                 shard_size: int = 4096, desc: str = "features", progress: bool = True,
                 bar: tqdm | None = None, on_batch: Callable[[], None] | None = None) -> int:
    """Run the frozen backbone over ``paths`` (view ``view``, seeded by ``keys``) and add the features to
    ``cache`` in shards of about ``shard_size`` images; returns how many images were unreadable.

    ``num_workers`` None: the default decode workers (see :func:`guie.features.forward.forward_images`).
    ``bar``: a progress bar to advance instead of a new one; ``on_batch`` is called after every batch
    (a claim's heartbeat).
    """
    meta = {"feature_dim": backbone.feature_dim,
            "preprocess_cfg": {k: list(v) if isinstance(v, tuple) else v for k, v in backbone.preprocess_cfg.items()}}
    pending_keys: list[str] = []
    pending: list[np.ndarray] = []
    pending_sizes: list[np.ndarray] = []
    pending_bad: dict[str, str] = {}
    n_bad = 0

    def flush() -> None:
        if pending_keys or pending_bad:
            feats = np.concatenate(pending) if pending else np.zeros((0, backbone.feature_dim), np.float16)
            sizes = np.concatenate(pending_sizes) if pending_sizes else np.zeros((0, 2), np.int32)
            cache.add_shard(list(pending_keys), feats, sizes, dict(pending_bad), meta)
            pending_keys.clear(), pending.clear(), pending_sizes.clear(), pending_bad.clear()

    for batch in forward_images(backbone, paths, device, batch_size, num_workers, view=view, keys=keys,
                                desc=desc if progress else None, bar=bar):
        if on_batch is not None:
            on_batch()
        for i in batch.unreadable.tolist():
            pending_bad[keys[i]] = UNREADABLE
        n_bad += len(batch.unreadable)
        if len(batch.positions):
            pending.append(batch.features.cpu().numpy().astype(np.float16))
            pending_sizes.append(batch.sizes.numpy())
            pending_keys.extend(keys[i] for i in batch.positions.tolist())
        if len(pending_keys) >= shard_size:
            flush()
    flush()
    return n_bad


CLAIM_POLL_S = 1.0  # how often a process waiting for another's images looks again


def extract_claimed(cache: FeatureCache, todo: Sequence[int], paths: Sequence[str], keys: Sequence[str],
                    hashes: np.ndarray, get_backbone: Callable[[], Backbone], view: int, batch_size: int,
                    num_workers: int | None, device: torch.device, shard_size: int, desc: str, progress: bool,
                    log: Callable[[str], None], need_sizes: bool = False,
                    sleep: Callable[[float], None] = time.sleep) -> int:
    """Compute the images at positions ``todo`` into ``cache``, sharing the work with other processes:
    each block of ``shard_size`` images is claimed first (FeatureCache.claim), images another live process
    has claimed are left to it and waited for, and the claims of a process that died are taken over.
    Returns how many images this process computed (the backbone is loaded only if it computes any)."""
    pending = list(todo)
    computed, told = 0, False
    with tqdm(total=len(pending), desc=desc, unit="img", dynamic_ncols=True, disable=not progress) as bar:
        while pending:
            busy: list[int] = []
            for start in range(0, len(pending), shard_size):
                block = pending[start:start + shard_size]
                claim = cache.claim(keys, block, hashes, need_sizes)
                busy += claim.busy
                bar.update(len(block) - len(claim.mine) - len(claim.busy))  # done by others meanwhile
                if not claim.mine:
                    continue
                try:
                    extract_into(cache, [paths[i] for i in claim.mine], [keys[i] for i in claim.mine],
                                 get_backbone(), view, batch_size, num_workers, device, shard_size, bar=bar,
                                 on_batch=claim.touch)
                finally:
                    claim.release()
                computed += len(claim.mine)
            if not busy:
                break
            if not told:
                told = True
                log(f"waiting for another process that computes {len(busy)} of these images into {cache.dir}")
            sleep(CLAIM_POLL_S)
            cache.reload()
            left = cache.missing([keys[i] for i in busy], need_sizes=need_sizes, hashes=hashes[busy])
            bar.update(len(busy) - len(left))
            pending = [busy[i] for i in left]
    return computed


@dataclass
class CachedFeatures:
    """Per-view feature tables for a record list, and what producing them took."""

    views: list[FeatureTable]
    bad: dict[int, str]  # record position -> reason
    feature_dim: int
    preprocess_cfg: dict[str, Any]
    computed: int  # images the backbone actually ran on in this call
    sizes: np.ndarray | None = None  # with need_sizes: (records, 2) original (height, width), 0 for bad images


def ensure_features(paths: Sequence[str], spec: BackboneSpec, num_views: int, cache_root: str | Path,
                    get_backbone: Callable[[], Backbone], batch_size: int = 64, num_workers: int | None = None,
                    device: torch.device | None = None, shard_size: int = 4096,
                    log: Callable[[str], None] = print, dist: DistContext | None = None,
                    need_sizes: bool = False) -> CachedFeatures:
    """Features for ``paths`` under view 0 and ``num_views`` augmented views, computing only what is missing.

    ``get_backbone`` is called only when some image is missing from the cache. Under torchrun
    each rank extracts every world-th missing image into shards of its own; all ranks agree on
    what is missing before any of them writes. With ``need_sizes`` the images' original sizes
    are returned too, and clean-view features cached before sizes were recorded are recomputed.
    """
    dist = dist or DistContext()
    device = device or torch.device("cpu")
    keys = [image_key(p) for p in paths]
    hashes = key_hashes(keys)
    tables: list[FeatureTable] = []
    computed = 0
    caches = [FeatureCache.open(cache_root, spec, v) for v in range(num_views + 1)]
    for view, cache in enumerate(caches):
        todo = cache.missing(keys, need_sizes=need_sizes and view == 0, hashes=hashes)
        dist.barrier()  # every rank has read the same index before any rank adds to it
        label = "clean view" if view == 0 else f"augmented view {view}"
        if not todo:
            log(f"using cached features for {len(keys)} images ({label}; cache {cache.dir})")
        else:
            if len(todo) < len(keys):
                log(f"using cached features for {len(keys) - len(todo)} images, computing {len(todo)} ({label})")
            mine = todo[dist.rank::dist.world]
            done = extract_claimed(cache, mine, paths, keys, hashes, get_backbone, view, batch_size, num_workers,
                                   device, shard_size, f"features ({label})", dist.is_main, log,
                                   need_sizes and view == 0)
            computed += int(dist.sum([float(done)])[0])
            dist.barrier()
            cache.reload()  # pick up the other ranks' shards
        tables.append(cache.table(keys, hashes))
    meta = caches[0].meta
    bad = {i: caches[0].bad[k] for i, k in enumerate(keys) if k in caches[0].bad} if caches[0].bad else {}
    sizes = tables[0].sizes(np.arange(len(keys))) if need_sizes else None
    return CachedFeatures(tables, bad, int(meta["feature_dim"]), meta["preprocess_cfg"], computed, sizes)


class BackboneOnDemand:
    """The backbone, loaded on the first call (so never when every feature is cached) and kept until released."""

    def __init__(self, spec: BackboneSpec, device: torch.device,
                 loader: Callable[[BackboneSpec, torch.device], Backbone], log: Callable[[str], None]) -> None:
        self.spec, self.device, self.loader, self.log = spec, device, loader, log
        self.loaded: Backbone | None = None

    def __call__(self) -> Backbone:
        if self.loaded is None:
            self.log(f"loading backbone {describe_backbone(self.spec.to_dict())} on {self.device}")
            self.loaded = self.loader(self.spec, self.device)
        return self.loaded

    def release(self) -> None:
        """Drop the loaded backbone (a later call loads it again)."""
        self.loaded = None


def project_features(projection: Projection, table: FeatureTable, index: np.ndarray, device: torch.device,
          sizes: np.ndarray | None = None, batch: int = 8192) -> np.ndarray:
    """Embeddings ``(len(index), dim)`` float32 of the cached features at record positions ``index``: ``projection``
    over ``table``'s rows, ``batch`` at a time (with the records' original ``sizes`` (N, 2) for size features)."""
    out = []
    with torch.inference_mode():
        for start in range(0, len(index), batch):
            part = index[start:start + batch]
            x = torch.from_numpy(table.get(part)).to(device)
            s = torch.from_numpy(sizes[part]).to(device) if sizes is not None else None
            out.append(projection(x, s).float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, projection.dim), np.float32)
