"""The one pass over the corpus that NUDGE needs, block by block, from any block source.

NUDGE moves only the *tracked* records — those a training query points to and, when γ is
searched, those relevant to a validation query. Every other record never moves and is never
relevant, so the γ search needs from it only each validation query's best ``k`` scores
(paper §3; the idea of FAISS's ``knn_ground_truth(xq, db_iterator, k)`` with the tracked
records left out). One pass over the corpus gives both:

- the tracked records, checked and L2-normalised, with their corpus rows (and ids);
- ``fixed``: each validation query's best ``k`` scores among all other rows.

:func:`corpus_pass` runs it in this process over a :class:`~nudgekit.core.blocks.BlockSource`.
A scale-out engine runs :meth:`BlockScanner.scan` on blocks wherever they are read and
folds the small per-block results with :class:`PassCollector` in any order: every engine
returns the same :class:`PassResult`. Tracked records are named by corpus row (arrays) or
by id (sources addressed by id: Parquet shards, stores).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from nudgekit.core.backend import Backend, get_backend
from nudgekit.core.blocks import ArraySource, Block, BlockSource, CorpusError, checked_rows

#: advance(n): called with the number of corpus rows each step read.
Advance = Callable[[int], None]


@dataclass(frozen=True)
class PassPlan:
    """What every block of the pass needs; small (broadcast once to every worker).

    Attributes
    ----------
    queries : float32 array (V, d) or None
        Validation queries; ``None`` when γ is fixed (the pass then only gathers).
    k : int
        Best scores kept per validation query.
    tracked_rows : int64 array, optional
        Sorted corpus rows of the tracked records.
    tracked_ids : bytes array, optional
        Sorted ids of the tracked records (for sources addressed by id); exactly one of
        ``tracked_rows`` and ``tracked_ids`` is given.
    query_block : int
        Validation queries scored at a time: a block's scores take
        ``query_block × block_rows`` floats.
    """

    queries: np.ndarray | None
    k: int
    tracked_rows: np.ndarray | None = None
    tracked_ids: np.ndarray | None = None
    query_block: int = 2048

    def __post_init__(self) -> None:
        if (self.tracked_rows is None) == (self.tracked_ids is None):
            raise ValueError("a pass plan names its tracked records by rows or by ids")

    @property
    def by_id(self) -> bool:
        return self.tracked_ids is not None

    def tracked_in(self, block: Block) -> np.ndarray:
        """Positions in ``block`` of the tracked records it holds (sorted)."""
        if self.tracked_ids is not None:
            if block.ids is None:
                raise ValueError("a pass by id needs blocks that carry ids")
            return np.flatnonzero(contains(self.tracked_ids, block.ids))
        lo, hi = np.searchsorted(self.tracked_rows, [block.start, block.start + len(block)])
        return self.tracked_rows[lo:hi] - block.start  # type: ignore[index]


@dataclass
class BlockResult:
    """What one block contributes: its best fixed scores and the tracked rows it holds."""

    n_rows: int
    top: np.ndarray | None  # float32 (V, k), unsorted; None without validation queries
    rows: np.ndarray  # int64 corpus rows of the tracked records found
    ids: np.ndarray | None  # their ids (bytes), by-id passes only
    vectors: np.ndarray  # float32 (m, d), L2-normalised


class BlockScanner:
    """Runs the pass on blocks; holds the queries on the backend's device once."""

    def __init__(self, plan: PassPlan, source: BlockSource, xp: Backend | None = None) -> None:
        self.plan = plan
        self.source = source
        self.xp = xp if xp is not None else get_backend(None)
        self.q = None if plan.queries is None else self.xp.asarray(plan.queries)

    def scan(self, block: Block, floor: np.ndarray | None = None) -> BlockResult:
        """Check and normalise one block, gather its tracked rows, fold in the others.

        ``floor`` (V,), optional: each query's k-th best score so far in the pass. The
        block's top-k may then leave out scores at or below it (padded with -inf), since
        they cannot reach the pass's top k; that lets the merge skip most of each block.
        """
        plan, xp = self.plan, self.xp
        raw, norms = checked_rows(block, self.source)
        tracked = plan.tracked_in(block)
        if len(tracked):
            # dropping the tracked rows before the product is much cheaper than masking
            # their columns in every (queries × block) score matrix afterwards
            keep = np.ones(len(raw), dtype=bool)
            keep[tracked] = False
            found = raw[tracked] / norms[tracked]
            rest = raw[keep] / norms[keep] if self.q is not None else None
        else:
            found = np.empty((0, raw.shape[1]), dtype=np.float32)
            rest = raw / norms if self.q is not None else None
        top = None
        if self.q is not None:
            best = xp.full((self.q.shape[0], plan.k), -np.inf)
            merge_top_k(xp, self.q, rest, best, plan.query_block, floor)
            top = xp.to_numpy(best)
        rows = block.rows[tracked] if block.rows is not None else block.start + tracked
        ids = None if block.ids is None or not plan.by_id else block.ids[tracked]
        return BlockResult(len(raw), top, np.asarray(rows, dtype=np.int64), ids, found)


