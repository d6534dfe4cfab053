"""Retrieval metrics; mP@5 exactly as the GUIE host computed it (calibrated precision at k).

For a query with n relevant index images, m = min(n, k); its score is the number of
distinct relevant images among the first m retrieved, divided by m. With n < k only the
first n results count: a relevant image at rank n+1 earns nothing. A query with no
relevant index image is an error in the task definition, not a zero.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np

from guie.errors import GuieError


def _relevance(retrieved: np.ndarray, query_labels: Sequence, index_labels: Sequence) -> tuple[np.ndarray, np.ndarray]:
    """Per query: a (Q, k) bool matrix of first-time relevant hits, and the relevant counts n_q."""
    retrieved = np.asarray(retrieved)
    index_labels = np.asarray(index_labels, dtype=object)
    counts = Counter(index_labels.tolist())
    n_rel = np.array([counts.get(label, 0) for label in query_labels], dtype=np.int64)
    if (n_rel == 0).any():
        first = int(np.flatnonzero(n_rel == 0)[0])
        raise GuieError(
            f"{int((n_rel == 0).sum())} queries have no relevant index image (first: query {first}, label "
            f"{query_labels[first]!r}); every query class must appear in the index"
        )
    q, k = retrieved.shape
    hits = np.zeros((q, k), dtype=bool)
    for i in range(q):
        seen: set[int] = set()
        for r in range(k):
            j = int(retrieved[i, r])
            if j < 0 or j in seen:  # -1: nothing retrieved; duplicates count once
                continue
            seen.add(j)
            hits[i, r] = index_labels[j] == query_labels[i]
    return hits, n_rel


def precision_from_hits(hits: np.ndarray, n_rel: np.ndarray, k: int = 5) -> np.ndarray:
    """The host's precision@k per query from ``hits`` ((Q, >=k) bool: rank r holds a relevant image, each
    image counted once) and ``n_rel`` ((Q,) int, every n >= 1): relevant hits in the first min(n, k)
    ranks, divided by min(n, k). Returns (Q,) float64."""
    m = np.minimum(n_rel, k)
    ranks = np.arange(hits.shape[1])[None, :]
    return (hits & (ranks < m[:, None])).sum(axis=1) / m


def average_precision_from_hits(hits: np.ndarray, n_rel: np.ndarray, k: int = 5) -> np.ndarray:
    """Average precision at k per query, from ``hits`` and ``n_rel`` as in :func:`precision_from_hits`:
    the sum over the first k ranks r holding a hit of P@r, divided by min(n, k). Returns (Q,) float64."""
    hits = hits[:, :k]
    precision_at_r = np.cumsum(hits, axis=1) / np.arange(1, hits.shape[1] + 1)[None, :]
    return (precision_at_r * hits).sum(axis=1) / np.minimum(n_rel, k)


def calibrated_precision_per_query(retrieved: np.ndarray, query_labels: Sequence, index_labels: Sequence,
                                   k: int = 5) -> np.ndarray:
    """The host's precision@k per query (see module docstring); ``retrieved`` holds index positions."""
    hits, n_rel = _relevance(np.asarray(retrieved)[:, :k], query_labels, index_labels)
    return precision_from_hits(hits, n_rel, k)


def mean_precision_at_k(retrieved: np.ndarray, query_labels: Sequence, index_labels: Sequence, k: int = 5) -> float:
    """mP@k, the competition metric (k=5)."""
    return float(calibrated_precision_per_query(retrieved, query_labels, index_labels, k).mean())


def precision_at_1(retrieved: np.ndarray, query_labels: Sequence, index_labels: Sequence) -> float:
    """Share of queries whose nearest index image is relevant."""
    hits, _ = _relevance(np.asarray(retrieved)[:, :1], query_labels, index_labels)
    return float(hits[:, 0].mean())


def map_at_k(retrieved: np.ndarray, query_labels: Sequence, index_labels: Sequence, k: int = 5) -> float:
    """Mean average precision at k: sum over ranks r of P@r at each hit, divided by min(n_q, k)."""
    hits, n_rel = _relevance(np.asarray(retrieved)[:, :k], query_labels, index_labels)
    return float(average_precision_from_hits(hits, n_rel, k).mean())


def retrieval_scores(retrieved: np.ndarray, query_labels: Sequence, index_labels: Sequence, k: int = 5) -> dict[str, float]:
    """mP@5, P@1 and mAP@5 (for k=5) in one dict."""
    return {
        f"mP@{k}": mean_precision_at_k(retrieved, query_labels, index_labels, k),
        "P@1": precision_at_1(retrieved, query_labels, index_labels),
        f"mAP@{k}": map_at_k(retrieved, query_labels, index_labels, k),
    }


def relevant_hits(retrieved: np.ndarray, query_labels: Sequence, index_labels: Sequence) -> tuple[np.ndarray, np.ndarray]:
    """Per query, which results count: a bool ``(Q, k)`` matrix (relevant = same label; a repeated index
    position counts once, -1 never) and n_q, the int64 ``(Q,)`` count of relevant index images. The
    relevance every metric here scores. Raises GuieError when a query has no relevant index image."""
    return _relevance(np.asarray(retrieved), query_labels, index_labels)
