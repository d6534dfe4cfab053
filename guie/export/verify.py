"""Verification of an exported submission file: every check the host's use could break, run at export."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from guie.errors import GuieError
from guie.export.build import eager_reference
from guie.export.submission_module import original_sizes
from guie.model.embedder import Embedder

FP32_LIMIT = 1e-4
FP16_LIMIT = 2e-2  # the reference runs the same fp16 weights; this leaves room for fp16 rounding between graphs
BATCH_LIMIT = 1e-4  # the same image alone or inside a batch of 8: float rounding only (a convolution tower picks its kernels by batch size; eager open_clip RN differs by 3e-5), while leakage between images shows as 1e-2 or more
SIZES = [(7, 5), (31, 64), (500, 300), (224, 224)]


class VerificationError(GuieError):
    """An export check failed; the message names it."""


def sample_images(seed: int = 0) -> dict[tuple[int, int], torch.Tensor]:
    """Deterministic uint8 RGB images of the test sizes: smooth gradients plus noise, like photos and scans."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for h, w in SIZES:
        yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
        base = torch.stack([yy, xx, (yy + xx) / 2]) * 200
        out[(h, w)] = (base + torch.rand(3, h, w, generator=g) * 55).clamp(0, 255).to(torch.uint8)
    return out


FRESH_PROCESS_SCRIPT = textwrap.dedent("""
    import json, sys

    class NoGuie:  # any attempt to import guie fails, as it would at Kaggle where guie is not installed
        def find_spec(self, name, path=None, target=None):
            if name == "guie" or name.startswith("guie."):
                raise ImportError("guie is not available here")
            return None

    sys.meta_path.insert(0, NoGuie())
    import torch
    if sys.argv[1].endswith(".pt2"):
        model = torch.export.load(sys.argv[1]).module()
    else:
        model = torch.jit.load(sys.argv[1], map_location="cpu")
    cases = torch.load(sys.argv[2])
    worst = 0.0
    for x, expected in cases:
        y = model(x)
        assert y.dtype == torch.float32 and tuple(y.shape) == tuple(expected.shape), (y.dtype, y.shape)
        worst = max(worst, float((y - expected).abs().max()))
    assert not any(m == "guie" or m.startswith("guie.") for m in sys.modules)
    print(json.dumps({"max_abs_diff": worst, "torch": torch.__version__}))
""")


