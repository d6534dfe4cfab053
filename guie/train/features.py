"""Frozen backbone features, computed once and cached on disk in shards, memory-mapped on read.

A cache folder holds the features of one backbone (name + weights fingerprint) under one
image view (view 0: the model's own inference transform; view k >= 1: the k-th seeded
augmented view). Inside it, each image is keyed by path, size and mtime, so the same cache
serves every run and sweep whose records overlap, and edited files are recomputed. Shards
are written whole (temp file, then rename) and listed in index.json only afterwards, so a
killed extraction resumes from its last shard; a shard that fails to load is dropped and
its images recomputed. Each shard also records the images' original (height, width), the
input of size features; a shard from before sizes were recorded counts as missing for a run
that needs them.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from guie.data.images import ImageDataset, default_workers
from guie.fileio import atomic_path, write_json
from guie.model.backbone import Backbone, BackboneSpec, augment_transform, eval_transform
from guie.train.distributed import DistContext

CACHE_FORMAT = "guie-features/1"
AUGMENT_NAME = "rrc0.5-hflip"


def image_key(path: str) -> str:
    """Identity of an image file in the cache: path, size and modification time."""
    try:
        st = os.stat(path)
        return f"{path}|{st.st_size}|{st.st_mtime_ns}"
    except OSError:
        return f"{path}|missing"


@dataclass
class FeatureTable:
    """Row-addressable view over memory-mapped shards: ``table[i]`` is record i's feature row."""

    shards: list[np.ndarray]
    shard_of: np.ndarray  # per record: shard number, -1 for a bad image
    row_of: np.ndarray
    dim: int
    size_shards: list[np.ndarray | None] = field(default_factory=list)  # per shard: (rows, 2) int32 or None

    def __len__(self) -> int:
        return len(self.shard_of)

    def get(self, index: np.ndarray) -> np.ndarray:
        """Feature rows (float32) for record positions ``index``, reading only those rows."""
        return self._rows(self.shards, index, self.dim)

    def sizes(self, index: np.ndarray) -> np.ndarray:
        """Original (height, width) of the images at record positions ``index``, float32; 0 for bad images."""
        if any(self.size_shards[s] is None for s in np.unique(self.shard_of[np.asarray(index)]) if s >= 0):
            raise KeyError("image sizes were not recorded in this cache shard")
        return self._rows(self.size_shards, index, 2)

    def _rows(self, arrays: Sequence[np.ndarray | None], index: np.ndarray, width: int) -> np.ndarray:
        """Rows of the per-shard ``arrays`` for record positions ``index`` as float32 (zeros for bad images)."""
        index = np.asarray(index)
        out = np.zeros((len(index), width), dtype=np.float32)
        shard_ids = self.shard_of[index]
        for s in np.unique(shard_ids):
            if s < 0:
                continue
            sel = shard_ids == s
            out[sel] = arrays[s][self.row_of[index[sel]]]
        return out


