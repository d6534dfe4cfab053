"""guie-smoke: the notebook runs in an emulated Kaggle, and submission.zip is checked as the host would."""
from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path

import nbformat
import pytest
import submission_models as sm
import torch
from PIL import Image

from guie.errors import GuieError
from guie.ship import host_check
from guie.ship.folders import PackageSpec, build_package
from guie.ship.smoke import SmokeFailure, check_submission, digit_images, folder_images

DATASET, KERNEL = "guie-tester/guie-smoke-model", "guie-tester/guie-smoke-inference"


def package(tmp_path: Path, model: torch.nn.Module | None = None, name: str = "build") -> Path:
    export = sm.write_export(tmp_path / f"{name}-export", model)
    build_package(export, PackageSpec.create(DATASET, KERNEL), tmp_path / name, log=lambda _: None)
    return tmp_path / name


def tree_digest(folder: Path) -> str:
    digest = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        digest.update(str(p.relative_to(folder)).encode())
        if p.is_file():
            digest.update(p.read_bytes())
    return digest.hexdigest()


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return digit_images(tmp_path_factory.mktemp("smoke-images"), per_class=4)


def test_smoke_passes_on_a_good_package(tmp_path, cli_process):
    build = package(tmp_path)
    before = tree_digest(build / "kernel"), tree_digest(build / "dataset")
    res = cli_process("smoke", str(build))
    assert res.returncode == 0, res.stdout + res.stderr
    for check in ("notebook", "zip-layout", "shape", "unit-norm", "deterministic", "batch-independent", "distinct"):
        assert f"ok  {check}" in res.stdout
    assert "mP@5 " in res.stdout and "smoke passed" in res.stdout
    report = json.loads((build / "smoke" / "report.json").read_text())
    assert report["failed"] is None and report["passed"][-1] == "mP@5"
    assert report["mP@5"] > 0.5  # a random pixel projection of digits retrieves well above chance (~0.1)
    executed = nbformat.read(str(build / "smoke" / "executed.ipynb"), as_version=4)
    assert "ok: submission.zip loads" in json.dumps(executed.cells[-1].outputs)
    assert (tree_digest(build / "kernel"), tree_digest(build / "dataset")) == before  # pushable unchanged


def test_failing_notebook_cell_is_named(tmp_path, cli):
    build = package(tmp_path, sm.FixedSize())
    res = cli("smoke", str(build))
    assert res.returncode == 1
    lines = res.stderr.strip().splitlines()
    assert lines[-1].startswith("error: smoke check 'notebook' failed: notebook cell 'check-submission' "
                                "(code cell 3 of 3) raised "), lines
    assert "expected a 224x224 image" in lines[-1]
    report = json.loads((build / "smoke" / "report.json").read_text())
    assert report["failed"]["check"] == "notebook" and report["passed"] == []


@pytest.mark.parametrize("damage, cell, error", [
    ("missing-model", "find-model", "FileNotFoundError: saved_model.pt not found"),
    ("imports-guie", "find-model", "ModuleNotFoundError: guie is not installed at Kaggle"),
])
def test_notebook_failures_name_the_cell(tmp_path, damage, cell, error):
    from guie.ship.smoke import run_smoke

    build = package(tmp_path)
    if damage == "missing-model":
        (build / "dataset" / "saved_model.pt").unlink()
    else:  # a notebook that needs guie cannot work at Kaggle, so it must not work here either
        nb_path = build / "kernel" / "guie-smoke-inference.ipynb"
        nb = nbformat.read(str(nb_path), as_version=4)
        nb.cells[1].source = "import guie.errors\n" + nb.cells[1].source
        nbformat.write(nb, str(nb_path))
    with pytest.raises(SmokeFailure) as err:
        run_smoke(build, log=lambda _: None)
    assert err.value.check == "notebook"
    assert f"notebook cell '{cell}' (code cell 1 of 3) raised {error}" in str(err.value)


