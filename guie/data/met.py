"""Adapter for ``met:ROOT``: The Met dataset (cmp.felk.cvut.cz/met) as published.

Layout read (the dataset's ground truth and its reference code, github.com/nikosips/met)::

    ROOT/ground_truth/MET_database.json   [{"id": <exhibit id>, "path": "MET/<id>/<n>.jpg"}, ...]
    ROOT/ground_truth/testset.json        [{"path": "test_met/<x>.jpg", "MET_id": <id>, ...},
                                           {"path": "test_other/<x>.jpg", ...}, ...]  (optional)
    ROOT/ground_truth/valset.json         same form as testset.json                    (optional)
    ROOT/images/MET/..., ROOT/images/test_met/..., ...   (the reference code's image root)

The JSON files may also lie in ROOT itself, and the image folders (``MET/``, ``test_*/``)
directly in ROOT; ROOT may also be a folder up to two levels above all this. The exhibit training set (MET_database.json) is split "train" and is the
retrieval database; test queries with a ``MET_id`` are split "query", validation queries
"val". Distractor queries (``test_other``, ``test_noart``: no ``MET_id``) have no relevant
database image, so mP@5 cannot score them: they are skipped and counted. The label is the
exhibit id; domain ``met``.
"""
from __future__ import annotations

from pathlib import Path

from guie.data.layout import Layout, find_layout
from guie.data.listfiles import IMAGE_NOT_FOUND, read_json_list, where
from guie.data.records import Record, SourceData, register_source

DOMAIN = "met"
DATABASE = "MET_database.json"
QUERY_FILES = (("testset.json", "query"), ("valset.json", "val"))
DISTRACTOR = "distractor query without MET_id (no relevant database image)"
LAYOUTS = tuple(
    Layout(name, {"database": f"{gt}{DATABASE}", "exhibits": f"{images}MET/"})
    for name, gt, images in (("the reference code's", "ground_truth/", "images/"),
                             ("ground truth beside MET/", "ground_truth/", ""),
                             ("JSON files beside images/", "", "images/"),
                             ("all in one folder", "", "")))


def _add(entry: object, label_key: str, image_base: Path, loc: str, split: str, records: list[Record],
         skipped: list[tuple[str, str]]) -> None:
    if not isinstance(entry, dict) or not entry.get("path"):
        skipped.append((loc, "entry without a path"))
        return
    if entry.get(label_key) is None:
        skipped.append((loc, DISTRACTOR if split != "train" else "entry without an id"))
        return
    path = image_base / str(entry["path"])
    if not path.is_file():
        skipped.append((loc, IMAGE_NOT_FOUND))
        return
    records.append(Record(str(path), str(entry[label_key]), DOMAIN, split))


@register_source("met", "The Met dataset: ground_truth/MET_database.json (exhibits) + testset.json/valset.json "
                        "(queries) + images/")
def load_met(root: str, spec: str) -> SourceData:
    found = find_layout(root, "met", "The Met ground truth and exhibit images", LAYOUTS,
                        fix="unpack the ground truth and the MET images (and test_* queries) into one folder")
    database, image_base = found.path("database"), found.path("exhibits").parent  # entry paths start with MET/
    gt_dir = database.parent
    records: list[Record] = []
    skipped: list[tuple[str, str]] = []
    for i, entry in enumerate(read_json_list(database, "The Met ground truth")):
        _add(entry, "id", image_base, where(database, f"entry {i}"), "train", records, skipped)
    for name, split in QUERY_FILES:
        path = gt_dir / name
        if path.is_file():
            for i, entry in enumerate(read_json_list(path, "The Met ground truth")):
                _add(entry, "MET_id", image_base, where(path, f"entry {i}"), split, records, skipped)
    return SourceData(spec, DOMAIN, records, skipped)
