"""The two pieces of NUDGE that touch data at scale: G, and one pass over the corpus.

* :func:`query_sums` — G_i = Σ_{j: i ∈ Y_j} q_j, the sum of the training queries that
  record i answers (the direction NUDGE moves record i in; paper §3, eq. for G).
* :func:`top_k_excluding` — for each validation query, its ``k`` best scores among the
  records that NUDGE leaves alone. Those records never move, so this is all the
  validation search ever needs from them: one blocked pass, never repeated.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from nudgekit.core._backend import Backend
from nudgekit.core._checks import check_rows
from nudgekit.core._relevance import Relevance

Progress = Callable[[int], None]


def query_sums(
    queries: np.ndarray, relevance: Relevance, *, block_records: int = 16384
) -> tuple[np.ndarray, np.ndarray]:
    """G for the records some training query points to.

    Returns ``(rows, G)``: the sorted corpus rows that answer at least one query and, for
    each, the sum of those queries (float32, shape ``(len(rows), d)``). A sparse product:
    the work is proportional to the number of labels, not to the corpus. Sums run in
    float64, ``block_records`` records at a time, so working memory stays bounded.
    """
    query = relevance.query_of_entry()
    order = np.argsort(relevance.indices, kind="stable")
    records = relevance.indices[order]
    if len(records) == 0:
        return np.empty(0, dtype=np.int64), np.empty((0, queries.shape[1]), dtype=np.float32)
    starts = np.flatnonzero(np.r_[True, records[1:] != records[:-1]])
    bounds = np.r_[starts, len(records)]
    sums = np.empty((len(starts), queries.shape[1]), dtype=np.float32)
    for r0 in range(0, len(starts), block_records):
        r1 = min(r0 + block_records, len(starts))
        lo, hi = bounds[r0], bounds[r1]
        part = queries[query[order[lo:hi]]]
        sums[r0:r1] = np.add.reduceat(part, starts[r0:r1] - lo, axis=0, dtype=np.float64)
    return records[starts], sums


def normalized_rows(corpus: np.ndarray, rows: np.ndarray, name: str = "corpus") -> np.ndarray:
    """Corpus rows ``rows`` (sorted), checked and L2-normalised, as float32."""
    block = np.array(corpus[rows], dtype=np.float32).reshape(len(rows), corpus.shape[1])
    block /= check_rows(block, name, rows=rows)[:, None].astype(np.float32)
    return block


def top_k_excluding(
    xp: Backend,
    queries: np.ndarray,
    corpus: np.ndarray,
    excluded: np.ndarray,
    k: int,
    *,
    block_rows: int = 8192,
    query_block: int = 2048,
    progress: Progress | None = None,
    name: str = "corpus",
) -> np.ndarray:
    """The ``k`` best scores of each query among the L2-normalised corpus rows not excluded.

    Parameters
    ----------
    xp : Backend
        Where the products run.
    queries : float32 array, shape (V, d)
    corpus : array-like, shape (N, d)
        float16/32, may be a read-only ``np.memmap``; read once, block by block. Each block
        is checked (NaN/inf, all-zero rows) as it is read.
    excluded : int array
        Sorted corpus rows to leave out (the records NUDGE may move or that answer a query).
    k : int
    block_rows, query_block : int
        Peak working memory is about ``block_rows × (d + query_block)`` floats.

    Returns
    -------
    float32 array, shape (V, k)
        Scores sorted in descending order; ``-inf`` where fewer than ``k`` rows remain.
    """
    n, n_queries = corpus.shape[0], queries.shape[0]
    q = xp.asarray(queries)
    best = xp.full((n_queries, k), -np.inf)
    for start in range(0, n, block_rows):
        stop = min(start + block_rows, n)
        # a float32 corpus (memory map or not) is read in place: one copy per block
        raw = np.asarray(corpus[start:stop], dtype=np.float32)
        norms = check_rows(raw, name, offset=start)[:, None].astype(np.float32)
        lo, hi = np.searchsorted(excluded, [start, stop])
        if hi > lo:
            # dropping the excluded rows before the product is much cheaper than masking
            # their columns in every (queries × block) score matrix afterwards
            keep = np.ones(stop - start, dtype=bool)
            keep[excluded[lo:hi] - start] = False
            rows = raw[keep]
            rows /= norms[keep]
        else:
            rows = raw / norms
        merge_top_k(xp, q, rows, best, query_block)
        if progress is not None:
            progress(stop - start)
    out = xp.to_numpy(best)
    return -np.sort(-out, axis=1)


def merge_top_k(xp: Backend, queries: Any, rows: np.ndarray, best: Any, query_block: int) -> None:
    """Merge the scores of ``rows`` (normalised, float32) into ``best`` (V × k), in place.

    ``queries`` and ``best`` live on the backend; ``best`` keeps each query's ``k`` best
    scores so far, unsorted. Query blocks bound the (block × rows) score matrix.
    """
    if len(rows) == 0:
        return
    x_t = xp.asarray(rows).T
    k = best.shape[1]
    for q0 in range(0, queries.shape[0], query_block):
        part = slice(q0, q0 + query_block)
        scores = queries[part] @ x_t
        if k == 1:
            best[part, 0] = xp.maximum(best[part, 0], xp.amax(scores, axis=1))
        else:
            best[part] = xp.top_k_values(xp.concat([best[part], scores], axis=1), k)
