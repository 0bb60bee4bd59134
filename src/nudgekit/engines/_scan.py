"""The one corpus pass, block by block: the part of NUDGE that both engines run.

For each block of corpus rows: check and L2-normalise the rows (as
:func:`nudgekit.core._passes.top_k_excluding` does), keep the *tracked* records — those
whose id some training or validation query points to — and fold the other rows into each
validation query's best ``k`` scores. What leaves a block is small: ``V × k`` scores and
the tracked rows found in it. The local engine runs :class:`Scanner` in a loop, the Ray
engine inside ``map_batches``; :class:`PassCollector` merges the blocks' results in
either order, so both engines give the same :class:`PassResult`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from nudgekit.core._backend import Backend, get_backend
from nudgekit.core._checks import row_norms
from nudgekit.core._passes import merge_top_k
from nudgekit.parquet import CorpusError, id_bytes, locate


@dataclass(frozen=True)
class ScanPlan:
    """What every block of the pass needs; small, broadcast once to every Ray worker.

    Attributes
    ----------
    labels : bytes array (``S``), sorted
        Ids of the tracked records (see :func:`nudgekit.parquet.id_bytes`).
    queries : float32 array (V, d) or None
        Validation queries; ``None`` when γ is fixed (the pass then only gathers).
    k : int
        Best scores kept per validation query.
    dim : int
    n_records : int
    shard_names : list of str
    shard_offsets : int64 array
        Corpus row of each shard's first row, plus the total (for messages).
    query_block : int
        Validation queries scored at a time: a block's scores take
        ``query_block × block_rows`` floats.
    """

    labels: np.ndarray
    queries: np.ndarray | None
    k: int
    dim: int
    n_records: int
    shard_names: list[str]
    shard_offsets: np.ndarray
    query_block: int = 2048

    def tracked(self, ids: np.ndarray) -> np.ndarray:
        """Boolean mask: which of ``ids`` (bytes) are labelled records. O(n log T), in C."""
        if len(self.labels) == 0:
            return np.zeros(len(ids), dtype=bool)
        pos = np.minimum(np.searchsorted(self.labels, ids), len(self.labels) - 1)
        return self.labels[pos] == ids

    def where(self, row: int) -> str:
        """``corpus/part-00003.parquet row 17 (corpus row 123)``."""
        return locate(self.shard_names, self.shard_offsets, row)


@dataclass
class BlockResult:
    """What one block contributes: its best fixed scores and the tracked rows it holds."""

    n_rows: int
    top: np.ndarray | None  # float32 (V, k), unsorted; None without validation queries
    rows: np.ndarray  # int64 corpus rows of the tracked records found
    ids: np.ndarray  # their ids (bytes)
    vectors: np.ndarray  # float32 (m, d), L2-normalised


class Scanner:
    """Runs the pass on blocks; holds the queries on the backend's device once."""

    def __init__(self, plan: ScanPlan, xp: Backend | None = None) -> None:
        self.plan = plan
        self.xp = xp if xp is not None else get_backend(None)
        self.q = None if plan.queries is None else self.xp.asarray(plan.queries)

    def scan(self, rows: np.ndarray, ids: Any, vectors: np.ndarray) -> BlockResult:
        """One block: ``rows`` (int64 corpus rows), Arrow string ``ids``, raw ``vectors``.

        Raises :class:`CorpusError` for a NaN/inf or all-zero vector.
        """
        plan, xp = self.plan, self.xp
        # a float32 copy divided by row_norms cast to float32: the arithmetic of
        # top_k_excluding and normalized_rows, so every engine sees the same bits
        raw = np.array(vectors, dtype=np.float32)
        raw /= self._norms(raw, rows, ids)[:, None].astype(np.float32)
        keys = id_bytes(ids)
        tracked = np.flatnonzero(plan.tracked(keys))
        top = None
        if self.q is not None:
            best = xp.full((plan.queries.shape[0], plan.k), -np.inf)  # type: ignore[union-attr]
            untracked = np.ones(len(raw), dtype=bool)
            untracked[tracked] = False
            merge_top_k(xp, self.q, raw[untracked], best, plan.query_block)
            top = xp.to_numpy(best)
        return BlockResult(len(raw), top, rows[tracked], keys[tracked], raw[tracked])

    def _norms(self, raw: np.ndarray, rows: np.ndarray, ids: Any) -> np.ndarray:
        # the norms of core._checks.check_rows, with a message naming the shard
        norms = row_norms(raw)
        bad = np.flatnonzero(~np.isfinite(norms) | (norms == 0))
        if len(bad):
            i = int(bad[0])
            problem = "is all zeros" if norms[i] == 0 else "contains NaN or infinite values"
            raise CorpusError(f"{self.plan.where(int(rows[i]))}: the vector {problem}")
        return norms


