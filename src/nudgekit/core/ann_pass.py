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

:func:`ivf_pass` is the same pass for an IVF partition (:class:`InvertedLists`: centroids
and each list's rows), done list by list: each list's rows are read once and scored
against every query that probes the list and every sampled query in one matrix product,
so the probes run at BLAS speed and the sample's exact pass costs no second read.
:func:`streamed_candidate_pass` is the pass for a source read only in order (a store):
the candidates, given up front, are scored as their rows go by, in the sample's read.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from nudgekit.core.backend import Backend, get_backend
from nudgekit.core.blocks import ArraySource, Block, BlockSource, checked_rows, normalised_rows
from nudgekit.core.corpus_pass import (
    Advance,
    BlockScanner,
    PassCollector,
    PassPlan,
    PassResult,
    contains,
    corpus_pass,
    merge_top_k,
)

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
    queries, chosen = _queries_and_sample(plan, min_recall, sample, seed)
    n_queries, k = len(queries), plan.k
    tracked = np.asarray(plan.tracked_rows, dtype=np.int64)
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
    return _finish(
        source, plan, fixed, chosen, exact, np.concatenate(short), min_recall=min_recall,
        fallback=fallback, device=device, block_rows=block_rows,
        info={"over_fetch": over_fetch},
    )  # fmt: skip


@dataclass(frozen=True)
class InvertedLists:
    """An IVF partition of the corpus rows: list ``l`` holds ``rows_of(l)``.

    ``centroids`` (nlist, d) float32 pick a query's lists: the largest ``q·c`` (metric
    ``"ip"``) or the smallest ``‖q − c‖`` (``"l2"``). ``sizes`` (nlist,) are the lists'
    lengths; ``rows_of(l)`` returns list ``l``'s corpus rows (any order) when asked, so a
    partition of 10⁸ rows need not sit in memory.
    """

    centroids: np.ndarray
    sizes: np.ndarray
    rows_of: Callable[[int], np.ndarray]
    metric: str = "ip"

    @classmethod
    def from_assignment(
        cls, centroids: np.ndarray, assignment: np.ndarray, metric: str = "ip"
    ) -> InvertedLists:
        """The lists of a row → list assignment (N,) held in memory."""
        assignment = np.asarray(assignment, dtype=np.int64)
        order = np.argsort(assignment, kind="stable")
        bounds = np.searchsorted(assignment[order], np.arange(len(centroids) + 1))
        return cls(
            np.asarray(centroids, dtype=np.float32), np.diff(bounds),
            lambda i: order[bounds[i] : bounds[i + 1]], metric,
        )  # fmt: skip

    @property
    def nlist(self) -> int:
        return len(self.centroids)

    def probe(self, queries: np.ndarray, nprobe: int, query_block: int = 1024) -> np.ndarray:
        """Each query's ``nprobe`` lists (V, nprobe), nearest first is not guaranteed."""
        nprobe = min(nprobe, self.nlist)
        out = np.empty((len(queries), nprobe), dtype=np.int64)
        bias = 0.5 * (self.centroids.astype(np.float64) ** 2).sum(axis=1)
        for q0 in range(0, len(queries), query_block):
            scores = queries[q0 : q0 + query_block] @ self.centroids.T
            if self.metric == "l2":  # argmin ‖q − c‖² = argmax q·c − ‖c‖²/2
                scores = scores - bias.astype(np.float32)
            if nprobe < self.nlist:
                out[q0 : q0 + query_block] = np.argpartition(-scores, nprobe - 1, axis=1)[
                    :, :nprobe
                ]
            else:
                out[q0 : q0 + query_block] = np.arange(self.nlist)
        return out


def ivf_pass(
    source: ArraySource,
    plan: PassPlan,
    lists: InvertedLists,
    *,
    nprobe: int = 32,
    sample: int = 256,
    min_recall: float = MIN_RECALL,
    fallback: bool = True,
    seed: int = 0,
    device: str | None = None,
    block_rows: int = 8192,
    query_block: int = 1024,
    progress: Advance | None = None,
) -> PassResult:
    """The corpus pass with each query's fixed top-``k`` from its ``nprobe`` lists.

    Every list is read once, in list order (which reads and checks every row), and
    scored exactly against the queries probing it and the whole sample; the sample's
    best over all lists is its exact result, its best over its own lists measures
    the recall (module docstring). The lists must hold every corpus row exactly once.
    """
    if plan.by_id or not hasattr(source, "take"):
        raise ValueError("the approximate pass reads a corpus by row (a corpus.npy dataset)")
    if plan.queries is None:
        return corpus_pass(source, plan, device=device, block_rows=block_rows, progress=progress)
    queries, chosen = _queries_and_sample(plan, min_recall, sample, seed)
    n = source.n_records
    if lists.centroids.ndim != 2 or lists.centroids.shape[1] != source.dim:
        raise ValueError(
            f"the index's centroids have shape {lists.centroids.shape}; the corpus has "
            f"dimension {source.dim}"
        )
    if int(np.sum(lists.sizes)) != n:
        raise ValueError(
            f"the index's lists hold {int(np.sum(lists.sizes))} rows; the corpus has {n}"
        )
    n_queries, k = len(queries), plan.k
    tracked = np.unique(np.asarray(plan.tracked_rows, dtype=np.int64))
    probe = lists.probe(queries, nprobe, query_block)
    by_list = np.argsort(probe.ravel(), kind="stable")
    query_of = by_list // probe.shape[1]
    bounds = np.searchsorted(probe.ravel()[by_list], np.arange(lists.nlist + 1))
    xp = get_backend(device)
    dev_queries = xp.asarray(queries)
    best = np.full((n_queries, k), -np.inf, dtype=np.float32)
    exact = xp.full((len(chosen), k), -np.inf)
    sampled = dev_queries[xp.index(chosen)]
    seen = np.zeros(n, dtype=bool)
    for i in range(lists.nlist):
        rows = np.sort(np.asarray(lists.rows_of(i), dtype=np.int64))
        if len(rows) and (rows[0] < 0 or rows[-1] >= n):
            outside = int(rows[0] if rows[0] < 0 else rows[-1])
            raise ValueError(
                f"the index's list {i} holds id {outside}, not a corpus row (0..{n - 1})"
            )
        if seen[rows].any() or (len(rows) > 1 and (rows[1:] == rows[:-1]).any()):
            raise ValueError(
                f"the index holds a corpus row twice (list {i}): its ids must be corpus rows"
            )
        seen[rows] = True
        rows = rows[~contains(tracked, rows)]
        asked = query_of[bounds[i] : bounds[i + 1]]
        for r0 in range(0, len(rows), block_rows):
            part = rows[r0 : r0 + block_rows]
            vectors = normalised_rows(source.take(part), source)
            both = xp.concat([dev_queries[xp.index(asked)], sampled])
            top = xp.concat([xp.asarray(best[asked]), exact])
            merge_top_k(xp, both, vectors, top, query_block)
            best[asked] = xp.to_numpy(top[: len(asked)])
            exact = top[len(asked) :]
            if progress is not None:
                progress(len(part))
    if not seen.all():
        raise ValueError(
            f"the index's lists leave out {int((~seen).sum())} corpus rows (e.g. row "
            f"{int(np.argmin(seen))}): its ids must be every corpus row"
        )
    taken = source.take(tracked)
    raw, norms = checked_rows(taken, source)
    if progress is not None:
        progress(len(tracked))
    scanned = PassResult(
        -np.sort(-xp.to_numpy(exact), axis=1), tracked, None, raw / norms, n,
        {"engine": "local", "workers": 1},
    )  # fmt: skip
    limit = n - len(tracked)
    short = np.flatnonzero(np.isneginf(best[:, min(k, max(limit, 1)) - 1]))
    return _finish(
        source, plan, best, chosen, scanned, short, min_recall=min_recall,
        fallback=fallback, device=device, block_rows=block_rows,
        info={"nprobe": int(min(nprobe, lists.nlist)), "nlist": lists.nlist},
    )  # fmt: skip


def streamed_candidate_pass(
    source: BlockSource,
    plan: PassPlan,
    candidates: np.ndarray,
    *,
    by_row: bool | None = None,
    sample: int = 256,
    min_recall: float = MIN_RECALL,
    fallback: bool = True,
    seed: int = 0,
    device: str | None = None,
    block_rows: int = 8192,
    progress: Advance | None = None,
) -> PassResult:
    """The pass with each query's fixed top-``k`` among its ``candidates``, in one read.

    For a source that cannot gather rows (a store read in batches): ``candidates`` (V, n)
    are each query's nearest records by the store's own index, named like the plan's
    tracked records (corpus rows, -1 for none; or id bytes, ``b""`` for none), or by
    corpus row whatever the plan (``by_row=True``: an index over Parquet shards, whose
    ids are row positions). One read of ``source`` runs the exact pass for the sample
    (and checks every row, gathers the tracked) and scores every (query, candidate) pair
    exactly as its row goes by; tracked records are never scored.
    """
    if plan.queries is None:
        return corpus_pass(source, plan, device=device, block_rows=block_rows, progress=progress)
    queries, chosen = _queries_and_sample(plan, min_recall, sample, seed)
    n_queries = len(queries)
    candidates = np.asarray(candidates)
    if candidates.ndim != 2 or len(candidates) != n_queries:
        raise ValueError(f"candidates have shape {candidates.shape}; expected ({n_queries}, n)")
    width = candidates.shape[1]
    by_row = not plan.by_id if by_row is None else by_row
    tracked = plan.tracked_ids if plan.by_id else plan.tracked_rows
    keys = candidates.ravel()
    valid = (keys >= 0) if by_row else (keys != b"")
    if by_row != plan.by_id:  # named like the tracked records: drop those now
        valid &= ~contains(np.asarray(tracked), keys)
    # a record offered twice to one query counts once
    order = np.lexsort((keys, np.repeat(np.arange(n_queries), width)))
    again = np.zeros(len(keys), dtype=bool)
    again[order[1:]] = keys[order[1:]] == keys[order[:-1]]
    again[order[1:]] &= order[1:] // width == order[:-1] // width
    pairs = np.flatnonzero(valid & ~again)
    by_key = pairs[np.argsort(keys[pairs], kind="stable")]
    sorted_keys = keys[by_key]
    scores = np.full(len(keys), -np.inf, dtype=np.float32)
    sample_plan = replace(plan, queries=queries[chosen])
    scanner = BlockScanner(sample_plan, source, get_backend(device))
    collector = PassCollector(sample_plan, source)
    for block in source.blocks(block_rows):
        collector.add(scanner.scan(block, collector.floor()))
        names = block.ids if not by_row else (
            block.rows if block.rows is not None else block.start + np.arange(len(block))
        )  # fmt: skip
        lo = np.searchsorted(sorted_keys, names, side="left")
        hi = np.searchsorted(sorted_keys, names, side="right")
        count = hi - lo
        count[plan.tracked_in(block)] = 0  # a tracked record is no competitor
        if count.any():
            at = np.repeat(np.arange(len(block)), count)
            first = np.repeat(lo - np.cumsum(count) + count, count)
            hit = by_key[first + np.arange(len(at))]
            # normalised as the scan does (which has checked these rows)
            raw, norms = checked_rows(Block(block.start, block.vectors[at]), source)
            scores[hit] = np.einsum("ij,ij->i", queries[hit // width], raw / norms)
        if progress is not None:
            progress(len(block))
    if collector.n_rows != source.n_records:
        raise RuntimeError(
            f"the corpus pass read {collector.n_rows} rows, the source holds {source.n_records}"
        )
    exact = collector.result({"engine": "local", "workers": 1})
    grid = scores.reshape(n_queries, width)
    k = plan.k
    best = np.full((n_queries, k), -np.inf, dtype=np.float32)
    top = Backend().top_k_values(grid, k)
    best[:, : top.shape[1]] = top
    limit = source.n_records - len(np.asarray(tracked))
    short = np.flatnonzero(np.isneginf(best[:, min(k, max(limit, 1)) - 1]))
    return _finish(
        source, plan, best, chosen, exact, short, min_recall=min_recall,
        fallback=fallback, device=device, block_rows=block_rows,
        info={"candidates": width},
    )  # fmt: skip


def _queries_and_sample(
    plan: PassPlan, min_recall: float, sample: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """The plan's queries as float32, and the recall sample: ``sample`` of them, sorted."""
    if not 0.0 <= min_recall <= 1.0:
        raise ValueError(f"min_recall must be in [0, 1], got {min_recall!r}")
    queries = np.ascontiguousarray(plan.queries, dtype=np.float32)
    n = len(queries)
    chosen = np.sort(np.random.default_rng(seed).choice(n, size=min(sample, n), replace=False))
    return queries, chosen


def _finish(
    source: BlockSource,
    plan: PassPlan,
    fixed: np.ndarray,
    chosen: np.ndarray,
    exact: PassResult,
    short: np.ndarray,
    *,
    min_recall: float,
    fallback: bool,
    device: str | None,
    block_rows: int,
    info: dict[str, Any],
) -> PassResult:
    """Recall on the sample; fall back, or fill the sample and the short queries exactly."""
    queries = np.ascontiguousarray(plan.queries, dtype=np.float32)
    recall_1, recall_k = _recall(fixed[chosen], exact.fixed)  # type: ignore[arg-type]
    info = {
        "kind": "ann",
        "recall_top1": recall_1,
        "k": plan.k,
        "recall_at_k": recall_k,
        "n_sample": len(chosen),
        "min_recall": min_recall,
        **info,
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
        info["warning"] = message + ": γ may be off (search wider, or use --pass exact)"
    fixed[chosen] = exact.fixed  # type: ignore[index]
    rest = np.setdiff1d(short, chosen)
    if len(rest):
        # too few candidates from the index (a small corpus, a sparse probe): exact for these
        again = corpus_pass(source, replace(plan, queries=queries[rest]), device=device,
                            block_rows=block_rows)  # fmt: skip
        fixed[rest] = again.fixed  # type: ignore[index]
    info["n_exact_queries"] = len(chosen) + len(rest)
    fixed = -np.sort(-fixed, axis=1)
    stats = {**exact.stats, "engine": "ann", "pass": info}
    return PassResult(fixed, exact.rows, exact.ids, exact.vectors, exact.n_rows, stats)


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
