"""Atomic file writes: write to a temporary file beside the target, then rename over it.

A write the disk refuses for lack of room (no space left, a disk quota, a file-size limit) becomes
one line, :class:`OutOfSpace`, naming the folder, what is free there and the fix, with the
temporary file removed; every guie writer goes through :func:`atomic_path` or :func:`writing_into`.
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from guie.errors import GuieError
from guie.fsnames import shown

# What each refusal is, in the user's words (a headline); the system's words come with it (errno's text).
SPACE_ERRNOS = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is used up",
                errno.EFBIG: "the file size limit (ulimit -f) is reached"}
# The same refusals as other layers word them: numpy's short write (an OSError without errno), torch's
# zip writer (a RuntimeError), and the text of a child process (pip, a notebook cell).
_SHORT_WRITE = re.compile(r"(\d+) requested and (\d+) written")
_TORCH_WRITE = re.compile(r"unexpected pos \d+ vs \d+|PytorchStreamWriter failed writing|file write failed|"
                          r"basic_ios::clear: iostream error")
_TEXT = ((re.compile(r"No space left on device|Errno 28\b|ENOSPC"), errno.ENOSPC),
         (re.compile(r"Disk quota exceeded|Errno 122\b|EDQUOT"), errno.EDQUOT),
         (re.compile(r"File too large|Errno 27\b|EFBIG"), errno.EFBIG))
DEFAULT_FIX = "free space there or write to another disk, then rerun"


@dataclass(frozen=True)
class SpaceProblem:
    """A write refused for lack of room: its errno (ENOSPC, EDQUOT, EFBIG) and the system's words for it."""

    errno: int
    detail: str

    @property
    def headline(self) -> str:
        """'the disk is full', 'the disk quota is used up' or 'the file size limit (ulimit -f) is reached'."""
        return SPACE_ERRNOS[self.errno]


def space_problem(exc: BaseException) -> SpaceProblem | None:
    """What ``exc`` says when it is a write the disk refused for lack of room, else None. Knows the errno
    (ENOSPC, EDQUOT, EFBIG), numpy's "N requested and M written" and torch's writer errors
    ("unexpected pos", "file write failed"), which carry no errno."""
    if isinstance(exc, OutOfSpace):
        return exc.problem
    if isinstance(exc, OSError) and exc.errno in SPACE_ERRNOS:
        return SpaceProblem(exc.errno, exc.strerror or os.strerror(exc.errno))
    if isinstance(exc, OSError) and exc.errno is None and (short := _SHORT_WRITE.search(str(exc))):
        return SpaceProblem(errno.ENOSPC, f"{os.strerror(errno.ENOSPC)}: a write stopped short, {short[1]} bytes "
                                          f"requested and {short[2]} written")
    if isinstance(exc, RuntimeError) and _TORCH_WRITE.search(str(exc)):
        return SpaceProblem(errno.ENOSPC, f"{os.strerror(errno.ENOSPC)}: torch could not finish writing the file")
    return None


def space_problem_in_text(text: str) -> SpaceProblem | None:
    """The same finding in the output of a child process (pip, a notebook cell), or None."""
    return next((SpaceProblem(no, os.strerror(no)) for pattern, no in _TEXT if pattern.search(text)), None)


def free_bytes(folder: str | os.PathLike) -> int | None:
    """Free bytes for this user on the disk holding ``folder`` (its nearest existing parent), or None."""
    path = Path(os.path.abspath(folder))
    for candidate in (path, *path.parents):
        with contextlib.suppress(OSError):
            return shutil.disk_usage(candidate).free
    return None


def format_bytes(n: int | float) -> str:
    """``1536`` -> ``'1.5 KiB'``; binary units up to TiB."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


class OutOfSpace(GuieError, OSError):
    """A write refused for lack of room, as one line: what happened, the folder, the system's words, what
    is free there, the fix. Exit 1. Also an OSError with the refusal's errno, so code that handles write
    errors still does."""

    exit_code = 1

    def __init__(self, folder: str | os.PathLike, problem: SpaceProblem, fix: str = DEFAULT_FIX,
                 needed: int | None = None) -> None:
        self.folder, self.problem, self.fix, self.needed = Path(folder), problem, fix, needed
        free = free_bytes(folder)
        room = f"{format_bytes(free)} free there" if free is not None else "free space unknown"
        if needed is None:
            self.message = (f"{problem.headline}: cannot write to {shown(folder)} ({problem.detail}; {room}); "
                            f"nothing half-written was kept; {fix}")
        else:
            self.message = (f"{problem.headline}: {problem.detail} need about {format_bytes(needed)} in "
                            f"{shown(folder)} ({room}); nothing was written; {fix}")
        OSError.__init__(self, problem.errno, self.message)

    def __str__(self) -> str:
        return self.message

    def with_fix(self, fix: str) -> OutOfSpace:
        """The same refusal with the fix in another command's words."""
        return OutOfSpace(self.folder, self.problem, fix, self.needed)


