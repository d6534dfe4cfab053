"""Image-size features (5th place GUIE 2022): cached sizes, training, the exported graph, and guie-eval."""
import json

import numpy as np
import pytest
import torch
from cache_files import cache_folder, write_legacy_index
from conftest import tiny_train_config
from PIL import Image

from guie.export.build import build_submission_module
from guie.export.exporter import export_run
from guie.export.submission_module import preprocess
from guie.model.model_file import read_model_file
from guie.model.projection import Projection, size_encoding
from guie.train.run import run_training


@pytest.fixture(scope="module")
def orientation_dir(tmp_path_factory):
    """Two classes of pure-noise images that differ only in shape: landscape and portrait.

    After the centre crop the backbone sees the same kind of noise in both, so only the
    images' original sizes tell the classes apart.
    """
    root = tmp_path_factory.mktemp("orientation")
    rng = np.random.default_rng(0)
    for label in ("landscape", "portrait"):
        (root / label).mkdir()
        for i in range(24):
            short, long = int(rng.integers(36, 49)), int(rng.integers(72, 97))
            h, w = (short, long) if label == "landscape" else (long, short)
            pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / label / f"{i:02d}.png")
    return root


@pytest.fixture(scope="module")
def size_runs(orientation_dir, tmp_path_factory):
    """The same training with and without --size-features."""
    root = tmp_path_factory.mktemp("size-runs")
    runs = {}
    for name, flag in (("with-sizes", True), ("without-sizes", False)):
        cfg = tiny_train_config([f"imagefolder:{orientation_dir}"], root / name, epochs=12, batch_size=16,
                                size_features=flag, holdout_frac=0.25)
        runs[name] = run_training(cfg, log=lambda _: None)
    return runs


@pytest.fixture(scope="module")
def size_export(size_runs, tmp_path_factory):
    """The with-sizes run exported (TorchScript, verified)."""
    out = tmp_path_factory.mktemp("size-export") / "export-plain"
    report = export_run(size_runs["with-sizes"].run_dir, out, measure_speed=False, log=lambda _: None)
    return out, report


def test_size_encoding_is_log_sides_and_clamped_aspect():
    enc = size_encoding(torch.tensor([[100, 200], [4, 100_000]]))
    assert torch.allclose(enc[0], torch.tensor([np.log(100), np.log(200), 2.0], dtype=torch.float32))
    assert torch.allclose(enc[1], torch.tensor([np.log(8), np.log(8192), 8.0], dtype=torch.float32))


def test_an_input_that_never_varied_gets_no_weight():
    p = Projection(4, 3, size_features=True)
    p.set_feature_stats(torch.zeros(7), torch.tensor([1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.5]))
    assert p.feature_inv_std.tolist()[4:6] == [0.0, 0.0] and p.feature_inv_std[6] > 1.9
    x = torch.randn(2, 4)
    # Every training image 32x32: an unseen size must not move the embedding.
    assert torch.equal(p(x, torch.tensor([[32.0, 32.0]] * 2)), p(x, torch.tensor([[500.0, 500.0]] * 2)))
    with pytest.raises(ValueError, match="size features"):
        p(x)


def test_the_cache_records_original_sizes_and_fills_them_into_old_shards(orientation_dir, tmp_path):
    from guie.features.extract import ensure_features
    from guie.model.backbone import BackboneSpec, load_backbone

    paths = sorted(str(p) for p in orientation_dir.rglob("*.png"))[:10]
    spec = BackboneSpec("guie-tiny", "none")
    backbone = load_backbone(spec)
    calls = []

    def get():
        calls.append(1)
        return backbone

    feats = ensure_features(paths, spec, 0, tmp_path, get, num_workers=0, log=lambda _: None, need_sizes=True)
    expected = [[Image.open(p).height, Image.open(p).width] for p in paths]
    assert feats.sizes.tolist() == expected and feats.computed == 10
    # A cache written before sizes were recorded: fine for runs without size features, recomputed for the rest.
    write_legacy_index(cache_folder(tmp_path), drop_sizes=True)
    plain = ensure_features(paths, spec, 0, tmp_path, get, num_workers=0, log=lambda _: None)
    assert plain.computed == 0 and plain.sizes is None
    again = ensure_features(paths, spec, 0, tmp_path, get, num_workers=0, log=lambda _: None, need_sizes=True)
    assert again.computed == 10 and again.sizes.tolist() == expected
    assert np.array_equal(again.views[0].get(np.arange(10)), feats.views[0].get(np.arange(10)))


