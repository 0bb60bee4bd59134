"""Specification of nudgekit.metrics: IR metrics of ranked lists against graded relevance."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nudgekit.core import Relevance
from nudgekit.evaluation.metrics import (
    evaluate,
    per_query_ndcg,
    relevant_ranks,
    retrieval_metrics,
)
from nudgekit.evaluation.retrieval import search

METRICS = ("accuracy", "precision", "recall", "r_cap", "mrr", "map", "ndcg")


def one_query(relevant: dict[int, float], n_records: int = 10) -> Relevance:
    records = list(relevant)
    return Relevance.from_coo(
        np.zeros(len(records)), records, 1, n_records, list(relevant.values())
    )


# --- hand-computed examples -------------------------------------------------------------


def test_ndcg_uses_graded_gains_over_log2_rank_plus_one():
    relevance = one_query({0: 3.0, 1: 2.0, 2: 1.0})
    m = retrieval_metrics(np.array([[2, 5, 0]]), relevance, ks=[3])
    dcg = 1 / math.log2(2) + 0 + 3 / math.log2(4)
    ideal = 3 / math.log2(2) + 2 / math.log2(3) + 1 / math.log2(4)
    assert m["ndcg@3"] == pytest.approx(dcg / ideal)


def test_ndcg_ideal_list_includes_relevant_records_that_were_not_retrieved():
    relevance = one_query({0: 1.0, 1: 1.0})
    m = retrieval_metrics(np.array([[0, 5]]), relevance, ks=[2])
    assert m["ndcg@2"] == pytest.approx(1 / (1 + 1 / math.log2(3)))


def test_ndcg_ideal_list_is_cut_at_k():
    relevance = one_query({0: 1.0, 1: 1.0, 2: 1.0})
    m = retrieval_metrics(np.array([[0, 9]]), relevance, ks=[1])
    assert m["ndcg@1"] == 1.0


def test_recall_divides_by_all_relevant_while_r_cap_caps_at_k():
    relevance = one_query({0: 1.0, 1: 1.0, 2: 1.0, 3: 1.0})
    m = retrieval_metrics(np.array([[1, 3, 7]]), relevance, ks=[2])
    assert m["recall@2"] == 0.5
    assert m["r_cap@2"] == 1.0


def test_mrr_is_reciprocal_rank_of_first_hit_within_k():
    relevance = one_query({4: 1.0, 5: 1.0})
    m = retrieval_metrics(np.array([[0, 1, 4, 5]]), relevance, ks=[2, 4])
    assert m["mrr@4"] == pytest.approx(1 / 3)
    assert m["mrr@2"] == 0.0


def test_map_sums_precision_at_each_hit_over_min_of_k_and_relevant():
    relevance = one_query({0: 1.0, 2: 1.0, 8: 1.0})
    m = retrieval_metrics(np.array([[0, 1, 2, 3]]), relevance, ks=[2, 4])
    assert m["map@4"] == pytest.approx((1 / 1 + 2 / 3) / 3)
    assert m["map@2"] == pytest.approx((1 / 1) / 2)


def test_accuracy_and_precision_count_hits_in_top_k():
    relevance = Relevance.from_lists([[3], [0, 1]], n_records=10)
    m = retrieval_metrics(np.array([[5, 3], [0, 1]]), relevance, ks=[1, 2])
    assert m["accuracy@1"] == 0.5 and m["accuracy@2"] == 1.0
    assert m["precision@1"] == 0.5 and m["precision@2"] == pytest.approx((1 / 2 + 1) / 2)


def test_metrics_are_averaged_over_queries_with_a_relevant_record_only():
    labelled = Relevance.from_lists([[0], [1]], n_records=5)
    with_unlabelled = Relevance.from_lists([[0], [], [1]], n_records=5)
    m = retrieval_metrics(np.array([[0, 2], [4, 3], [2, 1]]), with_unlabelled, ks=[2])
    assert m == retrieval_metrics(np.array([[0, 2], [2, 1]]), labelled, ks=[2])
    assert m["n_queries"] == 2


def test_metrics_at_k_beyond_the_retrieved_lists_use_the_rows_there_are():
    relevance = one_query({0: 1.0, 1: 1.0, 2: 1.0})
    m = retrieval_metrics(np.array([[0, 7]]), relevance, ks=[5])
    assert m["recall@5"] == pytest.approx(1 / 3)
    assert m["r_cap@5"] == pytest.approx(1 / 3)
    assert m["precision@5"] == pytest.approx(1 / 5)


def test_negative_indices_are_empty_slots_not_hits():
    relevance = one_query({0: 1.0})
    m = retrieval_metrics(np.array([[-1, 0, -1]]), relevance, ks=[3])
    assert m["mrr@3"] == 0.5


def test_result_has_every_metric_at_every_k_and_the_query_count():
    m = retrieval_metrics(np.array([[0]]), one_query({0: 1.0}), ks=(10, 1, 10))
    assert set(m) == {f"{name}@{k}" for name in METRICS for k in (1, 10)} | {"n_queries"}


def test_metrics_reject_relevance_without_any_relevant_record():
    with pytest.raises(ValueError, match="no query has a relevant record"):
        retrieval_metrics(np.array([[0], [1]]), Relevance.from_lists([[], []], 3))


def test_metrics_reject_a_row_count_different_from_the_relevance():
    with pytest.raises(ValueError, match="2 rows but the relevance covers 1 queries"):
        retrieval_metrics(np.array([[0], [1]]), one_query({0: 1.0}))


def test_metrics_reject_indices_outside_the_corpus():
    with pytest.raises(ValueError, match="row 10 is outside the corpus of 10 records"):
        retrieval_metrics(np.array([[10]]), one_query({0: 1.0}))


def test_metrics_reject_a_record_retrieved_twice():
    with pytest.raises(ValueError, match="same record twice"):
        retrieval_metrics(np.array([[0, 0]]), one_query({0: 1.0}))


def test_metrics_reject_cutoffs_below_one():
    with pytest.raises(ValueError, match="ks: must be at least 1"):
        retrieval_metrics(np.array([[0]]), one_query({0: 1.0}), ks=[0, 1])


# --- properties on random rankings ------------------------------------------------------


@st.composite
def ranked_lists(draw):
    """(indices, relevance) with at least one labelled query; grades 1-3, lists 0-12 long."""
    n_records = draw(st.integers(1, 20))
    n_queries = draw(st.integers(1, 6))
    records = st.lists(st.integers(0, n_records - 1), max_size=6, unique=True)
    rows = [draw(records) for _ in range(n_queries)]
    if not any(rows):
        rows[0] = [draw(st.integers(0, n_records - 1))]
    grades = [[draw(st.sampled_from([1.0, 2.0, 3.0])) for _ in row] for row in rows]
    query = np.repeat(np.arange(n_queries), [len(r) for r in rows])
    relevance = Relevance.from_coo(
        query, np.concatenate(rows), n_queries, n_records, np.concatenate(grades)
    )
    length = draw(st.integers(0, min(n_records, 12)))
    indices = np.stack(
        [draw(st.permutations(range(n_records)))[:length] for _ in range(n_queries)]
    ).reshape(n_queries, length)
    return indices, relevance


def reference_metrics(indices: np.ndarray, relevance: Relevance, k: int) -> dict[str, float]:
    """The definitions written out one query at a time, for comparison."""
    sums = dict.fromkeys(METRICS, 0.0)
    n = 0
    for q in range(relevance.n_queries):
        lo, hi = relevance.indptr[q], relevance.indptr[q + 1]
        grade = dict(
            zip(relevance.indices[lo:hi].tolist(), relevance.grades[lo:hi].tolist(), strict=True)
        )
        if not grade:
            continue
        n += 1
        top = [int(i) for i in indices[q, :k]]
        hits = [rank for rank, i in enumerate(top, 1) if i in grade]
        sums["accuracy"] += bool(hits)
        sums["precision"] += len(hits) / k
        sums["recall"] += len(hits) / len(grade)
        sums["r_cap"] += len(hits) / min(len(grade), k)
        sums["mrr"] += 1 / hits[0] if hits else 0.0
        sums["map"] += sum((j + 1) / rank for j, rank in enumerate(hits)) / min(len(grade), k)
        dcg = sum(grade.get(i, 0.0) / math.log2(rank + 1) for rank, i in enumerate(top, 1))
        ideal = sorted(grade.values(), reverse=True)[:k]
        sums["ndcg"] += dcg / sum(g / math.log2(rank + 1) for rank, g in enumerate(ideal, 1))
    return {name: total / n for name, total in sums.items()}


@settings(max_examples=150, deadline=None)
@given(ranked_lists(), st.integers(1, 15))
def test_vectorised_metrics_equal_the_per_query_definitions(case, k):
    indices, relevance = case
    m = retrieval_metrics(indices, relevance, ks=[k])
    for name, value in reference_metrics(indices, relevance, k).items():
        assert m[f"{name}@{k}"] == pytest.approx(value, abs=1e-12), name


@settings(max_examples=100, deadline=None)
@given(ranked_lists())
def test_every_metric_lies_between_zero_and_one(case):
    indices, relevance = case
    m = retrieval_metrics(indices, relevance, ks=[1, 3, 10])
    assert all(0.0 <= v <= 1.0 for key, v in m.items() if key != "n_queries")


@settings(max_examples=100, deadline=None)
@given(ranked_lists())
def test_perfect_ranking_scores_one(case):
    _, relevance = case
    # each query's relevant records first, by descending grade, then the rest in row order
    query, n = relevance.query_of_entry(), relevance.n_records
    order = np.lexsort((-relevance.grades, query))
    indices = np.empty((relevance.n_queries, n), dtype=np.int64)
    for q in range(relevance.n_queries):  # test-side construction only
        relevant = relevance.indices[order][query[order] == q]
        indices[q] = np.concatenate([relevant, np.setdiff1d(np.arange(n), relevant)])
    m = retrieval_metrics(indices, relevance, ks=[1, 2, 5])
    for k in (1, 2, 5):
        for name in ("ndcg", "r_cap", "mrr", "map", "accuracy"):
            assert m[f"{name}@{k}"] == pytest.approx(1.0), f"{name}@{k}"


@settings(max_examples=100, deadline=None)
@given(ranked_lists())
def test_recall_never_decreases_with_k(case):
    indices, relevance = case
    ks = list(range(1, 14))
    m = retrieval_metrics(indices, relevance, ks=ks)
    recalls = [m[f"recall@{k}"] for k in ks]
    assert recalls == sorted(recalls)


# --- evaluate ---------------------------------------------------------------------------


def _embedded(seed: int = 0):
    rng = np.random.default_rng(seed)
    corpus = rng.standard_normal((60, 8)).astype(np.float32)
    queries = rng.standard_normal((12, 8)).astype(np.float32)
    rows = [rng.choice(60, size=rng.integers(0, 4), replace=False).tolist() for _ in range(12)]
    return queries, corpus, Relevance.from_lists(rows, n_records=60)


def test_evaluate_scores_an_exact_search_at_k_and_extra_ks():
    queries, corpus, relevance = _embedded()
    _, indices = search(queries, corpus, k=20)
    m = evaluate(queries, corpus, relevance, k=5, extra_ks=(1, 20), block_size=16)
    assert m == retrieval_metrics(indices, relevance, ks=(1, 5, 20))


def test_evaluate_rejects_relevance_for_another_corpus():
    queries, corpus, relevance = _embedded()
    with pytest.raises(ValueError, match="60 records but the corpus has 59 rows"):
        evaluate(queries, corpus[:59], relevance)


def test_evaluate_rejects_relevance_for_other_queries():
    queries, corpus, relevance = _embedded()
    with pytest.raises(ValueError, match="covers 12 queries but 11 were given"):
        evaluate(queries[:11], corpus, relevance)


@settings(max_examples=150, deadline=None)
@given(ranked_lists(), st.integers(1, 15))
def test_per_query_ndcg_is_each_querys_definition_and_averages_to_the_metric(case, k):
    indices, relevance = case
    got = per_query_ndcg(indices, relevance, k)
    for q in range(relevance.n_queries):
        one = relevance.take(np.array([q]))
        if one.nnz == 0:
            assert math.isnan(got[q])
        else:
            assert got[q] == pytest.approx(reference_metrics(indices[q : q + 1], one, k)["ndcg"])
    assert np.nanmean(got) == pytest.approx(
        retrieval_metrics(indices, relevance, ks=[k])[f"ndcg@{k}"]
    )


@settings(max_examples=150, deadline=None)
@given(ranked_lists())
def test_relevant_ranks_are_each_labelled_records_place_in_its_list(case):
    indices, relevance = case
    got = relevant_ranks(indices, relevance)
    query = relevance.query_of_entry()
    for entry, (q, record) in enumerate(zip(query, relevance.indices, strict=True)):
        listed = [int(i) for i in indices[q]]
        assert got[entry] == (listed.index(record) + 1 if record in listed else 0)