@dataclass
class PassResult:
    """The whole pass: fixed top-k scores and the tracked records, sorted by corpus row.

    Attributes
    ----------
    fixed : float32 array (V, k) or None
        Each validation query's best ``k`` scores among untracked rows, descending
        (``-inf`` where fewer remain); None when the plan had no queries.
    rows : int64 array
        Corpus rows of the tracked records found, sorted.
    ids : bytes array or None
        Their ids (by-id passes).
    vectors : float32 array (T, d)
        Their L2-normalised embeddings.
    n_rows : int
        Rows read (or gathered).
    stats : dict
        Engine facts for the report (blocks, workers, peak memory ...).
    """

    fixed: np.ndarray | None
    rows: np.ndarray
    ids: np.ndarray | None
    vectors: np.ndarray
    n_rows: int
    stats: dict[str, Any] = field(default_factory=dict)

    def rows_of(self, ids: np.ndarray) -> np.ndarray:
        """The corpus row of each of ``ids`` (sorted bytes), -1 where the pass did not find it."""
        rows = np.full(len(ids), -1, dtype=np.int64)
        if self.ids is not None and len(self.ids):
            at = np.searchsorted(ids, self.ids)
            rows[at] = self.rows
        return rows


class PassCollector:
    """Merges :class:`BlockResult` s, in any order, into a :class:`PassResult`."""

    def __init__(self, plan: PassPlan, source: BlockSource) -> None:
        self.plan = plan
        self.source = source
        q = plan.queries
        self.best = None if q is None else np.full((q.shape[0], plan.k), -np.inf, np.float32)
        self.n_rows = 0
        self.n_blocks = 0
        self._parts: list[tuple[np.ndarray, np.ndarray | None, np.ndarray]] = []

    def floor(self) -> np.ndarray | None:
        """Each query's k-th best score so far (for :meth:`BlockScanner.scan`)."""
        if self.best is None or self.plan.k == 1:
            return None  # k = 1 merges by a row maximum: nothing to skip
        return self.best.min(axis=1)

    def add(self, part: BlockResult, n_blocks: int = 1) -> None:
        """Fold in ``n_blocks`` blocks; ``part.top`` holds their ``(V, k)`` scores side by side."""
        if self.best is not None and part.top is not None:
            if self.plan.k == 1:
                self.best[:, 0] = np.maximum(self.best[:, 0], part.top.max(axis=1))
            else:
                merged = np.concatenate([self.best, part.top], axis=1)
                self.best = Backend().top_k_values(merged, self.plan.k)
        self.n_rows += int(part.n_rows)
        self.n_blocks += n_blocks
        if len(part.rows):
            self._parts.append((part.rows, part.ids, part.vectors))

    def result(self, stats: dict[str, Any] | None = None) -> PassResult:
        """Sort the tracked records by corpus row; a duplicated tracked id is an error."""
        dim = self.source.dim
        rows = np.concatenate([p[0] for p in self._parts]) if self._parts else np.empty(0, np.int64)
        vectors = (
            np.concatenate([p[2] for p in self._parts])
            if self._parts
            else np.empty((0, dim), np.float32)
        )
        order = np.argsort(rows, kind="stable")
        rows, vectors = rows[order], vectors[order]
        ids = None
        if self.plan.by_id:
            parts = [p[1] for p in self._parts]
            ids = np.concatenate(parts)[order] if parts else np.empty(0, "S1")  # type: ignore[arg-type]
            by_id = np.argsort(ids, kind="stable")
            same = np.flatnonzero(ids[by_id][1:] == ids[by_id][:-1])
            if len(same):
                a, b = int(rows[by_id[same[0]]]), int(rows[by_id[same[0] + 1]])
                raise CorpusError(
                    f"duplicate id {ids[by_id[same[0]]].decode('utf-8', 'replace')!r}: "
                    f"{self.source.where(a)} and {self.source.where(b)}"
                )
        fixed = None if self.best is None else -np.sort(-self.best, axis=1)
        return PassResult(
            fixed, rows, ids, vectors, self.n_rows, {"blocks": self.n_blocks, **(stats or {})}
        )


