"""A miniature UnED in its published format (info_files/<domain>/<split>.json + images/), for the tests.

Eight domains with a few classes each, written as UnED's ``data/`` folder: image folders as the
official README lays them out, info files as JSON lists of {"path", "class_id"}. It holds what the
protocol has to get right:

* multi-label queries (``class_id`` a list) in gldv2's and inshop's test splits, one with a label
  the index lacks;
* RP2K class folders and files with Chinese (and one Latin-1) names, some on disk as written and
  some as the official converter escapes them (``#U53ef...``);
* The Met's test and val queries in ``test_met/``, outside the exhibit folders; its index is the
  train split's entries again, small_index a part of them;
* labels that repeat across domains with images that look alike (an image's pattern depends on
  its label only), so a merged index that ignored domains would score differently;
* queries with no relevant index image (a single-image class left out of itself; a Met query of
  an exhibit not in the index);
* entries whose image is missing, one malformed class_id and one entry without a path;
* with ``duplicates``: one image filed twice in sop's test split, under two classes.

:func:`make_uned` returns what an adapter must report, computed here from what was written.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
from PIL import Image

SIZE = 16
LOOK = (0.3, 0.3, 0.5)  # weights of the label's pattern, the domain's and the image's own noise
# domain -> split -> [(class_id or [class_id, ...], number of images)]
PLAN: dict[str, dict[str, list]] = {
    "cars": {"train": [(1, 3), (2, 3)], "val": [(3, 2), (4, 3)], "test": [(5, 3), (6, 3), (7, 1)]},
    "sop": {"train": [(1, 2), (3, 2)], "val": [(2, 2), (5, 2)], "test": [(5, 2), (6, 3), (8, 2)]},
    "inshop": {"train": [(2, 2), (4, 2)], "val": [(1, 2), (6, 2)],
               "test": [(5, 2), ([6, 7], 1), (8, 1), ([7, 9], 1)],
               "index": [(5, 2), (6, 2), (7, 2), (8, 1)]},
    "inat": {"train": [(3, 3), (4, 2)], "val": [(5, 2), (7, 2)], "test": [(5, 3), (6, 2), (9, 2)]},
    "met": {"train": [(1, 2), (2, 1), (3, 2), (5, 1), (6, 2)],
            "test": [(1, 1), (5, 1), (6, 2), (4, 1)], "val": [(1, 1), (3, 2)]},
    "gldv2": {"train": [(1, 2), (2, 2)], "val": [(3, 2), (4, 2)],
              "test": [([5, 6], 1), (6, 1), ([7, 99], 1)],
              "index": [(5, 2), (6, 2), (7, 1), (8, 2)]},
    "food2k": {"train": [(2, 2), (3, 2)], "val": [(6, 2), (7, 2)], "test": [(1, 3), (2, 2), (5, 2)]},
    "rp2k": {"train": [(1, 2), (4, 2)], "val": [(2, 2), (3, 2)], "test": [(2, 2), (3, 3), (4, 2)]},
}
MET_SMALL = (1, 3)  # exhibits of small_train / small_index
RP2K_NAMES = {1: "可口可乐", 2: "雪碧", 3: "农夫山泉", 4: "café拿铁"}
RP2K_ESCAPED = (3, 4)  # classes stored on disk under the converter's escaped names


def converter_escape(rel: str) -> str:
    """The escaped name the official converter tries, derived here from Python's unicode-escape codec."""
    return rel.encode("unicode_escape").decode("ascii").replace("\\u", "#U").replace("\\x", "#U00")


def pattern(seed: str) -> np.ndarray:
    return np.random.default_rng(int(hashlib.sha256(seed.encode()).hexdigest()[:12], 16)).uniform(0, 255, (SIZE, SIZE, 3))


def write_image(path: Path, domain: str, label: int, seed: str) -> None:
    """An image of ``label``: the label's look (the same in every domain), a little of the domain's, and noise."""
    pixels = (LOOK[0] * pattern(f"label {label}") + LOOK[1] * pattern(f"domain {domain}")
              + LOOK[2] * pattern(seed)).clip(0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, format="JPEG" if path.suffix.lower() == ".jpg" else "PNG", quality=95)


