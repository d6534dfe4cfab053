"""Adapter for ``imagefolder:ROOT``: one sub-folder per class, images anywhere below it.

What counts is guie.data.walk's rule (links followed once, hidden and operating-system litter left
out, sub-folders read to any depth), for the class folders and for what they hold.
"""
from __future__ import annotations

import stat
from pathlib import Path

from guie.data.records import Record, SourceData, register_source, require_dir
from guie.data.walk import Seen, folder_entries, walk_images

OUTSIDE_CLASS = "file outside a class folder"


def scan_class_folders(root: Path, domain: str, split: str = "train") -> tuple[list[Record], list[tuple[str, str]]]:
    """Records for every image under ``root/<class>/``, plus what was left out, as ``(path, reason)``.

    A class folder may be a symbolic link; the record's path is the image's resolved path. A second link to
    a class folder already read (or to one inside it) is left out as ``FOLDER_READ``, not read as a class.
    """
    records: list[Record] = []
    entries, left = folder_entries(root)
    skipped = [(str(path), why) for path, why in left]
    seen = Seen()  # one dataset: a class folder linked twice (or into another) is read once
    for path, info in entries:
        if not stat.S_ISDIR(info.st_mode):
            skipped.append((str(path), OUTSIDE_CLASS))
            continue
        images, left = walk_images(path, seen)
        records.extend(Record(str(image.resolve()), path.name, domain, split) for image in images)
        skipped.extend((str(p), why) for p, why in left)
    return records, skipped


@register_source("imagefolder", "a folder with one sub-folder of images per class")
def load_imagefolder(root: str, spec: str) -> SourceData:
    path = require_dir(root, "imagefolder")
    domain = path.resolve().name or "imagefolder"
    records, skipped = scan_class_folders(path, domain)
    return SourceData(spec, domain, records, skipped)
