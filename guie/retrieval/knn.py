"""Exact k-NN over L2-normalised embeddings: faiss flat inner product on CPU, torch block search on CUDA.

:func:`knn` is the one search every task uses. Both paths are exact (every query against every
index row, float32) and search the queries in blocks, so memory stays bounded at any size
(UnED's merged index: 241k queries x 1.4M images at 64-D):

* CPU (faiss ``IndexFlatIP``): the caller's index plus faiss's own float32 copy (2 x N x d x 4
  bytes: 717 MB at 1.4M x 64), faiss's BLAS block of :data:`BLAS_QUERY_BLOCK` x
  :data:`BLAS_DATABASE_BLOCK` similarities (32 MiB) and ``chunk`` x k results.
* CUDA (:func:`guie.retrieval.torch_search.torch_knn`, when torch sees CUDA and the search is at
  least :data:`GPU_MIN_PAIRS` query x index pairs): the index on the GPU (358 MB at 1.4M x 64), and
  per block of queries their similarity rows and the top-k workspace, the blocks sized to a share
  of the free GPU memory (the index streamed in blocks from host memory when it does not fit);
  similarities in full float32 (TF32 off).

Ties: the torch search returns the first k of the index ordered by (similarity descending, index
position ascending), a total order, so its results do not depend on the block sizes. faiss orders
exactly tied neighbours arbitrarily; both paths return the same similarities and, where no two
candidates tie at the k-th place, the same neighbours. A search of at least
:data:`PROGRESS_MIN_PAIRS` pairs shows a tqdm bar counting queries.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

import faiss
import numpy as np
from tqdm.auto import tqdm

# faiss computes inner products in BLAS blocks of query_bs x database_bs, then scans each block
# for the top k. Best of 5 interleaved rounds on a shared 2-core machine (1M x 64 index, 2,048
# queries): 2,048 x 4,096 (a 32 MiB block) 137 GFLOP/s, 1,024 x 8,192 133, faiss's default
# 4,096 x 1,024 127, the 4,096 x 16,384 used before 102 (benchmarks/faiss_vs_numpy.py).
BLAS_QUERY_BLOCK = 2048
BLAS_DATABASE_BLOCK = 4096

MISSING_SIMILARITY = float(np.finfo(np.float32).min)  # faiss's fill for an index smaller than k (id -1)
PROGRESS_MIN_PAIRS = 1 << 31  # query x index pairs from which a search shows a progress bar (~10 s on 2 cores)
GPU_MIN_PAIRS = 1 << 26  # below this a search stays on faiss (CPU): CUDA start-up would cost more than it saves


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
    """Return (similarities float32, index positions int64), each (Q, k), nearest first.

    On unit vectors inner product equals cosine and ranks equal Euclidean ranks. Exact search:
    with CUDA (and at least :data:`GPU_MIN_PAIRS` pairs) by ``torch_search.torch_knn`` on the GPU, else by
    :func:`faiss_knn`, ``chunk`` queries at a time; memory bounds and ties as in the module
    docstring. Missing neighbours (index smaller than k) come back as position -1 with similarity
    :data:`MISSING_SIMILARITY`.
    """
    xb = np.ascontiguousarray(index_embeddings, dtype=np.float32)
    xq = np.ascontiguousarray(query_embeddings, dtype=np.float32)
    pairs = len(xq) * len(xb)
    progress = pairs >= PROGRESS_MIN_PAIRS
    if pairs >= GPU_MIN_PAIRS:
        import torch  # here, not at import: guie-eval reports bad task specs before torch loads

        if torch.cuda.is_available():
            from guie.retrieval.torch_search import torch_knn

            return torch_knn(xb, xq, k, torch.device("cuda"), progress=progress)
    return faiss_knn(xb, xq, k, chunk, progress=progress)


def faiss_knn(index_embeddings: np.ndarray, query_embeddings: np.ndarray, k: int = 5, chunk: int = 16384,
              progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Exact k-NN with a faiss flat inner-product index on CPU, ``chunk`` queries per search call.

    Arrays (N, d) and (Q, d) float32; returns (Q, k) similarities and positions as :func:`knn`.
    ``progress`` shows a tqdm bar counting queries.
    """
    xb = np.ascontiguousarray(index_embeddings, dtype=np.float32)
    xq = np.ascontiguousarray(query_embeddings, dtype=np.float32)
    index = faiss.IndexFlatIP(xb.shape[1])
    index.add(xb)
    sims = np.empty((len(xq), k), dtype=np.float32)
    ids = np.empty((len(xq), k), dtype=np.int64)
    with blas_blocks(), tqdm(total=len(xq), desc=f"k-NN ({len(xq)} queries x {len(xb)} index, faiss)",
                             unit="query", dynamic_ncols=True, disable=not progress) as bar:
        for start in range(0, len(xq), chunk):
            sims[start:start + chunk], ids[start:start + chunk] = index.search(xq[start:start + chunk], k)
            bar.update(min(chunk, len(xq) - start))
    return sims, ids


def evaluate_retrieval(index_embeddings: np.ndarray, index_labels: list, query_embeddings: np.ndarray,
                       query_labels: list, k: int = 5) -> dict[str, float]:
    """Exact k-NN then mP@k, P@1 and mAP@k, with the query and index sizes."""
    from guie.retrieval.metrics import retrieval_scores

    _, ids = knn(index_embeddings, query_embeddings, k)
    scores = retrieval_scores(ids, query_labels, index_labels, k)
    return {**scores, "queries": len(query_labels), "index": len(index_labels)}
