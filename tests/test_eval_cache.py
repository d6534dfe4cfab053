"""guie-eval of run folders through guie-train's feature cache: only the missing images are computed, the
embeddings differ from the direct float32 path only by the cache's float16 storage, stage-2 runs bypass it,
and under torchrun each rank fills its share while rank 0 scores."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from cache_files import shard_keys, shards_in

from guie.eval.embed import embed_with_models, l2_normalise, resolve_models
from guie.eval.evaluate import EvalSettings, evaluate, evaluate_task
from guie.eval.tasks import build_tasks
from guie.features.forward import UNREADABLE, forward_images
from guie.fileio import torch_save
from guie.model.backbone import BackboneSpec, load_backbone
from guie.model.model_file import projection_from, read_model_file

QUIET = EvalSettings(workers=0, batch_size=32)


@pytest.fixture(scope="module")
def second_run(tmp_path_factory, trained_run, digits_dir) -> Path:
    """Another head on the same backbone and data as ``trained_run`` (6 classes, 2 epochs), trained from
    the session's feature cache."""
    from conftest import tiny_train_config

    from guie.train.run import run_training

    out = tmp_path_factory.mktemp("runs") / "tiny-6"
    run_training(tiny_train_config([f"imagefolder:{digits_dir}"], out, classes=6, epochs=2), log=lambda _: None)
    return out


@pytest.fixture(scope="module")
def stage2_run(tmp_path_factory, trained_run) -> Path:
    """``trained_run`` as stage 2 would leave it: model.pt carries fine-tuned weights of the last block."""
    out = tmp_path_factory.mktemp("runs") / "tiny-s2"
    shutil.copytree(trained_run, out)
    data = read_model_file(out)
    visual = load_backbone(BackboneSpec(**data["backbone"])).visual.state_dict()
    g = torch.Generator().manual_seed(1)
    data["backbone_finetuned"] = {k: v + 0.2 * torch.randn(v.shape, generator=g) * (v.std() if v.numel() > 1 else 1)
                                  for k, v in visual.items() if k.startswith("transformer.resblocks.1.")}
    torch_save(data, out / "model.pt")
    return out


@pytest.fixture
def backbone_calls(monkeypatch) -> list[int]:
    """Images through guie-eval's frozen backbone, one entry per forward (no entry: never loaded)."""
    calls: list[int] = []

    def counting(spec, device):
        backbone = load_backbone(spec, device)
        backbone.visual.register_forward_hook(lambda _m, args, _out: calls.append(len(args[0])))
        return backbone

    monkeypatch.setattr("guie.eval.embed.load_backbone", counting)
    return calls


