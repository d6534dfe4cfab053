"""Adapter for ``products10k:ROOT``: the Products-10K dataset (JD.com SKUs) as published.

Layout read (as distributed for the Products-10K / Kaggle release)::

    ROOT/train.csv              name,class,group   -> ROOT/train/<name>   split "train"
    ROOT/train/<name>.jpg
    ROOT/test_kaggletest.csv    name,class,Usage   -> ROOT/test/<name>    split "test" (when present)
    ROOT/test/<name>.jpg

The label is the ``class`` column (an SKU id); test classes are the training SKUs. All
records are in one domain, ``products10k``. ``group`` (the product group) and ``Usage``
(public/private board) are not needed and are ignored.
"""
from __future__ import annotations

from pathlib import Path

from guie.data.listfiles import IMAGE_NOT_FOUND, read_csv_rows, where
from guie.data.records import Record, SourceData, register_source, require_dir, require_file
from guie.errors import GuieError

DOMAIN = "products10k"
TEST_LISTS = ("test_kaggletest.csv", "test.csv")


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
    base = require_dir(root, "products10k").resolve()
    train_csv = require_file(base / "train.csv", "Products-10K train.csv")
    if not (base / "train").is_dir():
        raise GuieError(f"Products-10K image folder {str(base / 'train')!r} not found; unpack train.zip into {str(base)!r}")
    records: list[Record] = []
    skipped: list[tuple[str, str]] = []
    _read_list(train_csv, base / "train", "train", records, skipped)
    test_csv = next((base / n for n in TEST_LISTS if (base / n).is_file()), None)
    if test_csv is not None:
        if (base / "test").is_dir():
            _read_list(test_csv, base / "test", "test", records, skipped)
        else:
            skipped.append((test_csv.name, "test/ image folder missing; test set not read"))
    return SourceData(spec, DOMAIN, records, skipped)
