"""The one inference loop over the image tower (guie.features.forward), and the one-way chain around it:
extraction, evaluation and stage 2 share the loop, and training never imports evaluation."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from guie.features.forward import forward_images, image_dataset
from guie.model.backbone import BackboneSpec, load_backbone

GUIE = Path(__file__).resolve().parents[1] / "guie"
SIZES = [(20, 30), (41, 17), (32, 32), (9, 64), (50, 50), (33, 21), (16, 48)]  # (height, width)


@pytest.fixture(scope="module")
def backbone():
    return load_backbone(BackboneSpec("guie-tiny"))


@pytest.fixture
def images(tmp_path) -> tuple[list[str], set[int]]:
    """Seven readable images of different sizes, with two broken files between them."""
    rng = np.random.default_rng(0)
    paths, broken = [], set()
    for i, (h, w) in enumerate(SIZES):
        path = tmp_path / f"{i}.png"
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
        if i in (1, 4):
            (tmp_path / f"bad{i}.png").write_bytes(b"not an image")
            broken.add(len(paths))
            paths.append(str(tmp_path / f"bad{i}.png"))
    return paths, broken


def run_loop(backbone, paths, **kwargs):
    batches = list(forward_images(backbone, paths, torch.device("cpu"), batch_size=3, **kwargs))
    positions = np.concatenate([b.positions for b in batches])
    features = torch.cat([b.features for b in batches]).numpy()
    return batches, positions, features


def test_the_loop_flags_unreadable_images_and_keeps_positions_and_sizes(backbone, images):
    paths, broken = images
    batches, positions, features = run_loop(backbone, paths, workers=0)
    assert [len(b) for b in batches] == [3, 3, 3]
    assert {int(i) for b in batches for i in b.unreadable} == broken
    assert positions.tolist() == [i for i in range(len(paths)) if i not in broken]  # in order, readable only
    sizes = torch.cat([b.sizes for b in batches])
    assert sizes.dtype == torch.int32 and sizes.tolist() == [list(s) for s in SIZES]
    assert features.dtype == np.float32 and features.shape == (len(SIZES), backbone.feature_dim)
    dataset = image_dataset(backbone, paths)
    with torch.inference_mode():
        one_by_one = torch.cat([backbone.visual(dataset[int(i)][0][None]) for i in positions]).numpy()
    np.testing.assert_allclose(features, one_by_one, atol=1e-5)


def test_the_loop_gives_the_same_features_with_or_without_decode_workers(backbone, images):
    paths, _ = images
    for view in (0, 1):
        _, pos0, feats0 = run_loop(backbone, paths, workers=0, view=view)
        _, pos2, feats2 = run_loop(backbone, paths, workers=2, view=view)
        assert np.array_equal(pos0, pos2) and np.array_equal(feats0, feats2)
    _, _, clean = run_loop(backbone, paths, workers=0)
    assert not np.array_equal(clean, feats0)  # view 1 is an augmented view, not the clean one


def test_the_loop_leaves_no_inference_mode_or_autocast_behind(backbone, images):
    paths, _ = images
    for batch in forward_images(backbone, paths, torch.device("cpu"), batch_size=3, workers=0):
        assert not torch.is_inference_mode_enabled() and not torch.is_autocast_enabled()
        assert batch.features.dtype == torch.float32
    assert not torch.is_inference_mode_enabled()


def dataloader_builders() -> set[tuple[str, str]]:
    """(module file, enclosing function) of every ``DataLoader(...)`` call in guie/."""
    found = set()
    for path in GUIE.rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for fn in ast.walk(tree):
            if not isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for node in ast.walk(fn):
                if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", None)) == "DataLoader":
                    found.add((path.relative_to(GUIE).as_posix(), fn.name))
    return found


def test_the_loop_is_the_only_dataloader_over_the_tower_and_the_only_autocast_policy():
    # Besides the one loop: the host-style one-image-at-a-time feed of TorchScript files (no tower
    # of ours), and stage 2's training loop (shuffled, with gradients).
    assert dataloader_builders() == {("features/forward.py", "forward_images"),
                                     ("eval/embed.py", "_embed_torchscript"),
                                     ("train/stage2.py", "fine_tune")}
    casts = [p.relative_to(GUIE).as_posix() for p in GUIE.rglob("*.py")
             if "torch.autocast(" in p.read_text(encoding="utf-8") or "is_bf16_supported" in p.read_text(encoding="utf-8")]
    assert casts == ["features/forward.py"]


def imported_after(modules: list[str]) -> set[str]:
    """The guie modules in sys.modules after importing ``modules`` in a fresh interpreter."""
    code = ("import importlib, sys\n"
            f"for m in {modules!r}: importlib.import_module(m)\n"
            "print(' '.join(m for m in sys.modules if m.startswith('guie')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    return set(out.stdout.split())


def package_modules(package: str) -> list[str]:
    folder = GUIE / package
    return [f"guie.{package}"] + [f"guie.{package}.{p.stem}" for p in sorted(folder.glob("*.py"))
                                  if p.stem not in ("__init__", "__main__")]


def imports_in(package: str) -> set[str]:
    """Every module named by an import statement in guie/PACKAGE, at module level or inside a function."""
    names = set()
    for path in (GUIE / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module:
                names.add(node.module)
    return names


def test_training_and_features_import_without_later_stages():
    assert not {m for m in imports_in("train") if m.startswith(("guie.eval", "guie.workflows"))}
    assert not {m for m in imports_in("features") if m.startswith(("guie.train", "guie.eval", "guie.workflows"))}
    train = imported_after(package_modules("train"))
    assert "guie.train.run" in train and "guie.train.stage2" in train
    assert not {m for m in train if m.startswith(("guie.eval", "guie.workflows"))}
    features = imported_after(package_modules("features"))
    assert "guie.features.forward" in features
    assert not {m for m in features if m.startswith(("guie.train", "guie.eval", "guie.workflows"))}


def test_task_specs_without_the_evaluation_hook_are_refused_before_anything_is_written(digits_dir, tmp_path):
    from conftest import tiny_train_config

    from guie.errors import GuieError
    from guie.train.run import run_training

    cfg = tiny_train_config([f"imagefolder:{digits_dir}"], tmp_path / "run", eval=f"holdout,imagefolder:{digits_dir}")
    with pytest.raises(GuieError, match="needs the task evaluation .*train_and_evaluate"):
        run_training(cfg, log=lambda _: None)
    assert not (tmp_path / "run").exists()
