"""What a folder really holds: one rule (guie.data.walk) for links, hidden and OS litter, and sub-folders, in
every reader that walks folders (imagefolder, the demo data, ObjectNet, guie-smoke --images), with what was
left out reported by reason."""
import json
import os
from collections import Counter

import pytest
from PIL import Image

from guie.data import load_source
from guie.data.walk import (
    BROKEN_LINK,
    FILE_READ,
    FOLDER_READ,
    HIDDEN_FILE,
    HIDDEN_FOLDER,
    LINK_LOOP,
    LITTER,
    NOT_AN_IMAGE,
    walk_images,
)
from guie.errors import GuieError


def png(path, shade=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), (shade % 256, 40, 90)).save(path)
    return path


def user_folder(tmp_path):
    """The bug reports' folder: catA holds 34 images and a link to 10 more elsewhere, catB 6 images and a
    dangling link; Jupyter checkpoints, macOS and Windows litter; a loop and a second link to one folder."""
    root, elsewhere = tmp_path / "pets", tmp_path / "elsewhere"
    for i in range(34):
        png(root / "catA" / f"a{i:02d}.png", i)
    for i in range(10):
        png(elsewhere / f"e{i:02d}.jpg", 100 + i)
    (root / "catA" / "more").symlink_to(elsewhere, target_is_directory=True)
    (root / "catA" / "again").symlink_to(elsewhere, target_is_directory=True)  # the same folder a second time
    (root / "catA" / "loop").symlink_to(root / "catA", target_is_directory=True)  # a loop back up
    for i in range(5):
        png(root / "catB" / "nested" / "deeper" / f"b{i}.png", 200 + i)  # sub-folders are read to any depth
    png(root / "catB" / "b-top.png", 210)
    (root / "catB" / "gone.png").symlink_to(tmp_path / "deleted.png")  # dangling
    (root / "catB" / "same.png").symlink_to(root / "catB" / "b-top.png")  # the same image again
    png(root / "catB" / ".ipynb_checkpoints" / "img001-checkpoint.png", 220)
    (root / "catB" / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (root / "catB" / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0")
    (root / "catB" / "readme.txt").write_text("notes")
    png(root / "__MACOSX" / "catA" / "._a00.png", 230)
    (root / ".DS_Store").write_bytes(b"\x00")
    (root / "labels.csv").write_text("x")
    return root


def test_the_walk_follows_links_once_and_leaves_litter_out(tmp_path):
    root = user_folder(tmp_path)
    images, skipped = walk_images(root / "catA")
    assert len(images) == 44
    assert sum(p.parent.name == "again" for p in images) == 10  # through the first link by name, under its path
    assert sorted((p.name, why) for p, why in skipped) == [("loop", LINK_LOOP), ("more", FOLDER_READ)]
    images, skipped = walk_images(root / "catB")
    assert sorted(p.name for p in images) == ["b-top.png", *(f"b{i}.png" for i in range(5))]
    assert Counter(why for _, why in skipped) == {BROKEN_LINK: 1, FILE_READ: 1, HIDDEN_FOLDER: 1, HIDDEN_FILE: 1,
                                                  LITTER: 1, NOT_AN_IMAGE: 1}
    assert dict((p.name, why) for p, why in skipped)[".ipynb_checkpoints"] == HIDDEN_FOLDER


def test_a_link_to_itself_is_a_loop(tmp_path):
    png(tmp_path / "c" / "x.png")
    (tmp_path / "c" / "self").symlink_to(tmp_path / "c" / "self")
    images, skipped = walk_images(tmp_path / "c")
    assert [p.name for p in images] == ["x.png"] and [(p.name, why) for p, why in skipped] == [("self", LINK_LOOP)]


def test_imagefolder_counts_and_reports_what_it_left_out(tmp_path):
    root = user_folder(tmp_path)
    data = load_source(f"imagefolder:{root}")
    assert Counter(r.label for r in data.records) == {"catA": 44, "catB": 6}
    assert not any(".ipynb_checkpoints" in r.path or "__MACOSX" in r.path for r in data.records)
    assert Counter(why for _, why in data.skipped) == {
        FOLDER_READ: 1, LINK_LOOP: 1, BROKEN_LINK: 1, FILE_READ: 1, HIDDEN_FOLDER: 1, HIDDEN_FILE: 2, LITTER: 2,
        NOT_AN_IMAGE: 1, "file outside a class folder": 1}
    assert (str(root / "catB" / "gone.png"), BROKEN_LINK) in data.skipped
    assert (str(root / "__MACOSX"), LITTER) in data.skipped  # one entry for the folder, not one per file


def test_a_second_link_to_a_class_folder_is_not_a_second_class(tmp_path):
    """A link at the top to a class folder already read (``catA-again -> catA``), or to a folder inside another
    class, is left out once: no image counts twice, no class appears twice."""
    root = user_folder(tmp_path)
    (root / "catA-again").symlink_to(root / "catA", target_is_directory=True)
    (root / "aaa-nested").symlink_to(root / "catB" / "nested", target_is_directory=True)  # read before catB
    data = load_source(f"imagefolder:{root}")
    assert Counter(r.label for r in data.records) == {"aaa-nested": 5, "catA": 44, "catB": 1}
    assert len({r.path for r in data.records}) == len(data.records) == 50
    assert (str(root / "catA-again"), FOLDER_READ) in data.skipped
    assert (str(root / "catB" / "nested"), FOLDER_READ) in data.skipped


def test_guie_data_and_the_training_report_show_the_counts(tmp_path, cli):
    from guie.train.run import load_records

    root = user_folder(tmp_path)
    res = cli("data", f"imagefolder:{root}")
    assert res.returncode == 0, res.stderr
    assert "  images   50\n  classes  2\n" in res.stdout and "  skipped  11 rows:" in res.stdout
    assert f"    1 x {BROKEN_LINK} (e.g. {root / 'catB' / 'gone.png'})" in res.stdout
    lines: list[str] = []
    records, report = load_records([f"imagefolder:{root}"], lines.append)
    assert len(records) == 50
    assert lines[0].startswith(f"data imagefolder:{root}: 50 images, 2 classes, 11 skipped; skipped: 2 x ")
    (source,) = json.loads(json.dumps(report))  # as data.json holds it
    assert source["skipped"] == 11 and source["skipped_reasons"][HIDDEN_FILE] == 2
    assert source["skipped_reasons"][BROKEN_LINK] == 1 and sum(source["skipped_reasons"].values()) == 11


def test_smoke_images_read_the_same_folder_the_same_way(tmp_path):
    from guie.ship.smoke import folder_images

    root = user_folder(tmp_path)
    labelled = folder_images(root, per_class=100)
    assert Counter(labelled.labels) == {"catA": 44, "catB": 6}
    assert len(labelled.left_out) == 11 and not labelled.unreadable
    assert (str(root / "catB" / ".ipynb_checkpoints"), HIDDEN_FOLDER) in labelled.left_out


def test_objectnet_folders_follow_the_rule(tmp_path):
    base = tmp_path / "objectnet-1.0"
    for i in range(3):
        png(tmp_path / "extra" / f"{i}.png", i)
    png(base / "images" / "banana" / "1.png")
    (base / "images" / "banana" / "linked").symlink_to(tmp_path / "extra", target_is_directory=True)
    png(base / "images" / "banana" / ".ipynb_checkpoints" / "1-checkpoint.png")
    png(base / "images" / "__MACOSX" / "banana" / "._1.png")
    (base / "mappings").mkdir(parents=True)
    (base / "mappings" / "folder_to_objectnet_label.json").write_text(json.dumps({"banana": "Banana"}))
    data = load_source(f"objectnet:{tmp_path}")
    assert len(data.records) == 4 and {r.label for r in data.records} == {"Banana"}
    assert sorted(data.skipped) == [("__MACOSX", LITTER), (os.path.join("banana", ".ipynb_checkpoints"), HIDDEN_FOLDER)]


def test_layout_search_never_looks_into_litter(tmp_path):
    (tmp_path / "__MACOSX" / "food-101" / "meta").mkdir(parents=True)
    (tmp_path / "__MACOSX" / "food-101" / "meta" / "._classes.txt").write_text("x")
    (tmp_path / "food-101").mkdir()
    with pytest.raises(GuieError) as err:
        load_source(f"food101:{tmp_path}")
    assert "found: food-101/ (empty)" in str(err.value) and "__MACOSX" not in str(err.value)
