"""The one record type every dataset adapter yields, and the registry of source prefixes."""
from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from guie.errors import GuieError, did_you_mean

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff"})


@dataclass(frozen=True, slots=True)
class Record:
    """One labelled image. Labels are strings; they become contiguous ints only inside training.

    Slotted (no per-record __dict__): about 210 bytes with a GLDv2-length path instead of 250.
    """

    path: str
    label: str
    domain: str
    split: str = "train"

    @property
    def class_key(self) -> str:
        """The class identity across domains: the same label in two domains is two classes."""
        return f"{self.domain}/{self.label}"


@dataclass
class SourceData:
    """What one source spec produced: its records and the rows it skipped, with reasons.

    ``label_sets`` maps the position of a record that belongs to several classes (UnED's query images
    whose ``class_id`` is a list) to all its labels, its own ``label`` first; other records have one.
    """

    spec: str
    domain: str
    records: list[Record]
    skipped: list[tuple[str, str]] = field(default_factory=list)
    label_sets: dict[int, tuple[str, ...]] = field(default_factory=dict)

    def labels_of(self, i: int) -> tuple[str, ...]:
        """Every label of record ``i``: its ``label``, or all of them for a multi-class record."""
        return self.label_sets.get(i) or (self.records[i].label,)


Adapter = Callable[[str, str], SourceData]
_ADAPTERS: dict[str, tuple[Adapter, str]] = {}


def register_source(prefix: str, help: str) -> Callable[[Adapter], Adapter]:
    """Register ``fn(root, spec) -> SourceData`` as the adapter for ``prefix:ROOT`` specs."""

    def wrap(fn: Adapter) -> Adapter:
        _ADAPTERS[prefix] = (fn, help)
        return fn

    return wrap


def source_prefixes() -> dict[str, str]:
    """The registered source prefixes and their one-line help."""
    return {prefix: help for prefix, (_, help) in sorted(_ADAPTERS.items())}


def split_spec(spec: str) -> tuple[str, str]:
    """Split ``prefix:ROOT`` into its parts, rejecting unknown prefixes with a hint."""
    prefix, sep, root = spec.partition(":")
    if not sep or not root:
        raise GuieError(
            f"data source {spec!r} is not of the form PREFIX:PATH; "
            f"use one of: {', '.join(p + ':PATH' for p in source_prefixes())}"
        )
    if prefix not in _ADAPTERS:
        raise GuieError(
            f"unknown data source prefix {prefix!r}{did_you_mean(prefix, _ADAPTERS)}; "
            f"known prefixes: {', '.join(source_prefixes())}"
        )
    return prefix, root


def load_source(spec: str) -> SourceData:
    """Read the records of one source spec such as ``imagefolder:/data/food``."""
    prefix, root = split_spec(spec)
    fn, _ = _ADAPTERS[prefix]
    data = fn(os.path.expanduser(root), spec)
    if not data.records:
        reasons = "; ".join(f"{p}: {r}" for p, r in data.skipped[:3])
        raise GuieError(
            f"data source {spec!r} holds no usable images"
            + (f" ({len(data.skipped)} skipped, e.g. {reasons})" if data.skipped else "")
            + "; check the path and the dataset layout"
        )
    return data


def unique_name(name: str, used: set[str]) -> str:
    """``name``, or ``name-2``, ``name-3``, ... when taken; the result is added to ``used``."""
    candidate, n = name, 2
    while candidate in used:
        candidate, n = f"{name}-{n}", n + 1
    used.add(candidate)
    return candidate


def require_dir(root: str, what: str) -> Path:
    """Return ``root`` as a Path if it is an existing folder, else raise a one-line error."""
    path = Path(root)
    if not path.exists():
        raise GuieError(f"{what} root {root!r} does not exist; pass the folder the dataset was unpacked to")
    if not path.is_dir():
        raise GuieError(f"{what} root {root!r} is not a folder; pass the folder the dataset was unpacked to")
    return path


def is_image_file(path: Path) -> bool:
    """True for visible files whose extension is an image format PIL reads."""
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")
