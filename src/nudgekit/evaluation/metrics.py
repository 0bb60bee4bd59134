"""Ranking metrics of k-NN results against graded relevance labels.

Names follow sentence-transformers' ``InformationRetrievalEvaluator`` without its score-function
prefix (``ndcg@10``, ``recall@10``, ``mrr@10``, ``map@100``, ...), plus ``r_cap@k``, the recall
of the NUDGE paper, whose denominator is capped at ``k``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from nudgekit.core import Relevance
from nudgekit.evaluation.retrieval import positive_int, search

__all__ = ["evaluate", "per_query_ndcg", "relevant_ranks", "retrieval_metrics"]


def retrieval_metrics(
    indices: np.ndarray, relevance: Relevance, ks: Sequence[int] = (1, 10, 100)
) -> dict[str, float]:
    """Mean ranking metrics of retrieved lists, over the queries that have a relevant record.

    For each ``k`` in ``ks``, with ``hits`` the relevant records among the first ``k``
    retrieved and ``R`` the relevant records of the query:

    - ``accuracy@k``: 1 if ``hits`` is not empty;
    - ``precision@k``: ``|hits| / k``;
    - ``recall@k``: ``|hits| / |R|``;
    - ``r_cap@k``: ``|hits| / min(|R|, k)`` (the NUDGE paper's recall);
    - ``mrr@k``: 1 / rank of the first hit (0 without one);
    - ``map@k``: sum of precision@rank at each hit, over ``min(|R|, k)``;
    - ``ndcg@k``: DCG with gain ``grade / log2(rank + 1)`` over the DCG of the ideal list,
      all of ``R`` by descending grade, cut at ``k``.

    Parameters
    ----------
    indices : int array, shape (n_queries, K)
        ``indices[q]`` is the ranked list of corpus rows retrieved for query ``q``. Negative
        entries mark empty slots (FAISS pads with -1). When ``K < k`` the metrics at ``k``
        use the ``K`` rows there are (missing ranks count as misses).
    relevance : Relevance
        Graded relevance of the same queries, in the same order.
    ks : sequence of int, default (1, 10, 100)
        Cut-offs, each >= 1.

    Returns
    -------
    dict
        ``"<metric>@<k>"`` for every metric and cut-off, and ``"n_queries"``, the number of
        queries averaged over.

    Raises
    ------
    ValueError
        If shapes disagree, an index points outside the corpus, a row repeats a record, a
        cut-off is below 1, or no query has a relevant record.

    Examples
    --------
    >>> rel = Relevance.from_lists([[2], [0, 1]], n_records=3)
    >>> m = retrieval_metrics(np.array([[2, 0], [1, 2]]), rel, ks=[1, 2])
    >>> m["recall@2"], m["r_cap@1"], m["mrr@2"]
    (0.75, 1.0, 1.0)
    """
    cutoffs = sorted({positive_int(k, "ks") for k in ks})
    if not cutoffs:
        raise ValueError("ks: give at least one cut-off")
    indices = _check_indices(indices, relevance)
    keep = relevance.counts() > 0
    if not keep.any():
        raise ValueError("relevance: no query has a relevant record, so the metrics are undefined")
    if not keep.all():
        indices, relevance = indices[keep], relevance.take(np.flatnonzero(keep))

    gains = _retrieved_grades(indices, relevance)
    hit = gains > 0
    n_relevant = relevance.counts()
    n_queries, n_retrieved = indices.shape
    ranks = np.arange(1, n_retrieved + 1)
    # running sums over ranks, with a leading 0 column: column c sums the first c retrieved
    dcg = _cumsum0(gains / np.log2(ranks + 1))
    n_hits = _cumsum0(hit)
    precision_sum = _cumsum0(np.where(hit, n_hits[:, 1:] / ranks, 0.0))  # for MAP
    # 0-based rank of each query's first hit; a sentinel column makes it n_retrieved if none
    first_hit = np.argmax(np.concatenate([hit, np.ones((n_queries, 1), bool)], axis=1), axis=1)

    # ideal DCG: each query's grades in descending order, the one at within-query rank r
    # discounted by 1/log2(r + 2); only ranks below k count at cut-off k
    query = relevance.query_of_entry()
    order = np.lexsort((-relevance.grades, query))
    query, grade = query[order], relevance.grades[order]
    ideal_rank = np.arange(relevance.nnz) - relevance.indptr[query]
    ideal_gain = grade / np.log2(ideal_rank + 2)

    out: dict[str, float] = {}
    for k in cutoffs:
        seen = min(k, n_retrieved)
        hits_k = n_hits[:, seen]
        capped = np.minimum(n_relevant, k)
        idcg = np.bincount(query, weights=ideal_gain * (ideal_rank < k), minlength=n_queries)
        out[f"accuracy@{k}"] = float(np.mean(hits_k > 0))
        out[f"precision@{k}"] = float(np.mean(hits_k / k))
        out[f"recall@{k}"] = float(np.mean(hits_k / n_relevant))
        out[f"r_cap@{k}"] = float(np.mean(hits_k / capped))
        out[f"mrr@{k}"] = float(np.mean(np.where(first_hit < seen, 1.0 / (first_hit + 1), 0.0)))
        out[f"map@{k}"] = float(np.mean(precision_sum[:, seen] / capped))
        out[f"ndcg@{k}"] = float(np.mean(dcg[:, seen] / idcg))
    out["n_queries"] = int(n_queries)
    return out


def per_query_ndcg(indices: np.ndarray, relevance: Relevance, k: int = 10) -> np.ndarray:
    """NDCG@k of each query, the values :func:`retrieval_metrics` averages (float64, NaN
    for a query without a relevant record)."""
    indices = _check_indices(indices, relevance)
    seen = min(positive_int(k, "k"), indices.shape[1])
    gains = _retrieved_grades(indices[:, :seen], relevance)
    dcg = (gains / np.log2(np.arange(2, seen + 2))).sum(axis=1)
    ideal = relevance.ideal_dcg(k)
    out = np.full(relevance.n_queries, np.nan)
    np.divide(dcg, ideal, out=out, where=ideal > 0)
    return out


def relevant_ranks(indices: np.ndarray, relevance: Relevance) -> np.ndarray:
    """The 1-based rank of every labelled record in its query's retrieved list, 0 where it
    was not retrieved; one value per relevance entry, in CSR order (int64)."""
    indices = _check_indices(indices, relevance)
    if indices.shape[1] == 0:  # nothing retrieved
        return np.zeros(relevance.nnz, dtype=np.int64)
    # entries × retrieved: bounded by the labels, never queries × corpus
    match = indices[relevance.query_of_entry()] == relevance.indices[:, None]
    return np.where(match.any(axis=1), match.argmax(axis=1) + 1, 0).astype(np.int64)


def evaluate(
    queries: np.ndarray,
    corpus: np.ndarray,
    relevance: Relevance,
    *,
    k: int = 10,
    extra_ks: Sequence[int] = (1, 100),
    block_size: int = 16384,
) -> dict[str, float]:
    """Search the corpus exactly with each query and score the ranking.

    Parameters
    ----------
    queries : array, shape (n_queries, dim)
        Query embeddings.
    corpus : array or np.memmap, shape (n_records, dim)
        Record embeddings (float16 or float32).
    relevance : Relevance
        Relevance of each query over the corpus rows.
    k : int, default 10
        Main cut-off.
    extra_ks : sequence of int, default (1, 100)
        Further cut-offs; the search retrieves ``max(k, *extra_ks)`` rows per query.
    block_size : int, default 16384
        Corpus rows scored per step of :func:`nudgekit.retrieval.search`.

    Returns
    -------
    dict
        The metrics of :func:`retrieval_metrics` at every cut-off.

    Examples
    --------
    >>> corpus = np.eye(3, dtype=np.float32)
    >>> rel = Relevance.from_lists([[1], [2]], n_records=3)
    >>> m = evaluate(np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]]), corpus, rel, k=1, extra_ks=())
    >>> m["ndcg@1"], m["recall@1"], m["n_queries"]
    (0.5, 0.5, 2)
    """
    cutoffs = sorted({positive_int(c, "k/extra_ks") for c in (k, *extra_ks)})
    if len(queries) != relevance.n_queries:
        raise ValueError(
            f"relevance: covers {relevance.n_queries} queries but {len(queries)} were given"
        )
    if len(corpus) != relevance.n_records:
        raise ValueError(
            f"relevance: points into {relevance.n_records} records but the corpus has "
            f"{len(corpus)} rows"
        )
    # queries without a relevant record are left out of the metrics: don't search for them
    keep = np.flatnonzero(relevance.counts() > 0)
    if len(keep) < relevance.n_queries:
        queries, relevance = np.asarray(queries)[keep], relevance.take(keep)
    _, indices = search(queries, corpus, max(cutoffs), block_size=block_size)
    return retrieval_metrics(indices, relevance, cutoffs)


def _retrieved_grades(indices: np.ndarray, relevance: Relevance) -> np.ndarray:
    """Grade of every retrieved record (0 if not relevant), looked up in the sparse labels.

    Each (query, record) pair becomes one int64 key ``query * n_records + record``; the CSR
    entries, sorted by query then record, give sorted keys to binary-search.
    """
    n_records = max(relevance.n_records, 1)
    keys = relevance.query_of_entry() * n_records + relevance.indices
    grades = relevance.grades
    if np.any(keys[1:] <= keys[:-1]):  # Relevance built by hand, not via from_coo
        order = np.argsort(keys, kind="stable")
        keys, grades = keys[order], grades[order]
    wanted = np.arange(indices.shape[0], dtype=np.int64)[:, None] * n_records + indices
    if not len(keys):
        return np.zeros(indices.shape)
    pos = np.minimum(np.searchsorted(keys, wanted), len(keys) - 1)
    found = (keys[pos] == wanted) & (indices >= 0)
    return np.where(found, grades[pos], 0.0)


def _cumsum0(values: np.ndarray) -> np.ndarray:
    """Cumulative sums along rows with a leading zero column (so column c sums c entries)."""
    out = np.zeros((values.shape[0], values.shape[1] + 1))
    np.cumsum(values, axis=1, out=out[:, 1:])
    return out


def _check_indices(indices: np.ndarray, relevance: Relevance) -> np.ndarray:
    indices = np.asarray(indices)
    if indices.ndim != 2:
        raise ValueError(
            f"indices: expected a 2-D matrix (queries × retrieved), got shape {indices.shape}"
        )
    if indices.size and not np.issubdtype(indices.dtype, np.integer):
        raise ValueError(f"indices: expected integers, got dtype {indices.dtype}")
    indices = indices.astype(np.int64, copy=False)
    if indices.shape[0] != relevance.n_queries:
        raise ValueError(
            f"indices: has {indices.shape[0]} rows but the relevance covers "
            f"{relevance.n_queries} queries"
        )
    if indices.size and indices.max() >= relevance.n_records:
        raise ValueError(
            f"indices: row {int(indices.max())} is outside the corpus of "
            f"{relevance.n_records} records"
        )
    # a repeated record would be counted twice and push recall above 1
    ordered = np.sort(indices, axis=1)
    if np.any((ordered[:, 1:] == ordered[:, :-1]) & (ordered[:, 1:] >= 0)):
        raise ValueError("indices: a query retrieves the same record twice")
    return indices
