"""Each dataset adapter on a tiny copy of its published layout: exact counts, splits, domains, skipped rows."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from layouts import (
    make_deepfashion,
    make_deepfashion_kaggle,
    make_food41,
    make_food101,
    make_gldv2,
    make_gldv2_kaggle,
    make_met,
    make_met_wrapped,
    make_objectnet,
    make_products10k,
    make_products10k_kaggle,
    make_sop,
    make_sop_zip,
)

from guie.data import load_source, source_prefixes
from guie.data.summary import summarize_source
from guie.errors import GuieError

BUILDERS = {
    "products10k": make_products10k,
    "sop": make_sop,
    "deepfashion": make_deepfashion,
    "met": make_met,
    "food101": make_food101,
    "objectnet": make_objectnet,
}


@pytest.fixture(scope="module")
def layouts(tmp_path_factory) -> dict[str, tuple[Path, dict]]:
    out = {}
    for prefix, build in BUILDERS.items():
        root = tmp_path_factory.mktemp(prefix)
        out[prefix] = (root, build(root))
    return out


def split_counts(records) -> dict[str, int]:
    return dict(Counter(r.split for r in records))


@pytest.mark.parametrize("prefix", sorted(BUILDERS))
def test_adapter_counts_are_exact(layouts, prefix):
    root, expected = layouts[prefix]
    data = load_source(f"{prefix}:{root}")
    assert len(data.records) == expected["images"]
    assert len({r.class_key for r in data.records}) == expected["classes"]
    assert split_counts(data.records) == expected["splits"]
    assert len(data.skipped) == expected["skipped"]
    assert all(Path(r.path).is_file() and Path(r.path).is_absolute() for r in data.records)
    assert all(why for _, why in data.skipped)


MIRRORS = {
    "food101-kaggle-food41": ("food101", make_food41),
    "products10k-kaggle": ("products10k", make_products10k_kaggle),
    "gldv2-kaggle-landmark-recognition": ("gldv2", make_gldv2_kaggle),
    "deepfashion-kaggle-inshop": ("deepfashion", make_deepfashion_kaggle),
    "sop-zip-folder": ("sop", make_sop_zip),
    "met-two-folders-down": ("met", make_met_wrapped),
}


@pytest.mark.parametrize("mirror", sorted(MIRRORS))
def test_kaggle_mirrors_read_like_the_release(tmp_path, mirror):
    prefix, build = MIRRORS[mirror]
    expected = build(tmp_path)
    data = load_source(f"{prefix}:{tmp_path}")
    assert len(data.records) == expected["images"]
    assert len({r.class_key for r in data.records}) == expected["classes"]
    assert len(data.skipped) == expected["skipped"]
    if "splits" in expected:
        assert split_counts(data.records) == expected["splits"]
    assert all(Path(r.path).is_file() for r in data.records)


def test_food41_mirror_reads_meta_meta(tmp_path):
    make_food41(tmp_path)
    data = load_source(f"food101:{tmp_path}")
    assert {r.label for r in data.records} == {"apple_pie", "baby_back_ribs", "beignets"}
    assert all(r.path.startswith(str(tmp_path / "images")) for r in data.records)
    assert {where.split(":")[0] for where, _ in data.skipped} == {"train.txt", "test.txt"}


def test_products10k_kaggle_mirror_reads_the_nested_image_folders(tmp_path):
    make_products10k_kaggle(tmp_path)
    by_name = {Path(r.path).name: r for r in load_source(f"products10k:{tmp_path}").records}
    assert by_name["10.jpg"].path == str(tmp_path / "train" / "train" / "10.jpg")
    assert by_name["102.jpg"].path == str(tmp_path / "test" / "test" / "102.jpg")


def test_unrecognised_layout_names_what_was_expected_and_what_was_found(tmp_path):
    """Food-101 with its lists missing: the message lists both known layouts and the folder's contents."""
    make_food41(tmp_path)
    for f in (tmp_path / "meta" / "meta").iterdir():
        f.rename(tmp_path / "meta" / f.name.upper())
    with pytest.raises(GuieError) as err:
        load_source(f"food101:{tmp_path}")
    message = str(err.value)
    assert "\n" not in message
    assert "meta/classes.txt + meta/train.txt + meta/test.txt + images/ (Food-101 as released)" in message
    assert "meta/meta/classes.txt" in message and "(Kaggle mirror kmader/food41)" in message
    assert message.endswith("found: food_c101_n1000_r384x384x3.h5, images/ (apple_pie/, baby_back_ribs/, beignets/), "
                            "meta/ (CLASSES.TXT, LABELS.TXT, TEST.TXT, TRAIN.TXT, ... 5 entries); "
                            "pass the folder the dataset was unpacked to")


def test_all_dataset_prefixes_are_registered():
    assert {"products10k", "gldv2", "sop", "deepfashion", "met", "food101", "objectnet",
            "imagefolder", "csv"} <= set(source_prefixes())