def corpus_pass(
    source: BlockSource,
    plan: PassPlan,
    *,
    device: str | None = None,
    block_rows: int = 8192,
    progress: Advance | None = None,
) -> PassResult:
    """The pass in this process: every block of ``source`` in order, or, when the plan
    needs no scores and the source can gather rows, just the tracked rows.

    Peak working memory is about ``block_rows × (d + query_block)`` floats, whatever the
    corpus size; the products run on ``device`` (``None``: numpy).
    """
    if plan.queries is None and not plan.by_id and isinstance(source, ArraySource):
        rows = np.asarray(plan.tracked_rows, dtype=np.int64)
        block = source.take(rows)
        raw, norms = checked_rows(block, source)
        return PassResult(None, rows, None, raw / norms, len(rows), {"engine": "gather"})
    scanner = BlockScanner(plan, source, get_backend(device))
    collector = PassCollector(plan, source)
    for block in source.blocks(block_rows):
        collector.add(scanner.scan(block, collector.floor()))
        if progress is not None:
            progress(len(block))
    if collector.n_rows != source.n_records:
        raise RuntimeError(
            f"the corpus pass read {collector.n_rows} rows, the source holds {source.n_records}"
        )
    return collector.result({"engine": "local", "workers": 1})


def merge_top_k(
    xp: Backend,
    queries: Any,
    rows: np.ndarray,
    best: Any,
    query_block: int,
    floor: np.ndarray | None = None,
) -> None:
    """Merge the scores of ``rows`` (normalised, float32) into ``best`` (V × k), in place.

    ``queries`` and ``best`` live on the backend; ``best`` keeps each query's ``k`` best
    scores so far, unsorted. Query blocks bound the (block × rows) score matrix. Scores
    at or below ``floor`` (V,) may be left out (see :meth:`BlockScanner.scan`).
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
            best[part] = xp.merge_top_k_values(
                best[part], scores, None if floor is None else floor[part]
            )


def contains(sorted_keys: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Boolean mask: which of ``keys`` are in ``sorted_keys``. O(n log T), in C."""
    if len(sorted_keys) == 0:
        return np.zeros(len(keys), dtype=bool)
    pos = np.minimum(np.searchsorted(sorted_keys, keys), len(sorted_keys) - 1)
    return sorted_keys[pos] == keys


def id_bytes_of(ids: Any) -> np.ndarray:
    """String ids as a numpy bytes array (UTF-8), the form by-id passes compare."""
    if len(ids) == 0:
        return np.empty(0, dtype="S1")
    return np.char.encode(np.asarray([str(i) for i in ids], dtype=str), "utf-8")
