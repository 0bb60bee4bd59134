"""The corpus pass through an approximate nearest-neighbour index, with its recall measured.

The exact pass (:mod:`.corpus_pass`) scores every validation query against every record, so
its cost grows with records × queries. The γ search needs from the records that never move
only each query's best ``k`` scores, and an ANN index over the corpus finds those candidates
in a fraction of the time. :func:`ann_pass` returns the same :class:`PassResult`:

1. a random sample of the queries gets the exact pass (which also reads and checks every
   row and gathers the tracked records); those queries keep their exact scores;
2. every query asks the index for its best ``k + over_fetch`` rows; tracked rows, ``-1``
   and repeats are dropped, the rest re-scored exactly from the corpus vectors, the best
   ``k`` kept. A query left with fewer than ``k`` asks again with four times as many, up to
   ``max_fetch``; queries still short are scored by the exact pass;
3. on the sample, the share of queries whose exact best fixed score the index found (the
   *recall of the exact top-1*, to 1e-5) and the share of the exact top-``k`` it found.
   Below ``min_recall`` the whole pass is redone exactly (``fallback=True``) or kept with a
   warning. ``stats["pass"]`` records which pass the result is and why.

An index's scores are never used, only its candidate rows: re-scoring makes every kept
score exact, so the pass can only *miss* a fixed competitor, never invent one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np

from nudgekit.core.backend import Backend
from nudgekit.core.blocks import ArraySource, checked_rows
from nudgekit.core.corpus_pass import Advance, PassPlan, PassResult, contains, corpus_pass

#: search(queries (B, d) float32 unit rows, n) -> int64 corpus rows (B, n), -1 where none.
CandidateSearch = Callable[[np.ndarray, int], np.ndarray]

#: Below this recall of the exact top-1 (on the sample) the pass is redone exactly.
MIN_RECALL = 0.9
#: Scores this close count as the same (the index's candidates are re-scored by a
#: different product than the exact pass's, so equal scores differ by rounding).
SCORE_TOLERANCE = 1e-5


def ann_pass(
    source: ArraySource,
    plan: PassPlan,
    search: CandidateSearch,
    *,
    over_fetch: int = 32,
    max_fetch: int = 4096,
    sample: int = 256,
    min_recall: float = MIN_RECALL,
    fallback: bool = True,
    seed: int = 0,
    device: str | None = None,
    block_rows: int = 8192,
    query_block: int = 1024,
    progress: Advance | None = None,
) -> PassResult:
    """The corpus pass with each query's fixed top-``k`` from ``search`` (module docstring).

    ``source`` must gather rows (``take``); ``plan`` names tracked records by row.
    """
    if plan.by_id or not hasattr(source, "take"):
        raise ValueError("the approximate pass reads a corpus by row (a corpus.npy dataset)")
    if plan.queries is None:  # γ fixed: nothing to search
        return corpus_pass(source, plan, device=device, block_rows=block_rows, progress=progress)
    if not 0.0 <= min_recall <= 1.0:
        raise ValueError(f"min_recall must be in [0, 1], got {min_recall!r}")
    queries = np.ascontiguousarray(plan.queries, dtype=np.float32)
    n_queries, k = len(queries), plan.k
    tracked = np.asarray(plan.tracked_rows, dtype=np.int64)
    chosen = np.sort(
        np.random.default_rng(seed).choice(n_queries, size=min(sample, n_queries), replace=False)
    )
    # the exact pass for the sample: reads every row once (checks it, gathers the tracked)
    exact = corpus_pass(
        source, replace(plan, queries=queries[chosen]), device=device,
        block_rows=block_rows, progress=progress,
    )  # fmt: skip
    fixed = np.empty((n_queries, k), dtype=np.float32)
    short: list[np.ndarray] = []
    limit = source.n_records - len(tracked)
    for q0 in range(0, n_queries, query_block):
        part = np.arange(q0, min(q0 + query_block, n_queries))
        best, missing = _search_block(
            source, queries[part], search, tracked, k, over_fetch, max_fetch, limit
        )
        fixed[part] = best
        short.append(part[missing])
    found = fixed[chosen]
    recall_1, recall_k = _recall(found, exact.fixed)  # type: ignore[arg-type]
    info: dict[str, Any] = {
        "kind": "ann",
        "recall_top1": recall_1,
        "k": k,
        "recall_at_k": recall_k,
        "n_sample": len(chosen),
        "min_recall": min_recall,
        "over_fetch": over_fetch,
        "fell_back": False,
        "rows_checked": "all",
    }
    if recall_1 < min_recall:
        message = (
            f"the approximate pass found the exact best fixed score for {recall_1:.1%} of "
            f"{len(chosen)} sampled queries, below {min_recall:.0%}"
        )
        if fallback:
            result = corpus_pass(source, plan, device=device, block_rows=block_rows)
            result.stats["pass"] = {
                **info, "kind": "exact", "fell_back": True,
                "warning": message + ": the exact pass was used instead",
            }  # fmt: skip
            return result
        info["warning"] = message + ": γ may be off (raise nprobe, or use --pass exact)"
    fixed[chosen] = exact.fixed  # type: ignore[index]
    rest = np.setdiff1d(np.concatenate(short), chosen)
    if len(rest):
        # too few candidates from the index (a small corpus, a sparse probe): exact for these
        again = corpus_pass(source, replace(plan, queries=queries[rest]), device=device,
                            block_rows=block_rows)  # fmt: skip
        fixed[rest] = again.fixed  # type: ignore[index]
    info["n_exact_queries"] = len(chosen) + len(rest)
    fixed = -np.sort(-fixed, axis=1)
    stats = {**exact.stats, "engine": "ann", "pass": info}
    return PassResult(fixed, exact.rows, None, exact.vectors, exact.n_rows, stats)


def _search_block(
    source: ArraySource,
    queries: np.ndarray,
    search: CandidateSearch,
    tracked: np.ndarray,
    k: int,
    over_fetch: int,
    max_fetch: int,
    limit: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Best ``k`` exact fixed scores of each query among its candidates; which are short."""
    best = np.full((len(queries), k), -np.inf, dtype=np.float32)
    todo = np.arange(len(queries))
    n = min(k + over_fetch, source.n_records)
    while len(todo):
        rows = np.asarray(search(queries[todo], n), dtype=np.int64).reshape(len(todo), -1)
        scores = _rescore(source, queries[todo], rows, tracked)
        count = np.isfinite(scores).sum(axis=1)
        # the index ran out (it returned -1) or holds no more: asking again will not help
        exhausted = (rows < 0).any(axis=1) | (n >= source.n_records)
        done = (count >= min(k, limit)) | exhausted | (n >= max_fetch)
        top = Backend().top_k_values(scores, k) if scores.shape[1] >= k else scores
        best[todo[done], : top.shape[1]] = top[done]
        # a query whose candidates ran out before k stays short: the exact pass scores it
        complete = count[done] >= min(k, limit)
        best[todo[done][~complete]] = -np.inf
        todo = todo[~done]
        n = min(4 * n, max_fetch, source.n_records)
    short = np.isneginf(best[:, min(k, max(limit, 1)) - 1])
    return best, short


