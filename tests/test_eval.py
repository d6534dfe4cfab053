"""guie-eval: task building per dataset, both model paths (eager run folder, TorchScript as the host fed it),
per-domain scores, the report files, the CLI, and guie-train --eval with task specs."""
from __future__ import annotations

import csv
import json
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from layouts import image, make_deepfashion, make_gldv2, make_met, make_objectnet, make_sop
from torch import nn

from guie.data.images import load_rgb
from guie.errors import GuieError
from guie.eval.embed import embed_with_models, resolve_model, resolve_models
from guie.eval.evaluate import EvalSettings, evaluate
from guie.eval.report import format_markdown, format_table, long_rows, write_report
from guie.eval.tasks import NO_MATCH, TaskOptions, build_task, build_tasks

FAST = EvalSettings(workers=0, batch_size=32)


class HostContract(nn.Module):
    """The submission contract in miniature: uint8 (N, 3, H, W) or (3, H, W), any size -> resize -> random linear
    -> L2 normalise -> (N, 64)."""

    def __init__(self, size: int = 16, dim: int = 64, normalise: bool = True, min_side: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.size, self.normalise, self.min_side = size, normalise, min_side
        self.register_buffer("weight", torch.randn(3 * size * size, dim, generator=g) / size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 3:
            x = x.unsqueeze(0)
        if x.shape[2] < self.min_side:
            raise RuntimeError("image smaller than this model accepts")
        x = F.interpolate(x.float() / 255.0, size=[self.size, self.size], mode="bilinear", align_corners=False)
        y = x.flatten(1) @ self.weight
        return F.normalize(y, dim=1) if self.normalise else y * 3.0


def save_script(module: nn.Module, folder: Path) -> tuple[Path, Path]:
    """saved_model.pt and a submission.zip holding it at its root."""
    folder.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit.script's deprecation notice
        torch.jit.save(torch.jit.script(module), str(folder / "saved_model.pt"))
    with zipfile.ZipFile(folder / "submission.zip", "w") as zf:
        zf.write(folder / "saved_model.pt", "saved_model.pt")
    return folder / "saved_model.pt", folder / "submission.zip"


@pytest.fixture(scope="module")
def script_model(tmp_path_factory) -> tuple[Path, Path]:
    return save_script(HostContract(), tmp_path_factory.mktemp("ts") / "model-ts")


@pytest.fixture(scope="module")
def sop_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("sop")
    make_sop(root)
    return root


@pytest.fixture(scope="module")
def digits_manifest(tmp_path_factory, digits_dir) -> Path:
    """A CSV manifest with its own query/gallery split over digits 0-4 (absolute paths)."""
    out = tmp_path_factory.mktemp("manifest") / "digits-qg.csv"
    with open(out, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "label", "split"])
        for label in range(5):
            for i, path in enumerate(sorted((digits_dir / str(label)).glob("*.png"))[:12]):
                writer.writerow([str(path), label, "query" if i < 3 else "gallery"])
    return out


# ---- tasks -------------------------------------------------------------------------------------------------


def test_deepfashion_task_is_query_vs_gallery(tmp_path):
    make_deepfashion(tmp_path)
    task = build_task(f"deepfashion:{tmp_path}")
    assert task.rule == "dataset split: query vs gallery"
    assert sorted(r.label for r in task.query) == ["id_00000010", "id_00000011", "id_00000011"]
    assert len(task.index) == 3 and {r.split for r in task.index} == {"gallery"}
    assert [(Path(p).parent.name, why) for p, why in task.dropped] == [("id_00000012", NO_MATCH)]


def test_met_task_is_queries_against_the_exhibit_database(tmp_path):
    make_met(tmp_path)
    task = build_task(f"met:{tmp_path}")
    assert task.rule == "dataset split: query vs train"
    assert sorted(r.label for r in task.query) == ["1021", "34"]
    assert len(task.index) == 6  # the whole database, validation queries left out
    assert len(task.dropped) == 1 and task.summary()["skipped_rows"] == 4


def test_sop_task_is_a_seeded_split_of_the_test_list(sop_root):
    task = build_task(f"sop:{sop_root}")
    assert task.rule.startswith("seeded split of the test split: 0.2 of each class's images as queries (seed 0)")
    assert {r.split for r in task.query + task.index} == {"test"}
    # classes of 3, 2 and 4 images give one query each; the single-image class stays in the index
    assert sorted(r.label for r in task.query) == ["11319", "11320", "11321"]
    assert len(task.index) == 7 and "11322" in {r.label for r in task.index}
    again = build_task(f"sop:{sop_root}")
    assert [r.path for r in again.query] == [r.path for r in task.query]
    other = build_task(f"sop:{sop_root}", TaskOptions(seed=5))
    assert len(other.query) == 3


def test_gldv2_and_objectnet_tasks_split_all_their_images(tmp_path):
    make_gldv2(tmp_path / "gld")
    task = build_task(f"gldv2:{tmp_path / 'gld'}")
    assert task.rule.startswith("seeded split of all images")
    assert (len(task.query), len(task.index)) == (1, 2)
    make_objectnet(tmp_path / "on")
    task = build_task(f"objectnet:{tmp_path / 'on'}")
    assert (len(task.query), len(task.index)) == (3, 4)


def test_max_classes_and_max_queries_are_seeded_samples(sop_root):
    task = build_task(f"sop:{sop_root}", TaskOptions(max_classes=2))
    assert len({r.class_key for r in task.query + task.index}) == 2
    assert task.rule.endswith("at most 2 classes sampled")
    task = build_task(f"sop:{sop_root}", TaskOptions(max_queries=2))
    assert len(task.query) == 2 and len(task.index) == 7


def test_a_task_without_usable_queries_is_a_clear_error(tmp_path):
    for label in ("a", "b"):
        image(tmp_path / "single" / label / "0.png")
    with pytest.raises(GuieError, match="has no usable query"):
        build_task(f"imagefolder:{tmp_path / 'single'}")
    with pytest.raises(GuieError, match="--query-frac must be between 0 and 1"):
        build_task(f"imagefolder:{tmp_path / 'single'}", TaskOptions(query_frac=1.0))


def test_task_names_are_unique(sop_root):
    tasks = build_tasks([f"sop:{sop_root}", f"sop:{sop_root}"])
    assert [t.name for t in tasks] == ["sop", "sop-2"]


# ---- models --------------------------------------------------------------------------------------------------


def test_models_are_recognised_by_what_they_are(trained_run, script_model, tmp_path):
    saved, zipped = script_model
    assert resolve_model(trained_run).kind == "eager"
    assert resolve_model(trained_run / "model.pt").kind == "eager"
    assert resolve_model(saved).kind == "torchscript" and resolve_model(saved).name == "model-ts"
    assert resolve_model(zipped).kind == "torchscript"
    assert [r.name for r in resolve_models([trained_run, trained_run / "model.pt"])] == ["tiny", "tiny-2"]
    with zipfile.ZipFile(tmp_path / "submission.zip", "w") as zf:
        zf.writestr("model/saved_model.pt", b"x")
    with pytest.raises(GuieError, match="holds no saved_model.pt at its root"):
        resolve_model(tmp_path / "submission.zip")
    (tmp_path / "empty").mkdir()
    with pytest.raises(GuieError, match="no model.pt or saved_model.pt"):
        resolve_model(tmp_path / "empty")


def test_eager_embeddings_equal_the_embedder_on_each_image(trained_run, digits_dir):
    from guie.model.backbone import eval_transform
    from guie.model.embedder import load_embedder

    paths = [str(p) for p in sorted(digits_dir.rglob("*.png"))[::37]]
    emb = embed_with_models(resolve_models([trained_run]), paths, "cpu", batch_size=4, workers=0, log=lambda _: None)
    embedder, backbone = load_embedder(trained_run)
    transform = eval_transform(backbone.preprocess_cfg)
    with torch.inference_mode():
        expected = torch.cat([embedder(transform(load_rgb(p)).unsqueeze(0)) for p in paths]).numpy()
    np.testing.assert_allclose(emb.vectors["tiny"], expected, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(emb.vectors["tiny"], axis=1), 1.0, atol=1e-5)


def test_torchscript_is_fed_one_uint8_image_at_original_size(script_model, tmp_path):
    saved, zipped = script_model
    paths = [str(image(tmp_path / f"{i}.png", (40 * i, 200 - 30 * i, 90), size=(9 + 5 * i, 7 + 3 * i)))
             for i in range(5)]
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    paths.append(str(tmp_path / "broken.png"))
    emb = embed_with_models(resolve_models([saved, zipped]), paths, "cpu", workers=0, log=lambda _: None)
    module = torch.jit.load(str(saved))
    from torchvision.transforms import PILToTensor

    with torch.inference_mode():
        host = np.stack([module(PILToTensor()(load_rgb(p)).unsqueeze(0))[0].flatten().float().numpy()
                         for p in paths[:5]])
    np.testing.assert_allclose(emb.vectors["model-ts"][:5], host, atol=1e-6)
    np.testing.assert_array_equal(emb.vectors["model-ts"], emb.vectors["model-ts-2"])
    assert emb.bad == {5: "unreadable or corrupt image"}


def test_torchscript_problems_are_reported(tmp_path):
    paths = [str(image(tmp_path / "big.png", size=(20, 20))), str(image(tmp_path / "tiny.png", size=(3, 3)))]
    picky, _ = save_script(HostContract(min_side=5), tmp_path / "picky")
    with pytest.raises(GuieError, match=r"fails on image .*tiny\.png.* of size \(3, 3\).*the host would fail too"):
        embed_with_models(resolve_models([picky]), paths, "cpu", workers=0, log=lambda _: None)
    raw, _ = save_script(HostContract(normalise=False), tmp_path / "raw")
    emb = embed_with_models(resolve_models([raw]), paths, "cpu", workers=0, log=lambda _: None)
    assert any("not L2-normalised" in w for w in emb.warnings)
    np.testing.assert_allclose(np.linalg.norm(emb.vectors["raw"], axis=1), 1.0, atol=1e-5)


# ---- evaluate and report -------------------------------------------------------------------------------------


def test_evaluate_scores_tasks_and_sub_domains(script_model, sop_root, tmp_path):
    make_deepfashion(tmp_path / "df")
    report = evaluate([script_model[0]], [f"sop:{sop_root}", f"deepfashion:{tmp_path / 'df'}"], FAST,
                      log=lambda _: None)
    sop, df = report["results"]
    # a class's images share one colour, so the right images are at similarity 1 and retrieval is perfect
    assert (sop["task"], sop["mP@5"], sop["P@1"], sop["mAP@5"]) == ("sop", 1.0, 1.0, 1.0)
    assert [(d["domain"], d["queries"], d["mP@5"]) for d in sop["domains"]] == [
        ("sop-cabinet", 1, 1.0), ("sop-chair", 1, 1.0), ("sop-sofa", 1, 1.0)]
    assert (df["queries"], df["index"], df["mP@5"]) == (3, 3, 1.0) and "domains" not in df
    assert report["mean"] == [{"model": "model-ts", "mP@5": 1.0, "P@1": 1.0, "mAP@5": 1.0, "tasks": 2}]
    assert report["tasks"][1]["dropped_queries"] == 1


def test_several_models_share_one_backbone_pass_and_agree(trained_run, digits_manifest):
    report = evaluate([trained_run, trained_run], [f"csv:{digits_manifest}"], FAST, log=lambda _: None)
    a, b = report["results"]
    assert (a["model"], b["model"]) == ("tiny", "tiny-2")
    assert a["mP@5"] == b["mP@5"] and (a["queries"], a["index"]) == (15, 45)
    table = format_table(report)
    assert "mP@5 by model" in table and "tiny-2" in table


def test_report_files(tmp_path):
    report = {
        "k": 5,
        "models": [{"name": "vith-1000", "path": "runs/vith-1000", "kind": "eager"},
                   {"name": "vith-4000", "path": "runs/vith-4000", "kind": "eager"}],
        "tasks": [{"name": n, "spec": f"{n}:/data/{n}", "rule": "r", "queries": 10, "index": 40, "query_classes": 5,
                   "index_classes": 6, "dropped_queries": 0, "dropped_reasons": {}, "skipped_rows": 0,
                   "skipped_reasons": {}} for n in ("sop", "food101")],
        "results": [
            {"model": m, "task": t, "mP@5": v, "P@1": v, "mAP@5": v, "queries": 10, "index": 40,
             **({"domains": [{"domain": "sop-chair", "mP@5": v, "P@1": v, "mAP@5": v, "queries": 10}]}
                if t == "sop" else {})}
            for m, vals in (("vith-1000", (0.5, 0.7)), ("vith-4000", (0.6, 0.8))) for t, v in zip(("sop", "food101"), vals, strict=True)],
        "mean": [{"model": "vith-1000", "mP@5": 0.6, "P@1": 0.6, "mAP@5": 0.6, "tasks": 2},
                 {"model": "vith-4000", "mP@5": 0.7, "P@1": 0.7, "mAP@5": 0.7, "tasks": 2}],
    }
    paths = write_report(report, tmp_path / "rep")
    assert sorted(p.name for p in (tmp_path / "rep").iterdir()) == ["report.csv", "report.json", "report.md",
                                                                    "report.png"]
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads(paths["json"].read_text()) == report
    rows = list(csv.DictReader(paths["csv"].open()))
    assert len(rows) == len(long_rows(report)) == 8
    assert rows[1] == {"model": "vith-1000", "task": "sop", "domain": "sop-chair", "spec": "sop:/data/sop",
                       "queries": "10", "index": "40", "mP@5": "0.500000", "P@1": "0.500000", "mAP@5": "0.500000"}
    md = format_markdown(report)
    assert "| model | task | queries | index | mP@5 | P@1 | mAP@5 |" in md
    assert "| mP@5 by model | sop | food101 | mean |" in md and "| vith-4000 | 0.6000 | 0.8000 | 0.7000 |" in md


# ---- command line and guie-train --eval ------------------------------------------------------------------


@pytest.mark.slow
def test_guie_eval_cli_writes_the_report(cli_process, trained_run, digits_dir, digits_manifest, tmp_path):
    out = tmp_path / "report"
    res = cli_process("eval", str(trained_run), "--task", f"imagefolder:{digits_dir}", "--task", f"csv:{digits_manifest}",
              "--out", str(out), "--workers", "0")
    assert res.returncode == 0, res.stderr
    header = res.stdout.splitlines()[0].split()
    assert header == ["task", "queries", "index", "mP@5", "P@1", "mAP@5"]
    assert "mean (2 tasks)" in res.stdout and f"chart: {out / 'report.png'}" in res.stdout
    for name in ("report.json", "report.csv", "report.md", "report.png"):
        assert (out / name).is_file()
    report = json.loads((out / "report.json").read_text())
    assert [r["task"] for r in report["results"]] == ["digits", "digits-qg"]
    assert report["results"][1]["queries"] == 15 and 0.0 <= report["mean"][0]["mP@5"] <= 1.0


def test_guie_eval_cli_bad_task_spec_is_one_line(cli, trained_run, tmp_path):
    res = cli("eval", str(trained_run), "--task", f"food-101:{tmp_path}")
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: unknown data source prefix 'food-101' (did you mean: food101?)")
    res = cli("eval", str(trained_run), "--task", f"sop:{tmp_path / 'nowhere'}")
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert res.stderr.strip().splitlines() == [
        f"error: sop root '{tmp_path / 'nowhere'}' does not exist; pass the folder the dataset was unpacked to"]


def test_demo_sets_give_two_tasks_without_download(tmp_path):
    from guie.data import demo, source_prefixes

    assert "digits-noisy" in demo.DEMO_SETS and "demo:digits-noisy" in source_prefixes()["demo"]
    clean = demo.write_digits(tmp_path / "clean", per_class=2)
    noisy = demo.write_digits(tmp_path / "noisy", per_class=2, noisy=True)
    files = sorted(p.relative_to(clean) for p in clean.rglob("*.png"))
    assert files == sorted(p.relative_to(noisy) for p in noisy.rglob("*.png")) and len(files) == 20
    assert all(load_rgb(clean / f).tobytes() != load_rgb(noisy / f).tobytes() for f in files)


def test_train_eval_accepts_task_specs(digits_dir, digits_manifest, tmp_path):
    from conftest import tiny_train_config

    from guie.config import TrainConfig
    from guie.workflows.train_eval import train_and_evaluate

    lines: list[str] = []
    cfg = tiny_train_config([f"imagefolder:{digits_dir}"], tmp_path / "run", epochs=2,
                            eval=f"holdout,csv:{digits_manifest}")
    assert cfg.eval_holdout and cfg.eval_tasks == [f"csv:{digits_manifest}"]
    result = train_and_evaluate(cfg, log=lines.append)
    stored = json.loads((tmp_path / "run" / "eval.json").read_text())
    assert set(stored) >= {"holdout", "tasks"}
    assert stored["tasks"]["results"][0]["task"] == "digits-qg" and stored["tasks"]["results"][0]["queries"] == 15
    assert result.eval["tasks"]["mean"][0]["mP@5"] == stored["tasks"]["mean"][0]["mP@5"]
    assert any(line.startswith("mP@5 ") and "mean over 1 eval tasks (digits-qg " in line for line in lines)
    with pytest.raises(GuieError, match=r"--eval 'holdin' is neither none, holdout nor a task spec .*did you mean: holdout"):
        TrainConfig(data=["demo:digits"], out="x", eval="holdin").validate()
    with pytest.raises(GuieError, match="combines none with other evaluations"):
        TrainConfig(data=["demo:digits"], out="x", eval="none,holdout").validate()
    with pytest.raises(GuieError, match="unknown data source prefix 'sopp'"):
        TrainConfig(data=["demo:digits"], out="x", eval="holdout,sopp:/data").validate()


def test_config_file_eval_specs_are_relative_to_the_file(tmp_path):
    from guie.config import read_config_file

    (tmp_path / "cfg.toml").write_text('eval = "holdout,sop:data/sop"\n')
    assert read_config_file(tmp_path / "cfg.toml")["eval"] == f"holdout,sop:{(tmp_path / 'data' / 'sop').resolve()}"
