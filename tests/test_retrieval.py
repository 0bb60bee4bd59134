"""Specification of nudgekit.retrieval.search: exact, blocked inner-product k-NN."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from nudgekit.evaluation.retrieval import search


def brute_force(queries: np.ndarray, corpus: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The full score matrix, sorted by (score descending, corpus row ascending)."""
    scores = np.asarray(queries, dtype=np.float32) @ np.asarray(corpus, dtype=np.float32).T
    rows = np.broadcast_to(np.arange(scores.shape[1]), scores.shape)
    order = np.lexsort((rows, -scores), axis=-1)[:, :k]
    return np.take_along_axis(scores, order, axis=1), order


def random_data(n_queries: int, n_records: int, dim: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    queries = rng.standard_normal((n_queries, dim)).astype(np.float32)
    corpus = rng.standard_normal((n_records, dim)).astype(np.float32)
    return queries, corpus


@pytest.mark.parametrize("k", [1, 5, 37, 300])
def test_search_equals_brute_force_on_random_data(k):
    queries, corpus = random_data(30, 250, 16)
    scores, indices = search(queries, corpus, k, block_size=64)
    expected_scores, expected_indices = brute_force(queries, corpus, k)
    np.testing.assert_array_equal(indices, expected_indices)
    np.testing.assert_allclose(scores, expected_scores, rtol=1e-6, atol=1e-6)


def test_search_returns_every_row_when_k_exceeds_corpus_size():
    queries, corpus = random_data(4, 10, 8)
    scores, indices = search(queries, corpus, k=25, block_size=3)
    assert scores.shape == indices.shape == (4, 10)
    np.testing.assert_array_equal(np.sort(indices, axis=1), np.tile(np.arange(10), (4, 1)))


def test_search_returns_float32_scores_and_int64_indices_sorted_descending():
    queries, corpus = random_data(5, 100, 8)
    scores, indices = search(queries.astype(np.float64), corpus, k=10)
    assert scores.dtype == np.float32 and indices.dtype == np.int64
    assert np.all(np.diff(scores, axis=1) <= 0)


def test_search_reads_a_float16_memmap_corpus(tmp_path):
    queries, corpus = random_data(20, 500, 32)
    np.save(tmp_path / "corpus.npy", corpus.astype(np.float16))
    on_disk = np.load(tmp_path / "corpus.npy", mmap_mode="r")
    scores, indices = search(queries, on_disk, k=10, block_size=128)
    expected_scores, expected_indices = brute_force(queries, corpus.astype(np.float16), 10)
    np.testing.assert_array_equal(indices, expected_indices)
    np.testing.assert_allclose(scores, expected_scores, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("block_size", [1, 7, 64, 199, 200, 10_000])
def test_search_results_are_identical_for_every_block_size(block_size):
    queries, corpus = random_data(12, 200, 8, seed=1)
    reference = search(queries, corpus, k=15, block_size=200)
    scores, indices = search(queries, corpus, k=15, block_size=block_size)
    np.testing.assert_array_equal(indices, reference[1])
    np.testing.assert_allclose(scores, reference[0], rtol=1e-6, atol=1e-6)


def test_search_breaks_score_ties_by_lower_corpus_row():
    corpus = np.array([[1.0, 0.0]] * 6 + [[2.0, 0.0]] + [[1.0, 0.0]] * 6, dtype=np.float32)
    scores, indices = search(np.array([[1.0, 0.0]]), corpus, k=4, block_size=5)
    assert indices.tolist() == [[6, 0, 1, 2]]
    assert scores.tolist() == [[2.0, 1.0, 1.0, 1.0]]


@settings(max_examples=150, deadline=None)
@given(
    data=st.data(),
    n_queries=st.integers(0, 6),
    n_records=st.integers(0, 40),
    dim=st.integers(1, 4),
    k=st.integers(1, 50),
    block_size=st.integers(1, 50),
)
def test_search_equals_brute_force_with_many_ties(data, n_queries, n_records, dim, k, block_size):
    # small integers make equal scores common, which stresses the tie-breaking
    values = st.integers(-2, 2).map(float)
    queries = data.draw(hnp.arrays(np.float32, (n_queries, dim), elements=values))
    corpus = data.draw(hnp.arrays(np.float32, (n_records, dim), elements=values))
    scores, indices = search(queries, corpus, k, block_size=block_size)
    expected_scores, expected_indices = brute_force(queries, corpus, k)
    np.testing.assert_array_equal(indices, expected_indices)
    np.testing.assert_array_equal(scores, expected_scores)


def test_search_reports_rows_done_after_each_block():
    queries, corpus = random_data(3, 25, 4)
    done: list[int] = []
    search(queries, corpus, k=2, block_size=10, progress=done.append)
    assert done == [10, 20, 25]


def test_search_peak_memory_is_a_few_query_by_block_arrays_not_the_score_matrix():
    n_queries, n_records, block_size = 200, 40_000, 1_000
    queries, corpus = random_data(n_queries, n_records, 8)
    tracemalloc.start()  # numpy reports its buffers to tracemalloc
    try:
        search(queries, corpus, k=10, block_size=block_size)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 24 * n_queries * block_size  # about 13 bytes per entry are used
    assert peak < n_queries * n_records * 4 / 5


def test_search_with_no_queries_returns_empty_results():
    _, corpus = random_data(1, 10, 4)
    scores, indices = search(np.zeros((0, 4)), corpus, k=3)
    assert scores.shape == indices.shape == (0, 3)


def test_search_rejects_dimension_mismatch_naming_both_dimensions():
    queries, corpus = random_data(2, 10, 4)
    with pytest.raises(ValueError, match=r"3 values per row but the corpus has 4"):
        search(queries[:, :3], corpus, k=1)


@pytest.mark.parametrize("k", [0, -3])
def test_search_rejects_k_below_one(k):
    queries, corpus = random_data(2, 10, 4)
    with pytest.raises(ValueError, match="k: must be at least 1"):
        search(queries, corpus, k=k)


def test_search_rejects_non_integer_k():
    queries, corpus = random_data(2, 10, 4)
    with pytest.raises(ValueError, match="k: expected an integer"):
        search(queries, corpus, k=2.5)


def test_search_rejects_block_size_below_one():
    queries, corpus = random_data(2, 10, 4)
    with pytest.raises(ValueError, match="block_size: must be at least 1"):
        search(queries, corpus, k=1, block_size=0)


def test_search_rejects_a_single_vector_query():
    queries, corpus = random_data(1, 10, 4)
    with pytest.raises(ValueError, match=r"queries: expected a 2-D matrix.*reshape\(1, -1\)"):
        search(queries[0], corpus, k=1)


def test_search_rejects_non_finite_corpus_rows_naming_the_row():
    queries, corpus = random_data(2, 10, 4)
    corpus[7, 1] = np.nan
    with pytest.raises(ValueError, match="corpus: row 7 contains NaN"):
        search(queries, corpus, k=1, block_size=3)


def test_search_rejects_non_finite_queries():
    queries, corpus = random_data(2, 10, 4)
    queries[1, 0] = np.inf
    with pytest.raises(ValueError, match="queries: contain NaN or infinite"):
        search(queries, corpus, k=1)


def test_search_agrees_with_faiss_flat_inner_product_index():
    faiss = pytest.importorskip("faiss")
    queries, corpus = random_data(50, 2_000, 32, seed=2)
    index = faiss.IndexFlatIP(32)
    index.add(corpus)
    faiss_scores, faiss_indices = index.search(queries, 20)
    scores, indices = search(queries, corpus, k=20, block_size=300)
    np.testing.assert_allclose(scores, faiss_scores, rtol=1e-5, atol=1e-5)
    # the two may order near-equal scores differently: where rows differ, scores must agree
    exact = np.einsum("qd,qkd->qk", queries.astype(np.float64), corpus[indices].astype(np.float64))
    np.testing.assert_allclose(exact, faiss_scores, rtol=1e-5, atol=1e-5)
    assert np.mean(indices == faiss_indices) > 0.99
