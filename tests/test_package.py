"""guie-package: the Kaggle dataset and kernel folders, the naming rules, the sources it accepts."""
from __future__ import annotations

import importlib
import json
import re
import sys
import types
import zipfile
from pathlib import Path

import nbformat
import pytest
import torch
from submission_models import write_export

from guie.errors import GuieError
from guie.ship.folders import PackageSpec, build_package
from guie.ship.metadata import read_build
from guie.ship.notebook import (
    REFERENCE_PATH,
    build_notebook,
    notebook_text,
    reference_notebook,
)

DATASET, KERNEL = "guie-tester/guie-test-model", "guie-tester/guie-test-inference"
SECRETS = {"KAGGLE_KEY": "sekret-kaggle-key-123", "KAGGLE_USERNAME": "sekret-user-456",
           "KAGGLE_API_TOKEN": "sekret-token-789", "WANDB_API_KEY": "sekret-wandb-000"}


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory) -> Path:
    return write_export(tmp_path_factory.mktemp("export") / "export")


def spec(**overrides) -> PackageSpec:
    return PackageSpec.create(overrides.pop("dataset", DATASET), overrides.pop("kernel", KERNEL), **overrides)


def all_bytes(folder: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file())


# -- naming rules ---------------------------------------------------------------------------------
@pytest.mark.parametrize("overrides, message", [
    ({"dataset": "guie-model"}, "must be OWNER/SLUG"),
    ({"dataset": "me/"}, "must be OWNER/SLUG"),
    ({"dataset": "me/guie-model/3"}, "carries a version"),
    ({"kernel": "me/guie-inference/2"}, "carries a version"),
    ({"dataset": "me/guie"}, "--dataset slug 'guie' is 4 characters; Kaggle needs 6 to 50"),
    ({"dataset": "me/" + "m" * 51}, "Kaggle needs 6 to 50"),
    ({"dataset": "me/Guie_Model"}, "lowercase letters and digits"),
    ({"dataset": "Me Me/guie-model"}, "not a Kaggle user name"),
    ({"kernel": "me/guie"}, "--kernel slug 'guie' is 4 characters; Kaggle needs 5 to 50"),
    ({"kernel_title": "My GUIE notebook"}, "gives the URL slug 'my-guie-notebook', not the notebook's"),
    ({"kernel": "me/" + "k" * 50, "kernel_title": "K" * 51}, "Kaggle needs 5 to 50"),
    ({"kernel_title": "Guie"}, "Kaggle needs 5 to 50"),
    ({"title": "GUIE"}, "--title 'GUIE' is 4 characters; Kaggle needs 6 to 50"),
    ({"title": "G" * 51}, "Kaggle needs 6 to 50"),
    ({"license": "cc0"}, "unknown Kaggle dataset licence 'cc0' (did you mean: CC0-1.0"),
    ({"competition": "Google Universal"}, "not a competition slug"),
])
def test_names_follow_the_kaggle_rules(overrides, message):
    with pytest.raises(GuieError) as err:
        spec(**overrides)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_default_titles_slugify_back_to_the_slugs():
    s = spec(dataset="me/guie-vit-h-14-4000", kernel="me/guie-vit-h-14-4000-inference")
    assert (s.title, s.kernel_title) == ("Guie Vit H 14 4000", "Guie Vit H 14 4000 Inference")
    assert spec(kernel_title="GUIE: test inference!").kernel_title == "GUIE: test inference!"


# -- the folders ----------------------------------------------------------------------------------
def test_cli_writes_folders_kaggle_takes_unchanged(export_dir, tmp_path, cli_process):
    """In a fresh process that has the secrets in its environment from the start."""
    build = tmp_path / "build"
    res = cli_process("package", str(export_dir), "--dataset", DATASET, "--kernel", KERNEL, "--out", str(build),
              "--license", "CC-BY-4.0", env=SECRETS)
    assert res.returncode == 0, res.stderr
    assert "guie-smoke" in res.stdout

    dataset, kernel = build / "dataset", build / "kernel"
    assert sorted(p.name for p in build.iterdir()) == ["dataset", "kernel"]
    assert sorted(p.name for p in dataset.iterdir()) == ["README.md", "dataset-metadata.json", "saved_model.pt"]
    assert (dataset / "saved_model.pt").read_bytes() == (export_dir / "saved_model.pt").read_bytes()
    meta = json.loads((dataset / "dataset-metadata.json").read_text())
    assert meta["id"] == DATASET and meta["title"] == "Guie Test Model"
    assert meta["licenses"] == [{"name": "CC-BY-4.0"}]
    assert 20 <= len(meta["subtitle"]) <= 80
    card = (dataset / "README.md").read_text()
    assert meta["description"] == card
    assert f"torch {torch.__version__}" in card and "(N, 64)" in card and "sha256" in card

    assert sorted(p.name for p in kernel.iterdir()) == ["guie-test-inference.ipynb", "kernel-metadata.json"]
    assert json.loads((kernel / "kernel-metadata.json").read_text()) == {
        "id": KERNEL, "title": "Guie Test Inference", "code_file": "guie-test-inference.ipynb",
        "language": "python", "kernel_type": "notebook", "is_private": True, "enable_gpu": False,
        "enable_tpu": False, "enable_internet": False, "dataset_sources": [DATASET],
        "competition_sources": ["google-universal-image-embedding"], "kernel_sources": [], "model_sources": []}
    nb = nbformat.read(str(kernel / "guie-test-inference.ipynb"), as_version=4)
    nbformat.validate(nb)
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    assert 'DATASET = "guie-tester/guie-test-model"' in code
    assert f'EXPORT_TORCH = "{torch.__version__}"' in code
    assert "/kaggle" in code and "GUIE_KAGGLE_ROOT" in code and "submission.zip" in code
    assert "import guie" not in code and "from guie" not in code
    read_build(build)  # the upload's own re-check accepts it

    everything = all_bytes(build) + res.stdout.encode() + res.stderr.encode()
    for value in SECRETS.values():
        assert value.encode() not in everything