def frozen_features(run: Path, paths: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """The run's backbone features (float32, straight from the tower) and the images' (height, width)."""
    backbone = load_backbone(BackboneSpec(**read_model_file(run)["backbone"]))
    batches = list(forward_images(backbone, paths, torch.device("cpu"), batch_size=32, workers=0))
    return (torch.cat([b.features for b in batches]).numpy(), torch.cat([b.sizes for b in batches]).numpy())


def project(run: Path, features: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        out = projection_from(read_model_file(run))(torch.from_numpy(features), torch.from_numpy(sizes))
    return l2_normalise(out.numpy())


def test_cached_embeddings_differ_from_the_direct_path_only_by_float16_storage(trained_run, digits_dir, tmp_path):
    paths = [str(p) for p in sorted(digits_dir.rglob("*.png"))[::4]]
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    paths.insert(3, str(tmp_path / "broken.png"))
    refs = resolve_models([trained_run])
    lines: list[str] = []
    direct = embed_with_models(refs, paths, "cpu", 32, 0, log=lambda _: None)
    first = embed_with_models(refs, paths, "cpu", 32, 0, log=lines.append, cache_dir=tmp_path / "cache")
    again = embed_with_models(refs, paths, "cpu", 32, 0, log=lines.append, cache_dir=tmp_path / "cache")
    assert (first.features_cached, first.features_computed) == (0, len(paths))
    assert (again.features_cached, again.features_computed) == (len(paths), 0)
    assert f"backbone features of {len(paths)} images (tiny): {len(paths)} from the feature cache, 0 computed " \
           f"(cache {tmp_path / 'cache'})" in lines
    assert direct.bad == first.bad == again.bad == {3: UNREADABLE}  # the cache remembers the bad file
    np.testing.assert_array_equal(first.vectors["tiny"], again.vectors["tiny"])
    assert not first.vectors["tiny"][3].any()

    good = [p for i, p in enumerate(paths) if i != 3]
    features, sizes = frozen_features(trained_run, good)
    rounded = project(trained_run, features.astype(np.float16).astype(np.float32), sizes)
    cached = np.delete(first.vectors["tiny"], 3, axis=0)
    np.testing.assert_allclose(cached, rounded, atol=1e-6)  # the float16 rounding is the whole difference
    np.testing.assert_allclose(np.delete(direct.vectors["tiny"], 3, axis=0), project(trained_run, features, sizes),
                               atol=1e-5)
    # guie-tiny is the worst case: its random-init features sit far from 0 with small spread (mean/std up
    # to ~130), so standardising them magnifies the float16 rounding; measured 0.009
    assert 0 < np.abs(cached - np.delete(direct.vectors["tiny"], 3, axis=0)).max() <= 0.02


def test_scores_through_the_cache_are_those_of_the_float16_features(trained_run, digits_dir):
    specs = [f"imagefolder:{digits_dir}"]
    report = evaluate([trained_run], specs, QUIET, log=lambda _: None)  # the features training cached
    (task,) = build_tasks(specs, QUIET.task_options())
    paths = sorted({r.path for r in (*task.query, *task.index)})
    features, sizes = frozen_features(trained_run, paths)
    position = {p: i for i, p in enumerate(paths)}
    rounded = evaluate_task(task, project(trained_run, features.astype(np.float16).astype(np.float32), sizes),
                            position)
    exact = evaluate_task(task, project(trained_run, features, sizes), position)
    (result,) = report["results"]
    assert {k: result[k] for k in rounded} == rounded
    # against float32 features: one hundredth of mP@5 on these 80 queries (0.7175 -> 0.7075 measured)
    assert abs(result["mP@5"] - exact["mP@5"]) <= 0.02 and abs(result["P@1"] - exact["P@1"]) <= 0.02


def test_a_second_run_folder_on_the_backbone_computes_nothing(trained_run, second_run, digits_dir, tmp_path,
                                                              backbone_calls):
    specs = [f"imagefolder:{digits_dir}"]
    settings = EvalSettings(workers=0, batch_size=32, cache_dir=str(tmp_path / "cache"))
    lines: list[str] = []
    first = evaluate([trained_run], specs, settings, log=lines.append)
    assert sum(backbone_calls) == 400 and any("0 from the feature cache, 400 computed" in line for line in lines)
    backbone_calls.clear()
    lines.clear()
    second = evaluate([second_run], specs, settings, log=lines.append)
    assert backbone_calls == []  # never loaded
    assert any(line.startswith("backbone features of 400 images (tiny-6): 400 from the feature cache, 0 computed")
               for line in lines)
    assert not any(line.startswith("loading backbone") for line in lines)
    both = evaluate([trained_run, second_run], specs, settings, log=lambda _: None)
    assert backbone_calls == []
    assert [r["mP@5"] for r in both["results"]] == [first["results"][0]["mP@5"], second["results"][0]["mP@5"]]
    assert sum(s["rows"] for s in shards_in(tmp_path / "cache")) == 400  # one backbone pass for both heads


def test_an_evaluation_after_training_reads_the_training_cache(trained_run, digits_dir, backbone_calls):
    # trained_run was trained into the session's default cache ($GUIE_CACHE/features), guie-eval's default too
    lines: list[str] = []
    report = evaluate([trained_run], [f"imagefolder:{digits_dir}"], QUIET, log=lines.append)
    assert backbone_calls == [] and report["results"][0]["queries"] == 80
    assert any(line.startswith("backbone features of 400 images (tiny): 400 from the feature cache, 0 computed")
               for line in lines)


def test_train_eval_task_specs_read_the_run_cache_dir(digits_dir, tmp_path, backbone_calls):
    from conftest import tiny_train_config

    from guie.workflows.train_eval import train_and_evaluate

    lines: list[str] = []
    cfg = tiny_train_config([f"imagefolder:{digits_dir}"], tmp_path / "run", epochs=1,
                            eval=f"imagefolder:{digits_dir}", cache_dir=str(tmp_path / "cache"))
    result = train_and_evaluate(cfg, log=lines.append)
    assert backbone_calls == []  # training embedded all 400 digits into its --cache-dir
    assert f"backbone features of 400 images (run): 400 from the feature cache, 0 computed " \
           f"(cache {tmp_path / 'cache'})" in lines
    assert result.eval["tasks"]["results"][0]["queries"] == 80


def test_a_stage2_run_embeds_through_its_own_tower_and_leaves_the_cache_alone(trained_run, stage2_run, digits_dir,
                                                                             tmp_path):
    from guie.model.backbone import eval_transform
    from guie.model.embedder import load_embedder

    paths = [str(p) for p in sorted(digits_dir.rglob("*.png"))[::20]]
    refs = resolve_models([trained_run, stage2_run])
    lines: list[str] = []
    cached = embed_with_models(refs, paths, "cpu", 8, 0, log=lines.append, cache_dir=tmp_path / "cache")
    direct = embed_with_models(refs, paths, "cpu", 8, 0, log=lambda _: None)
    embedder, backbone = load_embedder(stage2_run)
    transform = eval_transform(backbone.preprocess_cfg)
    from guie.data.images import load_rgb

    with torch.inference_mode():
        expected = torch.cat([embedder(transform(load_rgb(p)).unsqueeze(0)) for p in paths]).numpy()
    for emb in (cached, direct):  # with or without a cache, never the frozen features nor the other run's tower
        np.testing.assert_allclose(emb.vectors["tiny-s2"], expected, atol=1e-5)
    assert np.abs(cached.vectors["tiny-s2"] - cached.vectors["tiny"]).max() > 0.1
    assert cached.features_computed == len(paths)  # the plain run's images only
    assert sum(s["rows"] for s in shards_in(tmp_path / "cache")) == len(paths)
    assert any("tiny-s2 (eager, cpu; stage 2: its fine-tuned blocks, not the cached features)" in line for line in lines)


def eval_args(run: Path, digits: Path, cache: Path, out: Path) -> list[str]:
    return [str(run), "--task", f"imagefolder:{digits}", "--workers", "0", "--batch-size", "32", "--device", "cpu",
            "--cache-dir", str(cache), "--out", str(out)]


@pytest.mark.slow
def test_torchrun_ranks_fill_disjoint_shares_and_rank_0_reports(trained_run, digits_dir, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    ddp = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          "-m", "guie.eval", *eval_args(trained_run, digits_dir, tmp_path / "c2", tmp_path / "r2")],
                         capture_output=True, text=True, env=env, timeout=300)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    assert ddp.stdout.count("mean (1 task)") == 1  # only rank 0 prints the table
    assert ddp.stderr.count("backbone features of 400 images (tiny): 0 from the feature cache, 400 computed") == 1
    keys = shard_keys(tmp_path / "c2")
    assert len(keys) == 2 and not keys[0] & keys[1] and len(keys[0] | keys[1]) == 400

    single = subprocess.run([sys.executable, "-m", "guie.eval",
                             *eval_args(trained_run, digits_dir, tmp_path / "c1", tmp_path / "r1")],
                            capture_output=True, text=True, env=env, timeout=300)
    assert single.returncode == 0, single.stderr[-3000:]
    assert f"0 from the feature cache, 400 computed (cache {tmp_path / 'c1'})" in single.stderr  # --cache-dir
    assert len(shards_in(tmp_path / "c1")) == 1
    a, b = (json.loads((tmp_path / r / "report.json").read_text()) for r in ("r2", "r1"))
    assert a["results"] == b["results"] and a["mean"] == b["mean"] and a["tasks"] == b["tasks"]


def test_guie_eval_cache_dir_option(cli, trained_run, digits_dir, tmp_path):
    for label in "012":  # a small task: 3 classes of 4 digits
        (tmp_path / "few" / label).mkdir(parents=True)
        for path in sorted((digits_dir / label).glob("*.png"))[:4]:
            shutil.copy(path, tmp_path / "few" / label / path.name)
    res = cli("eval", str(trained_run), "--task", f"imagefolder:{tmp_path / 'few'}", "--workers", "0",
              "--cache-dir", str(tmp_path / "cache"))
    assert res.returncode == 0, res.stderr
    assert f"backbone features of 12 images (tiny): 0 from the feature cache, 12 computed (cache {tmp_path / 'cache'})" \
        in res.stderr
    assert sum(s["rows"] for s in shards_in(tmp_path / "cache")) == 12
