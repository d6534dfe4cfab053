"""The exact k-NN every task uses: faiss on CPU, the torch block search that runs on CUDA (tested here on
CPU), and how a search picks its path, sizes its blocks and breaks ties."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from guie.retrieval import knn as knn_module
from guie.retrieval.knn import MISSING_SIMILARITY, faiss_knn, knn
from guie.retrieval.torch_search import (
    BYTES_PER_PAIR,
    MAX_QUERY_BLOCK,
    first_k,
    search_blocks,
    torch_knn,
)

CPU = torch.device("cpu")


def unit_rows(n: int, d: int = 64, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.mark.parametrize("blocks", [(157, 2003), (16, 300), (50, 7), (157, 4)])
def test_the_torch_search_finds_faiss_neighbours_whatever_the_blocks(blocks):
    xb, xq = unit_rows(2003), unit_rows(157, seed=1)  # block sizes that do not divide 2003 or 157; 4 < k
    sims, ids = faiss_knn(xb, xq, 5)
    t_sims, t_ids = torch_knn(xb, xq, 5, CPU, *blocks)
    np.testing.assert_array_equal(t_ids, ids)
    np.testing.assert_allclose(t_sims, sims, atol=1e-5)
    assert t_ids.dtype == np.int64 and t_sims.dtype == np.float32


def test_ties_go_to_the_lower_position_and_agree_with_faiss_up_to_ties():
    base = unit_rows(10)
    xb = np.concatenate([base, base, base])  # every row three times: positions i, i+10, i+20 tie exactly
    xq = base[:6]
    sims, ids = faiss_knn(xb, xq, 5)
    for blocks in ((6, 30), (4, 7), (1, 3)):
        t_sims, t_ids = torch_knn(xb, xq, 5, CPU, *blocks)
        np.testing.assert_allclose(t_sims, sims, atol=1e-6)
        for row in range(len(xq)):  # nearest: the query's own three copies, lowest position first
            assert t_ids[row, :3].tolist() == [row, row + 10, row + 20]
            assert set(ids[row, :3]) == {row, row + 10, row + 20}  # faiss: same neighbours, its own order
            # then two of the three copies of the next nearest row, again the lowest two
            nxt = int(t_ids[row, 3]) % 10
            assert t_ids[row, 3:].tolist() == [nxt, nxt + 10]
            assert {int(i) % 10 for i in ids[row, 3:]} == {nxt}


def test_first_k_takes_the_lowest_ids_among_ties_at_the_kth_place():
    sims = torch.tensor([[0.5, 0.9, 0.5, 0.5, 0.1, 0.5], [0.0, 0.0, 0.0, 0.0, 0.0, 0.0]])
    ids = torch.arange(6).expand(2, 6) + 100
    s, i = first_k(sims, ids, 3)
    assert i.tolist() == [[101, 100, 102], [100, 101, 102]]
    torch.testing.assert_close(s, torch.tensor([[0.9, 0.5, 0.5], [0.0, 0.0, 0.0]]))


def test_an_index_smaller_than_k_fills_with_minus_one_as_faiss_does():
    xb, xq = unit_rows(3), unit_rows(4, seed=2)
    sims, ids = faiss_knn(xb, xq, 5)
    for blocks in ((4, 3), (3, 2), (1, 1)):
        t_sims, t_ids = torch_knn(xb, xq, 5, CPU, *blocks)
        np.testing.assert_array_equal(t_ids, ids)
        assert (t_ids[:, 3:] == -1).all() and (t_sims[:, 3:] == MISSING_SIMILARITY).all()
        np.testing.assert_allclose(t_sims[:, :3], sims[:, :3], atol=1e-6)
    empty_sims, empty_ids = torch_knn(np.zeros((0, 64), np.float32), xq, 5, CPU, 4, 4)
    assert (empty_ids == -1).all() and empty_sims.shape == (4, 5)


def test_blocks_fit_the_memory_they_are_given():
    gib = 1 << 30
    # UnED's merged index on 40 GiB free: the index stays resident, thousands of queries per block
    qb, ib = search_blocks(1_397_126, 241_000, 64, 40 * gib)
    assert ib == 1_397_126 and 500 <= qb <= MAX_QUERY_BLOCK
    for n, q, free in ((1_397_126, 241_000, 40 * gib), (1_397_126, 241_000, gib // 4), (50_000_000, 10, 2 * gib),
                       (1000, 3, gib)):
        qb, ib = search_blocks(n, q, 64, free)
        used = ib * 64 * 4 + qb * (64 * 4 + ib * BYTES_PER_PAIR)
        assert used <= free * 0.5 and 1 <= qb <= q and 1 <= ib <= n
    qb, ib = search_blocks(50_000_000, 10, 64, 2 * gib)  # 12.8 GB of index on 2 GiB: streamed in blocks
    assert ib < 50_000_000
    with pytest.raises(ValueError, match="needs query_block and index_block"):
        torch_knn(unit_rows(3), unit_rows(2), 1, CPU)


def test_knn_takes_the_torch_path_on_cuda_for_large_searches_only(monkeypatch):
    import guie.retrieval.torch_search as torch_search

    seen = []

    def on_cpu(xb, xq, k, device, progress=False):
        seen.append((device.type, len(xq) * len(xb), progress))
        return torch_knn(xb, xq, k, CPU, 64, 1000)

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch_search, "torch_knn", on_cpu)
    monkeypatch.setattr(knn_module, "GPU_MIN_PAIRS", 300 * 2000)
    xb, xq = unit_rows(2000), unit_rows(300, seed=3)
    small = knn(xb, xq[:299], 5)  # one pair short: faiss
    assert seen == []
    np.testing.assert_array_equal(small[1], faiss_knn(xb, xq[:299], 5)[1])
    large = knn(xb, xq, 5)
    assert seen == [("cuda", 300 * 2000, False)]
    np.testing.assert_array_equal(large[1], faiss_knn(xb, xq, 5)[1])


def test_a_large_search_shows_a_progress_bar(monkeypatch, capsys):
    xb, xq = unit_rows(500), unit_rows(40, seed=4)
    knn(xb, xq, 5)
    assert "k-NN (" not in capsys.readouterr().err
    monkeypatch.setattr(knn_module, "PROGRESS_MIN_PAIRS", 40 * 500)
    knn(xb, xq, 5, chunk=16)
    assert "k-NN (40 queries x 500 index, faiss)" in capsys.readouterr().err
