"""Frozen backbone features, computed once and cached on disk in shards, memory-mapped on read.

A cache folder holds the features of one backbone (name + weights fingerprint) under one
image view (view 0: the model's own inference transform; view k >= 1: the k-th seeded
augmented view). Inside it, each image is keyed by path, size and mtime, so the same cache
serves every run and sweep whose records overlap, and edited files are recomputed. Shards
are written whole (temp file, then rename) and listed in the journal index.jsonl only
afterwards, so a killed extraction resumes from its last shard; a shard that fails to load
is dropped and its images recomputed. Each shard also records the images' original (height,
width), the input of size features; a shard from before sizes were recorded counts as
missing for a run that needs them.

Bookkeeping is linear: adding a shard reads only its own keys and the journal lines added
since; opening a cache of N images parses N keys (one per line) and keeps 24 bytes per image
in memory (two 64-bit key hashes, shard and row), not a dict of key strings.

Processes that share a cache (two guie-train runs, two torchrun jobs) share the work: before
computing a batch of images a process claims it (:meth:`FeatureCache.claim`, a file in
``claims/`` written under the folder lock, naming its host and process and touched while it
computes), and skips what a live process has claimed, waiting for those images instead. A claim
whose process is gone (same host, pid not alive) or that has not been touched for
CLAIM_STALE_S seconds is stale, and its images are claimed again.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from filelock import FileLock
from tqdm.auto import tqdm

from guie.fileio import atomic_path, write_text, writing_into
from guie.fsnames import ENCODING, ERRORS, name_bytes
from guie.model.backbone import BackboneSpec

CACHE_FORMAT = "guie-features/1"
AUGMENT_NAME = "rrc0.5-hflip"
JOURNAL = "index.jsonl"
LEGACY_INDEX = "index.json"
CLAIMS_DIR = "claims"
CLAIM_STALE_S = 300.0  # a claim untouched this long is stale: its owner touches it after every batch
CLAIM_TOUCH_S = 10.0  # at most one touch per this many seconds
CACHE_FULL_FIX = ("free space there or move the feature cache to another disk (--cache-dir or $GUIE_CACHE), then "
                  "rerun: the shards already written are kept and extraction resumes after them")


def image_key(path: str) -> str:
    """Identity of an image file in the cache: path, size and modification time."""
    try:
        st = os.stat(path)
        return f"{path}|{st.st_size}|{st.st_mtime_ns}"
    except OSError:
        return f"{path}|missing"


def key_hashes(keys: Sequence[str]) -> np.ndarray:
    """The in-memory identity of each cache key: two independent 64-bit string hashes, ``(N, 2)`` int64.

    Python's string hash is keyed per process, so these are never written to disk; a wrong match
    needs both hashes of two different keys to agree (odds about N * M / 2**128).
    """
    out = np.empty((len(keys), 2), dtype=np.int64)
    out[:, 0] = np.fromiter(map(hash, keys), np.int64, len(keys))
    out[:, 1] = np.fromiter((hash("\x00" + k) for k in keys), np.int64, len(keys))
    return out


class KeyIndex:
    """Where each cached image lives (shard, row), as sorted hash arrays: 24 bytes per cached image.

    Shards are added in O(shard) (their hashes wait in a list); the first lookup after an addition
    merges them with one sort. When a key is in several shards, the shard added last wins.
    """

    def __init__(self) -> None:
        self._pending: list[tuple[np.ndarray, int]] = []
        self._h1 = np.zeros(0, np.int64)
        self._h2 = np.zeros(0, np.int64)
        self._shard = np.zeros(0, np.int32)
        self._row = np.zeros(0, np.int32)

    def __len__(self) -> int:
        self._merge()
        return len(self._h1)

    @property
    def nbytes(self) -> int:
        """Memory held by the index, in bytes (after merging what is pending)."""
        self._merge()
        return sum(a.nbytes for a in (self._h1, self._h2, self._shard, self._row))

    def add(self, hashes: np.ndarray, shard: int) -> None:
        """Record that row r of shard ``shard`` holds the key with ``hashes[r]`` ((rows, 2) int64)."""
        self._pending.append((hashes, shard))

    def _merge(self) -> None:
        if not self._pending:
            return
        h = [p[0] for p in self._pending]
        h1 = np.concatenate([self._h1, *(x[:, 0] for x in h)])
        h2 = np.concatenate([self._h2, *(x[:, 1] for x in h)])
        shard = np.concatenate([self._shard, *(np.full(len(x), s, np.int32) for x, s in self._pending)])
        row = np.concatenate([self._row, *(np.arange(len(x), dtype=np.int32) for x in h)])
        self._pending = []
        order = np.lexsort((h2, h1))  # stable: equal keys stay in the order their shards were added
        h1, h2, shard, row = h1[order], h2[order], shard[order], row[order]
        last = np.ones(len(h1), dtype=bool)
        last[:-1] = (h1[1:] != h1[:-1]) | (h2[1:] != h2[:-1])
        self._h1, self._h2, self._shard, self._row = h1[last], h2[last], shard[last], row[last]

    def lookup(self, hashes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(shard, row) of each key of ``hashes`` ((N, 2) int64): int32 arrays of N, shard -1 where absent."""
        self._merge()
        shard = np.full(len(hashes), -1, dtype=np.int32)
        row = np.zeros(len(hashes), dtype=np.int32)
        if not len(self._h1) or not len(hashes):
            return shard, row
        pos = np.minimum(np.searchsorted(self._h1, hashes[:, 0]), len(self._h1) - 1)
        same1 = self._h1[pos] == hashes[:, 0]
        hit = same1 & (self._h2[pos] == hashes[:, 1])
        for i in np.flatnonzero(same1 & ~hit):  # first hashes agree, second differ: walk the run
            j = pos[i] + 1
            while j < len(self._h1) and self._h1[j] == hashes[i, 0]:
                if self._h2[j] == hashes[i, 1]:
                    pos[i], hit[i] = j, True
                    break
                j += 1
        shard[hit], row[hit] = self._shard[pos[hit]], self._row[pos[hit]]
        return shard, row


