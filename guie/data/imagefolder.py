"""Adapter for ``imagefolder:ROOT``: one sub-folder per class, images anywhere below it."""
from __future__ import annotations

from pathlib import Path

from guie.data.records import Record, SourceData, is_image_file, register_source, require_dir


def scan_class_folders(root: Path, domain: str, split: str = "train") -> tuple[list[Record], list[tuple[str, str]]]:
    """Records for every image under ``root/<class>/``, plus skipped files with reasons."""
    records: list[Record] = []
    skipped: list[tuple[str, str]] = []
    for class_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for path in sorted(class_dir.rglob("*")):
            if not path.is_file() or path.name.startswith("."):
                continue
            if is_image_file(path):
                records.append(Record(str(path.resolve()), class_dir.name, domain, split))
            else:
                skipped.append((str(path), "not an image file extension"))
    for path in sorted(root.iterdir()):
        if path.is_file() and not path.name.startswith("."):
            skipped.append((str(path), "file outside a class folder"))
    return records, skipped


@register_source("imagefolder", "a folder with one sub-folder of images per class")
def load_imagefolder(root: str, spec: str) -> SourceData:
    path = require_dir(root, "imagefolder")
    domain = path.resolve().name or "imagefolder"
    records, skipped = scan_class_folders(path, domain)
    return SourceData(spec, domain, records, skipped)