@dataclass
class PassResult:
    """The whole pass: fixed top-k scores and the tracked records, sorted by corpus row.

    Attributes
    ----------
    fixed : float32 array (V, k) or None
        Each validation query's best ``k`` scores among untracked rows, descending
        (``-inf`` where fewer remain) — what ``top_k_excluding`` returns.
    rows : int64 array
        Corpus rows of the tracked records found, sorted.
    ids : bytes array
        Their ids.
    vectors : float32 array (T, d)
        Their L2-normalised embeddings.
    n_rows : int
        Rows read.
    stats : dict
        Engine facts for the report (blocks, workers, peak memory ...).
    """

    fixed: np.ndarray | None
    rows: np.ndarray
    ids: np.ndarray
    vectors: np.ndarray
    n_rows: int
    stats: dict[str, Any] = field(default_factory=dict)


class PassCollector:
    """Merges :class:`BlockResult` parts, in any order, into a :class:`PassResult`."""

    def __init__(self, plan: ScanPlan) -> None:
        self.plan = plan
        q = plan.queries
        self.best = None if q is None else np.full((q.shape[0], plan.k), -np.inf, np.float32)
        self.n_rows = 0
        self.n_blocks = 0
        self._rows: list[np.ndarray] = []
        self._ids: list[np.ndarray] = []
        self._vectors: list[np.ndarray] = []

    def add(
        self,
        n_rows: int,
        top: np.ndarray | None,
        rows: np.ndarray,
        ids: np.ndarray,
        vectors: np.ndarray,
        n_blocks: int = 1,
    ) -> None:
        """Fold in one or more blocks; ``top`` is ``(V, k·b)`` for ``b`` blocks side by side."""
        if self.best is not None and top is not None:
            if self.plan.k == 1:
                self.best[:, 0] = np.maximum(self.best[:, 0], top.max(axis=1))
            else:
                merged = np.concatenate([self.best, top], axis=1)
                self.best = Backend().top_k_values(merged, self.plan.k)
        self.n_rows += int(n_rows)
        self.n_blocks += n_blocks
        if len(rows):
            self._rows.append(rows)
            self._ids.append(ids)
            self._vectors.append(vectors)

    def result(self, stats: dict[str, Any] | None = None) -> PassResult:
        """Sort the tracked records by corpus row; a duplicated tracked id is an error."""
        if self.n_rows != self.plan.n_records:
            raise RuntimeError(
                f"the corpus pass read {self.n_rows} rows, the shards hold {self.plan.n_records}"
            )
        dim = self.plan.dim
        rows = np.concatenate(self._rows) if self._rows else np.empty(0, np.int64)
        ids = np.concatenate(self._ids) if self._ids else np.empty(0, "S1")
        vectors = np.concatenate(self._vectors) if self._vectors else np.empty((0, dim), np.float32)
        order = np.argsort(rows, kind="stable")
        rows, ids, vectors = rows[order], ids[order], vectors[order]
        by_id = np.argsort(ids, kind="stable")
        same = np.flatnonzero(ids[by_id][1:] == ids[by_id][:-1])
        if len(same):
            a, b = int(rows[by_id[same[0]]]), int(rows[by_id[same[0] + 1]])
            raise CorpusError(
                f"duplicate id {ids[by_id[same[0]]].decode('utf-8', 'replace')!r}: "
                f"{self.plan.where(a)} and {self.plan.where(b)}"
            )
        fixed = None if self.best is None else -np.sort(-self.best, axis=1)
        return PassResult(
            fixed, rows, ids, vectors, self.n_rows, {"blocks": self.n_blocks, **(stats or {})}
        )
