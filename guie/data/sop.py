"""Adapter for ``sop:ROOT``: Stanford Online Products (cvgl.stanford.edu/projects/lifted_struct) as published.

Layout read::

    ROOT/Ebay_train.txt   image_id class_id super_class_id path    -> split "train" (11,318 classes)
    ROOT/Ebay_test.txt    same columns                             -> split "test"  (11,316 classes)
    ROOT/<super>_final/<product>_<n>.JPG                           (path column, relative to ROOT)

One header line, then space-separated rows such as ``1 1 1 bicycle_final/111085122871_0.JPG``.
The label is ``class_id`` (one product). The domain is ``sop-<super class>``, e.g.
``sop-chair``, ``sop-sofa``, ``sop-cabinet``: the super class is a sub-domain, reported
separately by guie-eval. Its name comes from the path's folder (``chair_final``), else from
``super_class_id`` in the published order bicycle, cabinet, chair, coffee_maker, fan,
kettle, lamp, mug, sofa, stapler, table, toaster.

ROOT may also be a folder up to two levels above these files: the zip unpacks into
``Stanford_Online_Products/``, and Kaggle copies often wrap that folder once more.
"""
from __future__ import annotations

from pathlib import Path

from guie.data.layout import Layout, find_layout
from guie.data.listfiles import IMAGE_NOT_FOUND, read_lines, where
from guie.data.records import Record, SourceData, register_source
from guie.errors import GuieError

DOMAIN = "sop"
HEADER = ["image_id", "class_id", "super_class_id", "path"]
SUPER_CLASSES = ("bicycle", "cabinet", "chair", "coffee_maker", "fan", "kettle", "lamp", "mug", "sofa",
                 "stapler", "table", "toaster")
LISTS = (("Ebay_train.txt", "train"), ("Ebay_test.txt", "test"))
LAYOUTS = (Layout("Stanford_Online_Products.zip unpacked", {split: name for name, split in LISTS}),)


def super_class_name(path: str, super_id: str) -> str:
    """``chair`` for ``chair_final/...``; else the published name of ``super_class_id``; else the id."""
    folder = path.split("/", 1)[0]
    if folder.endswith("_final") and folder[: -len("_final")] in SUPER_CLASSES:
        return folder[: -len("_final")]
    if super_id.isdigit() and 1 <= int(super_id) <= len(SUPER_CLASSES):
        return SUPER_CLASSES[int(super_id) - 1]
    return super_id


def _read_list(list_path: Path, base: Path, split: str, records: list[Record],
               skipped: list[tuple[str, str]]) -> None:
    lines = read_lines(list_path, "Stanford Online Products list")
    if not lines or lines[0].split() != HEADER:
        found = repr(lines[0][:80]) if lines else "an empty file"
        raise GuieError(f"{str(list_path)!r} does not start with the header '{' '.join(HEADER)}' (found {found}); "
                        "pass the Stanford_Online_Products folder as published")
    for line_no, text in enumerate(lines[1:], start=2):
        fields = text.split()
        if not fields:
            continue
        if len(fields) != 4:
            skipped.append((where(list_path, line_no), "malformed line (expected 4 fields)"))
            continue
        _, class_id, super_id, rel = fields
        path = base / rel
        if not path.is_file():
            skipped.append((where(list_path, line_no), IMAGE_NOT_FOUND))
            continue
        records.append(Record(str(path), class_id, f"{DOMAIN}-{super_class_name(rel, super_id)}", split))


@register_source("sop", "Stanford Online Products: Ebay_train.txt + Ebay_test.txt (image_id class_id "
                        "super_class_id path); sub-domains sop-<super class>")
def load_sop(root: str, spec: str) -> SourceData:
    found = find_layout(root, "sop", "Stanford Online Products list files", LAYOUTS)
    records: list[Record] = []
    skipped: list[tuple[str, str]] = []
    for _, split in LISTS:
        _read_list(found.path(split), found.base, split, records, skipped)
    return SourceData(spec, DOMAIN, records, skipped)