def test_switches_reach_the_metadata(export_dir, tmp_path):
    s = spec(gpu=True, public=True, competition="some-other-competition", title="My embedder v2")
    result = build_package(export_dir, s, tmp_path / "b", log=lambda _: None)
    kmeta = json.loads((result.kernel_dir / "kernel-metadata.json").read_text())
    assert (kmeta["enable_gpu"], kmeta["is_private"], kmeta["enable_internet"]) == (True, False, False)
    assert kmeta["competition_sources"] == ["some-other-competition"]
    assert json.loads((result.dataset_dir / "dataset-metadata.json").read_text())["title"] == "My embedder v2"


def test_bad_name_fails_before_anything_is_written(export_dir, tmp_path, cli):
    res = cli("package", str(export_dir), "--dataset", "me/guie-model/2", "--kernel", KERNEL,
              "--out", str(tmp_path / "b"))
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == [
        "error: --dataset 'me/guie-model/2' carries a version ('2'); pass OWNER/SLUG without it"]
    assert not (tmp_path / "b").exists()


def test_reference_notebook_is_in_sync():
    assert REFERENCE_PATH.read_text(encoding="utf-8") == notebook_text(reference_notebook()), (
        "notebooks/guie-inference.ipynb is stale; regenerate it with: python -m guie.ship.notebook")


def test_notebook_is_stable_and_names_its_cells():
    nb = build_notebook("a-b/c-d-e-f")
    assert notebook_text(nb) == notebook_text(build_notebook("a-b/c-d-e-f"))
    assert [c.id for c in nb.cells] == ["about", "find-model", "write-submission", "check-submission"]


# -- sources --------------------------------------------------------------------------------------
def test_submission_zip_and_model_file_sources(export_dir, tmp_path):
    model = (export_dir / "saved_model.pt").read_bytes()
    for i, source in enumerate((export_dir / "submission.zip", export_dir / "saved_model.pt")):
        result = build_package(source, spec(), tmp_path / f"b{i}", log=lambda _: None)
        assert (result.dataset_dir / "saved_model.pt").read_bytes() == model
        assert not any(p.name.startswith(".guie-package") for p in (tmp_path / f"b{i}").iterdir())


def test_unusable_sources_are_refused(export_dir, tmp_path):
    plain = tmp_path / "plain.pt"
    torch.save({"weights": torch.zeros(3)}, plain)
    extra = tmp_path / "extra.zip"
    with zipfile.ZipFile(extra, "w") as zf:
        zf.write(export_dir / "saved_model.pt", "saved_model.pt")
        zf.writestr("notes.txt", "hi")
    empty = tmp_path / "empty"
    empty.mkdir()
    cases = [(plain, "is a torch checkpoint, not TorchScript"),
             (extra, "holds ['saved_model.pt', 'notes.txt']; a submission.zip holds only saved_model.pt"),
             (empty, "is not a submission.zip, an export folder")]
    for source, message in cases:
        with pytest.raises(GuieError, match=re.escape(message)):
            build_package(source, spec(), tmp_path / "b", log=lambda _: None)
        assert not (tmp_path / "b" / "dataset").exists()


def test_rebuild_replaces_only_a_package(export_dir, tmp_path):
    build = tmp_path / "b"
    build_package(export_dir, spec(), build, log=lambda _: None)
    build_package(export_dir, spec(dataset="guie-tester/another-model"), build, log=lambda _: None)
    assert json.loads((build / "dataset" / "dataset-metadata.json").read_text())["id"] == "guie-tester/another-model"
    foreign = tmp_path / "foreign"
    (foreign / "dataset").mkdir(parents=True)
    (foreign / "dataset" / "precious.txt").write_text("keep me")
    with pytest.raises(GuieError, match="is not a folder guie-package wrote"):
        build_package(export_dir, spec(), foreign, log=lambda _: None)
    assert (foreign / "dataset" / "precious.txt").read_text() == "keep me"


