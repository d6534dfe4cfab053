"""Exact k-NN by torch matrix multiply and top-k in blocks: :func:`guie.retrieval.knn.knn`'s path on CUDA.

Queries are searched a block at a time against the index (whole on the device, or in blocks
streamed from host memory when it does not fit), each block's candidates merged into the running
top k. The result is the first k of the index under (similarity descending, position ascending),
whatever the block sizes (see :func:`first_k`). Runs on any torch device; on CPU the block sizes
are given (tests), on CUDA :func:`search_blocks` derives them from the free memory.
"""
from __future__ import annotations

import numpy as np
import torch
from tqdm.auto import tqdm

from guie.retrieval.knn import MISSING_SIMILARITY

GPU_MEMORY_FRACTION = 0.5  # share of the free GPU memory one search may use
BYTES_PER_PAIR = 24  # device bytes per query x index pair of a block: similarity (4), top-k workspace, tie masks (~20 at worst)
MAX_QUERY_BLOCK = 65536


def search_blocks(n_index: int, n_query: int, dim: int, free_bytes: int,
                  fraction: float = GPU_MEMORY_FRACTION) -> tuple[int, int]:
    """(query block, index block) rows for :func:`torch_knn` within ``fraction`` of ``free_bytes``.

    The whole index stays on the device when it takes at most half the budget (index block =
    ``n_index``); otherwise it is streamed in blocks of a quarter of the budget. The query block
    fills what is left: its ``dim`` x 4 bytes per row plus :data:`BYTES_PER_PAIR` per pair with
    the index block, at least 1 and at most :data:`MAX_QUERY_BLOCK` or ``n_query`` rows. So
    ``index block x dim x 4 + query block x (dim x 4 + index block x BYTES_PER_PAIR)`` stays
    within the budget except when one query row against a 1-row index block already exceeds it.
    """
    budget = int(free_bytes * fraction)
    row = dim * 4
    if n_index * row <= budget // 2:
        index_block, rest = max(1, n_index), budget - n_index * row
    else:
        index_block = max(1, min(n_index, budget // 4 // row))
        rest = budget - index_block * row
    query_block = rest // (row + index_block * BYTES_PER_PAIR)
    return int(max(1, min(query_block, MAX_QUERY_BLOCK, max(1, n_query)))), int(index_block)


def in_order(sims: torch.Tensor, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row's columns sorted by (similarity descending, id ascending); ``ids`` distinct per row."""
    by_id = torch.argsort(ids, dim=1)
    sims, ids = sims.gather(1, by_id), ids.gather(1, by_id)
    by_sim = torch.argsort(sims, dim=1, descending=True, stable=True)
    return sims.gather(1, by_sim), ids.gather(1, by_sim)


def first_k(sims: torch.Tensor, ids: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``k`` columns of each row under (similarity descending, id ascending), in that order.

    ``sims`` (B, m) float and ``ids`` (B, m) int64 with m >= k and ids ascending along each row
    (a block of the index); both outputs are (B, k). Exact for ties: of the ids tied at the k-th
    similarity the lowest are taken, also where ``torch.topk`` would pick among them arbitrarily
    (only those rows pay the extra pass).
    """
    if sims.shape[1] > k:
        top, cols = torch.topk(sims, k, dim=1)
        kth = top[:, -1:]
        tied = torch.nonzero((sims >= kth).sum(1) > k).flatten()
        if len(tied):
            sub, level_value = sims[tied], kth[tied]
            above, level = sub > level_value, sub == level_value
            need = k - above.sum(1, keepdim=True)
            chosen = above | (level & (level.cumsum(1) <= need))  # columns in id order: lowest tied ids first
            cols = cols.clone()
            cols[tied] = torch.nonzero(chosen)[:, 1].view(len(tied), k)
        sims, ids = sims.gather(1, cols), ids.gather(1, cols)
    return in_order(sims, ids)


def torch_knn(index_embeddings: np.ndarray, query_embeddings: np.ndarray, k: int, device: torch.device,
              query_block: int | None = None, index_block: int | None = None,
              progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Exact k-NN by float32 matrix multiply and top-k on ``device``, blocks of queries against blocks of
    the index (sizes from :func:`search_blocks` and the free memory on CUDA; both required on CPU).

    Arrays (N, d) and (Q, d); returns (Q, k) similarities float32 and positions int64, nearest first,
    ties by lower position (see :func:`first_k`), -1 and :data:`MISSING_SIMILARITY` beyond N.
    """
    xb = np.ascontiguousarray(index_embeddings, dtype=np.float32)
    xq = np.ascontiguousarray(query_embeddings, dtype=np.float32)
    n, q = len(xb), len(xq)
    sims = np.full((q, k), MISSING_SIMILARITY, dtype=np.float32)
    ids = np.full((q, k), -1, dtype=np.int64)
    if not n or not q or not k:
        return sims, ids
    if query_block is None or index_block is None:
        if device.type != "cuda":
            raise ValueError("torch_knn off CUDA needs query_block and index_block")
        planned = search_blocks(n, q, xb.shape[1], torch.cuda.mem_get_info(device)[0])
        query_block, index_block = query_block or planned[0], index_block or planned[1]
    starts = range(0, n, index_block)
    resident = index_block >= n
    index_parts = [torch.from_numpy(xb[s:s + index_block]) for s in starts]
    if resident:
        index_parts = [part.to(device) for part in index_parts]
    kk = min(k, n)
    tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        with torch.inference_mode(), tqdm(total=q, desc=f"k-NN ({q} queries x {n} index, {device.type})",
                                          unit="query", dynamic_ncols=True, disable=not progress) as bar:
            for qs in range(0, q, query_block):
                block = torch.from_numpy(xq[qs:qs + query_block]).to(device)
                best_s = torch.empty((len(block), 0), dtype=torch.float32, device=device)
                best_i = torch.empty((len(block), 0), dtype=torch.int64, device=device)
                for start, part in zip(starts, index_parts, strict=True):
                    s = block @ part.to(device, non_blocking=True).T
                    i = torch.arange(start, start + s.shape[1], device=device).expand_as(s)
                    s, i = first_k(s, i, min(kk, s.shape[1]))
                    best_s, best_i = in_order(torch.cat([best_s, s], 1), torch.cat([best_i, i], 1))
                    best_s, best_i = best_s[:, :kk], best_i[:, :kk]
                sims[qs:qs + len(block), :kk] = best_s.cpu().numpy()
                ids[qs:qs + len(block), :kk] = best_i.cpu().numpy()
                bar.update(len(block))
    finally:
        torch.backends.cuda.matmul.allow_tf32 = tf32
    return sims, ids