def _read_keys(path: Path) -> list[str]:
    """A shard's keys: one per line in ``.keys.txt``, or a JSON list in ``.keys.json`` (older caches)."""
    if path.suffix == ".json":
        return json.loads(path.read_text(encoding="utf-8"))
    text = path.read_bytes().decode(ENCODING, ERRORS)
    return text.split("\n") if text else []


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


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this host (signal 0: PermissionError means it does)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    return True


@dataclass
class Claim:
    """Images this process computes for the cache: positions in the caller's key list, ``busy`` the
    positions a live process elsewhere has claimed. ``touch`` keeps the claim alive; ``release`` ends it."""

    path: Path | None
    mine: list[int]
    busy: list[int]
    touched: float = 0.0

    def touch(self) -> None:
        """Mark the claim alive (its file's mtime), at most once per CLAIM_TOUCH_S."""
        now = time.monotonic()
        if self.path is not None and now - self.touched >= CLAIM_TOUCH_S:
            with contextlib.suppress(OSError):
                os.utime(self.path)
            self.touched = now

    def release(self) -> None:
        if self.path is not None:
            self.path.unlink(missing_ok=True)
            self.path = None


@dataclass
class FeatureCache:
    """One cache folder: a backbone's features under one view.

    ``index.jsonl`` is an append-only journal, one JSON line per event: the identity, a shard
    added (with the backbone meta and the bad images found meanwhile), a shard dropped as broken.
    Adding a shard appends one line and reads only the lines added since this process last
    looked, so extraction bookkeeping grows with the shards written, not with the cache. A cache
    from before the journal (``index.json`` with every shard listed) is converted on open; its
    files are kept.
    """

    dir: Path
    identity: dict[str, Any]
    keys_read: int = 0  # keys parsed from shard key files since open: the work of the bookkeeping
    journal_bytes_read: int = 0

    @classmethod
    def open(cls, root: str | Path, spec: BackboneSpec, view: int) -> FeatureCache:
        """The cache folder for ``spec`` under ``view`` in ``root`` (created if new), its journal read."""
        identity = {"format": CACHE_FORMAT, "backbone": spec.fingerprint(),
                    "view": view, "augment": AUGMENT_NAME if view else "none"}
        digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:20]
        return cls.open_dir(Path(root) / f"{spec.cache_label}-v{view}-{digest}", identity)

    @classmethod
    def open_dir(cls, folder: str | Path, identity: dict[str, Any]) -> FeatureCache:
        """The cache in ``folder`` (created if new); ``identity`` is recorded in a new journal."""
        cache = cls(Path(folder), identity)
        cache.dir.mkdir(parents=True, exist_ok=True)
        cache._migrate_legacy()
        cache._reset()
        cache._read_journal()
        return cache

    def _reset(self) -> None:
        self._offset = 0
        self._meta: dict[str, Any] | None = None
        self._bad: dict[str, str] = {}
        self._shards: list[dict[str, Any]] = []
        self._arrays: list[np.ndarray] = []
        self._size_arrays: list[np.ndarray | None] = []
        self._keys = KeyIndex()

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Hold the folder's ``.lock`` exclusively (across processes: torchrun ranks, parallel runs)."""
        with FileLock(self.dir / ".lock"):
            yield

    def _migrate_legacy(self) -> None:
        """Turn an ``index.json`` cache into a journal listing the same shards (the old file stays)."""
        journal, legacy = self.dir / JOURNAL, self.dir / LEGACY_INDEX
        if journal.exists() or not legacy.exists():
            return
        with self._locked():
            if journal.exists():
                return
            try:
                old = json.loads(legacy.read_text())
            except (OSError, json.JSONDecodeError):
                old = {}
            lines = [{"identity": self.identity}, {"meta": old.get("meta"), "bad": old.get("bad") or {}}]
            lines += [{"shard": shard} for shard in old.get("shards") or []]
            write_text(journal, "".join(json.dumps(line) + "\n" for line in lines))

    def _append(self, lines: list[dict[str, Any]]) -> None:
        """Append ``lines`` to the journal under the folder lock, as one write; a write the disk refuses
        is undone (the journal cut back to where it ended), so it never keeps a torn line."""
        data = "".join(json.dumps(line) + "\n" for line in lines).encode()
        with self._locked(), open(self.dir / JOURNAL, "a+b", buffering=0) as fh:  # unbuffered: nothing left to flush
            end = fh.seek(0, os.SEEK_END)
            if end == 0:
                data = (json.dumps({"identity": self.identity}) + "\n").encode() + data
            else:
                fh.seek(end - 1)
                if fh.read(1) != b"\n":  # a writer was killed mid-line: end its torn line first
                    data = b"\n" + data
            try:
                view = memoryview(data)
                while view:
                    view = view[fh.write(view):]
                os.fsync(fh.fileno())
            except OSError:
                fh.truncate(end)
                raise

    def _read_journal(self) -> None:
        """Apply the journal lines added since the last read (all of them on open)."""
        path = self.dir / JOURNAL
        if not path.exists():
            return
        with open(path, "rb") as fh:
            fh.seek(self._offset)
            data = fh.read()
        data = data[:data.rfind(b"\n") + 1]  # a line still being written is read next time
        self.journal_bytes_read += len(data)
        self._offset += len(data)
        events = []
        for raw in data.splitlines():
            try:
                event = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError):
                continue  # the torn line of a killed writer
            if isinstance(event, dict):
                events.append(event)
        dropped = {e["drop"] for e in events if "drop" in e}
        if dropped & {s["file"] for s in self._shards}:  # another process found a loaded shard broken
            self._reset()
            self._read_journal()
            return
        broken = []
        for event in events:
            if event.get("meta") is not None:
                self._meta = event["meta"]
            self._bad.update(event.get("bad") or {})
            shard = event.get("shard")
            if shard and shard["file"] not in dropped and not self._load_shard(shard):
                broken.append({"drop": shard["file"]})
        if broken:
            self._append(broken)

    def _load_shard(self, shard: dict[str, Any]) -> bool:
        """Map one shard and index its keys; False (and a message) if its files are broken."""
        try:
            arr = np.load(self.dir / shard["file"], mmap_mode="r")
            keys = _read_keys(self.dir / shard["keys"])
            if arr.shape[0] != len(keys) or arr.ndim != 2:
                raise ValueError("rows and keys disagree")
            sizes = np.load(self.dir / shard["sizes"]) if "sizes" in shard else None
            if sizes is not None and sizes.shape != (len(keys), 2):
                raise ValueError("sizes and keys disagree")
        except (OSError, ValueError, UnicodeDecodeError, json.JSONDecodeError):
            tqdm.write(f"feature cache: shard {shard['file']} is broken; its images will be recomputed")
            return False
        self.keys_read += len(keys)
        self._keys.add(key_hashes(keys), len(self._shards))
        self._shards.append(shard)
        self._arrays.append(arr)
        self._size_arrays.append(sizes)
        return True

    @property
    def meta(self) -> dict[str, Any] | None:
        """feature_dim and preprocess_cfg of the backbone, once any shard was written."""
        return self._meta

    @property
    def bad(self) -> dict[str, str]:
        """Keys of the images found unreadable, with the reason."""
        return self._bad

    @property
    def shards(self) -> list[dict[str, Any]]:
        """The shards in use, in the order they were added: file names and row counts."""
        return list(self._shards)

    def __len__(self) -> int:
        """Images with cached features."""
        return len(self._keys)

    @property
    def key_index_bytes(self) -> int:
        """Memory of the in-memory key index, in bytes: 24 per cached image."""
        return self._keys.nbytes

    def reload(self) -> None:
        """Read the journal lines other processes (torchrun ranks) added since the last read."""
        self._read_journal()

    def missing(self, keys: Sequence[str], need_sizes: bool = False, hashes: np.ndarray | None = None) -> list[int]:
        """Positions of keys with neither features nor a bad-image record (nor, with ``need_sizes``,
        a recorded image size). ``hashes``: ``key_hashes(keys)`` when the caller already has them."""
        shard, _ = self._keys.lookup(key_hashes(keys) if hashes is None else hashes)
        found = shard >= 0
        if need_sizes and found.any():
            has_sizes = np.array([s is not None for s in self._size_arrays])
            found[found] = has_sizes[shard[found]]
        return [i for i in np.flatnonzero(~found).tolist() if keys[i] not in self._bad]

    def add_shard(self, keys: list[str], features: np.ndarray, sizes: np.ndarray, bad: dict[str, str],
                  meta: dict[str, Any]) -> None:
        """Persist one shard: features ``(len(keys), D)`` (stored float16) and original (height, width)
        sizes ``(len(keys), 2)`` (stored int32), each file atomically; then one journal line lists it
        with ``bad`` (key -> reason) and ``meta``. Costs O(len(keys)) plus the lines others added."""
        line: dict[str, Any] = {"meta": meta, "bad": bad}
        written: list[Path] = []
        with writing_into(self.dir, CACHE_FULL_FIX):
            try:
                if keys:
                    name = f"shard-{uuid.uuid4().hex[:12]}"
                    keys_file = f"{name}.keys.json" if any("\n" in k for k in keys) else f"{name}.keys.txt"
                    with atomic_path(self.dir / f"{name}.npy") as tmp:
                        with open(tmp, "wb") as fh:
                            np.save(fh, features.astype(np.float16))
                    written.append(self.dir / f"{name}.npy")
                    with atomic_path(self.dir / f"{name}.sizes.npy") as tmp:
                        with open(tmp, "wb") as fh:
                            np.save(fh, sizes.astype(np.int32))
                    written.append(self.dir / f"{name}.sizes.npy")
                    with atomic_path(self.dir / keys_file) as tmp:
                        if keys_file.endswith(".json"):
                            tmp.write_text(json.dumps(keys))
                        else:
                            tmp.write_bytes(name_bytes("\n".join(keys)))
                    written.append(self.dir / keys_file)
                    line["shard"] = {"file": f"{name}.npy", "keys": keys_file, "sizes": f"{name}.sizes.npy",
                                     "rows": len(keys)}
                self._append([line])
            except BaseException:
                for path in written:  # a shard the journal does not list is only dead weight on a full disk
                    path.unlink(missing_ok=True)
                raise
        self._read_journal()

    def claim(self, keys: Sequence[str], positions: Sequence[int], hashes: np.ndarray | None = None,
              need_sizes: bool = False) -> Claim:
        """Claim, for this process, the images at ``positions`` of ``keys`` that are still missing and that no
        live process has claimed; report those a live process has. Under the folder lock; stale claims found
        on the way are removed. ``hashes``: ``key_hashes(keys)`` when the caller has them. O(len(positions))
        plus the claims in the folder."""
        positions = list(positions)
        with self._locked():
            self._read_journal()
            sub = hashes[positions] if hashes is not None else None
            still = self.missing([keys[p] for p in positions], need_sizes=need_sizes, hashes=sub)
            todo = [positions[i] for i in still]
            taken = self._live_claims() if todo else set()
            mine = [p for p in todo if keys[p] not in taken]
            busy = [p for p in todo if keys[p] in taken]
            path = None
            if mine:
                folder = self.dir / CLAIMS_DIR
                folder.mkdir(exist_ok=True)
                path = folder / f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}.json"
                with writing_into(self.dir, CACHE_FULL_FIX), atomic_path(path) as tmp:
                    tmp.write_text(json.dumps({"host": socket.gethostname(), "pid": os.getpid(),
                                               "keys": [keys[p] for p in mine]}))
        return Claim(path, mine, busy, time.monotonic())

    def _live_claims(self) -> set[str]:
        """Keys claimed by live processes (see the module docstring); stale claim files are removed."""
        taken: set[str] = set()
        folder = self.dir / CLAIMS_DIR
        if not folder.is_dir():
            return taken
        host = socket.gethostname()
        for path in folder.glob("*.json"):
            try:
                age = time.time() - path.stat().st_mtime
                claim = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue  # removed meanwhile, or being written (atomically, so never half)
            pid = int(claim.get("pid", -1))
            # this very process holds no claim while it asks for one: such a file is a leftover of its own
            dead = claim.get("host") == host and (pid == os.getpid() or not process_alive(pid))
            if dead or age > CLAIM_STALE_S:
                path.unlink(missing_ok=True)
                continue
            taken.update(claim.get("keys") or [])
        return taken

    def table(self, keys: Sequence[str], hashes: np.ndarray | None = None) -> FeatureTable:
        """The feature rows of ``keys`` (bad images map to shard -1); every key must be present.

        Raises KeyError naming the first key with neither features nor a bad-image record.
        """
        shard_of, row_of = self._keys.lookup(key_hashes(keys) if hashes is None else hashes)
        for i in np.flatnonzero(shard_of < 0).tolist():
            if keys[i] not in self._bad:
                raise KeyError(f"features missing for {keys[i]}")
        return FeatureTable(self._arrays, shard_of, row_of.astype(np.int64), int(self.meta["feature_dim"]),
                            self._size_arrays)
