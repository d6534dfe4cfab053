"""Tiny copies of each public dataset's published layout, with generated images, for the adapter tests.

Every builder writes files exactly where and how the dataset ships them (list files with
their headers, image folders, JSON ground truth) and returns the counts the adapter must
report. Images are small solid-colour JPEG/PNG files; a class's colour is shared by its
images so that a retrieval over them has a right answer.
"""
from __future__ import annotations

import json
from pathlib import Path

from PIL import Image


def image(path: Path, color: tuple[int, int, int] = (128, 128, 128), size: tuple[int, int] = (12, 10)) -> Path:
    """Write a small solid-colour image; the format follows the suffix (``.JPG`` is JPEG)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG"}[path.suffix.lower()]
    Image.new("RGB", size, color).save(path, format=fmt)
    return path


def color_of(n: int) -> tuple[int, int, int]:
    return ((n * 67) % 256, (n * 131 + 40) % 256, (n * 29 + 90) % 256)


def make_products10k(root: Path) -> dict:
    """train.csv (name,class,group) + train/, test_kaggletest.csv (name,class,Usage) + test/."""
    train = ["name,class,group"]
    for c in range(3):
        for j in range(2):
            name = f"{c * 10 + j}.jpg"
            image(root / "train" / name, color_of(c))
            train.append(f"{name},{c},{c % 2}")
    train.append("99.jpg,2,0")  # listed, never shipped
    train.append("7.jpg,,1")  # no class
    (root / "train.csv").write_text("\n".join(train) + "\n")
    test = ["name,class,Usage"]
    for c in range(3):
        name = f"{100 + c}.jpg"
        image(root / "test" / name, color_of(c))
        test.append(f"{name},{c},{'Public' if c else 'Private'}")
    test.append("199.jpg,1,Public")  # missing
    (root / "test_kaggletest.csv").write_text("\n".join(test) + "\n")
    return {"images": 9, "classes": 3, "splits": {"train": 6, "test": 3}, "skipped": 3}


GLD_IDS = ["0123456789abcdef", "0123fedcba987654", "abcdef0123456789", "abd0000000000001", "ffff000011112222"]


def make_gldv2(root: Path, clean: bool = True) -> dict:
    """train.csv (id,url,landmark_id), optionally train_clean.csv (landmark_id,images), train/a/b/c/<id>.jpg."""
    labels = {"0123456789abcdef": "7", "0123fedcba987654": "7", "abcdef0123456789": "12",
              "abd0000000000001": "12", "ffff000011112222": "30"}
    for image_id in GLD_IDS[:4]:  # the last listed image was never downloaded
        image(root / "train" / image_id[0] / image_id[1] / image_id[2] / f"{image_id}.jpg", color_of(int(labels[image_id])))
    rows = ["id,url,landmark_id"] + [f"{i},https://upload.wikimedia.org/x/{i}.jpg,{labels[i]}" for i in GLD_IDS]
    (root / "train.csv").write_text("\n".join(rows) + "\n")
    if clean:  # the cleaned list drops landmark 30 and one image of landmark 12
        (root / "train_clean.csv").write_text(
            "landmark_id,images\n7,0123456789abcdef 0123fedcba987654\n12,abcdef0123456789\n")
    return {"train.csv": {"images": 4, "classes": 2, "skipped": 1},
            "train_clean.csv": {"images": 3, "classes": 2, "skipped": 0}}


def make_sop(root: Path) -> dict:
    """Ebay_train.txt / Ebay_test.txt (image_id class_id super_class_id path) + <super>_final/*.JPG."""
    header = "image_id class_id super_class_id path"
    train, test = [header], [header]
    image_id = 1
    # (class_id, super_class_id, super folder, images, which list)
    layout = [(1, 3, "chair", 3, train), (2, 3, "chair", 2, train), (3, 9, "sofa", 2, train),
              (11319, 3, "chair", 3, test), (11320, 9, "sofa", 2, test), (11321, 2, "cabinet", 4, test),
              (11322, 2, "cabinet", 1, test)]
    for class_id, super_id, folder, n, rows in layout:
        for j in range(n):
            rel = f"{folder}_final/{class_id}00{j}_{j}.JPG"
            image(root / rel, color_of(class_id))
            rows.append(f"{image_id} {class_id} {super_id} {rel}")
            image_id += 1
    test.append(f"{image_id} 11323 2 cabinet_final/missing_0.JPG")  # not shipped
    test.append("broken line")
    (root / "Ebay_train.txt").write_text("\n".join(train) + "\n")
    (root / "Ebay_test.txt").write_text("\n".join(test) + "\n")
    (root / "Ebay_info.txt").write_text("image_id class_id super_class_id path\n")
    return {"images": 17, "classes": 7, "splits": {"train": 7, "test": 10}, "skipped": 2,
            "domains": {"sop-chair": 8, "sop-sofa": 4, "sop-cabinet": 5}}


def make_deepfashion(root: Path) -> dict:
    """Eval/list_eval_partition.txt (count, header, image_name item_id evaluation_status) + Img/img/..."""
    rows = []
    spec = [("id_00000001", "MEN/Denim", ["train", "train"]),
            ("id_00000002", "WOMEN/Dresses", ["train", "train", "train"]),
            ("id_00000010", "WOMEN/Blouses_Shirts", ["query", "gallery", "gallery"]),
            ("id_00000011", "MEN/Tees_Tanks", ["query", "query", "gallery"]),
            ("id_00000012", "WOMEN/Skirts", ["query"])]  # a query item with no gallery image
    for k, (item, category, statuses) in enumerate(spec):
        for j, status in enumerate(statuses):
            name = f"img/{category}/{item}/{j + 1:02d}_{j + 1}_front.jpg"
            image(root / "Img" / name, color_of(k))
            rows.append(f"{name:<60} {item} {status}")
    rows.append("img/WOMEN/Skirts/id_00000099/01_1_front.jpg id_00000099 gallery")  # not shipped
    text = [str(len(rows)), "image_name item_id evaluation_status", *rows]
    (root / "Eval").mkdir(parents=True)
    (root / "Eval" / "list_eval_partition.txt").write_text("\n".join(text) + "\n")
    return {"images": 12, "classes": 5, "splits": {"train": 5, "query": 4, "gallery": 3}, "skipped": 1}


def make_met(root: Path) -> dict:
    """ground_truth/MET_database.json, testset.json, valset.json + images/MET/<id>/<n>.jpg, images/test_*/..."""
    database = []
    for exhibit, n in ((34, 3), (1021, 2), (5005, 1)):
        for j in range(n):
            path = f"MET/{exhibit}/{j}.jpg"
            image(root / "images" / path, color_of(exhibit))
            database.append({"id": exhibit, "path": path})
    database.append({"id": 777, "path": "MET/777/0.jpg"})  # not shipped
    image(root / "images" / "test_met" / "q1.jpg", color_of(34))
    image(root / "images" / "test_met" / "q2.jpg", color_of(1021))
    image(root / "images" / "test_met" / "q3.jpg", color_of(9))
    image(root / "images" / "test_other" / "d1.jpg", color_of(50))
    image(root / "images" / "test_noart" / "d2.jpg", color_of(51))
    testset = [
        {"path": "test_met/q1.jpg", "MET_id": 34, "photographer": "someone"},
        {"path": "test_met/q2.jpg", "MET_id": 1021, "photographer": "someone"},
        {"path": "test_met/q3.jpg", "MET_id": 4242, "photographer": "someone"},  # exhibit not in the database
        {"path": "test_other/d1.jpg", "category": "https://commons.wikimedia.org/x"},
        {"path": "test_noart/d2.jpg"},
    ]
    image(root / "images" / "test_met" / "v1.jpg", color_of(5005))
    valset = [{"path": "test_met/v1.jpg", "MET_id": 5005}, {"path": "test_other/d1.jpg"}]
    gt = root / "ground_truth"
    gt.mkdir(parents=True)
    (gt / "MET_database.json").write_text(json.dumps(database))
    (gt / "testset.json").write_text(json.dumps(testset))
    (gt / "valset.json").write_text(json.dumps(valset))
    return {"images": 10, "classes": 4, "splits": {"train": 6, "query": 3, "val": 1}, "skipped": 4,
            "reasons": {"image file not found": 1,
                        "distractor query without MET_id (no relevant database image)": 3}}


FOOD_CLASSES = ["apple_pie", "baby_back_ribs", "beignets"]


def make_food101(root: Path) -> dict:
    """food-101/meta/{classes,labels,train,test}.txt + food-101/images/<class>/<id>.jpg (root = the tar's parent)."""
    base = root / "food-101"
    meta = base / "meta"
    meta.mkdir(parents=True)
    (meta / "classes.txt").write_text("\n".join(FOOD_CLASSES) + "\n")
    (meta / "labels.txt").write_text("Apple pie\nBaby back ribs\nBeignets\n")
    train, test = [], []
    n = 1000000
    for c, cls in enumerate(FOOD_CLASSES):
        for j in range(4):
            n += 1
            image(base / "images" / cls / f"{n}.jpg", color_of(c))
            (train if j < 3 else test).append(f"{cls}/{n}")
    test.append("apple_pie/9999999")  # not shipped
    train.append("tiramisu/1234")  # not a listed class
    (meta / "train.txt").write_text("\n".join(train) + "\n")
    (meta / "test.txt").write_text("\n".join(test) + "\n")
    return {"images": 12, "classes": 3, "splits": {"train": 9, "test": 3}, "skipped": 2}


def make_objectnet(root: Path) -> dict:
    """objectnet-1.0/images/<folder>/<hash>.png + objectnet-1.0/mappings/folder_to_objectnet_label.json."""
    base = root / "objectnet-1.0"
    mapping = {"air_freshener": "Air freshener", "alarm_clock": "Alarm clock", "banana": "Banana"}
    counts = {"air_freshener": 3, "alarm_clock": 2, "banana": 2, "unlisted_folder": 2}
    for k, (folder, n) in enumerate(counts.items()):
        for j in range(n):
            image(base / "images" / folder / f"{k:02d}{j:030x}.png", color_of(k))
    (base / "images" / "banana" / "notes.txt").write_text("not an image")
    (base / "mappings").mkdir(parents=True)
    (base / "mappings" / "folder_to_objectnet_label.json").write_text(json.dumps(mapping))
    (base / "mappings" / "objectnet_to_imagenet_1k.json").write_text(json.dumps({"Banana": "banana"}))
    return {"images": 7, "classes": 3, "splits": {"test": 7}, "skipped": 3}


# Kaggle mirrors: the same files where the common Kaggle copies put them (each returns the counts of
# the published layout it was made from, which the adapter must report unchanged).

def _move_into(folder: Path, inner: str) -> None:
    """Move everything in ``folder`` into ``folder/inner/`` (a zip unpacked into a folder of its own name)."""
    moved = folder.with_name(folder.name + ".moving")
    folder.rename(moved)
    folder.mkdir()
    moved.rename(folder / inner)


def make_food41(root: Path) -> dict:
    """Kaggle kmader/food41: images/<class>/<id>.jpg + meta/meta/{classes,labels,train,test}.txt, HDF5 files beside."""
    expected = make_food101(root / "release")
    (root / "release" / "food-101" / "images").rename(root / "images")
    (root / "meta").mkdir()
    (root / "release" / "food-101" / "meta").rename(root / "meta" / "meta")
    for leftover in sorted((root / "release").rglob("*"), reverse=True):
        leftover.rmdir()
    (root / "release").rmdir()
    (root / "food_c101_n1000_r384x384x3.h5").write_bytes(b"\x89HDF")
    return expected


def make_products10k_kaggle(root: Path) -> dict:
    """Products-10K as Kaggle copies hold it: each zip's own folder kept, so train/train/*.jpg, test/test/*.jpg."""
    expected = make_products10k(root)
    _move_into(root / "train", "train")
    _move_into(root / "test", "test")
    return expected


def make_gldv2_kaggle(root: Path) -> dict:
    """Kaggle landmark-recognition-2021: train.csv with columns id,landmark_id only + train/a/b/c/<id>.jpg."""
    expected = make_gldv2(root, clean=False)
    rows = [line.split(",") for line in (root / "train.csv").read_text().splitlines()]
    (root / "train.csv").write_text("\n".join(f"{r[0]},{r[2]}" for r in rows) + "\n")
    return expected["train.csv"]


def make_deepfashion_kaggle(root: Path) -> dict:
    """Kaggle deepfashion-inshop: Eval/list_eval_partition.txt + img/ (no Img/ level)."""
    expected = make_deepfashion(root)
    (root / "Img" / "img").rename(root / "img")
    (root / "Img").rmdir()
    return expected


def make_sop_zip(root: Path) -> dict:
    """Stanford_Online_Products.zip unpacked where it was downloaded: ROOT/Stanford_Online_Products/..."""
    return make_sop(root / "Stanford_Online_Products")


def make_met_wrapped(root: Path) -> dict:
    """The Met files one and two folders down (a download folder holding the dataset's folder)."""
    return make_met(root / "met" / "met-dataset")
