"""Adapter for ``food101:ROOT``: Food-101 (data.vision.ee.ethz.ch/cvl/datasets_extra/food-101) as published.

Layout read (food-101.tar.gz unpacked; ROOT may be the ``food-101`` folder or its parent)::

    ROOT/meta/classes.txt    one class per line: apple_pie, baby_back_ribs, ...
    ROOT/meta/train.txt      <class>/<image id> per line (750 per class)  -> split "train"
    ROOT/meta/test.txt       same form (250 per class)                    -> split "test"
    ROOT/images/<class>/<image id>.jpg

The label is the class folder name; domain ``food101``.
"""
from __future__ import annotations

from guie.data.listfiles import IMAGE_NOT_FOUND, read_lines, where
from guie.data.records import Record, SourceData, register_source, require_dir, require_file

DOMAIN = "food101"


@register_source("food101", "Food-101: meta/classes.txt, meta/train.txt, meta/test.txt + images/<class>/<id>.jpg")
def load_food101(root: str, spec: str) -> SourceData:
    base = require_dir(root, "food101").resolve()
    if not (base / "meta").is_dir() and (base / "food-101" / "meta").is_dir():
        base = base / "food-101"
    classes = {c.strip() for c in read_lines(require_file(base / "meta" / "classes.txt", "Food-101 class list"),
                                             "Food-101 class list") if c.strip()}
    records: list[Record] = []
    skipped: list[tuple[str, str]] = []
    for split in ("train", "test"):
        list_path = require_file(base / "meta" / f"{split}.txt", "Food-101 split list")
        for line_no, text in enumerate(read_lines(list_path, "Food-101 split list"), start=1):
            item = text.strip()
            if not item:
                continue
            label, sep, image_id = item.partition("/")
            if not sep or not image_id:
                skipped.append((where(list_path, line_no), "malformed line (expected <class>/<id>)"))
                continue
            if label not in classes:
                skipped.append((where(list_path, line_no), "class not in meta/classes.txt"))
                continue
            path = base / "images" / f"{item}.jpg"
            if not path.is_file():
                skipped.append((where(list_path, line_no), IMAGE_NOT_FOUND))
                continue
            records.append(Record(str(path), label, DOMAIN, split))
    return SourceData(spec, DOMAIN, records, skipped)
