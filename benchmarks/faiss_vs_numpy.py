"""Benchmark 5: guie-eval's exact k-NN (faiss flat inner product) vs numpy brute force, both chunked,
and vs the machine's physical limit, its single-precision matrix-multiply (SGEMM) rate.

Default: a 1M x 64 index and 10k queries, k=5, unit vectors. numpy computes each chunk's
similarity matrix and an argpartition; faiss never materialises it. Exact search must do
2 x queries x index x dim floating-point operations, a matrix multiply, so its achieved rate
over the SGEMM rate measured in the same run (square float32 matrices, numpy's BLAS) says how
close it gets to the hardware. The three are timed interleaved over --repeat rounds, each
side's best counting. Prints numpy/faiss time and the search's fraction of the SGEMM rate; also
the rate of the search's own thin matrix multiplies (inner dimension 64) without the top-k
selection, which is what bounds it in practice.
"""
from __future__ import annotations

import argparse
import os
import resource
import time

import numpy as np

from guie.retrieval.knn import BLAS_DATABASE_BLOCK, BLAS_QUERY_BLOCK, knn


def numpy_knn(xb: np.ndarray, xq: np.ndarray, k: int, chunk: int = 256) -> np.ndarray:
    ids = np.empty((len(xq), k), dtype=np.int64)
    for s in range(0, len(xq), chunk):
        sims = xq[s:s + chunk] @ xb.T
        top = np.argpartition(-sims, k, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(sims, top, axis=1), axis=1)
        ids[s:s + chunk] = np.take_along_axis(top, order, axis=1)
    return ids


def sgemm_seconds(n: int, calls: int = 3) -> float:
    """Best time of one float32 (n x n) @ (n x n) product over ``calls`` calls."""
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((n, n), dtype=np.float32), rng.standard_normal((n, n), dtype=np.float32)
    best = float("inf")
    for _ in range(calls):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return best


def search_gemm_seconds(xb: np.ndarray, xq: np.ndarray) -> float:
    """The matrix multiplies of the search alone, in faiss's blocks (no top-k selection), in seconds."""
    out = np.empty((BLAS_QUERY_BLOCK, BLAS_DATABASE_BLOCK), np.float32)
    t0 = time.perf_counter()
    for q in range(0, len(xq), BLAS_QUERY_BLOCK):
        a = xq[q:q + BLAS_QUERY_BLOCK]
        for s in range(0, len(xb), BLAS_DATABASE_BLOCK):
            b = xb[s:s + BLAS_DATABASE_BLOCK]
            np.matmul(a, b.T, out=out[:len(a), :len(b)])
    return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--index", type=int, default=1_000_000)
    p.add_argument("--queries", type=int, default=10_000)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--gemm", type=int, default=2048, help="side of the square SGEMM that measures the peak")
    p.add_argument("--repeat", type=int, default=2, help="interleaved rounds (SGEMM, faiss, numpy)")
    p.add_argument("--no-numpy", action="store_true", help="skip the (slow) numpy side")
    args = p.parse_args()
    rng = np.random.default_rng(0)
    xb = rng.standard_normal((args.index, args.dim), dtype=np.float32)
    xb /= np.linalg.norm(xb, axis=1, keepdims=True)
    xq = rng.standard_normal((args.queries, args.dim), dtype=np.float32)
    xq /= np.linalg.norm(xq, axis=1, keepdims=True)
    t_gemm = t_faiss = t_numpy = t_blocks = float("inf")
    rss_growth = 0.0
    for _ in range(args.repeat):
        t_gemm = min(t_gemm, sgemm_seconds(args.gemm))
        t_blocks = min(t_blocks, search_gemm_seconds(xb, xq))
        rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        t0 = time.perf_counter()
        _, faiss_ids = knn(xb, xq, 5)
        t_faiss = min(t_faiss, time.perf_counter() - t0)
        rss_growth = max(rss_growth, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0)
        if not args.no_numpy:
            t0 = time.perf_counter()
            np_ids = numpy_knn(xb, xq, 5)
            t_numpy = min(t_numpy, time.perf_counter() - t0)
    peak = 2 * args.gemm ** 3 / t_gemm
    achieved = 2 * args.queries * args.index * args.dim / t_faiss
    print(f"{os.cpu_count()} CPU cores; index {args.index} x {args.dim}, {args.queries} queries, k=5; "
          f"best of {args.repeat} interleaved rounds")
    print(f"SGEMM {args.gemm}^3 float32: {peak / 1e9:.1f} GFLOP/s; faiss k-NN: {t_faiss:.2f} s = "
          f"{achieved / 1e9:.1f} GFLOP/s (peak RSS growth {rss_growth / 1024:.0f} MiB)")
    print(f"the search's own matrix multiplies ({BLAS_QUERY_BLOCK} x {args.dim} by {args.dim} x "
          f"{BLAS_DATABASE_BLOCK} blocks, no selection): {t_blocks:.2f} s = "
          f"{2 * args.queries * args.index * args.dim / t_blocks / 1e9:.1f} GFLOP/s")
    if not args.no_numpy:
        agree = float((faiss_ids[:, 0] == np_ids[:, 0]).mean())
        print(f"numpy: {t_numpy:.2f} s; top-1 agreement {agree:.4f}")
        print(f"ratio faiss_vs_numpy_knn: {t_numpy / t_faiss:.2f}")
    print(f"ratio knn_vs_sgemm_peak: {achieved / peak:.2f}")


if __name__ == "__main__":
    main()
