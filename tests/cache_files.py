"""Test helpers for the feature cache's files: list a cache's shards, and turn a cache back into
the format of guie before the journal (index.json with JSON key lists), as users' disks hold it."""
from __future__ import annotations

import json
from pathlib import Path

from guie.features.cache import JOURNAL, LEGACY_INDEX, FeatureCache, _read_keys


def cache_folder(root: Path) -> Path:
    """The one cache folder (backbone and view) under ``root``."""
    (journal,) = Path(root).glob(f"*/{JOURNAL}")
    return journal.parent


def shards_in(root: Path) -> list[dict]:
    """The shards listed in the one cache folder under ``root``."""
    return FeatureCache.open_dir(cache_folder(root), {}).shards


def shard_keys(root: Path) -> list[set[str]]:
    """The image keys of each shard of the one cache folder under ``root``, in the order they were added."""
    folder = cache_folder(root)
    return [set(_read_keys(folder / shard["keys"])) for shard in FeatureCache.open_dir(folder, {}).shards]


def write_legacy_index(folder: Path, drop_sizes: bool = False) -> dict:
    """Rewrite the cache in ``folder`` as guie wrote it before the journal: ``index.json`` listing every
    shard, keys as JSON lists (and, with ``drop_sizes``, as before image sizes were recorded)."""
    cache = FeatureCache.open_dir(folder, {})
    shards = []
    for shard in cache.shards:
        keys = _read_keys(folder / shard["keys"])
        (folder / shard["keys"]).unlink()
        shard = {**shard, "keys": shard["keys"].replace(".keys.txt", ".keys.json")}
        (folder / shard["keys"]).write_text(json.dumps(keys))
        if drop_sizes:
            (folder / shard.pop("sizes")).unlink()
        shards.append(shard)
    index = {"identity": cache.identity, "meta": cache.meta, "shards": shards, "bad": cache.bad}
    (folder / LEGACY_INDEX).write_text(json.dumps(index, indent=2))
    (folder / JOURNAL).unlink()
    return index
