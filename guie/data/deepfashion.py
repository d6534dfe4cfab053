"""Adapter for ``deepfashion:ROOT``: DeepFashion In-shop Clothes Retrieval as published.

Layout read (the benchmark's README, "EVALUATION PARTITIONS")::

    ROOT/Eval/list_eval_partition.txt    (or ROOT/list_eval_partition.txt)
        line 1: number of images
        line 2: image_name item_id evaluation_status
        rest:   img/WOMEN/Dresses/id_00000002/02_1_front.jpg id_00000002 train
    ROOT/Img/img/...   (Img/img.zip unpacked; ROOT/img/... is accepted too)

The Kaggle copies (e.g. deepfashion-inshop) hold ``img/`` beside ``Eval/``; ROOT may also be
a folder up to two levels above the benchmark's folder.

The label is ``item_id``; the split is ``evaluation_status``: train, query or gallery
(items do not overlap between train and query/gallery). Domain ``deepfashion``.
"""
from __future__ import annotations

from guie.data.layout import Layout, find_layout
from guie.data.listfiles import IMAGE_NOT_FOUND, read_lines, where
from guie.data.records import Record, SourceData, register_source
from guie.errors import GuieError

DOMAIN = "deepfashion"
HEADER = ["image_name", "item_id", "evaluation_status"]
SPLITS = ("train", "query", "gallery")
LIST_NAME = "list_eval_partition.txt"
LAYOUTS = (
    Layout("In-shop benchmark as released", {"list": f"Eval/{LIST_NAME}", "img": "Img/img/"}),
    Layout("img/ beside Eval/, as on Kaggle", {"list": f"Eval/{LIST_NAME}", "img": "img/"}),
    Layout("partition file beside Img/", {"list": LIST_NAME, "img": "Img/img/"}),
    Layout("partition file beside img/", {"list": LIST_NAME, "img": "img/"}),
)


@register_source("deepfashion", "DeepFashion In-shop Clothes Retrieval: Eval/list_eval_partition.txt "
                                "(train/query/gallery) + Img/img/")
def load_deepfashion(root: str, spec: str) -> SourceData:
    found = find_layout(root, "deepfashion", "DeepFashion In-shop partition file and images", LAYOUTS,
                        fix="pass the 'In-shop Clothes Retrieval Benchmark' folder, with Img/img.zip unpacked")
    list_path, image_base = found.path("list"), found.path("img").parent  # the list's paths start with img/
    lines = read_lines(list_path, "DeepFashion partition file")
    if len(lines) < 2 or lines[1].split() != HEADER:
        found = repr(lines[1][:80]) if len(lines) > 1 else f"{len(lines)} line(s)"
        raise GuieError(f"{str(list_path)!r} is not an In-shop partition file (line 2 should be "
                        f"'{' '.join(HEADER)}', found {found}); pass the file as published")
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
