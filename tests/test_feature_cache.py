"""The feature cache's bookkeeping: linear in the shards written, shared by concurrent writers,
readable from caches written before the journal."""
import multiprocessing

import numpy as np
import pytest
from cache_files import write_legacy_index

from guie.features.cache import JOURNAL, LEGACY_INDEX, FeatureCache, KeyIndex

META = {"feature_dim": 4, "preprocess_cfg": {}}


def shard_data(start: int, rows: int, prefix: str = "/img/") -> tuple[list[str], np.ndarray, np.ndarray]:
    keys = [f"{prefix}{i}.jpg|100|{i}" for i in range(start, start + rows)]
    feats = np.arange(start, start + rows, dtype=np.float32)[:, None].repeat(4, axis=1)
    return keys, feats, np.full((rows, 2), 32, np.int32)


def open_cache(folder) -> FeatureCache:
    return FeatureCache.open_dir(folder, {"format": "test"})


def test_adding_a_shard_reads_only_that_shard(tmp_path):
    cache = open_cache(tmp_path)
    journal_growth = []
    for n in range(30):
        keys_before, bytes_before = cache.keys_read, cache.journal_bytes_read
        cache.add_shard(*shard_data(50 * n, 50), {}, META)
        assert cache.keys_read - keys_before == 50  # not the 50 * n already cached
        journal_growth.append(cache.journal_bytes_read - bytes_before)
    assert max(journal_growth[1:]) == min(journal_growth[1:])  # one line each, whatever the cache holds
    assert len(cache) == 1500 and len(cache.shards) == 30
    again = open_cache(tmp_path)
    assert again.keys_read == 1500
    keys = shard_data(0, 1500)[0]
    assert again.missing(keys) == []
    assert np.array_equal(again.table(keys[::-1]).get(np.arange(1500))[:, 0], np.arange(1500)[::-1])


def test_two_writers_on_one_folder_see_each_other(tmp_path):
    a, b = open_cache(tmp_path), open_cache(tmp_path)
    a.add_shard(*shard_data(0, 10), {}, META)
    read = b.keys_read
    b.add_shard(*shard_data(10, 10), {"/bad.jpg|1|1": "unreadable"}, META)
    assert b.keys_read - read == 20  # its own shard and a's, nothing else
    a.reload()
    keys = shard_data(0, 20)[0] + ["/bad.jpg|1|1"]
    for cache in (a, b):
        assert cache.missing(keys) == [] and len(cache) == 20
        assert cache.table(keys).shard_of[-1] == -1


def _write_shards(folder: str, worker: int) -> None:
    cache = open_cache(folder)
    for n in range(8):
        cache.add_shard(*shard_data(1000 * worker + 10 * n, 10), {}, META)


def test_concurrent_processes_append_without_losing_a_shard(tmp_path):
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_write_shards, args=(str(tmp_path), w)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    cache = open_cache(tmp_path)
    assert len(cache.shards) == 32 and len(cache) == 320
    keys = [k for w in range(4) for n in range(8) for k in shard_data(1000 * w + 10 * n, 10)[0]]
    assert cache.missing(keys) == []


def test_a_writer_waits_while_another_process_holds_the_folder_lock(tmp_path):
    from filelock import FileLock

    open_cache(tmp_path)  # the journal exists, so the writer's first step is the locked append
    ctx = multiprocessing.get_context("fork")
    writer = ctx.Process(target=_write_shards, args=(str(tmp_path), 0))
    with FileLock(tmp_path / ".lock"):
        writer.start()
        writer.join(3)
        assert writer.is_alive() and len(open_cache(tmp_path).shards) == 0  # blocked on the lock, nothing listed
    writer.join(60)
    assert writer.exitcode == 0 and len(open_cache(tmp_path).shards) == 8


def test_a_cache_written_before_the_journal_is_converted_and_keeps_its_features(tmp_path):
    cache = open_cache(tmp_path)
    cache.add_shard(*shard_data(0, 30), {"/bad.jpg|1|1": "corrupt"}, META)
    cache.add_shard(*shard_data(30, 30), {}, META)
    legacy = write_legacy_index(tmp_path)
    assert not (tmp_path / JOURNAL).exists() and all(s["keys"].endswith(".json") for s in legacy["shards"])
    old = open_cache(tmp_path)
    keys = shard_data(0, 60)[0]
    assert old.missing(keys + ["/bad.jpg|1|1"]) == [] and old.meta == META and old.bad == legacy["bad"]
    assert np.array_equal(old.table(keys).get(np.arange(60))[:, 0], np.arange(60))
    assert (tmp_path / LEGACY_INDEX).exists() and (tmp_path / JOURNAL).exists()
    old.add_shard(*shard_data(60, 5), {}, META)  # and it grows like any other
    assert open_cache(tmp_path).missing(shard_data(0, 65)[0]) == []


def test_a_torn_journal_line_is_skipped_and_the_next_shard_still_lands(tmp_path):
    cache = open_cache(tmp_path)
    cache.add_shard(*shard_data(0, 5), {}, META)
    with open(tmp_path / JOURNAL, "ab") as fh:
        fh.write(b'{"shard": {"file": "shard-x')  # a writer killed mid-line
    other = open_cache(tmp_path)
    other.add_shard(*shard_data(5, 5), {}, META)
    assert open_cache(tmp_path).missing(shard_data(0, 10)[0]) == []


def test_the_shard_added_last_wins_and_odd_keys_round_trip(tmp_path):
    cache = open_cache(tmp_path)
    keys, feats, sizes = shard_data(0, 3)
    cache.add_shard(keys, feats, sizes, {}, META)
    cache.add_shard(keys[:1], feats[:1] + 100, sizes[:1], {}, META)
    assert cache.table(keys).get(np.arange(3))[:, 0].tolist() == [100, 1, 2]
    odd = ["/a\nb.jpg|1|1", "/caf\udce9.jpg|1|1", "/tab\tand\rcr.jpg|1|1"]
    cache.add_shard(odd, np.ones((3, 4), np.float32), np.ones((3, 2), np.int32), {}, META)
    assert open_cache(tmp_path).missing(odd) == []
    with pytest.raises(KeyError, match="features missing"):
        cache.table(["/never.jpg|1|1"])


def test_key_index_tells_apart_keys_whose_first_hashes_agree():
    index = KeyIndex()
    index.add(np.array([[7, 1], [7, 2], [3, 9]], np.int64), 0)
    index.add(np.array([[7, 2]], np.int64), 1)  # a newer copy of one key
    shard, row = index.lookup(np.array([[7, 2], [7, 1], [7, 5], [3, 9], [8, 1]], np.int64))
    assert shard.tolist() == [1, 0, -1, 0, -1] and row.tolist()[:2] == [0, 0] and row[3] == 2
    assert len(index) == 3
