"""Adapter for ``deepfashion:ROOT``: DeepFashion In-shop Clothes Retrieval as published.

Layout read (the benchmark's README, "EVALUATION PARTITIONS")::

    ROOT/Eval/list_eval_partition.txt    (or ROOT/list_eval_partition.txt)
        line 1: number of images
        line 2: image_name item_id evaluation_status
        rest:   img/WOMEN/Dresses/id_00000002/02_1_front.jpg id_00000002 train
    ROOT/Img/img/...   (Img/img.zip unpacked; ROOT/img/... is accepted too)

The label is ``item_id``; the split is ``evaluation_status``: train, query or gallery
(items do not overlap between train and query/gallery). Domain ``deepfashion``.
"""
from __future__ import annotations

from guie.data.listfiles import IMAGE_NOT_FOUND, read_lines, where
from guie.data.records import Record, SourceData, register_source, require_dir
from guie.errors import GuieError

DOMAIN = "deepfashion"
HEADER = ["image_name", "item_id", "evaluation_status"]
SPLITS = ("train", "query", "gallery")
LIST_NAME = "list_eval_partition.txt"


@register_source("deepfashion", "DeepFashion In-shop Clothes Retrieval: Eval/list_eval_partition.txt "
                                "(train/query/gallery) + Img/img/")
def load_deepfashion(root: str, spec: str) -> SourceData:
    base = require_dir(root, "deepfashion").resolve()
    list_path = next((p for p in (base / "Eval" / LIST_NAME, base / LIST_NAME) if p.is_file()), None)
    if list_path is None:
        raise GuieError(f"DeepFashion In-shop partition file not found: expected {str(base / 'Eval' / LIST_NAME)!r}; "
                        "pass the 'In-shop Clothes Retrieval Benchmark' folder")
    image_base = next((p for p in (base / "Img", base) if (p / "img").is_dir()), None)
    if image_base is None:
        raise GuieError(f"DeepFashion In-shop images not found: expected {str(base / 'Img' / 'img')!r}; "
                        "unpack Img/img.zip there")
    lines = read_lines(list_path, "DeepFashion partition file")
    if len(lines) < 2 or lines[1].split() != HEADER:
        raise GuieError(f"{str(list_path)!r} is not an In-shop partition file (line 2 should be "
                        f"'{' '.join(HEADER)}'); pass the file as published")
    records: list[Record] = []
    skipped: list[tuple[str, str]] = []
    for line_no, text in enumerate(lines[2:], start=3):
        fields = text.split()
        if not fields:
            continue
        if len(fields) != 3:
            skipped.append((where(list_path, line_no), "malformed line (expected 3 fields)"))
            continue
        name, item, status = fields
        if status not in SPLITS:
            skipped.append((where(list_path, line_no), f"unknown evaluation status {status!r}"))
            continue
        path = image_base / name
        if not path.is_file():
            skipped.append((where(list_path, line_no), IMAGE_NOT_FOUND))
            continue
        records.append(Record(str(path), item, DOMAIN, status))
    return SourceData(spec, DOMAIN, records, skipped)
