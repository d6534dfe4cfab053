"""guie-train end to end on real digits with guie-tiny: learning, caching, resume, run-folder safety."""
import json
import shutil

import numpy as np
import pytest
import torch
from conftest import tiny_train_config
from PIL import Image

from guie.errors import GuieError
from guie.model.model_file import read_model_file
from guie.train.run import run_training


def test_cli_train_learns_beyond_a_random_projection(cli, digits_dir, tmp_path):
    out = tmp_path / "run"
    res = cli("train", "--data", f"imagefolder:{digits_dir}", "--backbone", "guie-tiny", "--pretrained", "none",
              "--classes", "8", "--epochs", "5", "--out", str(out), "--eval", "holdout",
              "--lr", "0.01", "--batch-size", "16", "--scale", "10", "--margin", "0.1", "--workers", "0")
    assert res.returncode == 0, res.stderr
    assert "mP@5 " in res.stdout
    ev = json.loads((out / "eval.json").read_text())["holdout"]
    assert ev["mP@5"] > ev["random_projection_mP@5"] + 0.1
    assert len(json.loads((out / "classes.json").read_text())) == 8
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 5
    config = json.loads((out / "config.json").read_text())
    assert config["classes"] == 8 and "guie_version" in config and "git_commit" in config
    model = read_model_file(out)
    assert model["projection"]["config"]["dim"] == 64
    assert model["backbone"] == {"name": "guie-tiny", "pretrained": "none", "seed": 0}


def test_second_run_uses_the_cache_without_the_backbone(digits_dir, tmp_path):
    cfg = tiny_train_config([f"imagefolder:{digits_dir}"], tmp_path / "a", epochs=1, cache_dir=str(tmp_path / "cache"))
    first = run_training(cfg, log=lambda _: None)
    assert first.features_computed == 400

    def no_backbone(*_):
        raise AssertionError("the backbone was called although every feature is cached")

    lines = []
    cfg2 = tiny_train_config([f"imagefolder:{digits_dir}"], tmp_path / "b", epochs=1, cache_dir=str(tmp_path / "cache"),
                             classes=5)
    second = run_training(cfg2, log=lines.append, backbone_loader=no_backbone)
    assert second.features_computed == 0
    assert any(line.startswith("using cached features for 200 images") for line in lines)


def test_resumed_run_equals_uninterrupted_run(digits_dir, tmp_path):
    data = [f"imagefolder:{digits_dir}"]
    full = run_training(tiny_train_config(data, tmp_path / "full", epochs=4), log=lambda _: None)

    def interrupt_at_epoch_3(line):
        if line.startswith("epoch 3/"):
            raise KeyboardInterrupt

    cfg = tiny_train_config(data, tmp_path / "cut", epochs=4)
    with pytest.raises(KeyboardInterrupt):
        run_training(cfg, log=interrupt_at_epoch_3)
    assert torch.load(tmp_path / "cut" / "checkpoint.pt", weights_only=True)["epoch"] == 2
    assert not (tmp_path / "cut" / "model.pt").exists()
    lines = []
    resumed = run_training(cfg, resume=True, log=lines.append)
    assert "resuming after epoch 2 of 4" in lines
    a, b = read_model_file(full.run_dir), read_model_file(resumed.run_dir)
    for key in a["projection"]["state_dict"]:
        assert torch.equal(a["projection"]["state_dict"][key], b["projection"]["state_dict"][key]), key
    assert torch.equal(a["head"]["state_dict"]["weight"], b["head"]["state_dict"]["weight"])
    assert [m["loss"] for m in full.metrics] == [m["loss"] for m in resumed.metrics]


