"""A command that fails on its inputs leaves nothing behind that blocks the corrected rerun.

Every command checks its inputs before it creates an output; a training run that stopped before
head training started holds nothing worth keeping, so the next run (with or without --resume)
starts it afresh with the options it is given.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import submission_models as sm
from conftest import tiny_train_config

from guie.errors import GuieError
from guie.train.run import run_training

TINY = ["--backbone", "guie-tiny", "--pretrained", "none", "--workers", "0"]


def files_under(path: Path) -> list[Path]:
    return [p for p in path.rglob("*") if p.is_file()] if path.exists() else []


def unreadable_folder(root: Path) -> Path:
    for label in "ab":
        (root / label).mkdir(parents=True)
        for i in range(3):
            (root / label / f"{i}.jpg").write_bytes(os.urandom(200))
    return root


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory) -> Path:
    return sm.write_export(tmp_path_factory.mktemp("failed-runs") / "export")


def bad_inputs(tmp_path: Path, export_dir: Path) -> dict[str, tuple[list[str], Path]]:
    """Per command: arguments with one bad input, and the output path that must stay empty."""
    (tmp_path / "cols.csv").write_text("image,cls\na.png,1\n")
    (tmp_path / "notamodel").mkdir()
    (tmp_path / "notes.txt").write_text("not a model")
    build = tmp_path / "build"
    from guie.ship.folders import PackageSpec, build_package

    build_package(export_dir, PackageSpec.create("guie-tester/guie-fail-model", "guie-tester/guie-fail-inference"),
                  build, log=lambda _: None)
    (tmp_path / "one-class" / "x").mkdir(parents=True)
    return {
        "train-missing-data": (["train", "--data", f"imagefolder:{tmp_path / 'nowhere'}", *TINY,
                                "--out", str(tmp_path / "run1")], tmp_path / "run1"),
        "train-bad-csv": (["train", "--data", f"csv:{tmp_path / 'cols.csv'}", *TINY, "--out", str(tmp_path / "run2")],
                          tmp_path / "run2"),
        "sweep-missing-data": (["train", "--data", f"imagefolder:{tmp_path / 'nowhere'}", *TINY, "--classes", "2,3",
                                "--out", str(tmp_path / "sweep")], tmp_path / "sweep" / "classes-2"),
        "eval-missing-task": (["eval", str(export_dir / "saved_model.pt"), "--task",
                               f"imagefolder:{tmp_path / 'nowhere'}", "--out", str(tmp_path / "report")],
                              tmp_path / "report"),
        "export-not-a-run": (["export", str(tmp_path / "notamodel"), "--out", str(tmp_path / "exp")],
                             tmp_path / "exp"),
        "package-not-a-model": (["package", str(tmp_path / "notes.txt"), "--dataset", "guie-tester/guie-fail-model",
                                 "--kernel", "guie-tester/guie-fail-inference", "--out", str(tmp_path / "pkg")],
                                tmp_path / "pkg"),
        "smoke-bad-images": (["smoke", str(build), "--images", str(tmp_path / "one-class")], build / "smoke"),
    }


CASES = ["train-missing-data", "train-bad-csv", "sweep-missing-data", "eval-missing-task", "export-not-a-run",
         "package-not-a-model", "smoke-bad-images"]


@pytest.mark.parametrize("case", CASES)
def test_bad_input_is_exit_2_and_writes_nothing(cli, tmp_path, export_dir, case):
    args, output = bad_inputs(tmp_path, export_dir)[case]
    res = cli(*args)
    assert res.returncode == 2, res.stdout + res.stderr
    assert res.stderr.strip().splitlines()[-1].startswith("error: ") and "Traceback" not in res.stderr
    assert files_under(output) == []


def test_a_training_run_that_failed_on_its_data_reruns_corrected(cli, tmp_path, digits_dir):
    """The issue's case: the run folder is not created, so --resume has nothing stale to replay."""
    out = tmp_path / "run"
    (tmp_path / "bad.csv").write_text("image,cls\na.png,1\n")
    res = cli("train", "--data", f"csv:{tmp_path / 'bad.csv'}", *TINY, "--out", str(out))
    assert res.returncode == 2 and "lacks column(s) path, label" in res.stderr
    assert not out.exists()
    resumed = cli("train", "--resume", "--out", str(out))
    assert resumed.returncode == 2 and "has no config.json; start a new run without --resume" in resumed.stderr
    result = run_training(tiny_train_config([f"imagefolder:{digits_dir}"], out, epochs=1), log=lambda _: None)
    assert (result.run_dir / "model.pt").is_file()


def test_a_run_that_stopped_before_training_is_replaced_by_the_next(tmp_path, digits_dir):
    out = tmp_path / "run"
    with pytest.raises(GuieError, match="6 of 6 images"):
        run_training(tiny_train_config([f"imagefolder:{unreadable_folder(tmp_path / 'bad')}"], out, epochs=1,
                                       cache_dir=str(tmp_path / "cache")), log=lambda _: None)
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "data.json"]  # bad images listed, no training
    lines: list[str] = []
    good = [f"imagefolder:{digits_dir}"]
    run_training(tiny_train_config(good, out, epochs=1, cache_dir=str(tmp_path / "cache")), log=lines.append)
    assert f"note: {out} holds a run that stopped before training started; starting it afresh" in lines
    assert json.loads((out / "config.json").read_text())["data"] == good
    assert json.loads((out / "data.json").read_text())["bad_images"] == 0
    with pytest.raises(GuieError, match="already exists; pass --resume"):  # a run that trained is kept
        run_training(tiny_train_config(good, out, epochs=1), log=lambda _: None)


def test_resume_of_a_run_that_never_trained_takes_the_new_options(cli, tmp_path, digits_dir):
    out = tmp_path / "run"
    bad = unreadable_folder(tmp_path / "bad")
    args = [*TINY, "--epochs", "1", "--cache-dir", str(tmp_path / "cache"), "--out", str(out)]
    assert cli("train", "--data", f"imagefolder:{bad}", *args).returncode == 2
    res = cli("train", "--resume", "--data", f"imagefolder:{digits_dir}", "--out", str(out))
    assert res.returncode == 0, res.stderr[-2000:]
    assert f"note: {out} never started training; --resume starts it again with the saved config and the new data" \
        in res.stderr
    assert json.loads((out / "config.json").read_text())["data"] == [f"imagefolder:{digits_dir}"]
    assert (out / "model.pt").is_file()


def test_a_sweep_that_failed_on_its_data_reruns_corrected(tmp_path, digits_dir):
    from guie.workflows.sweep import run_sweep

    out = tmp_path / "sweep"
    cfg = tiny_train_config([f"imagefolder:{tmp_path / 'nowhere'}"], out, epochs=1, eval="none")
    with pytest.raises(GuieError, match="does not exist"):
        run_sweep(cfg, [2, 3], log=lambda _: None)
    assert [p.name for p in out.iterdir()] == ["sweep.json"]
    fixed = tiny_train_config([f"imagefolder:{digits_dir}"], out, epochs=1, eval="none")
    run_sweep(fixed, [2, 3], log=lambda _: None)
    assert (out / "classes-2" / "model.pt").is_file() and (out / "classes-3" / "model.pt").is_file()
    with pytest.raises(GuieError, match="sweep folder .* already exists"):
        run_sweep(fixed, [2, 3], log=lambda _: None)