def test_size_features_learn_what_the_pixels_cannot_show(size_runs):
    with_sizes, without = size_runs["with-sizes"], size_runs["without-sizes"]
    model = read_model_file(with_sizes.run_dir)
    assert model["projection"]["config"]["size_features"] is True
    feature_dim = model["projection"]["config"]["in_dim"]
    assert model["projection"]["state_dict"]["linear.weight"].shape[1] == feature_dim + 3
    assert read_model_file(without.run_dir)["projection"]["state_dict"]["linear.weight"].shape[1] == feature_dim
    assert with_sizes.eval["holdout"]["mP@5"] >= 0.9
    assert with_sizes.eval["holdout"]["mP@5"] >= without.eval["holdout"]["mP@5"] + 0.2


def test_the_exported_graph_computes_size_features_from_the_input_shape(size_runs, size_export, trained_run):
    run = size_runs["with-sizes"].run_dir
    out, report = size_export
    assert report["preprocess"]["size_features"] is True
    model = torch.jit.load(str(out / "saved_model.pt"))
    # Two flat grey images: identical pixels after resizing and cropping, different original shapes.
    wide = torch.full((1, 3, 40, 90), 128, dtype=torch.uint8)
    tall = torch.full((1, 3, 90, 40), 128, dtype=torch.uint8)
    with torch.inference_mode():
        assert not torch.allclose(model(wide), model(tall), atol=1e-3)
        eager, embedder, info = build_submission_module(run)
        mean, std = torch.tensor(info["mean"]).view(1, 3, 1, 1), torch.tensor(info["std"]).view(1, 3, 1, 1)
        pixels = preprocess(wide, info["image_size"], mean, std, False, info["interpolation"])
        assert torch.equal(pixels, preprocess(tall, info["image_size"], mean, std, False, info["interpolation"]))
        for img, (h, w) in ((wide, (40, 90)), (tall, (90, 40))):
            expected = embedder(pixels, torch.tensor([[float(h), float(w)]]))
            assert torch.allclose(model(img), expected, atol=1e-5)
        plain, _, _ = build_submission_module(trained_run)  # without size features the shape is invisible
        assert torch.allclose(plain(wide), plain(tall), atol=1e-6)


def test_guie_eval_compares_runs_and_exports_with_and_without_options_in_one_table(
        cli, size_runs, size_export, orientation_dir, tmp_path):
    run = size_runs["with-sizes"].run_dir
    export_run(run, tmp_path / "export-tta", tta="flip,scale:1.15", measure_speed=False, log=lambda _: None)
    res = cli("eval", str(run), str(size_runs["without-sizes"].run_dir), str(size_export[0] / "submission.zip"),
              str(tmp_path / "export-tta" / "submission.zip"), "--task", f"imagefolder:{orientation_dir}",
              "--out", str(tmp_path / "report"), "--workers", "0")
    assert res.returncode == 0, res.stderr
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    scores = {m["model"]: m["mP@5"] for m in report["mean"]}
    assert set(scores) == {"with-sizes", "without-sizes", "export-plain", "export-tta"}
    assert scores["with-sizes"] >= scores["without-sizes"] + 0.2
    assert abs(scores["export-plain"] - scores["with-sizes"]) <= 0.02  # the graph computes the same sizes
    md = (tmp_path / "report" / "report.md").read_text()
    assert all(f"| {name} |" in md for name in scores)
