"""Adapter for ``food101:ROOT``: Food-101 (data.vision.ee.ethz.ch/cvl/datasets_extra/food-101) as published.

Layouts read (ROOT may also be a folder up to two levels above them, e.g. the tar's parent)::

    ROOT/meta/classes.txt    one class per line: apple_pie, baby_back_ribs, ...
    ROOT/meta/train.txt      <class>/<image id> per line (750 per class)  -> split "train"
    ROOT/meta/test.txt       same form (250 per class)                    -> split "test"
    ROOT/images/<class>/<image id>.jpg

That is food-101.tar.gz unpacked. The Kaggle mirror kmader/food41 ("Food Images (Food-101)")
holds the same files with the lists one level deeper, in ``meta/meta/``.

The label is the class folder name; domain ``food101``.
"""
from __future__ import annotations

from guie.data.layout import Layout, find_layout
from guie.data.listfiles import IMAGE_NOT_FOUND, read_lines, where
from guie.data.records import Record, SourceData, register_source

DOMAIN = "food101"
LAYOUTS = tuple(
    Layout(name, {"classes": f"{meta}/classes.txt", "train": f"{meta}/train.txt", "test": f"{meta}/test.txt",
                  "images": "images/"})
    for name, meta in (("Food-101 as released", "meta"), ("Kaggle mirror kmader/food41", "meta/meta")))


@register_source("food101", "Food-101: meta/classes.txt, meta/train.txt, meta/test.txt + images/<class>/<id>.jpg "
                           "(Kaggle food41: meta/meta/)")
def load_food101(root: str, spec: str) -> SourceData:
    found = find_layout(root, "food101", "Food-101 lists", LAYOUTS)
    classes = {c.strip() for c in read_lines(found.path("classes"), "Food-101 class list") if c.strip()}
    images = found.path("images")
    records: list[Record] = []
    skipped: list[tuple[str, str]] = []
    for split in ("train", "test"):
        list_path = found.path(split)
        for line_no, text in enumerate(read_lines(list_path, "Food-101 split list"), start=1):
            item = text.strip()
            if not item:
                continue
            label, sep, image_id = item.partition("/")
            if not sep or not image_id:
                skipped.append((where(list_path, line_no), "malformed line (expected <class>/<id>)"))
                continue
            if label not in classes:
                skipped.append((where(list_path, line_no), "class not in classes.txt"))
                continue
            path = images / f"{item}.jpg"
            if not path.is_file():
                skipped.append((where(list_path, line_no), IMAGE_NOT_FOUND))
                continue
            records.append(Record(str(path), label, DOMAIN, split))
    return SourceData(spec, DOMAIN, records, skipped)