def check_fresh_process(path: Path, cases: list[tuple[torch.Tensor, torch.Tensor]]) -> dict[str, Any]:
    """Load ``path`` with plain torch (jit.load, or export.load for .pt2) in a new interpreter that
    cannot import guie, and rerun ``cases``."""
    with tempfile.TemporaryDirectory(prefix="guie-verify-") as tmp:
        script, data = Path(tmp) / "load_check.py", Path(tmp) / "cases.pt"
        script.write_text(FRESH_PROCESS_SCRIPT)
        torch.save(cases, data)
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONSTARTUP")}
        # -I: isolated mode (no PYTHON* variables, no cwd or script folder on sys.path)
        res = subprocess.run([sys.executable, "-I", str(script), str(path.resolve()), str(data)],
                             capture_output=True, text=True, cwd=tmp, env=env, timeout=600)
    if res.returncode != 0:
        last = (res.stderr.strip().splitlines() or ["no output"])[-1]
        raise VerificationError(f"fresh-process reload failed: {last[:200]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def images_per_second(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, min_seconds: float = 1.0) -> float:
    with torch.inference_mode():
        fn(x)  # warm-up (TorchScript profiles its first calls)
        fn(x)
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < min_seconds or n < 2:
            fn(x)
            n += 1
    return n * len(x) / (time.perf_counter() - t0)


def interleaved_speed(a: Callable[[torch.Tensor], torch.Tensor], b: Callable[[torch.Tensor], torch.Tensor],
                      x: torch.Tensor, rounds: int = 3, min_seconds: float = 0.4) -> tuple[float, float]:
    """Images/s of ``a`` and ``b`` on batch ``x``, timed A, B, A, B ... over ``rounds`` and each side's best
    kept, so load from other processes falls on both sides alike (one measurement each swung the
    ratio from 0.13 to 2.4 on a shared machine)."""
    best_a = best_b = 0.0
    for _ in range(rounds):
        best_a = max(best_a, images_per_second(a, x, min_seconds))
        best_b = max(best_b, images_per_second(b, x, min_seconds))
    return best_a, best_b


def load_exported(path: Path) -> Callable[[torch.Tensor], torch.Tensor]:
    """The saved module, loaded the way a user without guie would."""
    if path.suffix == ".pt2":
        return torch.export.load(str(path)).module()
    from guie.artifacts import load_torchscript

    return load_torchscript(path)


def verify_export(path: Path, eager: torch.nn.Module, embedder: Embedder | None, info: dict[str, Any],
                  log: Callable[[str], None] = print, measure_speed: bool = True,
                  reference: Callable[[torch.Tensor], torch.Tensor] | None = None) -> dict[str, Any]:
    """Run every check on the saved file; raise VerificationError naming the first that fails.

    The parity reference is the eager guie embedder on the same tensor preprocessing, or
    ``reference`` (an ensemble's eager module) when given.
    """
    if reference is None:
        def reference(images: torch.Tensor) -> torch.Tensor:
            return eager_reference(embedder, info, images)
    limit = FP16_LIMIT if info["fp16"] else FP32_LIMIT
    dim = info["dim"]
    model = load_exported(path)
    images = sample_images()
    checks: list[dict[str, Any]] = []

    def record(name: str, ok: bool, detail: str) -> None:
        checks.append({"check": name, "passed": bool(ok), "detail": detail})
        if not ok:
            raise VerificationError(f"export verification failed: {name}: {detail}")

    worst = 0.0
    cases: list[tuple[torch.Tensor, torch.Tensor]] = []
    with torch.inference_mode():
        for (h, w), img in images.items():
            y = model(img.unsqueeze(0))
            record(f"output {h}x{w}", y.dtype == torch.float32 and tuple(y.shape) == (1, dim)
                   and bool(torch.isfinite(y).all()), f"dtype {y.dtype}, shape {tuple(y.shape)}")
            norm = float(y.norm(dim=1).sub(1).abs().max())
            record(f"unit norm {h}x{w}", norm < 1e-4, f"| |y| - 1 | = {norm:.2e}")
            diff = float((y - reference(img.unsqueeze(0))).abs().max())
            worst = max(worst, diff)
            record(f"parity with the eager embedder {h}x{w}", diff <= limit, f"max abs diff {diff:.2e} (limit {limit:.0e})")
            cases.append((img.unsqueeze(0), y.clone()))
        batch = torch.stack([images[(31, 64)]] * 4 + [torch.flip(images[(31, 64)], dims=[2])] * 4)
        batch[1:4] = (batch[1:4].int() + torch.arange(1, 4).view(3, 1, 1, 1) * 7).clamp(0, 255).to(torch.uint8)
        y8 = model(batch)
        record("batch of 8", tuple(y8.shape) == (8, dim), f"shape {tuple(y8.shape)}")
        alone = torch.cat([model(batch[i:i + 1]) for i in range(8)])
        bdiff = float((y8 - alone).abs().max())
        record("batch independence", bdiff <= BATCH_LIMIT, f"batch of 8 vs one by one: max abs diff {bdiff:.2e}")
        if path.suffix != ".pt2":  # a torch.export program takes the (N, 3, H, W) uint8 batch it was made for
            single = model(images[(31, 64)])
            record("single (3, H, W) image", tuple(single.shape) == (1, dim)
                   and float((single - alone[0:1]).abs().max()) <= BATCH_LIMIT, f"shape {tuple(single.shape)}")
            fl = model(batch.float())
            record("float 0..255 input equals uint8", float((fl - y8).abs().max()) <= BATCH_LIMIT,
                   f"max abs diff {float((fl - y8).abs().max()):.2e}")
        again = model(batch)
        record("determinism", bool(torch.equal(again, y8)), "two runs on the same batch are bit-identical")
        cases.append((batch, y8.clone()))
        pil_diff = pil_pipeline_diff(embedder, info, images, model) if embedder is not None else None
    fresh = check_fresh_process(path, cases)
    record("fresh-process load without guie", fresh["max_abs_diff"] <= BATCH_LIMIT,
           f"max abs diff {fresh['max_abs_diff']:.2e}")
    report: dict[str, Any] = {
        "checks": checks, "max_abs_diff_vs_eager": worst, "limit": limit,
        "max_abs_diff_vs_open_clip_pil_pipeline": pil_diff,
    }
    if path.suffix != ".pt2":
        from guie.artifacts import file_format_version

        report["torchscript_file_version"] = file_format_version(path)
    if measure_speed:
        x = torch.stack([images[(224, 224)]] * 32)
        exported, reference_speed = interleaved_speed(model, eager, x)
        report["images_per_s"] = {"batch": 32, "input": "224x224 uint8", "exported": round(exported, 1),
                                  "eager": round(reference_speed, 1), "ratio": round(exported / reference_speed, 3)}
    log(f"verified: {len(checks)} checks passed; max abs diff vs eager {worst:.2e} (limit {limit:.0e})"
        + (f", vs open_clip's PIL pipeline {pil_diff:.2e}" if pil_diff is not None else ""))
    return report


def pil_pipeline_diff(embedder: Embedder, info: dict[str, Any], images: dict,
                      model: Callable[[torch.Tensor], torch.Tensor]) -> float | None:
    """Reported, not gated: the exported module vs the eager embedder behind open_clip's own PIL transform."""
    from PIL import Image

    from guie.model.backbone import eval_transform

    if info.get("tta", "none") != "none":
        return None  # the PIL pipeline has no test-time augmentation to compare with
    transform = eval_transform({"size": info["image_size"], "mode": "RGB", "mean": info["mean"], "std": info["std"],
                                "interpolation": info["interpolation"], "resize_mode": info["resize_mode"], "fill_color": 0})
    worst = 0.0
    for img in images.values():
        pil = Image.fromarray(np.ascontiguousarray(img.permute(1, 2, 0).numpy()))
        pixels = transform(pil).unsqueeze(0)
        if info["fp16"]:
            pixels = pixels.half()
        ref = torch.nn.functional.normalize(embedder(pixels, original_sizes(img.unsqueeze(0))).float(), dim=-1)
        worst = max(worst, float((model(img.unsqueeze(0)) - ref).abs().max()))
    return worst