def test_internet_on_is_refused_before_running(tmp_path):
    from guie.ship.smoke import run_smoke

    build = package(tmp_path)
    meta_path = build / "kernel" / "kernel-metadata.json"
    meta = json.loads(meta_path.read_text())
    meta["enable_internet"] = True
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(GuieError, match="must set enable_internet to false"):
        run_smoke(build, log=lambda _: None)


def test_digit_images_are_real_and_mixed(images):
    sizes, modes, suffixes = set(), set(), set()
    for path in images.paths:
        with Image.open(path) as img:
            sizes.add(img.size)
            modes.add(img.mode)
        suffixes.add(Path(path).suffix)
    assert len(sizes) >= 5 and any(w != h for w, h in sizes)
    assert {"RGB", "L"} <= modes and suffixes == {".png", ".jpg"}
    queries, index = images.split()
    assert len(queries) == 20 and len(index) == 20 and not set(queries) & set(index)


def test_user_images_need_two_classes(tmp_path):
    for label, n in (("cat", 3), ("dog", 2), ("owl", 1)):
        for i in range(n):
            (tmp_path / "imgs" / label).mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (20 + i, 30)).save(tmp_path / "imgs" / label / f"{i}.png")
    labelled = folder_images(tmp_path / "imgs")
    assert sorted(set(labelled.labels)) == ["cat", "dog", "owl"] and len(labelled.paths) == 6
    queries, index = labelled.split()
    assert len(queries) == 2 and len(index) == 3  # owl, alone, is neither
    with pytest.raises(GuieError, match="needs at least two class sub-folders with two or more readable images"):
        folder_images(tmp_path / "imgs" / "cat")


def write_zip(tmp_path: Path, model: torch.nn.Module, extra: bool = False) -> Path:
    export = sm.write_export(tmp_path / "export", model)
    if extra:
        with zipfile.ZipFile(export / "submission.zip", "a") as zf:
            zf.writestr("notes.txt", "not for the host")
    return export / "submission.zip"


@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch.jit.load's deprecation notice
@pytest.mark.parametrize("model, extra, check", [
    (sm.WrongDim(), False, "shape"),
    (sm.NaNOutput(), False, "finite"),
    (sm.Unnormalised(), False, "unit-norm"),
    (sm.Noisy(), False, "deterministic"),
    (sm.BatchDependent(), False, "batch-independent"),
    (sm.Constant(), False, "distinct"),
    (sm.FixedSize(), False, "forward"),
    (sm.ContractModel(), True, "zip-layout"),
])
def test_host_checks_catch_broken_models(tmp_path, images, model, extra, check):
    zip_path = write_zip(tmp_path, model, extra)
    with pytest.raises(host_check.CheckFailed) as err:
        host_check.run_checks(str(zip_path), images.paths, [])
    assert err.value.name == check, err.value.detail


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_unloadable_model_fails_the_load_check(tmp_path, images):
    zip_path = tmp_path / "submission.zip"
    with zipfile.ZipFile(zip_path, "w") as zf:
        zf.writestr("saved_model.pt", b"not a TorchScript archive")
    with pytest.raises(host_check.CheckFailed) as err:
        host_check.run_checks(str(zip_path), images.paths, [])
    assert err.value.name == "load" and "torch.jit.load failed" in err.value.detail


def test_host_check_subprocess_reports_the_failed_check(tmp_path, images):
    with pytest.raises(SmokeFailure) as err:
        check_submission(write_zip(tmp_path, sm.WrongDim()), images, tmp_path / "work")
    assert err.value.check == "shape"
    assert str(err.value).startswith("smoke check 'shape' failed: output shape (1, 32) on ")


def test_min_mp5_is_enforced(tmp_path, monkeypatch, images):
    from guie.ship import smoke

    monkeypatch.setattr(smoke, "run_notebook", lambda nb_path, root, work, timeout, executed: (
        (root / "working" / "submission.zip").write_bytes(write_zip(tmp_path, sm.ContractModel()).read_bytes())))
    monkeypatch.setattr(smoke, "digit_images", lambda dest: images)
    with pytest.raises(SmokeFailure, match=r"smoke check 'mP@5' failed: 0\.\d+ is below --min-mp5 1\.01"):
        smoke.run_smoke(package(tmp_path), min_mp5=1.01, log=lambda _: None)