def test_existing_run_folder_is_refused_and_unchanged(cli, trained_run, tmp_path):
    before = {p.name: p.read_bytes() for p in trained_run.iterdir() if p.is_file()}
    res = cli("train", "--data", "demo:digits", "--backbone", "guie-tiny", "--pretrained", "none",
              "--out", str(trained_run))
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == [
        f"error: run folder '{trained_run}' already exists; pass --resume to continue it, "
        "--overwrite to replace it, or another --out"]
    assert before == {p.name: p.read_bytes() for p in trained_run.iterdir() if p.is_file()}


def test_overwrite_refuses_a_folder_that_is_not_a_run(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("precious")
    with pytest.raises(GuieError, match="not a guie run folder"):
        run_training(tiny_train_config(["demo:digits"], tmp_path / "mine"), overwrite=True)
    assert (tmp_path / "mine" / "thesis.tex").read_text() == "precious"


def test_corrupt_images_are_skipped_counted_and_listed(digits_dir, tmp_path):
    data = tmp_path / "digits"
    shutil.copytree(digits_dir, data)
    (data / "3" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    good = data / "4" / sorted(p.name for p in (data / "4").iterdir())[0]
    (data / "4" / "truncated.png").write_bytes(good.read_bytes()[:60])
    res = run_training(tiny_train_config([f"imagefolder:{data}"], tmp_path / "run", epochs=1, max_bad_frac=0.01),
                       log=lambda _: None)
    report = json.loads((res.run_dir / "data.json").read_text())
    assert report["bad_images"] == 2
    assert {p["path"].rsplit("/", 1)[1] for p in report["bad_image_list"]} == {"broken.png", "truncated.png"}
    with pytest.raises(GuieError, match="2 of 402 images .* cannot be read"):
        run_training(tiny_train_config([f"imagefolder:{data}"], tmp_path / "run2", epochs=1, max_bad_frac=0.001),
                     log=lambda _: None)


def test_wandb_offline_writes_into_the_run_folder(digits_dir, tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    res = run_training(tiny_train_config([f"imagefolder:{digits_dir}"], tmp_path / "run", epochs=2, wandb="offline"),
                       log=lambda _: None)
    runs = list((res.run_dir / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    assert list(runs[0].glob("*.wandb"))


def test_aug_views_are_cached_and_differ_from_the_clean_view(digits_dir, tmp_path):
    from guie.features.cache import FeatureCache, image_key
    from guie.model.backbone import BackboneSpec

    cache = tmp_path / "cache"
    res = run_training(tiny_train_config([f"imagefolder:{digits_dir}"], tmp_path / "run", epochs=1, aug_views=2,
                                         cache_dir=str(cache), classes=2), log=lambda _: None)
    label = json.loads((res.run_dir / "classes.json").read_text())[0].split("/")[1]
    path = str(sorted((digits_dir / label).iterdir())[0])
    rows = [FeatureCache.open(cache, BackboneSpec("guie-tiny"), v).table([image_key(path)]).get(np.array([0]))
            for v in range(3)]
    assert not np.allclose(rows[0], rows[1]) and not np.allclose(rows[1], rows[2])
    assert Image.open(path).size == (32, 32)


def test_holdout_search_is_capped_to_a_seeded_sample(monkeypatch, digits_dir, tmp_path):
    import numpy as np
    from conftest import tiny_train_config

    import guie.train.run as run_module

    index = np.arange(0, 1000, 3)
    sample = run_module.holdout_queries(index, seed=5, limit=50)
    assert len(sample) == 50 and set(sample) <= set(index) and np.all(np.diff(sample) > 0)
    assert np.array_equal(sample, run_module.holdout_queries(index, seed=5, limit=50))
    assert np.array_equal(run_module.holdout_queries(index[:40], seed=5, limit=50), index[:40])

    monkeypatch.setattr(run_module, "HOLDOUT_MAX_QUERIES", 25)
    result = run_module.run_training(tiny_train_config([f"imagefolder:{digits_dir}"], tmp_path / "run", epochs=1),
                                     log=lambda _: None)
    assert result.eval["holdout"]["queries"] <= 25 < 80  # 20% of 400 digits would be 80