def test_run_folder_is_exported_lazily_and_described(tmp_path, monkeypatch):
    run = tmp_path / "run"
    run.mkdir()
    (run / "model.pt").write_bytes(b"not read by the packager")
    (run / "config.json").write_text(json.dumps({
        "backbone": "ViT-H-14", "pretrained": "laion2b_s32b_b79k", "head": "arcface", "dim": 64,
        "classes": 4000, "epochs": 10, "data": ["products10k:/secret/place", "gldv2:/data/g"],
        "wandb_project": "guie"}))
    (run / "eval.json").write_text(json.dumps({"holdout": {"mP@5": 0.61234, "P@1": 0.7, "queries": 50}}))
    calls = []

    def export_run(model, out_dir, *, fp16=False, fmt="torchscript", log=print, check_torch="none"):
        calls.append((Path(model), Path(out_dir), check_torch))
        write_export(Path(out_dir))
        return {"torch_version": "1.11.0"}

    monkeypatch.setitem(sys.modules, "guie.export", types.SimpleNamespace(export_run=export_run))
    logs: list[str] = []
    result = build_package(run, spec(), tmp_path / "b", log=logs.append)
    assert calls and calls[0][0] == run and calls[0][2] == "auto"  # checked in 1.11 like guie-export does
    assert (tmp_path / "b" / "export" / "verify.json").is_file()
    card = (result.dataset_dir / "README.md").read_text()
    assert "open_clip `ViT-H-14` (`laion2b_s32b_b79k`)" in card
    assert "classes 4000" in card and "data: gldv2, products10k" in card and "/secret/place" not in card
    assert "| mP@5 | 0.6123 |" in card
    assert any("exporting run" in line for line in logs)


def test_run_folder_without_exporter_says_so(tmp_path, monkeypatch):
    run = tmp_path / "run"
    run.mkdir()
    (run / "model.pt").write_bytes(b"x")
    (run / "config.json").write_text("{}")
    monkeypatch.setitem(sys.modules, "guie.export", None)  # import guie.export -> ImportError
    with pytest.raises(GuieError, match="is a run folder, but this guie has no exporter"):
        build_package(run, spec(), tmp_path / "b", log=lambda _: None)


def has_exporter() -> bool:
    try:
        return hasattr(importlib.import_module("guie.export"), "export_run")
    except ImportError:
        return False


@pytest.mark.skipif(not has_exporter(), reason="guie.export.export_run does not exist yet (issue 4)")
@pytest.mark.slow
def test_trained_run_end_to_end(trained_run, tmp_path):
    """The README path: a guie-train run folder -> export -> folders -> smoke."""
    from guie.ship.smoke import run_smoke

    result = build_package(trained_run, spec(), tmp_path / "b", log=lambda _: None)
    card = (result.dataset_dir / "README.md").read_text()
    diff = result.source.verify["max_abs_diff_vs_eager"]
    assert "| mP@5 |" in card and f"max abs diff to the eager model {diff:.1e}" in card and diff <= 1e-4
    assert "Inside the graph" not in card  # no TTA, no size features
    report = run_smoke(tmp_path / "b", log=lambda _: None)
    assert report["failed"] is None and "mP@5" in report["passed"]


def test_model_card_names_what_runs_inside_the_graph(tmp_path):
    from guie.ship.folders import model_card
    from guie.ship.source import ModelSource

    verify = {"torch_version": "2.14.1", "max_abs_diff_vs_eager": 3e-6,
              "preprocess": {"tta": "flip,scale:1.15", "size_features": True}}
    source = ModelSource(tmp_path / "saved_model.pt", "export folder", tmp_path, verify=verify,
                         config={"backbone": "ViT-H-14", "head": "cosface", "dim": 64, "seed": 0,
                                 "size_features": True, "ema": 0.999, "stage2_blocks": 0})
    card = model_card(spec(), source, "ab" * 32, 10**6)
    assert "max abs diff to the eager model 3.0e-06" in card
    assert "- Inside the graph: test-time augmentation flip,scale:1.15, size features from the input's " \
           "height and width" in card
    assert "head cosface, dim 64, ema 0.999, size_features True, seed 0" in card and "stage2_blocks" not in card


def test_a_bad_source_leaves_no_build_folder(tmp_path):
    (tmp_path / "notes.txt").write_text("not a model")
    with pytest.raises(GuieError, match="is not a submission.zip, an export folder"):
        build_package(tmp_path / "notes.txt", spec(), tmp_path / "new" / "build", log=lambda _: None)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]