@dataclass
class FeatureCache:
    """One cache folder: a backbone's features under one view."""

    dir: Path
    identity: dict[str, Any]
    _index: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def open(cls, root: str | Path, spec: BackboneSpec, view: int) -> FeatureCache:
        identity = {"format": CACHE_FORMAT, "backbone": spec.fingerprint(),
                    "view": view, "augment": AUGMENT_NAME if view else "none"}
        digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:20]
        safe = spec.name.replace("/", "_")
        cache = cls(Path(root) / f"{safe}-v{view}-{digest}", identity)
        cache.dir.mkdir(parents=True, exist_ok=True)
        cache._load_index()
        return cache

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with open(self.dir / ".lock", "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _load_index(self) -> None:
        path = self.dir / "index.json"
        try:
            self._index = json.loads(path.read_text()) if path.exists() else {}
        except (OSError, json.JSONDecodeError):
            self._index = {}
        if not self._index:
            self._index = {"identity": self.identity, "meta": None, "shards": [], "bad": {}}
        self._locations: dict[str, tuple[int, int]] = {}
        self._arrays: list[np.ndarray] = []
        self._size_arrays: list[np.ndarray | None] = []
        good_shards = []
        for shard in self._index["shards"]:
            try:
                arr = np.load(self.dir / shard["file"], mmap_mode="r")
                keys = json.loads((self.dir / shard["keys"]).read_text())
                if arr.shape[0] != len(keys) or arr.ndim != 2:
                    raise ValueError("rows and keys disagree")
                sizes = np.load(self.dir / shard["sizes"]) if "sizes" in shard else None
                if sizes is not None and sizes.shape != (len(keys), 2):
                    raise ValueError("sizes and keys disagree")
            except (OSError, ValueError, json.JSONDecodeError):
                tqdm.write(f"feature cache: shard {shard['file']} is broken; its images will be recomputed")
                continue
            n = len(good_shards)
            good_shards.append(shard)
            self._arrays.append(arr)
            self._size_arrays.append(sizes)
            for row, key in enumerate(keys):
                self._locations[key] = (n, row)
        if len(good_shards) != len(self._index["shards"]):
            self._index["shards"] = good_shards
            with self._locked():
                write_json(self.dir / "index.json", self._index)

    @property
    def meta(self) -> dict[str, Any] | None:
        """feature_dim and preprocess_cfg of the backbone, once any shard was written."""
        return self._index.get("meta")

    @property
    def bad(self) -> dict[str, str]:
        return self._index["bad"]

    def reload(self) -> None:
        """Re-read index.json (after other processes added shards)."""
        self._load_index()

    def missing(self, keys: Sequence[str], need_sizes: bool = False) -> list[int]:
        """Positions of keys with neither features nor a bad-image record (nor, with ``need_sizes``,
        a recorded image size)."""
        def has(key: str) -> bool:
            loc = self._locations.get(key)
            return loc is not None and (not need_sizes or self._size_arrays[loc[0]] is not None)

        return [i for i, k in enumerate(keys) if not has(k) and k not in self.bad]

    def add_shard(self, keys: list[str], features: np.ndarray, sizes: np.ndarray, bad: dict[str, str],
                  meta: dict[str, Any]) -> None:
        """Persist one shard (features and image sizes, each atomically), then list it in the index."""
        name = f"shard-{uuid.uuid4().hex[:12]}"
        if keys:
            with atomic_path(self.dir / f"{name}.npy") as tmp:
                with open(tmp, "wb") as fh:
                    np.save(fh, features.astype(np.float16))
            with atomic_path(self.dir / f"{name}.sizes.npy") as tmp:
                with open(tmp, "wb") as fh:
                    np.save(fh, sizes.astype(np.int32))
            with atomic_path(self.dir / f"{name}.keys.json") as tmp:
                tmp.write_text(json.dumps(keys))
        with self._locked():
            # Re-read: another process (a torchrun rank) may have added shards meanwhile.
            current = json.loads((self.dir / "index.json").read_text()) if (self.dir / "index.json").exists() else self._index
            current.setdefault("shards", [])
            current.setdefault("bad", {})
            current["identity"] = self.identity
            current["meta"] = meta
            if keys:
                current["shards"].append({"file": f"{name}.npy", "keys": f"{name}.keys.json",
                                          "sizes": f"{name}.sizes.npy", "rows": len(keys)})
            current["bad"].update(bad)
            write_json(self.dir / "index.json", current)
        self._load_index()

    def table(self, keys: Sequence[str]) -> FeatureTable:
        """The feature rows of ``keys`` (bad images map to shard -1); every key must be present."""
        shard_of = np.full(len(keys), -1, dtype=np.int32)
        row_of = np.zeros(len(keys), dtype=np.int64)
        for i, key in enumerate(keys):
            loc = self._locations.get(key)
            if loc is not None:
                shard_of[i], row_of[i] = loc
            elif key not in self.bad:
                raise KeyError(f"features missing for {key}")
        return FeatureTable(self._arrays, shard_of, row_of, int(self.meta["feature_dim"]), self._size_arrays)


def extract_into(cache: FeatureCache, paths: Sequence[str], keys: Sequence[str], backbone: Backbone,
                 view: int, batch_size: int, num_workers: int, device: torch.device,
                 shard_size: int = 4096, desc: str = "features", progress: bool = True) -> int:
    """Run the frozen backbone over ``paths`` and add the features to ``cache``; returns the bad count."""
    transform = eval_transform(backbone.preprocess_cfg) if view == 0 else augment_transform(backbone.preprocess_cfg)
    dataset = ImageDataset(paths, transform, backbone.image_size, view=view, keys=keys)
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=num_workers, shuffle=False,
                        pin_memory=device.type == "cuda", persistent_workers=False)
    meta = {"feature_dim": backbone.feature_dim,
            "preprocess_cfg": {k: list(v) if isinstance(v, tuple) else v for k, v in backbone.preprocess_cfg.items()}}
    use_amp = device.type == "cuda"
    amp_dtype = torch.bfloat16 if use_amp and torch.cuda.is_bf16_supported() else torch.float16
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

    with tqdm(total=len(dataset), desc=desc, unit="img", dynamic_ncols=True, disable=not progress) as bar, torch.inference_mode():
        for pixels, pos, ok, sizes in loader:
            ok = ok.bool()
            for i in pos[~ok].tolist():
                pending_bad[keys[i]] = "unreadable or corrupt image"
            n_bad += int((~ok).sum())
            if ok.any():
                x = pixels[ok].to(device, non_blocking=True)
                with torch.autocast(device.type, dtype=amp_dtype, enabled=use_amp):
                    feats = backbone.visual(x)
                pending.append(feats.float().cpu().numpy().astype(np.float16))
                pending_sizes.append(sizes[ok].numpy())
                pending_keys.extend(keys[i] for i in pos[ok].tolist())
            bar.update(len(pos))
            if len(pending_keys) >= shard_size:
                flush()
        flush()
    return n_bad


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
    workers = default_workers() if num_workers is None else num_workers
    keys = [image_key(p) for p in paths]
    tables: list[FeatureTable] = []
    computed = 0
    caches = [FeatureCache.open(cache_root, spec, v) for v in range(num_views + 1)]
    for view, cache in enumerate(caches):
        todo = cache.missing(keys, need_sizes=need_sizes and view == 0)
        dist.barrier()  # every rank has read the same index before any rank adds to it
        label = "clean view" if view == 0 else f"augmented view {view}"
        if not todo:
            log(f"using cached features for {len(keys)} images ({label}; cache {cache.dir})")
        else:
            if len(todo) < len(keys):
                log(f"using cached features for {len(keys) - len(todo)} images, computing {len(todo)} ({label})")
            mine = todo[dist.rank::dist.world]
            backbone = get_backbone()
            extract_into(cache, [paths[i] for i in mine], [keys[i] for i in mine], backbone, view,
                         batch_size, workers, device, shard_size, desc=f"features ({label})",
                         progress=dist.is_main)
            computed += len(todo)
            dist.barrier()
            cache.reload()  # pick up the other ranks' shards
        tables.append(cache.table(keys))
    meta = caches[0].meta
    bad = {i: caches[0].bad[k] for i, k in enumerate(keys) if k in caches[0].bad}
    sizes = tables[0].sizes(np.arange(len(keys))) if need_sizes else None
    return CachedFeatures(tables, bad, int(meta["feature_dim"]), meta["preprocess_cfg"], computed, sizes)
