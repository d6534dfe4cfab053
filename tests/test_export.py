"""guie-export: the submission module's contract, verification at export, and the files it writes."""
import json
import zipfile

import pytest
import torch
from conftest import run_cli_process

import guie.export.verify as verify
from guie.errors import GuieError
from guie.export import export_run
from guie.export.build import build_submission_module, eager_reference


@pytest.fixture(scope="module")
def exported(trained_run, tmp_path_factory):
    """One export through the command line (``python -m guie.cli``), as a user runs it; the tests below check
    its files."""
    out = tmp_path_factory.mktemp("export") / "e"
    res = run_cli_process("export", str(trained_run), "--torchscript", "--out", str(out), "--check-torch", "none")
    assert res.returncode == 0, res.stderr
    assert "checks passed" in res.stdout and "Traceback" not in res.stderr
    return out, json.loads((out / "verify.json").read_text())


def images(*shapes, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, 256, s, generator=g, dtype=torch.uint8) for s in shapes]


@pytest.mark.slow
def test_files_and_zip_layout(exported):
    out, report = exported
    assert sorted(p.name for p in out.iterdir()) == ["saved_model.pt", "submission.zip", "verify.json"]
    with zipfile.ZipFile(out / "submission.zip") as zf:
        assert zf.namelist() == ["saved_model.pt"]
        assert zf.read("saved_model.pt") == (out / "saved_model.pt").read_bytes()
    on_disk = json.loads((out / "verify.json").read_text())
    assert on_disk["torch_version"] == torch.__version__ and on_disk["file_size_bytes"] > 0
    assert isinstance(on_disk["torchscript_file_version"], int)
    assert on_disk["preprocess"]["interpolation"] == "bicubic"
    assert on_disk["max_abs_diff_vs_open_clip_pil_pipeline"] < 1e-4
    assert on_disk["max_abs_diff_vs_eager"] <= 1e-4 and on_disk["limit"] == 1e-4
    assert all(c["passed"] for c in on_disk["checks"])
    names = {c["check"] for c in on_disk["checks"]}
    assert {"batch independence", "determinism", "single (3, H, W) image", "fresh-process load without guie",
            "parity with the eager embedder 7x5", "parity with the eager embedder 500x300"} <= names
    assert set(on_disk["images_per_s"]) >= {"exported", "eager", "ratio"}


@pytest.mark.slow
def test_contract_on_the_loaded_file(exported, trained_run):
    out, _ = exported
    model = torch.jit.load(str(out / "saved_model.pt"))
    _, embedder, info = build_submission_module(trained_run)
    for img in images((1, 3, 7, 5), (1, 3, 31, 64), (1, 3, 500, 300)):
        y = model(img)
        assert y.shape == (1, 64) and y.dtype == torch.float32
        assert torch.allclose(y.norm(dim=1), torch.ones(1), atol=1e-5)
        assert (y - eager_reference(embedder, info, img)).abs().max() <= 1e-4
    (batch,) = images((8, 3, 40, 30), seed=1)
    y8 = model(batch)
    assert y8.shape == (8, 64)
    assert torch.allclose(y8, torch.cat([model(batch[i:i + 1]) for i in range(8)]), atol=1e-5)
    assert torch.equal(model(batch), y8)
    assert torch.allclose(model(batch[3]), y8[3:4], atol=1e-5)  # a bare (3, H, W) image
    assert torch.allclose(model(batch.float()), y8, atol=1e-5)  # float 0..255 input


def test_chunking_does_not_change_the_result(trained_run):
    (batch,) = images((9, 3, 33, 47), seed=2)
    small, _, _ = build_submission_module(trained_run, chunk=2)
    whole, _, _ = build_submission_module(trained_run, chunk=64)
    with torch.inference_mode():
        assert torch.allclose(small(batch), whole(batch), atol=1e-6)


def test_fp16_torchscript_is_refused_before_any_work(trained_run, tmp_path, cli):
    out = tmp_path / "e"
    res = cli("export", str(trained_run), "--fp16", "--out", str(out))
    assert res.returncode == 2 and "Traceback" not in res.stderr
    (line,) = res.stderr.strip().splitlines()
    assert line.startswith("error: --fp16 makes a TorchScript file that fails on CPU in PyTorch before 2.x")
    assert "--program" in line and not out.exists()


