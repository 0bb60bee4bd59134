"""G: for each record, the sum of the training queries that point to it (paper §3).

G_i = Σ_{j: i ∈ Y_j} q_j is the direction NUDGE moves record i in. A sparse product over
the labels: its cost is the number of labels, never the corpus size.
"""

from __future__ import annotations

import numpy as np

from nudgekit.core.relevance import Relevance


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
