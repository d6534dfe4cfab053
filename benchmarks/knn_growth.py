"""Cost growth of guie's exact k-NN with the index size: a fixed query set against growing indexes, 64-D.

``guie.retrieval.knn.knn`` as every task calls it (faiss on CPU, the torch block search on CUDA),
k=5, unit vectors, --queries queries against each index size of --sizes (default 100k to 1,397,126,
the size of UnED's merged test index). The sizes are timed interleaved over --repeat rounds (each
round runs every size in turn), each size's best counting. Exact search does queries x index
multiply-adds, so the time should grow linearly with the index. Prints the time per size, the
fitted exponent of time over index size (``ratio knn_growth_exponent``, target <= 1.1) and what
the measured rate gives for UnED's merged search (241k queries x 1.4M index).
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch

from guie.retrieval.knn import knn

UNED_QUERIES, UNED_INDEX = 241_000, 1_397_126


def unit_rows(n: int, dim: int, rng: np.random.Generator) -> np.ndarray:
    x = rng.standard_normal((n, dim), dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="100000,200000,400000,800000,1397126", help="index sizes, comma-separated")
    p.add_argument("--queries", type=int, default=2000)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--repeat", type=int, default=3, help="interleaved rounds (each size's best counts)")
    args = p.parse_args()
    sizes = sorted(int(x) for x in args.sizes.split(","))
    rng = np.random.default_rng(0)
    index = unit_rows(max(sizes), args.dim, rng)
    queries = unit_rows(args.queries, args.dim, rng)
    best = {n: float("inf") for n in sizes}
    for _ in range(args.repeat):
        for n in sizes:
            t0 = time.perf_counter()
            knn(index[:n], queries, 5)
            best[n] = min(best[n], time.perf_counter() - t0)
    path = "torch on " + torch.cuda.get_device_name(0) if torch.cuda.is_available() else "faiss, CPU"
    print(f"{os.cpu_count()} CPU cores; {path}; {args.queries} queries x index, {args.dim}-D, k=5; best of "
          f"{args.repeat} interleaved rounds")
    print("| index | seconds | million pairs / s |")
    print("|---|---|---|")
    for n in sizes:
        print(f"| {n:,} | {best[n]:.3f} | {args.queries * n / best[n] / 1e6:.0f} |")
    exponent = float(np.polyfit(np.log(sizes), np.log([best[n] for n in sizes]), 1)[0])
    rate = args.queries * sizes[-1] / best[sizes[-1]]
    print(f"at the largest size's rate, UnED's merged search ({UNED_QUERIES:,} x {UNED_INDEX:,}) would take "
          f"{UNED_QUERIES * UNED_INDEX / rate / 60:.1f} min here")
    print(f"ratio knn_growth_exponent: {exponent:.2f}")


if __name__ == "__main__":
    main()