def test_products10k_reads_train_and_test_lists(layouts):
    root, _ = layouts["products10k"]
    data = load_source(f"products10k:{root}")
    by_name = {Path(r.path).name: r for r in data.records}
    assert by_name["10.jpg"].label == "1" and by_name["10.jpg"].split == "train"
    assert by_name["102.jpg"].label == "2" and by_name["102.jpg"].split == "test"
    assert Path(by_name["102.jpg"].path).parent.name == "test"
    assert {r.domain for r in data.records} == {"products10k"}
    assert Counter(why for _, why in data.skipped) == {"image file not found": 2, "empty name or class": 1}
    assert ("train.csv:8", "image file not found") in data.skipped


def test_products10k_without_test_images_reads_train_only(tmp_path):
    make_products10k(tmp_path)
    for f in (tmp_path / "test").iterdir():
        f.unlink()
    (tmp_path / "test").rmdir()
    data = load_source(f"products10k:{tmp_path}")
    assert split_counts(data.records) == {"train": 6}
    assert ("test_kaggletest.csv", "test/ image folder missing; test set not read") in data.skipped


def test_gldv2_prefers_train_clean_and_nests_images_by_id(tmp_path):
    expected = make_gldv2(tmp_path)
    data = load_source(f"gldv2:{tmp_path}")
    assert len(data.records) == expected["train_clean.csv"]["images"]
    assert len({r.label for r in data.records}) == expected["train_clean.csv"]["classes"]
    assert data.skipped == []
    rec = next(r for r in data.records if r.path.endswith("0123456789abcdef.jpg"))
    assert rec.path.endswith("/train/0/1/2/0123456789abcdef.jpg") and rec.label == "7" and rec.split == "train"


def test_gldv2_reads_train_csv_when_named_or_alone(tmp_path):
    expected = make_gldv2(tmp_path)
    named = load_source(f"gldv2:{tmp_path / 'train.csv'}")
    assert len(named.records) == expected["train.csv"]["images"]
    assert len({r.label for r in named.records}) == expected["train.csv"]["classes"]
    assert named.skipped == [("train.csv:6", "image file not found")]
    (tmp_path / "train_clean.csv").unlink()
    assert len(load_source(f"gldv2:{tmp_path}").records) == expected["train.csv"]["images"]


def test_sop_super_classes_are_sub_domains(layouts):
    root, expected = layouts["sop"]
    data = load_source(f"sop:{root}")
    assert data.domain == "sop"
    assert dict(Counter(r.domain for r in data.records)) == expected["domains"]
    rec = next(r for r in data.records if r.label == "11321")
    assert rec.domain == "sop-cabinet" and rec.split == "test" and rec.path.endswith(".JPG")
    assert Counter(why for _, why in data.skipped) == {"image file not found": 1,
                                                       "malformed line (expected 4 fields)": 1}


def test_sop_super_class_name_falls_back_to_the_published_order():
    from guie.data.sop import super_class_name

    assert super_class_name("chair_final/1_0.JPG", "3") == "chair"
    assert super_class_name("somewhere/1_0.JPG", "9") == "sofa"
    assert super_class_name("somewhere/1_0.JPG", "12") == "toaster"
    assert super_class_name("somewhere/1_0.JPG", "40") == "40"


def test_deepfashion_splits_are_the_evaluation_status(layouts):
    root, _ = layouts["deepfashion"]
    data = load_source(f"deepfashion:{root}")
    queries = sorted(r.label for r in data.records if r.split == "query")
    assert queries == ["id_00000010", "id_00000011", "id_00000011", "id_00000012"]
    assert all("/Img/img/" in r.path for r in data.records)
    assert data.skipped == [("list_eval_partition.txt:15", "image file not found")]


def test_met_database_is_train_queries_keep_met_id_and_distractors_are_skipped(layouts):
    root, expected = layouts["met"]
    data = load_source(f"met:{root}")
    assert dict(Counter(why for _, why in data.skipped)) == expected["reasons"]
    by_file = {(Path(r.path).parent.name, Path(r.path).name): r for r in data.records}
    assert by_file[("test_met", "q1.jpg")].label == "34" and by_file[("test_met", "q1.jpg")].split == "query"
    assert by_file[("test_met", "v1.jpg")].split == "val"
    assert by_file[("34", "2.jpg")].split == "train" and by_file[("34", "2.jpg")].label == "34"


def test_met_accepts_json_and_image_folders_directly_in_root(tmp_path):
    expected = make_met(tmp_path)
    for f in (tmp_path / "ground_truth").iterdir():
        f.rename(tmp_path / f.name)
    for d in (tmp_path / "images").iterdir():
        d.rename(tmp_path / d.name)
    data = load_source(f"met:{tmp_path}")
    assert len(data.records) == expected["images"]


