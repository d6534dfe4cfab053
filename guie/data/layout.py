"""Finding a dataset's files under the folder a user passes: the original release or a known mirror.

A dataset downloaded from Kaggle often differs from its original release: an extra folder level
(``food41/meta/meta/``, ``train/train/``), or the whole release wrapped in one more folder. Each
adapter lists the layouts it reads as :class:`Layout` entries (named paths relative to a base
folder); :func:`find_layout` tries the folder given, then the folders up to two levels below it,
and returns the first base where one layout's required paths all exist. When none fits, the one
error line says which files each layout expects and what the folder actually holds.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

from guie.data.records import require_dir
from guie.data.walk import never_read
from guie.errors import GuieError

MAX_DEPTH = 2
MAX_ENTRIES = 1000  # looked at per folder, so a folder of 100k images is never walked
MAX_FOLDERS = 200  # searched per level


@dataclass(frozen=True)
class Layout:
    """One way a dataset is laid out: required paths (a trailing ``/`` marks a folder) by role."""

    name: str
    paths: dict[str, str]

    def fits(self, base: Path) -> bool:
        return all((base / p).is_dir() if p.endswith("/") else (base / p).is_file() for p in self.paths.values())

    def describe(self) -> str:
        return " + ".join(self.paths.values()) + f" ({self.name})"


@dataclass(frozen=True)
class Found:
    """The layout found and the folder its paths are relative to."""

    base: Path
    layout: Layout

    def path(self, role: str) -> Path:
        return self.base / self.layout.paths[role].rstrip("/")


def _scan(folder: Path) -> list[os.DirEntry]:
    """Up to MAX_ENTRIES visible entries of ``folder``, sorted by name; never the whole of a huge folder.
    Hidden entries and operating-system litter (``__MACOSX/``, guie.data.walk's rule) are not looked at."""
    try:
        with os.scandir(folder) as it:
            entries = list(islice((e for e in it if not never_read(e.name)), MAX_ENTRIES + 1))
    except OSError:
        return []
    return sorted(entries, key=lambda e: e.name)


def _is_dir(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir()
    except OSError:
        return False


def _subfolders(folder: Path) -> list[Path]:
    return [Path(e.path) for e in _scan(folder) if _is_dir(e)]


def _listing(folder: Path, limit: int) -> str:
    entries = _scan(folder)
    names = [e.name + ("/" if _is_dir(e) else "") for e in entries[:limit]]
    if len(entries) > limit:
        names.append(f"... {len(entries) if len(entries) <= MAX_ENTRIES else f'{MAX_ENTRIES}+'} entries")
    return ", ".join(names)


def describe_folder(folder: Path) -> str:
    """What a folder holds, two levels deep and bounded: ``images/ (apple_pie/, ... 101 entries), meta/ (meta/)``."""
    entries = _scan(folder)
    if not entries:
        return "nothing"
    shown = [f"{e.name}/ ({_listing(Path(e.path), 4) or 'empty'})" if _is_dir(e) else e.name for e in entries[:10]]
    return ", ".join(shown) + (f", and {len(entries) - 10} more" if len(entries) > 10 else "")


def find_layout(root: str, prefix: str, what: str, layouts: Sequence[Layout],
                fix: str = "pass the folder the dataset was unpacked to") -> Found:
    """The first of ``layouts`` that fits ``root`` or a folder up to two levels below it."""
    given = require_dir(root, prefix).resolve()
    level = [given]
    for _ in range(MAX_DEPTH + 1):
        for base in level:
            for layout in layouts:
                if layout.fits(base):
                    return Found(base, layout)
        level = [sub for base in level for sub in _subfolders(base)][:MAX_FOLDERS]
    expected = "; or ".join(layout.describe() for layout in layouts)
    raise GuieError(f"{what} not found in {root!r} (nor in a folder up to {MAX_DEPTH} levels below it): expected "
                    f"{expected}; found: {describe_folder(given)}; {fix}")