def truncated_jpeg(path: Path) -> Path:
    import io

    buf = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 10, 10)).save(buf, "JPEG")
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    return path


def decompression_bomb(path: Path) -> Path:
    """A tiny PNG whose header claims 20000 x 20000 pixels: PIL refuses it as a decompression bomb."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 20000, 20000, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))
    return path


def user_images(root: Path, images, bad: bool = True) -> Path:
    """Three classes of four real digits each, plus (with ``bad``) a truncated JPEG and a decompression bomb."""
    for path, label in zip(images.paths, images.labels, strict=True):
        if label in ("0", "1", "2"):
            (root / label).mkdir(parents=True, exist_ok=True)
            (root / label / Path(path).name).write_bytes(Path(path).read_bytes())
    if bad:
        truncated_jpeg(root / "0" / "a-truncated.jpg")
        decompression_bomb(root / "1" / "a-bomb.png")
    return root


def fake_notebook(monkeypatch, tmp_path):
    """The notebook stage replaced by its result, so a test reaches the host check in seconds."""
    from guie.ship import smoke

    zip_bytes = write_zip(tmp_path, sm.ContractModel()).read_bytes()
    monkeypatch.setattr(smoke, "run_notebook", lambda nb_path, root, work, timeout, executed: (
        (root / "working" / "submission.zip").write_bytes(zip_bytes)))


def test_user_images_that_cannot_be_opened_are_skipped_and_listed(tmp_path, images):
    labelled = folder_images(user_images(tmp_path / "imgs", images))
    assert len(labelled.paths) == 12 and sorted(set(labelled.labels)) == ["0", "1", "2"]
    assert sorted(Path(p).name for p, _ in labelled.unreadable) == ["a-bomb.png", "a-truncated.jpg"]
    reasons = {Path(p).name: why for p, why in labelled.unreadable}
    assert reasons["a-bomb.png"].startswith("unreadable or corrupt image (DecompressionBombError: ")
    assert reasons["a-truncated.jpg"].startswith("unreadable or corrupt image (OSError: ")


def test_smoke_with_unreadable_user_images_passes_and_reports_them(tmp_path, monkeypatch, images):
    from guie.ship.smoke import run_smoke

    fake_notebook(monkeypatch, tmp_path)
    lines: list[str] = []
    report = run_smoke(package(tmp_path), images=user_images(tmp_path / "imgs", images), log=lines.append)
    assert report["failed"] is None and report["classes"] == 3 and report["queries"] + report["index"] == 12
    assert sorted(Path(u["path"]).name for u in report["unreadable_images"]) == ["a-bomb.png", "a-truncated.jpg"]
    assert any(line.startswith("skipped 2 unreadable images of --images") and "a-truncated.jpg" in line
               for line in lines)


def test_smoke_without_enough_readable_user_images_is_exit_2_before_running(tmp_path, cli, images):
    build = package(tmp_path)
    root = tmp_path / "imgs"
    for label in ("0", "1"):
        (root / label).mkdir(parents=True)
        truncated_jpeg(root / label / "broken.jpg")
        Image.new("RGB", (16, 16)).save(root / label / "fine.png")
    res = cli("smoke", str(build), "--images", str(root))
    assert res.returncode == 2, res.stdout + res.stderr
    error = res.stderr.strip().splitlines()[-1]
    assert error.startswith(f"error: --images '{root}' needs at least two class sub-folders with two or more "
                            "readable images each; skipped 2 unreadable: ")
    assert str(root / "0" / "broken.jpg") in error and "Traceback" not in res.stderr
    assert not (build / "smoke").exists()  # nothing ran, nothing was written


def test_an_image_the_host_check_cannot_open_is_the_inputs_fault(tmp_path, images):
    """A safety net behind folder_images: the checker names the file and the smoke exits 2, not 1."""
    zip_path = write_zip(tmp_path, sm.ContractModel())
    bad = truncated_jpeg(tmp_path / "late.jpg")
    with pytest.raises(host_check.CheckFailed) as err:
        host_check.run_checks(str(zip_path), [*images.paths[:4], str(bad)], [])
    assert err.value.name == "input-image" and str(bad) in err.value.detail
    from guie.ship.smoke import LabelledImages

    with pytest.raises(GuieError) as err:
        check_submission(zip_path, LabelledImages([*images.paths[:4], str(bad)], ["a", "a", "b", "b", "b"]),
                         tmp_path / "work")
    assert not isinstance(err.value, SmokeFailure) and err.value.exit_code == 2
    assert f"cannot open the image {bad}" in str(err.value)


def test_kaggles_quoted_metadata_example_passes(tmp_path, monkeypatch, images):
    """kernel-metadata.json as Kaggle documents it (booleans as strings) is read as the client reads it."""
    from guie.ship.smoke import run_smoke

    fake_notebook(monkeypatch, tmp_path)
    monkeypatch.setattr("guie.ship.smoke.digit_images", lambda dest: images)
    build = package(tmp_path)
    meta_path = build / "kernel" / "kernel-metadata.json"
    meta = json.loads(meta_path.read_text())
    meta.update({"is_private": "true", "enable_gpu": "false", "enable_tpu": "false", "enable_internet": "false"})
    meta_path.write_text(json.dumps(meta, indent=2))
    assert run_smoke(build, log=lambda _: None)["failed"] is None
    meta["enable_internet"] = "True"
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(GuieError, match="must set enable_internet to false"):
        run_smoke(build, log=lambda _: None)


class TallFails(sm.ContractModel):
    """Fine on every photo-like size, raises on an extreme aspect (as a module with a size limit would)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2] > 10 * x.shape[-1]:
            raise RuntimeError("the image is too tall")
        return torch.nn.functional.normalize(self.features(x), dim=1)


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_host_check_feeds_exports_host_style_images_too(tmp_path, images):
    """Smoke checks at least what guie-export verified: the same host-style images, as image files."""
    import numpy as np

    from guie.export.host_images import HOST_SIZES, host_cases

    plan = host_check.host_plan(images.paths, tmp_path / "host-images")
    cases = host_cases()

    def fed(i):
        return [torch.from_numpy(np.array(Image.open(p).convert("RGB"))).permute(2, 0, 1) for p in plan.inputs[i].paths]

    assert [tuple(fed(i)[0].shape[1:]) for i in plan.host[:len(HOST_SIZES)]] == HOST_SIZES  # (H, W)
    singles = plan.host[:len(HOST_SIZES)]
    assert all(torch.equal(fed(i)[0], case[0]) for i, case in zip(singles, cases[:-1], strict=True))
    (batch, members), = [(b, m) for b, m in plan.batches if len(plan.inputs[b].paths) == 4]
    assert torch.equal(torch.stack(fed(batch)), cases[-1]) and members == plan.host[len(HOST_SIZES):]

    # the digits alone are all photo-like: only the host-style 1200x37 image finds this model's limit
    with pytest.raises(host_check.CheckFailed) as err:
        host_check.run_checks(str(write_zip(tmp_path, TallFails())), images.paths, [])
    assert err.value.name == "forward" and err.value.detail.startswith("the model raised on host-style test image "
                                                                        "(37x1200): ")
    assert "the image is too tall" in err.value.detail


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_batch_independence_is_checked_without_same_sized_images(tmp_path, images):
    sizes = {}
    for path in images.paths:
        sizes.setdefault(Image.open(path).size, path)
    distinct = list(sizes.values())[:3]  # three images, no two of one size: only the host-style batch is a batch
    assert len({Image.open(p).size for p in distinct}) == 3
    passed: list[str] = []
    view = host_check.run_checks(str(write_zip(tmp_path, sm.ContractModel())), distinct, passed)
    assert passed[-2:] == ["batch-independent", "distinct"] and view.embeddings.shape == (3, 64)
    with pytest.raises(host_check.CheckFailed) as err:
        host_check.run_checks(str(write_zip(tmp_path / "b", sm.BatchDependent())), distinct, [])
    assert err.value.name == "batch-independent" and "a batch of 4 images of 131x97" in err.value.detail