def test_food101_accepts_the_tar_parent_and_the_food101_folder(layouts):
    root, expected = layouts["food101"]
    for spec in (f"food101:{root}", f"food101:{root / 'food-101'}"):
        data = load_source(spec)
        assert len(data.records) == expected["images"]
    assert {r.label for r in data.records} == {"apple_pie", "baby_back_ribs", "beignets"}
    assert Counter(why for _, why in data.skipped) == {"image file not found": 1, "class not in classes.txt": 1}


def test_objectnet_labels_come_from_the_mapping_and_all_is_test(layouts):
    root, _ = layouts["objectnet"]
    data = load_source(f"objectnet:{root}")
    assert {r.label for r in data.records} == {"Air freshener", "Alarm clock", "Banana"}
    assert Counter(why for _, why in data.skipped) == {
        "folder not in mappings/folder_to_objectnet_label.json": 2, "not an image file extension": 1}


def test_training_uses_only_the_train_split_and_refuses_test_only_sources(layouts):
    from guie.train.run import load_records

    lines: list[str] = []
    sop_root, _ = layouts["sop"]
    records, report = load_records([f"sop:{sop_root}"], lines.append)
    assert len(records) == 7 and {r.split for r in records} == {"train"}
    assert report[0]["images"] == 7
    assert "10 test images not used for training" in lines[0]
    with pytest.raises(GuieError, match="has no training split"):
        load_records([f"objectnet:{layouts['objectnet'][0]}"], lines.append)


@pytest.mark.parametrize("prefix,needs", [
    ("products10k", "train.csv"), ("gldv2", "train_clean.csv or train.csv"), ("sop", "Ebay_train.txt"),
    ("deepfashion", "list_eval_partition.txt"), ("met", "MET_database.json"), ("food101", "classes.txt"),
    ("objectnet", "folder_to_objectnet_label.json"),
])
def test_missing_list_file_is_one_line_naming_it(tmp_path, prefix, needs):
    with pytest.raises(GuieError) as err:
        load_source(f"{prefix}:{tmp_path}")
    message = str(err.value)
    assert needs in message and "\n" not in message


@pytest.mark.parametrize("prefix", sorted(BUILDERS) + ["gldv2"])
def test_missing_root_is_one_line(tmp_path, prefix):
    with pytest.raises(GuieError, match="does not exist; pass the folder the dataset was unpacked to"):
        load_source(f"{prefix}:{tmp_path / 'nowhere'}")


def test_missing_image_folder_names_the_fix(tmp_path):
    make_sop(tmp_path)
    (tmp_path / "Ebay_test.txt").write_text("image_id class_id path\n")
    with pytest.raises(GuieError, match="does not start with the header 'image_id class_id super_class_id path'"):
        load_source(f"sop:{tmp_path}")
    root = tmp_path / "p10k"
    make_products10k(root)
    for f in (root / "train").iterdir():
        f.unlink()
    (root / "train").rmdir()
    with pytest.raises(GuieError, match="unpack train.zip"):
        load_source(f"products10k:{root}")


def test_summary_groups_skipped_rows_by_reason(layouts):
    root, expected = layouts["met"]
    summary = summarize_source(load_source(f"met:{root}"))
    assert summary["images"] == expected["images"] and summary["classes"] == expected["classes"]
    assert {k: v["images"] for k, v in summary["splits"].items()} == expected["splits"]
    reasons = summary["skipped_reasons"]
    assert {k: v["count"] for k, v in reasons.items()} == expected["reasons"]
    assert reasons["image file not found"]["examples"] == ["MET_database.json:entry 6"]


def test_guie_data_prints_text_and_json(cli, layouts):
    sop_root, sop = layouts["sop"]
    food_root, food = layouts["food101"]
    res = cli("data", f"sop:{sop_root}", f"food101:{food_root}")
    assert res.returncode == 0, res.stderr
    assert f"images   {sop['images']}" in res.stdout and f"images   {food['images']}" in res.stdout
    assert "splits   test 10 (4 classes), train 7 (3 classes)" in res.stdout
    assert "sop-cabinet 5 (2 classes)" in res.stdout
    assert "1 x image file not found (e.g. Ebay_test.txt:12)" in res.stdout
    res = cli("data", "--json", f"sop:{sop_root}", f"food101:{food_root}")
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert [s["images"] for s in out["sources"]] == [sop["images"], food["images"]]
    assert out["sources"][1]["splits"] == {"test": {"images": 3, "classes": 3}, "train": {"images": 9, "classes": 3}}
    assert out["sources"][0]["skipped"] == 2


def test_guie_data_bad_spec_is_one_line(cli_process, tmp_path):
    """In a fresh process: the one-line error is all a user sees, nothing from the imports before it."""
    res = cli_process("data", f"sopp:{tmp_path}")
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == [
        f"error: unknown data source prefix 'sopp' (did you mean: sop?); known prefixes: "
        f"{', '.join(source_prefixes())}"]
    assert "Traceback" not in res.stderr
