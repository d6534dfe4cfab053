"""Shared bits of the benchmark scripts: options, the image set, the interleaved timer and the ratio line."""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--backbone", default="guie-tiny", help="open_clip model or timm:NAME, random init (e.g. ViT-B-32, "
                                                          "timm:vit_small_patch14_reg4_dinov2)")
    p.add_argument("--images", type=int, default=600, help="images in the benchmark set (digits, real)")
    p.add_argument("--epochs", type=int, default=3, help="training epochs, where a benchmark trains")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--repeat", type=int, default=3, help="rounds of the interleaved timing (each side's best counts)")
    return p


def setup(args: argparse.Namespace) -> Path:
    """Seed, threads, an isolated cache, and a folder of real digit images; returns the folder."""
    torch.manual_seed(0)
    if args.threads:
        torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="guie-bench-"))
    os.environ["GUIE_CACHE"] = str(work / "cache")
    from guie.data.demo import write_digits

    per_class = max(1, args.images // 10)
    return write_digits(work / "digits", per_class=per_class, size=64)


def interleaved(sides: dict[str, Callable[[], object]], repeat: int = 3) -> dict[str, float]:
    """Best wall time of each side, in seconds, over ``repeat`` rounds that run the sides in turn
    (A, B, A, B, ...), so a neighbour's load falls on both sides alike rather than on one."""
    best = {name: float("inf") for name in sides}
    for _ in range(repeat):
        for name, fn in sides.items():
            t0 = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - t0)
    return best


def machine() -> str:
    return f"{os.cpu_count()} CPU cores, torch {torch.__version__}, " + (
        torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU")


def ratio(name: str, value: float) -> None:
    print(f"ratio {name}: {value:.2f}")