def _rescore(
    source: ArraySource, queries: np.ndarray, rows: np.ndarray, tracked: np.ndarray
) -> np.ndarray:
    """Exact scores of each query's candidate rows; -inf for tracked, missing or repeated."""
    inside = contains(tracked, rows.ravel()).reshape(rows.shape)
    valid = (rows >= 0) & (rows < source.n_records) & ~inside
    order = np.argsort(rows, axis=1, kind="stable")
    ranked = np.take_along_axis(rows, order, axis=1)
    repeat = np.zeros_like(valid)
    repeat[:, 1:] = ranked[:, 1:] == ranked[:, :-1]
    np.put_along_axis(valid, order, np.take_along_axis(valid, order, axis=1) & ~repeat, axis=1)
    scores = np.full(rows.shape, -np.inf, dtype=np.float32)
    if not valid.any():
        return scores
    unique, where = np.unique(rows[valid], return_inverse=True)
    raw, norms = checked_rows(source.take(unique), source)
    vectors = raw / norms
    query_of = np.nonzero(valid)[0]
    scores[valid] = np.einsum("ij,ij->i", queries[query_of], vectors[where])
    return scores


def _recall(found: np.ndarray, exact: np.ndarray) -> tuple[float, float]:
    """Share of queries whose exact top-1 was found; share of the exact top-k found."""
    if len(exact) == 0:
        return 1.0, 1.0
    ann = -np.sort(-found, axis=1)
    top1 = ann[:, 0] >= exact[:, 0] - SCORE_TOLERANCE
    finite = np.isfinite(exact)
    # the index's scores are true scores of distinct rows: as many at or above the exact
    # k-th as there are, that many of the exact top k were found
    kth = np.where(finite, exact, np.inf).min(axis=1, keepdims=True)
    hits = np.minimum((ann >= kth - SCORE_TOLERANCE).sum(axis=1), finite.sum(axis=1))
    return float(top1.mean()), float(hits.sum() / max(int(finite.sum()), 1))
