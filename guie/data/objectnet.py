"""Adapter for ``objectnet:ROOT``: ObjectNet 1.0 (objectnet.dev) as published.

Layout read (ROOT may be the ``objectnet-1.0`` folder or a folder up to two levels above it)::

    ROOT/images/<class folder>/<hash>.png
    ROOT/mappings/folder_to_objectnet_label.json   {"air_freshener": "Air freshener", ...}
    ROOT/mappings/objectnet_to_imagenet_1k.json, ...   (not needed here)

The label is the ObjectNet class name the mapping gives the folder; folders the mapping does
not name are skipped. ObjectNet is a test set only: its licence forbids updating a model's
parameters on its images, so every record is split "test" and guie-train refuses it.
Folders are read by guie.data.walk's rule. Domain ``objectnet``. (The images carry a 1-pixel
border the authors suggest cropping; at CLIP input sizes it changes little and guie reads the
files unchanged.)
"""
from __future__ import annotations

import stat

from guie.data.layout import Layout, find_layout
from guie.data.listfiles import read_json_dict
from guie.data.records import Record, SourceData, register_source
from guie.data.walk import Seen, folder_entries, walk_images

DOMAIN = "objectnet"
MAPPING = "folder_to_objectnet_label.json"
LAYOUTS = (Layout("objectnet-1.0 as released", {"mapping": f"mappings/{MAPPING}", "images": "images/"}),)


@register_source("objectnet", "ObjectNet (test only): images/<class folder>/ + mappings/folder_to_objectnet_label.json")
def load_objectnet(root: str, spec: str) -> SourceData:
    found = find_layout(root, "objectnet", "ObjectNet class mapping and images", LAYOUTS,
                        fix="unpack objectnet-1.0 so that images/ and mappings/ sit side by side")
    mapping = read_json_dict(found.path("mapping"), "ObjectNet class mapping")
    image_dir = found.path("images")
    records: list[Record] = []
    skipped: list[tuple[str, str]] = []
    entries, left = folder_entries(image_dir)
    skipped += [(str(path.relative_to(image_dir)), why) for path, why in left]
    seen = Seen()  # a class folder linked twice is read once
    for folder, info in entries:
        if not stat.S_ISDIR(info.st_mode):
            continue
        label = mapping.get(folder.name)
        images, left = walk_images(folder, seen)
        skipped += [(str(path.relative_to(image_dir)), why) for path, why in left]
        for path in images:
            if not isinstance(label, str) or not label:
                skipped.append((str(path.relative_to(image_dir)), f"folder not in mappings/{MAPPING}"))
            else:
                records.append(Record(str(path), label, DOMAIN, "test"))
    return SourceData(spec, DOMAIN, records, skipped)
