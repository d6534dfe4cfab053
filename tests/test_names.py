"""File names as the file system gives them: bytes that are not UTF-8 (``caf\\xe9`` from an older Windows or
macOS tool) go through every command, keep their identity, and show as ``caf\\xe9`` wherever they are reported."""
import json
import os
import random
import shutil
import zipfile

import pytest
import torch
from conftest import tiny_train_config
from PIL import Image

from guie.artifacts import load_torchscript
from guie.data import load_source
from guie.data.images import view_seed
from guie.data.records import Record
from guie.data.sampling import holdout_split, sample_classes
from guie.fsnames import escape_undecodable, name_bytes, nearest_text_folder, shown

CAFE = os.fsdecode(b"caf\xe9")  # 'caf\udce9': how Python hands over the Latin-1 bytes of "cafe" with an accent
ODD_FILE = os.fsdecode(b"img\xff01.png")
STRICT = {"PYTHONIOENCODING": "utf-8"}  # stdout refusing surrogates, as under a desktop's UTF-8 locale


def odd_imagefolder(root, per_class=4):
    """Three classes of real digits, one class folder named caf\\xe9 and one file of another named img\\xff01.png."""
    from guie.data.demo import write_digits

    digits = write_digits(root.parent / f"{root.name}-src", per_class=per_class)
    root.mkdir()
    for label, name in (("0", CAFE), ("1", "1"), ("2", "2")):
        shutil.copytree(digits / label, root / name)
    first = sorted((root / "1").iterdir())[0]
    first.rename(root / "1" / ODD_FILE)
    return root


def test_names_become_bytes_and_show_as_their_bytes():
    assert name_bytes(CAFE) == b"caf\xe9"
    assert name_bytes("café") == "café".encode()  # valid names: plain UTF-8, so their seeds do not change
    assert shown(CAFE) == "caf\\xe9" and shown("café") == "café"
    assert shown("a\nb") == "a\\nb"  # one line in a message
    assert escape_undecodable(f"x/{CAFE}\ny") == "x/caf\\xe9\ny"
    escape_undecodable(f"x/{CAFE}").encode("utf-8")  # valid UTF-8 text for a CSV or Markdown file


def test_sampling_and_holdout_take_such_labels_with_unchanged_seeds():
    records = [Record(f"/d/{label}/{i}.png", label, "d") for label in (CAFE, "b") for i in range(10)]
    train, held = holdout_split(records, 0.2, seed=3)
    assert len(held) == 4 and len(train) == 16
    order = list(range(10))
    random.Random(b"3/holdout/d/caf\xe9").shuffle(order)  # seeded by the name's bytes
    assert sorted(held[:2]) == sorted(order[:2])
    order_b = list(range(10, 20))
    random.Random("3/holdout/d/b").shuffle(order_b)  # a valid name: the seed as before (str)
    assert sorted(held[2:]) == sorted(order_b[:2])
    kept, report = sample_classes(records, None, max_per_class=3, seed=1)
    assert report.images_kept == 6 and report.images_capped == 14
    assert view_seed(f"/d/{CAFE}/1.png|8|1", 1) != view_seed("/d/caf/1.png|8|1", 1)


def test_records_keep_the_names(tmp_path):
    root = odd_imagefolder(tmp_path / "data")
    data = load_source(f"imagefolder:{root}")
    assert len(data.records) == 12 and not data.skipped
    assert sorted({r.label for r in data.records}) == ["1", "2", CAFE]
    odd = [r.path for r in data.records if r.path.endswith(ODD_FILE)]
    assert len(odd) == 1 and Image.open(odd[0]).size == (32, 32)  # still a readable image under that name


@pytest.mark.slow
def test_train_eval_with_such_names_under_a_strict_stdout(tmp_path, cli):
    root = odd_imagefolder(tmp_path / os.fsdecode(b"d\xe9"))
    out = tmp_path / "run"
    res = cli("train", "--data", f"imagefolder:{root}", "--backbone", "guie-tiny", "--pretrained", "none",
              "--epochs", "1", "--eval", "holdout", "--aug-views", "1", "--workers", "0", "--out", str(out), env=STRICT)
    assert res.returncode == 0, res.stderr[-2000:]
    assert f"data imagefolder:{tmp_path}/d\\xe9: 12 images, 3 classes, 0 skipped" in res.stdout
    assert json.loads((out / "classes.json").read_text()) == ["d\udce9/1", "d\udce9/2", f"d\udce9/{CAFE}"]
    config = json.loads((out / "config.json").read_text())
    assert config["data"] == [f"imagefolder:{root}"]  # the exact name, read back: --resume finds the folder again
    report = tmp_path / os.fsdecode(b"report\xe9")
    res = cli("eval", str(out), "--task", f"imagefolder:{root}", "--out", str(report), env=STRICT)
    assert res.returncode == 0, res.stderr[-2000:]
    assert f"report: {tmp_path}/report\\xe9/report.json" in res.stdout
    csv_text = (report / "report.csv").read_bytes().decode("utf-8")  # valid UTF-8, the name shown as \xe9
    assert f"imagefolder:{tmp_path}/d\\xe9" in csv_text
    assert "d\\xe9" in (report / "report.md").read_text(encoding="utf-8")


def test_errors_naming_such_a_folder_are_one_line(tmp_path, cli):
    missing = tmp_path / CAFE
    res = cli("data", f"imagefolder:{missing}", env=STRICT)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert res.stderr.strip().splitlines() == [
        f"error: imagefolder root '{tmp_path}/caf\\xe9' does not exist; pass the folder the dataset was unpacked to"]


def test_torchscript_files_under_such_names_load_and_export(trained_run, tmp_path):
    from guie.export import export_run

    out = tmp_path / os.fsdecode(b"exp\xe9") / "e"
    assert nearest_text_folder(out) == tmp_path
    export_run(trained_run, out, measure_speed=False, log=lambda _: None)
    assert sorted(p.name for p in out.iterdir()) == ["saved_model.pt", "submission.zip", "verify.json"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".guie-export-")]  # its temporary folder went
    model = load_torchscript(out / "saved_model.pt")
    assert model(torch.zeros(1, 3, 20, 30, dtype=torch.uint8)).shape == (1, 64)
    with zipfile.ZipFile(out / "submission.zip") as zf:
        assert zf.namelist() == ["saved_model.pt"]


def test_training_config_keeps_such_a_data_path(tmp_path):
    cfg = tiny_train_config([f"imagefolder:{tmp_path / CAFE}"], tmp_path / "r")
    assert json.loads(json.dumps(cfg.to_dict()))["data"] == [f"imagefolder:{tmp_path / CAFE}"]


@pytest.mark.parametrize("locale", ["C", "C.UTF-8"])
def test_reports_under_other_locales(tmp_path, cli, locale):
    root = odd_imagefolder(tmp_path / "data", per_class=2)
    (root / "2" / os.fsdecode(b"notes\xe9.txt")).write_text("x")
    res = cli("data", f"imagefolder:{root}", env={"LC_ALL": locale, "LANG": locale})
    assert res.returncode == 0, res.stderr
    assert "1 x not an image file extension (e.g. " in res.stdout and "/2/notes\\xe9.txt)" in res.stdout
