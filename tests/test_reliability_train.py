"""Bad input, kills and write errors in the data -> features -> training stages: one clear line, nothing lost."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from cache_files import shards_in
from conftest import tiny_train_config
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from guie.data import load_source
from guie.data.images import ImageDataset
from guie.errors import GuieError
from guie.model.model_file import read_model_file
from guie.train.run import run_training

TINY = ["--backbone", "guie-tiny", "--pretrained", "none", "--workers", "0"]


def assert_one_line_error(res, *fragments):
    assert res.returncode != 0
    lines = res.stderr.strip().splitlines()  # progress bars may come before the error
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], res.stderr
    assert "Traceback" not in res.stderr + res.stdout
    for fragment in fragments:
        assert fragment in errors[0], errors[0]


@pytest.mark.parametrize("layout, fragment", [
    (None, "does not exist"), ([], "holds no usable images"), (["a/x.txt"], "holds no usable images"),
])
def test_dataset_root_missing_empty_or_without_images(cli, tmp_path, layout, fragment):
    root = tmp_path / "data"
    for rel in layout or []:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text("not an image")
    if layout is not None:
        root.mkdir(exist_ok=True)
    res = cli("train", "--data", f"imagefolder:{root}", *TINY, "--out", str(tmp_path / "run"))
    assert_one_line_error(res, fragment)
    assert not (tmp_path / "run" / "model.pt").exists()


def test_csv_without_columns(cli, tmp_path):
    (tmp_path / "m.csv").write_text("image,cls\na.png,1\n")
    assert_one_line_error(cli("train", "--data", f"csv:{tmp_path / 'm.csv'}", *TINY, "--out", str(tmp_path / "r")),
                          "lacks column(s) path, label", "found: 'image', 'cls'")


def test_unknown_backbone_suggests_close_names(cli, tmp_path):
    assert_one_line_error(cli("train", "--data", "demo:digits", "--backbone", "ViT-L-41", "--out", str(tmp_path / "r")),
                          "unknown backbone 'ViT-L-41'", "did you mean")
    assert not (tmp_path / "r").exists()


def test_unknown_pretrained_tag(cli, tmp_path):
    assert_one_line_error(cli("train", "--data", "demo:digits", "--backbone", "ViT-B-32", "--pretrained", "openia",
                              "--out", str(tmp_path / "r")), "unknown pretrained tag 'openia'", "openai")


def test_weights_file_that_does_not_fit(cli, tmp_path, digits_dir):
    torch.save({"visual.conv1.weight": torch.zeros(3, 3)}, tmp_path / "w.pt")
    res = cli("train", "--data", f"imagefolder:{digits_dir}", "--backbone", "guie-tiny", "--pretrained",
              str(tmp_path / "w.pt"), "--workers", "0", "--out", str(tmp_path / "r"), "--cache-dir", str(tmp_path / "c"))
    assert_one_line_error(res, "does not fit backbone guie-tiny")


def test_more_classes_than_the_data_has(cli, tmp_path, digits_dir):
    res = cli("train", "--data", f"imagefolder:{digits_dir}", *TINY, "--classes", "50", "--out", str(tmp_path / "r"))
    assert_one_line_error(res, "--classes 50", "10 classes")


def test_too_many_unreadable_images(cli, tmp_path):
    root = tmp_path / "imgs"
    for label in "ab":
        (root / label).mkdir(parents=True)
        for i in range(3):
            (root / label / f"{i}.jpg").write_bytes(os.urandom(200))
    res = cli("train", "--data", f"imagefolder:{root}", *TINY, "--out", str(tmp_path / "r"),
              "--cache-dir", str(tmp_path / "c"))
    assert_one_line_error(res, "6 of 6 images", "--max-bad-frac")
    assert len(json.loads((tmp_path / "r" / "data.json").read_text())["bad_image_list"]) == 6


def test_os_errors_are_one_line(cli, tmp_path):
    (tmp_path / "afile").write_text("x")
    res = cli("train", "--data", "demo:digits", *TINY, "--out", str(tmp_path / "afile" / "run"))
    assert_one_line_error(res, "Not a directory")


def wait_for(predicate, proc, timeout=120.0):
    end = time.time() + timeout
    while time.time() < end and proc.poll() is None:
        if predicate():
            return True
        time.sleep(0.005)
    return False


def train_cmd(*args):
    return [sys.executable, "-m", "guie.cli", "train", *TINY, *args]


@pytest.mark.slow
def test_kill_9_during_head_training_then_resume(digits_dir, tmp_path, cli):
    args = ["--data", f"imagefolder:{digits_dir}", "--epochs", "30", "--batch-size", "32", "--lr", "0.01",
            "--cache-dir", str(tmp_path / "cache")]
    proc = subprocess.Popen(train_cmd(*args, "--out", str(tmp_path / "killed")), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    assert wait_for(lambda: (tmp_path / "killed" / "checkpoint.pt").exists(), proc), "training never checkpointed"
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    assert not (tmp_path / "killed" / "model.pt").exists()
    assert torch.load(tmp_path / "killed" / "checkpoint.pt", weights_only=True)["epoch"] < 30

    resumed = cli("train", "--resume", "--out", str(tmp_path / "killed"))
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming after epoch" in resumed.stdout and "using cached features" in resumed.stdout
    full = cli("train", *TINY, *args, "--out", str(tmp_path / "full"))
    assert full.returncode == 0, full.stderr
    a, b = read_model_file(tmp_path / "killed"), read_model_file(tmp_path / "full")
    for key, value in a["projection"]["state_dict"].items():
        assert torch.equal(value, b["projection"]["state_dict"][key]), key
    assert torch.equal(a["head"]["state_dict"]["weight"], b["head"]["state_dict"]["weight"])


@pytest.mark.slow
def test_kill_9_during_feature_extraction_then_resume(tmp_path, cli):
    args = ["--data", "demo:digits", "--epochs", "2", "--extract-batch-size", "1", "--shard-size", "50",
            "--classes", "4"]
    index = tmp_path / "cache"
    proc = subprocess.Popen(train_cmd(*args, "--cache-dir", str(index), "--out", str(tmp_path / "killed")),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def some_shards():
        files = list(index.glob("*/index.jsonl"))
        return bool(files) and files[0].read_text().count('"shard"') >= 2

    assert wait_for(some_shards, proc), "extraction finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL

    resumed = cli("train", "--resume", "--out", str(tmp_path / "killed"))
    assert resumed.returncode == 0, resumed.stderr
    done = [line for line in resumed.stdout.splitlines() if line.startswith("using cached features for")]
    assert done and "computing" in done[0]  # part came from the cache, the rest was computed
    full = cli("train", *TINY, *args, "--cache-dir", str(tmp_path / "cache2"), "--out", str(tmp_path / "full"))
    assert full.returncode == 0, full.stderr
    a, b = read_model_file(tmp_path / "killed"), read_model_file(tmp_path / "full")
    for key, value in a["projection"]["state_dict"].items():
        assert torch.equal(value, b["projection"]["state_dict"][key]), key


def test_write_error_leaves_no_truncated_shard_or_model(digits_dir, tmp_path, monkeypatch):
    import guie.features.cache as features

    def full_disk(fh, arr):
        fh.write(b"\x93NUMPY partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(features.np, "save", full_disk)
    cfg = tiny_train_config([f"imagefolder:{digits_dir}"], tmp_path / "run", epochs=1, cache_dir=str(tmp_path / "c"))
    with pytest.raises(OSError, match="No space left"):
        run_training(cfg, log=lambda _: None)
    assert not [p for p in (tmp_path / "c").rglob("*") if p.suffix in (".npy", ".tmp")]
    monkeypatch.undo()

    real_save = torch.save

    def failing_model_save(obj, path, *a, **k):
        if "model.pt" in str(path) or ".model.pt." in os.path.basename(str(path)):
            with open(path, "wb") as fh:
                fh.write(b"trunc")
            raise OSError(28, "No space left on device")
        return real_save(obj, path, *a, **k)

    monkeypatch.setattr(torch, "save", failing_model_save)
    with pytest.raises(OSError):
        run_training(cfg, overwrite=True, log=lambda _: None)
    assert not (tmp_path / "run" / "model.pt").exists()
    assert not list((tmp_path / "run").glob(".*.tmp"))
    assert (tmp_path / "run" / "checkpoint.pt").exists()  # the finished epochs are kept for --resume


def test_broken_cache_shard_is_detected_and_recomputed(digits_dir, tmp_path):
    cfg = tiny_train_config([f"imagefolder:{digits_dir}"], tmp_path / "a", epochs=1, cache_dir=str(tmp_path / "c"),
                            shard_size=100)
    first = run_training(cfg, log=lambda _: None)
    shards = shards_in(tmp_path / "c")
    assert len(shards) > 1
    broken = shards[0]
    shard = next((tmp_path / "c").glob(f"*/{broken['file']}"))
    shard.write_bytes(shard.read_bytes()[:100])  # truncated
    lines = []
    again = run_training(tiny_train_config(cfg.data, tmp_path / "b", epochs=1, cache_dir=str(tmp_path / "c")),
                         log=lines.append)
    assert again.features_computed == broken["rows"]
    assert any(f"computing {broken['rows']}" in line for line in lines)
    assert first.eval["holdout"]["mP@5"] == again.eval["holdout"]["mP@5"]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(min_size=0, max_size=300))
def test_random_bytes_as_images_never_raise(tmp_path, data):
    path = tmp_path / "x.jpg"
    path.write_bytes(data)
    x, i, ok, _ = ImageDataset([str(path)], lambda img: torch.zeros(3, 4, 4), (4, 4))[0]
    assert i == 0 and x.shape == (3, 4, 4) and isinstance(ok, bool)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.lists(st.text(max_size=12), min_size=0, max_size=5), max_size=6),
       st.sampled_from(["path,label\n", "path,label,domain\n", "label\n", ""]))
def test_random_csv_rows_give_records_or_one_clear_error(tmp_path, rows, header):
    path = tmp_path / "m.csv"
    path.write_text(header + "\n".join(",".join(r) for r in rows), encoding="utf-8")
    try:
        data = load_source(f"csv:{path}")
        assert all(r.label for r in data.records)
    except GuieError as exc:
        assert "\n" not in str(exc)
