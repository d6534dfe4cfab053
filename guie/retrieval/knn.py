"""Exact k-NN over L2-normalised embeddings with a faiss flat inner-product index, searched in chunks."""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

import faiss
import numpy as np

# faiss computes inner products in BLAS blocks of query_bs x database_bs, then scans each block
# for the top k. Best of 5 interleaved rounds on a shared 2-core machine (1M x 64 index, 2,048
# queries): 2,048 x 4,096 (a 32 MiB block) 137 GFLOP/s, 1,024 x 8,192 133, faiss's default
# 4,096 x 1,024 127, the 4,096 x 16,384 used before 102 (benchmarks/faiss_vs_numpy.py).
BLAS_QUERY_BLOCK = 2048
BLAS_DATABASE_BLOCK = 4096


@contextlib.contextmanager
def blas_blocks(query_bs: int = BLAS_QUERY_BLOCK, database_bs: int = BLAS_DATABASE_BLOCK) -> Iterator[None]:
    """Set faiss's process-wide BLAS block sizes for one search, then restore them."""
    old = faiss.cvar.distance_compute_blas_query_bs, faiss.cvar.distance_compute_blas_database_bs
    faiss.cvar.distance_compute_blas_query_bs, faiss.cvar.distance_compute_blas_database_bs = query_bs, database_bs
    try:
        yield
    finally:
        faiss.cvar.distance_compute_blas_query_bs, faiss.cvar.distance_compute_blas_database_bs = old


def knn(index_embeddings: np.ndarray, query_embeddings: np.ndarray, k: int = 5,
        chunk: int = 16384) -> tuple[np.ndarray, np.ndarray]:
    """Return (similarities, index positions), each (Q, k), nearest first.

    On unit vectors inner product equals cosine and ranks equal Euclidean ranks. Queries are
    searched ``chunk`` at a time so the distance buffer stays bounded. Missing neighbours
    (index smaller than k) come back as position -1.
    """
    xb = np.ascontiguousarray(index_embeddings, dtype=np.float32)
    xq = np.ascontiguousarray(query_embeddings, dtype=np.float32)
    index = faiss.IndexFlatIP(xb.shape[1])
    index.add(xb)
    sims = np.empty((len(xq), k), dtype=np.float32)
    ids = np.empty((len(xq), k), dtype=np.int64)
    with blas_blocks():
        for start in range(0, len(xq), chunk):
            sims[start:start + chunk], ids[start:start + chunk] = index.search(xq[start:start + chunk], k)
    return sims, ids


def evaluate_retrieval(index_embeddings: np.ndarray, index_labels: list, query_embeddings: np.ndarray,
                       query_labels: list, k: int = 5) -> dict[str, float]:
    """Exact k-NN then mP@k, P@1 and mAP@k, with the query and index sizes."""
    from guie.retrieval.metrics import retrieval_scores

    _, ids = knn(index_embeddings, query_embeddings, k)
    scores = retrieval_scores(ids, query_labels, index_labels, k)
    return {**scores, "queries": len(query_labels), "index": len(index_labels)}
