"""Adapter for ``gldv2:ROOT``: the train set of Google Landmarks Dataset v2 as published.

Layout read (github.com/cvdfoundation/google-landmark)::

    ROOT/train_clean.csv   landmark_id,images  (images: space-separated image ids)   preferred
    ROOT/train.csv         id,url,landmark_id                                       otherwise
    ROOT/train/a/b/c/abc....jpg   (a, b, c: the first three characters of the image id)

The Kaggle competitions' copies (landmark-recognition-2021, landmark-retrieval-2021) hold
``train.csv`` with columns id,landmark_id and the same ``train/a/b/c/`` folders; ROOT may also
be a folder up to two levels above the list.

``gldv2:ROOT/train.csv`` (or any CSV path) picks that list explicitly. The label is the
landmark id; every record is split "train", domain ``gldv2``. The index and test sets
(retrieval ground truth as image-id lists, not class labels) are not read.
"""
from __future__ import annotations

import os
from pathlib import Path

from guie.data.layout import Layout, find_layout
from guie.data.listfiles import IMAGE_NOT_FOUND, csv_columns, read_csv_rows, where
from guie.data.records import Record, SourceData, register_source
from guie.errors import GuieError

DOMAIN = "gldv2"
LISTS = ("train_clean.csv", "train.csv")
LAYOUTS = (
    Layout("the cleaned list", {"list": "train_clean.csv", "images": "train/"}),
    Layout("the full list, or a Kaggle landmark competition's", {"list": "train.csv", "images": "train/"}),
)


def image_path(image_dir: Path, image_id: str) -> Path:
    """Where GLDv2 stores image ``image_id``: ``a/b/c/<id>.jpg`` under the split folder."""
    return image_dir / image_id[0] / image_id[1] / image_id[2] / f"{image_id}.jpg"


def _add(image_dir: str, image_id: str, label: str, loc: str, records: list[Record],
         skipped: list[tuple[str, str]]) -> None:
    if len(image_id) < 3 or "/" in image_id:
        skipped.append((loc, "malformed image id"))
        return
    # image_path() as a string: pathlib's joins made each row 6x slower (26 vs 4 us; GLDv2 has 4.1M rows)
    path = f"{image_dir}/{image_id[0]}/{image_id[1]}/{image_id[2]}/{image_id}.jpg"
    if not os.path.isfile(path):
        skipped.append((loc, IMAGE_NOT_FOUND))
        return
    records.append(Record(path, label, DOMAIN, "train"))


@register_source("gldv2", "Google Landmarks v2 train set: train_clean.csv (landmark_id,images) or "
                          "train.csv (id,url,landmark_id) + train/a/b/c/<id>.jpg")
def load_gldv2(root: str, spec: str) -> SourceData:
    given = Path(root)
    if given.is_file():
        csv_path = given.resolve()
        image_dir = csv_path.parent / "train"
        if not image_dir.is_dir():
            raise GuieError(f"GLDv2 image folder {str(image_dir)!r} not found; extract the train TARs into it")
    else:
        found = find_layout(root, "gldv2", "GLDv2 train list (train_clean.csv or train.csv) and train/ images",
                            LAYOUTS, fix="download the lists from the google-landmark metadata and extract the "
                                         "train TARs into train/ beside them")
        csv_path, image_dir = found.path("list"), found.path("images")
    header = csv_columns(csv_path, ("landmark_id", "images", "id"), "GLDv2 train list")
    image_root = str(image_dir)
    records: list[Record] = []
    skipped: list[tuple[str, str]] = []
    if "images" in header:  # train_clean.csv: one row per landmark
        for line, row in read_csv_rows(csv_path, ("landmark_id", "images"), "GLDv2 train_clean.csv"):
            label = row["landmark_id"]
            if not label:
                skipped.append((where(csv_path, line), "empty landmark_id"))
                continue
            for image_id in row["images"].split():
                _add(image_root, image_id, label, where(csv_path, line), records, skipped)
    else:  # train.csv: one row per image
        for line, row in read_csv_rows(csv_path, ("id", "landmark_id"), "GLDv2 train.csv"):
            if not row["id"] or not row["landmark_id"]:
                skipped.append((where(csv_path, line), "empty id or landmark_id"))
                continue
            _add(image_root, row["id"], row["landmark_id"], where(csv_path, line), records, skipped)
    return SourceData(spec, DOMAIN, records, skipped)