@pytest.mark.slow
def test_fp16_program_still_gives_float32(trained_run, tmp_path):
    report = export_run(trained_run, tmp_path, fp16=True, fmt="program", measure_speed=False, log=lambda _: None)
    y = torch.export.load(str(tmp_path / "saved_model.pt2")).module()(images((2, 3, 50, 40))[0])
    assert y.dtype == torch.float32 and y.shape == (2, 64)
    assert report["preprocess"]["fp16"] and report["limit"] == verify.FP16_LIMIT


def test_program_format(trained_run, tmp_path):
    report = export_run(trained_run, tmp_path, fmt="program", measure_speed=False, log=lambda _: None)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["saved_model.pt2", "verify.json"]
    program = torch.export.load(str(tmp_path / "saved_model.pt2")).module()
    for img in images((1, 3, 7, 5), (3, 3, 64, 31)):
        assert program(img).shape == (img.shape[0], 64)
    assert report["max_abs_diff_vs_eager"] <= 1e-4
    # one graph for every shape, strips included (the bounded resize's branches are torch.cond there)
    eager, _, _ = build_submission_module(trained_run, chunk=0)
    with torch.inference_mode():
        for img in images((1, 3, 1, 6000), (1, 3, 6000, 1), (2, 3, 20, 2000), (1, 3, 1, 1), (1, 3, 1200, 37)):
            assert (program(img) - eager(img)).abs().max() <= 1e-5, img.shape


def test_a_failing_check_fails_the_export_and_writes_nothing(trained_run, tmp_path, monkeypatch):
    def off_by_a_bit(embedder, info, imgs):
        return eager_reference(embedder, info, imgs) + 1e-3

    monkeypatch.setattr(verify, "eager_reference", off_by_a_bit)
    with pytest.raises(verify.VerificationError, match="parity with the eager embedder 7x5: max abs diff 1.00e-03"):
        export_run(trained_run, tmp_path, measure_speed=False, log=lambda _: None)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(verify.VerificationError):  # an --out that did not exist is not left behind empty
        export_run(trained_run, tmp_path / "new" / "out", measure_speed=False, log=lambda _: None)
    assert list(tmp_path.iterdir()) == []


def test_fresh_process_check_compares_outputs(tmp_path):
    class ToFloat(torch.nn.Module):
        def forward(self, x):
            return x.float()

    path = tmp_path / "m.pt"
    torch.jit.save(torch.jit.script(ToFloat()), str(path))
    x = torch.zeros(1, 3, 2, 2, dtype=torch.uint8)
    assert verify.check_fresh_process(path, [(x, x.float())])["max_abs_diff"] == 0.0
    with pytest.raises(verify.VerificationError, match="fresh-process"):
        verify.check_fresh_process(path, [(x, torch.zeros(2))])


def test_cli_export_without_or_with_a_foreign_model(cli, tmp_path):
    (tmp_path / "empty").mkdir()
    res = cli("export", str(tmp_path / "empty"), "--out", str(tmp_path / "e"))
    assert res.returncode == 2 and res.stderr.strip().splitlines() == [
        f"error: no model.pt in '{tmp_path / 'empty'}'; pass a finished guie-train run folder "
        "(a killed run finishes with guie-train --resume --out RUN)"]
    (tmp_path / "foreign").mkdir()
    torch.save({"state_dict": {}}, tmp_path / "foreign" / "model.pt")
    res = cli("export", str(tmp_path / "foreign"), "--out", str(tmp_path / "e"))
    assert res.returncode == 2 and "is not a guie model file" in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "e").exists()


def test_unknown_format_is_refused(trained_run, tmp_path):
    with pytest.raises(GuieError, match="unknown export format"):
        export_run(trained_run, tmp_path, fmt="onnx")


def test_flip_tta_is_the_mean_of_the_two_views(trained_run, tmp_path):
    report = export_run(trained_run, tmp_path, tta="flip", measure_speed=False, log=lambda _: None)
    assert report["preprocess"]["tta"] == "flip"
    model = torch.jit.load(str(tmp_path / "saved_model.pt"))
    plain, embedder, info = build_submission_module(trained_run)
    (img,) = images((2, 3, 45, 30), seed=3)
    with torch.inference_mode():
        both = (plain(img) + plain(torch.flip(img, dims=[3]))) / 2
    expected = torch.nn.functional.normalize(both, dim=-1)
    assert torch.allclose(model(img), expected, atol=1e-5)
    assert not torch.allclose(model(img), plain(img), atol=1e-3)