@contextlib.contextmanager
def writing_into(folder: str | os.PathLike, fix: str | None = None) -> Iterator[None]:
    """Turn a refused write inside the block into :class:`OutOfSpace` for ``folder``.

    ``fix`` says what to do in this command's words (``pass another --out``); it also replaces the
    generic fix of an OutOfSpace raised deeper for a folder inside ``folder``.
    """
    try:
        yield
    except OutOfSpace as exc:
        if fix and _inside(exc.folder, Path(folder)):
            raise exc.with_fix(fix) from None
        raise
    except (OSError, RuntimeError) as exc:
        problem = space_problem(exc)
        if problem is None:
            raise
        named = written_file(exc)  # an OSError naming its file: the folder is that file's
        where = Path(named).parent if named else Path(folder)
        raise OutOfSpace(where, problem, fix if fix and _inside(where, Path(folder)) else DEFAULT_FIX) from None


def check_room(folder: str | os.PathLike, needed: int, what: str, fix: str = DEFAULT_FIX) -> None:
    """Raise :class:`OutOfSpace` before any work when the disk holding ``folder`` has less than ``needed``
    bytes free for ``what`` (e.g. "the model file and submission.zip"); a write that would fail half-way
    (torch.jit.save aborts the process on a full disk) is refused in one line instead."""
    free = free_bytes(folder)
    if free is not None and free < needed:
        raise OutOfSpace(folder, SpaceProblem(errno.ENOSPC, what), fix, needed)


STALE_AFTER_S = 60.0  # a staging folder younger than this may still be taking its lock


@contextlib.contextmanager
def staging_folder(parent: str | os.PathLike, prefix: str, log: Callable[[str], None] | None = None
                   ) -> Iterator[Path]:
    """A new temporary folder ``parent/<prefix>XXXX`` for the block, removed afterwards whatever happens.

    While in use it holds a lock (filelock, ``.lock`` inside it); folders of the same prefix whose lock
    nobody holds and that are older than STALE_AFTER_S were left by a process that died (killed, or
    aborted by torch on a full disk) and are removed first, so they never keep a disk full.
    """
    from filelock import FileLock

    parent = Path(parent)
    parent.mkdir(parents=True, exist_ok=True)
    remove_stale_staging(parent, prefix, log)
    tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    try:
        with FileLock(str(tmp / ".lock")):
            yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def remove_stale_staging(parent: Path, prefix: str, log: Callable[[str], None] | None = None) -> list[Path]:
    """Remove the staging folders of ``prefix`` in ``parent`` that no live process holds; returns them."""
    import time

    from filelock import FileLock, Timeout

    removed = []
    for folder in sorted(parent.glob(f"{prefix}*")):
        try:
            if not folder.is_dir() or folder.is_symlink() or time.time() - folder.stat().st_mtime < STALE_AFTER_S:
                continue
            lock = FileLock(str(folder / ".lock"))
            lock.acquire(timeout=0)
        except (OSError, Timeout):
            continue  # in use by a live process, or not ours to touch
        try:
            size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
            shutil.rmtree(folder, ignore_errors=True)
        finally:
            lock.release()
        removed.append(folder)
        if log:
            log(f"removed {shown(folder)} ({format_bytes(size)}), left by an earlier run that did not finish")
    return removed


def written_file(exc: BaseException) -> str | None:
    """The file an OSError was writing: its ``filename2`` (a copy's destination; shutil puts the source in
    ``filename``), else its ``filename``; None when it names none."""
    named = getattr(exc, "filename2", None) or getattr(exc, "filename", None)
    return os.fsdecode(named) if named is not None else None


def _inside(path: Path, folder: Path) -> bool:
    path, folder = Path(os.path.abspath(path)), Path(os.path.abspath(folder))
    return path == folder or folder in path.parents


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; on success it replaces ``target`` in one rename.

    On any exception the temporary file is removed and ``target`` is left as it was; a write refused
    for lack of room raises :class:`OutOfSpace` naming ``target``'s folder.
    """
    target = Path(target)
    tmp_path: Path | None = None
    with writing_into(target.parent):
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
            os.close(fd)
            tmp_path = Path(tmp)
            yield tmp_path
            with open(tmp_path, "rb") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp_path, target)
        finally:
            if tmp_path is not None and tmp_path.exists():
                tmp_path.unlink()


@contextlib.contextmanager
def atomic_open(target: str | os.PathLike, mode: str = "w") -> Iterator[IO[Any]]:
    """Open a temporary file for writing that replaces ``target`` only when the block succeeds."""
    with atomic_path(target) as tmp:
        kwargs = {} if "b" in mode else {"encoding": "utf-8"}
        with open(tmp, mode, **kwargs) as fh:
            yield fh


def write_json(target: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    with atomic_open(target) as fh:
        json.dump(obj, fh, indent=2, sort_keys=False, default=str)
        fh.write("\n")


def write_text(target: str | os.PathLike, text: str) -> None:
    """Write ``text`` atomically."""
    with atomic_open(target) as fh:
        fh.write(text)


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def torch_save(obj: Any, target: str | os.PathLike) -> None:
    """``torch.save`` through a temporary file, so a crash never leaves a truncated file."""
    import torch

    with atomic_path(target) as tmp:
        torch.save(obj, tmp)


@contextlib.contextmanager
def output_folder(path: str | os.PathLike) -> Iterator[Path]:
    """Create ``path`` (and missing parents) for the block. If the block raises, the folders made here
    are removed again when empty, so a failed command leaves no empty folder in the way of the rerun."""
    path = Path(path)
    made = [p for p in [path, *path.parents] if not p.exists()]
    path.mkdir(parents=True, exist_ok=True)
    try:
        yield path
    except BaseException:
        for folder in made:  # deepest first
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise
