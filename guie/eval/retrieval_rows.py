"""One model's retrieval on one task, query by query: what the gallery shows and report.json records.

:class:`TaskRetrieval` knows nothing of how its task was built. Query and index are given as file
paths with the labels to show; which results are relevant, each query's n_q and its score come in
as arrays. A task whose relevance is "same class" gets them from :func:`retrieval_by_class`
(guie.eval.evaluate); a task with another rule (several labels per query, relevance only within a
domain, a merged index) computes its own and builds the structure directly.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from guie.retrieval.metrics import calibrated_precision_per_query, relevant_hits


@dataclass(frozen=True)
class TaskRetrieval:
    """The top-k of every query of one task under one model.

    Q queries, N index images, k results per query (nearest first):

    - ``query_paths`` (Q) and ``index_paths`` (N): image files; ``query_labels`` (Q) and
      ``index_labels`` (N): their labels as a person should read them (e.g. ``sop/123``, or
      ``met/1+met/7`` for a query of two classes).
    - ``neighbours``: int64 ``(Q, k)`` positions into the index, -1 where fewer than k came back.
    - ``similarities``: float32 ``(Q, k)``, cosine similarity (inner product of unit vectors).
    - ``relevant``: bool ``(Q, k)``, the result counts as a hit for the query's score.
    - ``n_relevant``: int64 ``(Q,)``, the query's n_q (relevant index images).
    - ``scores``: float64 ``(Q,)``, the query's score: the host's calibrated precision at k (mP@5).
    - ``weights``: float64 ``(Q,)`` summing to 1, each query's share of the task's figures (None: equal
      shares); UnED's headline is a mean over domains, so each query weighs 1 / (domains x its domain's queries).

    Raises ValueError when the shapes disagree.
    """

    task: str
    model: str
    query_paths: Sequence[str]
    query_labels: Sequence[str]
    index_paths: Sequence[str]
    index_labels: Sequence[str]
    neighbours: np.ndarray
    similarities: np.ndarray
    relevant: np.ndarray
    n_relevant: np.ndarray
    scores: np.ndarray
    weights: np.ndarray | None = None

    def __post_init__(self) -> None:
        q, n = len(self.query_paths), len(self.index_paths)
        k = self.neighbours.shape[1] if self.neighbours.ndim == 2 else -1
        problems = [name for name, ok in (
            ("query_labels", len(self.query_labels) == q), ("index_labels", len(self.index_labels) == n),
            ("neighbours", self.neighbours.shape == (q, k) and k > 0),
            ("similarities", self.similarities.shape == (q, k)), ("relevant", self.relevant.shape == (q, k)),
            ("n_relevant", self.n_relevant.shape == (q,)), ("scores", self.scores.shape == (q,)),
            ("weights", self.weights is None or (self.weights.shape == (q,) and abs(float(self.weights.sum()) - 1) < 1e-6)),
            ("neighbours' range", bool(((self.neighbours >= -1) & (self.neighbours < n)).all())),
        ) if not ok]
        if problems:
            raise ValueError(f"TaskRetrieval {self.task}/{self.model}: {', '.join(problems)} disagree with "
                             f"{q} queries, {n} index images and neighbours of shape {self.neighbours.shape}")

    @property
    def k(self) -> int:
        """Results per query."""
        return int(self.neighbours.shape[1])

    @property
    def mean_precision(self) -> float:
        """mP@k over the task's queries (the mean of ``scores``, by ``weights`` when given)."""
        return self._mean(self.scores)

    @property
    def precision_at_1(self) -> float:
        """Share of queries whose first result is relevant (by ``weights`` when given)."""
        return self._mean(self.relevant[:, 0].astype(np.float64))

    def _mean(self, values: np.ndarray) -> float:
        if not len(values):
            return float("nan")
        return float(values.mean() if self.weights is None else np.dot(self.weights, values))


def retrieval_by_class(task: str, model: str, query_paths: Sequence[str], query_labels: Sequence[str],
                       index_paths: Sequence[str], index_labels: Sequence[str], similarities: np.ndarray,
                       neighbours: np.ndarray) -> TaskRetrieval:
    """The TaskRetrieval of a task where a result is relevant when its label equals the query's.

    ``similarities`` and ``neighbours`` are the (Q, k) output of ``guie.retrieval.knn.knn``; relevance,
    n_q and the per-query score follow guie.retrieval.metrics (the host's mP@5). Raises GuieError when a
    query has no relevant index image.
    """
    neighbours = np.asarray(neighbours, dtype=np.int64)
    relevant, n_relevant = relevant_hits(neighbours, query_labels, index_labels)
    scores = calibrated_precision_per_query(neighbours, query_labels, index_labels, neighbours.shape[1])
    return TaskRetrieval(task, model, list(query_paths), list(query_labels), list(index_paths), list(index_labels),
                         neighbours, np.asarray(similarities, dtype=np.float32), relevant, n_relevant,
                         np.asarray(scores, dtype=np.float64))
