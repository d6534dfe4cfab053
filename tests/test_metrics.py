"""mP@5 exactly as the GUIE host computed it, checked by hand; faiss k-NN against a numpy brute force."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from guie.errors import GuieError
from guie.retrieval.knn import knn
from guie.retrieval.metrics import (
    calibrated_precision_per_query,
    map_at_k,
    mean_precision_at_k,
    precision_at_1,
    retrieval_scores,
)

# index positions:   0    1    2    3    4    5    6    7    8    9
INDEX_LABELS = ["a", "a", "b", "c", "d", "e", "f", "g", "g", "g"]
# "g" has 3 relevant images; "a" has 2; "b" has 1. Add "h" x 6 for a query with n_q >= 5.
INDEX_LABELS += ["h"] * 6  # positions 10..15


def host_calibrated_precision(predictions: dict[str, list[str]], solution: dict[str, list[str]], k: int = 5) -> float:
    """The host's definition, restated: per query m = min(n, k); count distinct relevant ids among the
    first m predictions (a repeated id uses its slot but scores once); divide by m; average over queries."""
    total = 0.0
    for query, predicted in predictions.items():
        if not solution[query]:
            raise ValueError(query)
        m = min(len(solution[query]), k)
        seen: set[str] = set()
        correct = 0
        for item in predicted[:m]:
            if item in seen:
                continue
            seen.add(item)
            correct += item in solution[query]
        total += correct / m
    return total / len(solution)


def score(retrieved: list[int], label: str) -> float:
    return float(calibrated_precision_per_query(np.array([retrieved]), [label], INDEX_LABELS)[0])


def test_with_fewer_than_5_relevant_only_the_first_n_results_count():
    # "a" has n_q = 2: only ranks 1-2 count. A relevant image at rank 4 earns nothing.
    assert score([2, 0, 3, 1, 4], "a") == 0.5
    # The seed's old CV metric (hits in the top 5 / min(n_q, 5)) would have said 1.0 here.
    assert score([2, 3, 4, 0, 1], "a") == 0.0
    assert score([1, 0, 2, 3, 4], "a") == 1.0
    # "b" has n_q = 1: only rank 1 counts.
    assert score([2, 0, 1, 3, 4], "b") == 1.0
    assert score([0, 2, 1, 3, 4], "b") == 0.0
    # "g" has n_q = 3: ranks 1-3; the hit at rank 4 is ignored.
    assert score([7, 0, 8, 9, 1], "g") == pytest.approx(2 / 3)


def test_with_5_or_more_relevant_the_top_5_count():
    assert score([10, 0, 11, 12, 1], "h") == pytest.approx(3 / 5)
    assert score([10, 11, 12, 13, 14], "h") == 1.0
    assert score([15, 0, 1, 2, 3], "h") == pytest.approx(1 / 5)


def test_duplicates_count_once_and_use_their_rank():
    # n_q = 2 for "a": results 0, 0 -> one distinct relevant image in the first 2 ranks.
    assert score([0, 0, 1, 2, 3], "a") == 0.5
    # n_q = 6 for "h": 10 three times, 11 once -> 2 distinct hits of 5.
    assert score([10, 10, 10, 11, 0], "h") == pytest.approx(2 / 5)


def test_missing_neighbours_count_as_misses():
    assert score([0, -1, -1, -1, -1], "a") == 0.5
    assert score([-1, -1, -1, -1, -1], "b") == 0.0


def test_mean_over_queries_and_companion_metrics():
    retrieved = np.array([[2, 0, 3, 1, 4],   # a: 0.5
                          [2, 0, 1, 3, 4],   # b: 1.0
                          [10, 0, 11, 12, 1]])  # h: 0.6
    labels = ["a", "b", "h"]
    assert mean_precision_at_k(retrieved, labels, INDEX_LABELS) == pytest.approx((0.5 + 1.0 + 0.6) / 3)
    assert precision_at_1(retrieved, labels, INDEX_LABELS) == pytest.approx(2 / 3)
    # AP@5: a: hits at ranks 2 and 4 -> (1/2 + 2/4) / 2; b: rank 1 -> 1; h: ranks 1,3,4 -> (1 + 2/3 + 3/4) / 5
    expected_map = ((0.5 + 0.5) / 2 + 1.0 + (1 + 2 / 3 + 3 / 4) / 5) / 3
    assert map_at_k(retrieved, labels, INDEX_LABELS) == pytest.approx(expected_map)
    assert retrieval_scores(retrieved, labels, INDEX_LABELS) == {
        "mP@5": pytest.approx(0.7), "P@1": pytest.approx(2 / 3), "mAP@5": pytest.approx(expected_map)}


def test_a_query_without_relevant_index_image_is_an_error():
    retrieved = np.array([[0, 1, 2, 3, 4], [0, 1, 2, 3, 4]])
    with pytest.raises(GuieError, match=r"1 queries have no relevant index image \(first: query 1, label 'zebra'\); "
                                        r"every query class must appear in the index"):
        mean_precision_at_k(retrieved, ["a", "zebra"], INDEX_LABELS)


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_matches_the_host_definition_on_random_cases(data):
    n_index = data.draw(st.integers(5, 30))
    index_labels = data.draw(st.lists(st.sampled_from("abcdefg"), min_size=n_index, max_size=n_index))
    present = sorted(set(index_labels))
    n_query = data.draw(st.integers(1, 8))
    query_labels = data.draw(st.lists(st.sampled_from(present), min_size=n_query, max_size=n_query))
    retrieved = np.array(data.draw(st.lists(st.lists(st.integers(-1, n_index - 1), min_size=5, max_size=5),
                                            min_size=n_query, max_size=n_query)))
    ids = [f"img{i}" for i in range(n_index)]
    predictions = {f"q{q}": [ids[j] if j >= 0 else "none" for j in retrieved[q]] for q in range(n_query)}
    solution = {f"q{q}": [ids[j] for j in range(n_index) if index_labels[j] == query_labels[q]] for q in range(n_query)}
    assert mean_precision_at_k(retrieved, query_labels, index_labels) == pytest.approx(
        host_calibrated_precision(predictions, solution))


def brute_force_knn(xb: np.ndarray, xq: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    sims = xq.astype(np.float64) @ xb.astype(np.float64).T
    ids = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(sims, ids, axis=1), ids


def unit(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.mark.parametrize("chunk", [16384, 7])
def test_faiss_knn_equals_numpy_brute_force(chunk):
    rng = np.random.default_rng(0)
    xb, xq = unit(rng, 600, 64), unit(rng, 45, 64)
    sims, ids = knn(xb, xq, k=5, chunk=chunk)
    ref_sims, ref_ids = brute_force_knn(xb, xq, 5)
    np.testing.assert_array_equal(ids, ref_ids)
    np.testing.assert_allclose(sims, ref_sims, atol=1e-5)
    # On unit vectors the ranking equals the host's Euclidean ranking.
    dist = ((xq[:, None, :].astype(np.float64) - xb[None, :, :]) ** 2).sum(-1)
    np.testing.assert_array_equal(ids, np.argsort(dist, axis=1, kind="stable")[:, :5])


def test_knn_pads_with_minus_one_when_the_index_is_small():
    rng = np.random.default_rng(1)
    xb, xq = unit(rng, 3, 8), unit(rng, 4, 8)
    _, ids = knn(xb, xq, k=5)
    np.testing.assert_array_equal(ids[:, 3:], -1)
    np.testing.assert_array_equal(np.sort(ids[:, :3], axis=1), np.tile([0, 1, 2], (4, 1)))
