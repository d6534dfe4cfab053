"""Benchmark 5: guie-eval's exact k-NN (faiss flat inner product) vs numpy brute force, both chunked.

Default: a 1M x 64 index and 10k queries, k=5, unit vectors. numpy computes each chunk's
similarity matrix and an argpartition; faiss never materialises it. Prints numpy/faiss time.
"""
from __future__ import annotations

import argparse
import resource
import time

import numpy as np

from guie.eval.retrieval import knn


def numpy_knn(xb: np.ndarray, xq: np.ndarray, k: int, chunk: int = 256) -> np.ndarray:
    ids = np.empty((len(xq), k), dtype=np.int64)
    for s in range(0, len(xq), chunk):
        sims = xq[s:s + chunk] @ xb.T
        top = np.argpartition(-sims, k, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(sims, top, axis=1), axis=1)
        ids[s:s + chunk] = np.take_along_axis(top, order, axis=1)
    return ids


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--index", type=int, default=1_000_000)
    p.add_argument("--queries", type=int, default=10_000)
    p.add_argument("--dim", type=int, default=64)
    args = p.parse_args()
    rng = np.random.default_rng(0)
    xb = rng.standard_normal((args.index, args.dim), dtype=np.float32)
    xb /= np.linalg.norm(xb, axis=1, keepdims=True)
    xq = rng.standard_normal((args.queries, args.dim), dtype=np.float32)
    xq /= np.linalg.norm(xq, axis=1, keepdims=True)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    _, faiss_ids = knn(xb, xq, 5)
    t_faiss = time.perf_counter() - t0
    rss_faiss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    np_ids = numpy_knn(xb, xq, 5)
    t_numpy = time.perf_counter() - t0
    agree = float((faiss_ids[:, 0] == np_ids[:, 0]).mean())
    print(f"index {args.index} x {args.dim}, {args.queries} queries, k=5; top-1 agreement {agree:.4f}")
    print(f"faiss: {t_faiss:.2f} s (peak RSS growth {(rss_faiss - rss0) / 1024:.0f} MiB); numpy: {t_numpy:.2f} s")
    ratio = t_numpy / t_faiss
    print(f"ratio faiss_vs_numpy_knn: {ratio:.2f}")


if __name__ == "__main__":
    main()
