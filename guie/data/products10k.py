"""Adapter for ``products10k:ROOT``: the Products-10K dataset (JD.com SKUs) as published.

Layout read (as distributed for the Products-10K / Kaggle release)::

    ROOT/train.csv              name,class,group   -> ROOT/train/<name>   split "train"
    ROOT/train/<name>.jpg
    ROOT/test_kaggletest.csv    name,class,Usage   -> ROOT/test/<name>    split "test" (when present)
    ROOT/test/<name>.jpg

Kaggle copies keep each zip's own folder, so the images sit one level deeper, in
``train/train/`` and ``test/test/``; ROOT may also be a folder up to two levels above the lists.

The label is the ``class`` column (an SKU id); test classes are the training SKUs. All
records are in one domain, ``products10k``. ``group`` (the product group) and ``Usage``
(public/private board) are not needed and are ignored.
"""
from __future__ import annotations

from pathlib import Path

from guie.data.layout import Layout, find_layout
from guie.data.listfiles import IMAGE_NOT_FOUND, read_csv_rows, where
from guie.data.records import Record, SourceData, register_source

DOMAIN = "products10k"
TEST_LISTS = ("test_kaggletest.csv", "test.csv")
LAYOUTS = (  # the nested one first: a train/ holding train/ is never the image folder itself
    Layout("images one folder deeper, as on Kaggle", {"train_list": "train.csv", "train": "train/train/"}),
    Layout("Products-10K as released", {"train_list": "train.csv", "train": "train/"}),
)


def _read_list(csv_path: Path, image_dir: Path, split: str, records: list[Record],
               skipped: list[tuple[str, str]]) -> None:
    for line, row in read_csv_rows(csv_path, ("name", "class"), "Products-10K list"):
        name, label = row.get("name", ""), row.get("class", "")
        if not name or not label:
            skipped.append((where(csv_path, line), "empty name or class"))
            continue
        path = image_dir / name
        if not path.is_file():
            skipped.append((where(csv_path, line), IMAGE_NOT_FOUND))
            continue
        records.append(Record(str(path), label, DOMAIN, split))


@register_source("products10k", "Products-10K: train.csv (name,class,group) + train/, and "
                                "test_kaggletest.csv + test/ when present")
def load_products10k(root: str, spec: str) -> SourceData:
    found = find_layout(root, "products10k", "Products-10K train.csv and train/ image folder", LAYOUTS,
                        fix="unpack train.zip (and test.zip) beside train.csv")
    base = found.base
    records: list[Record] = []
    skipped: list[tuple[str, str]] = []
    _read_list(found.path("train_list"), found.path("train"), "train", records, skipped)
    test_csv = next((base / n for n in TEST_LISTS if (base / n).is_file()), None)
    if test_csv is not None:
        test_dir = next((d for d in (base / "test" / "test", base / "test") if d.is_dir()), None)
        if test_dir is not None:
            _read_list(test_csv, test_dir, "test", records, skipped)
        else:
            skipped.append((test_csv.name, "test/ image folder missing; test set not read"))
    return SourceData(spec, DOMAIN, records, skipped)