def test_second_resolution_tta_averages_four_views(trained_run, tmp_path):
    from guie.export.submission_module import preprocess

    report = export_run(trained_run, tmp_path, tta="flip,scale:1.5", measure_speed=False, log=lambda _: None)
    info = report["preprocess"]
    assert info["tta"] == "flip,scale:1.5" and info["tta_resize"] == round(info["image_size"] * 1.5)
    model = torch.jit.load(str(tmp_path / "saved_model.pt"))
    _, embedder, _ = build_submission_module(trained_run)
    mean, std = torch.tensor(info["mean"]).view(1, 3, 1, 1), torch.tensor(info["std"]).view(1, 3, 1, 1)
    (img,) = images((2, 3, 37, 52), seed=5)
    views = []
    with torch.inference_mode():
        for resize in (0, info["tta_resize"]):
            pixels = preprocess(img, info["image_size"], mean, std, False, info["interpolation"], resize)
            views += [embedder(pixels), embedder(pixels.flip(-1))]
        expected = torch.nn.functional.normalize(torch.stack(views).mean(0), dim=-1)
        assert torch.allclose(model(img), expected, atol=1e-5)
        flip_only = build_submission_module(trained_run, tta="flip")[0](img)
        assert not torch.allclose(model(img), flip_only, atol=1e-3)  # the second resolution is a different view
    # The second view is the image resized to 1.5x and centre-cropped, not the first view again.
    big = preprocess(img, info["image_size"], mean, std, False, info["interpolation"], info["tta_resize"])
    assert big.shape[-2:] == (info["image_size"],) * 2


@pytest.mark.parametrize("spec", ["mirror", "scale:0.9", "scale:x", "flip,flip", "none,flip"])
def test_bad_tta_specs_are_refused(spec):
    from guie.export.tta import parse_tta

    with pytest.raises(GuieError, match="--tta"):
        parse_tta(spec)
    assert str(parse_tta(" scale:1.25 , flip")) == "flip,scale:1.25" and parse_tta("none").views == 1


def test_a_bad_tta_spec_is_one_line_before_anything_loads(cli, trained_run, tmp_path):
    res = cli("export", str(trained_run), "--tta", "scale:3", "--out", str(tmp_path / "e"))
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert res.stderr.strip().splitlines() == ["error: --tta 'scale:3': the scale must be a number in (1, 2], "
                                               "e.g. scale:1.15"]
    assert not (tmp_path / "e").exists()


@pytest.mark.slow
def test_ensemble_is_the_pca_of_the_concatenated_embeddings(trained_run, digits_dir, tmp_path):
    from conftest import tiny_train_config

    from guie.export import export_ensemble
    from guie.train.run import run_training

    second = run_training(tiny_train_config([f"imagefolder:{digits_dir}"], tmp_path / "second", epochs=2, seed=5,
                                            dim=32), log=lambda _: None).run_dir
    report = export_ensemble([trained_run, second], tmp_path / "ens", images=120, measure_speed=False,
                             log=lambda _: None)
    ens = report["preprocess"]["ensemble"]
    assert ens["concatenated_dim"] == 96 and ens["fit_images"] == 120 and 0 < ens["variance_kept"] <= 1
    model = torch.jit.load(str(tmp_path / "ens" / "saved_model.pt"))
    a, _, _ = build_submission_module(trained_run)
    b, _, _ = build_submission_module(second)
    mean = model.pca_mean
    components = model.pca_components
    assert components.shape == (96, 64)
    assert torch.allclose(components.T @ components, torch.eye(64), atol=1e-4)  # orthonormal axes
    for img in images((1, 3, 40, 30), (3, 3, 64, 64), seed=4):
        with torch.inference_mode():
            z = torch.cat([a(img), b(img)], dim=1)
        expected = torch.nn.functional.normalize((z - mean) @ components, dim=-1)
        assert torch.allclose(model(img), expected, atol=1e-5)
    with zipfile.ZipFile(tmp_path / "ens" / "submission.zip") as zf:
        assert zf.namelist() == ["saved_model.pt"]


def test_several_runs_need_ensemble(cli, trained_run, tmp_path):
    res = cli("export", str(trained_run), str(trained_run), "--out", str(tmp_path / "e"))
    assert res.returncode == 2 and "--ensemble pca" in res.stderr