def rel_path(domain: str, split: str, label: int, n: int) -> str:
    """Where the domain keeps image n of class ``label`` of ``split`` (the official README's folders)."""
    tag = f"{split}{n}"
    if domain == "cars":
        return f"cars/car_ims/{label:03d}{tag}.jpg"
    if domain == "sop":
        return f"sop/{'chair' if label % 2 else 'bicycle'}_final/{100000 + label}_{tag}.JPG"
    if domain == "inshop":
        return f"deepfashion/inshop/img/WOMEN/Dresses/id_{label:08d}/{tag}_1_front.jpg"
    if domain == "inat":
        return f"inat/iNaturalist/train_val2018/Plantae/{label}/{tag}.jpg"
    if domain == "met":
        return f"met/MET/{label}/{n}.jpg" if split == "train" else f"met/test_met/{label}_{tag}.jpg"
    if domain == "gldv2":
        image_id = hashlib.sha256(f"{split}/{label}/{n}".encode()).hexdigest()[:16]
        folder = {"val": "train"}.get(split, split)
        return f"gldv2/images/{folder}/{image_id[0]}/{image_id[1]}/{image_id[2]}/{image_id}.jpg"
    if domain == "food2k":
        return f"food2k/Food2k_complete/{label}/{tag}.jpg"
    if domain == "rp2k":
        name = RP2K_NAMES[label]
        return f"rp2k/all/{'train' if split in ('train', 'val') else 'test'}/{name}/{tag}_{name}.jpg"
    raise ValueError(domain)


def make_uned(root: Path, duplicates: bool = False) -> dict:
    """Write the miniature into ``root`` (UnED's data/ folder: info_files/ + images/).

    Returns {"root", "counts": {domain: {split: {"images", "classes"}}}, "skipped", "reasons",
    "entries": {(domain, split): [(relative path, labels tuple, file on disk or None)]}}.
    """
    images = root / "images"
    entries: dict[tuple[str, str], list[tuple[str, tuple[int, ...], Path | None]]] = {}
    for domain, splits in PLAN.items():
        for split, plan in splits.items():
            rows = []
            for labels, count in plan:
                labels = tuple(labels) if isinstance(labels, list) else (labels,)
                for n in range(count):
                    rel = rel_path(domain, split, labels[0], n)
                    disk = images / (converter_escape(rel) if domain == "rp2k" and labels[0] in RP2K_ESCAPED else rel)
                    write_image(disk, domain, labels[0], rel)
                    rows.append((rel, labels, disk))
            entries[domain, split] = rows
    met_train = entries["met", "train"]
    entries["met", "index"] = list(met_train)
    entries["met", "small_train"] = [e for e in met_train if e[1][0] in MET_SMALL]
    entries["met", "small_index"] = list(entries["met", "small_train"])
    if duplicates:  # the same picture filed under sop classes 11 and 12, each class with one more image
        for label, n, look in ((11, 0, "twin"), (12, 0, "twin"), (11, 1, "11"), (12, 1, "12")):
            rel = rel_path("sop", "test", label, n)
            write_image(images / rel, "sop", 11 if look == "twin" else label, look)
            entries["sop", "test"].append((rel, (label,), images / rel))
    # listed, never shipped (cars), in neither form (rp2k), malformed (sop val, inat train)
    entries["cars", "train"].append((rel_path("cars", "train", 2, 9), (2,), None))
    entries["rp2k", "test"].append((rel_path("rp2k", "test", 2, 9), (2,), None))
    info = root / "info_files"
    extra = {("sop", "val"): {"path": rel_path("sop", "val", 2, 0), "class_id": "2"},
             ("inat", "train"): {"class_id": 3}}
    for (domain, split), rows in entries.items():
        listed = [{"path": rel, "class_id": list(labels) if len(labels) > 1 else labels[0]} for rel, labels, _ in rows]
        if (domain, split) in extra:
            listed.insert(1, extra[domain, split])
        (info / domain).mkdir(parents=True, exist_ok=True)
        (info / domain / f"{split}.json").write_text(json.dumps(listed, ensure_ascii=False), encoding="utf-8")
    counts: dict[str, dict[str, dict[str, int]]] = {}
    for (domain, split), rows in entries.items():
        present = [labels for _, labels, disk in rows if disk is not None]
        counts.setdefault(domain, {})[split] = {"images": len(present),
                                                "classes": len({label for labels in present for label in labels})}
    return {"root": root, "counts": counts, "skipped": 4, "entries": entries,
            "reasons": {"image file not found": 2, "class_id is neither an integer nor a non-empty list of integers": 1,
                        "entry without a path": 1}}
