"""NudgeM and NudgeN: scikit-learn-style estimators over the NUDGE math.

The constructor stores parameters; :meth:`fit` validates inputs and does the work; what
is learned ends in an underscore. The corpus may be a read-only memory map: it is read in
one blocked pass during ``fit`` (only when γ is searched) and once more by
:meth:`iter_transform` when the new embeddings are written.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from nudgekit.core import nudge_m, nudge_n
from nudgekit.core._backend import get_backend
from nudgekit.core._checks import (
    RelevanceLike,
    check_gamma,
    check_matrix,
    check_relevance,
    check_rows,
)
from nudgekit.core._passes import normalized_rows, query_sums, top_k_excluding
from nudgekit.core._relevance import Relevance

#: progress(phase, done, total) — called as long steps advance (done is cumulative).
ProgressCallback = Callable[[str, int, int], None]


class _Nudge(ABC):
    """What NudgeM and NudgeN share: input checks, G, the tracked records, the corpus pass."""

    method = ""

    def __init__(
        self,
        gamma: float | None = None,
        *,
        device: str | None = None,
        block_rows: int = 8192,
        query_block: int = 2048,
        block_elements: int = 1 << 24,
    ) -> None:
        self.gamma = gamma
        self.device = device
        self.block_rows = block_rows
        self.query_block = query_block
        self.block_elements = block_elements

    # -- fitting -------------------------------------------------------------------------
    def fit(
        self,
        corpus: Any,
        train_queries: Any,
        train_relevant: RelevanceLike,
        val_queries: Any = None,
        val_relevant: RelevanceLike = None,
        *,
        corpus_ids: Sequence[str] | None = None,
        train_query_ids: Sequence[str] | None = None,
        val_query_ids: Sequence[str] | None = None,
        progress: ProgressCallback | None = None,
    ) -> _Nudge:
        """Learn the new embeddings of the records that training queries point to.

        Parameters
        ----------
        corpus : array-like (N, d)
            Record embeddings, float16/32/64; a read-only ``np.memmap`` works and is read in
            blocks. Rows are L2-normalised before anything else.
        train_queries : array-like (Q_train, d)
        train_relevant : labels
            Relevant records of each training query: nested lists of row indices (as in
            nudge-ft), a qrels dict ``{query_id: {doc_id: grade}}`` (needs ``corpus_ids``
            and ``train_query_ids``), a scipy sparse matrix, or a :class:`Relevance`.
        val_queries, val_relevant :
            Validation queries and labels, same formats; needed unless ``gamma`` is fixed.
        progress : callable, optional
            ``progress(phase, done, total)`` for long steps.

        Returns
        -------
        self
        """
        self._check_params()
        tick = time.perf_counter()
        n, d = _corpus_shape(corpus)
        train_q = check_matrix(train_queries, "train queries", dim=d)
        train_rel = check_relevance(
            train_relevant,
            "train labels",
            n_queries=len(train_q),
            n_records=n,
            corpus_ids=corpus_ids,
            query_ids=train_query_ids,
        )
        val_q, val_rel = None, None
        if self.gamma is None:
            if val_queries is None or val_relevant is None:
                raise ValueError("validation queries and labels are needed to choose gamma")
            val_q = check_matrix(val_queries, "validation queries", dim=d)
            val_rel = check_relevance(
                val_relevant,
                "validation labels",
                n_queries=len(val_q),
                n_records=n,
                corpus_ids=corpus_ids,
                query_ids=val_query_ids,
            )
        _check_labelled(train_rel, val_rel)
        tracked = self.tracked_rows(train_rel, val_rel)
        v = normalized_rows(corpus, tracked)
        timings = {"prepare": time.perf_counter() - tick}
        fixed = None
        if val_q is not None:
            tick = time.perf_counter()
            fixed = top_k_excluding(
                get_backend(self.device),
                val_q,
                corpus,
                tracked,
                self.fixed_k,
                block_rows=self.block_rows,
                query_block=self.query_block,
                progress=phase_counter(progress, "scan corpus", n),
            )
            timings["scan_corpus"] = time.perf_counter() - tick
        return self._fit_tracked(
            n, d, train_q, train_rel, val_q, val_rel, tracked, v, fixed, timings
        )

    # -- fitting from a corpus pass run elsewhere -----------------------------------------
    @property
    def fixed_k(self) -> int:
        """How many best scores among the records that do not move the γ search needs per
        validation query (what the corpus pass must keep); 0 when γ is fixed."""
        return self._fixed_k() if self.gamma is None else 0

    def tracked_rows(
        self, train_relevance: Relevance, val_relevance: Relevance | None = None
    ) -> np.ndarray:
        """Sorted corpus rows the corpus pass must return whole: every record a training
        query points to and, when γ is searched, every record relevant to a validation
        query. All other rows only feed each validation query's best ``fixed_k`` scores."""
        rows = np.unique(train_relevance.indices)
        if self.gamma is None and val_relevance is not None:
            rows = np.union1d(rows, val_relevance.indices)
        return rows.astype(np.int64)

    def fit_from_pass(
        self,
        *,
        n_records: int,
        dim: int,
        train_queries: Any,
        train_relevance: Relevance,
        val_queries: Any = None,
        val_relevance: Relevance | None = None,
        tracked: np.ndarray,
        tracked_vectors: np.ndarray,
        fixed: np.ndarray | None,
        timings: dict[str, float] | None = None,
    ) -> _Nudge:
        """Finish :meth:`fit` from a corpus pass run elsewhere (e.g. over Parquet shards).

        :meth:`fit` is: checks, one pass over the corpus, then work on the tracked records
        only. A scale-out engine runs the pass itself and hands its results here; the
        model ends in exactly the state :meth:`fit` leaves it in.

        Parameters
        ----------
        n_records, dim : int
            Corpus shape.
        train_queries, val_queries : float arrays
        train_relevance, val_relevance : Relevance
            Over corpus rows. ``val_*`` are ignored when ``gamma`` is fixed.
        tracked : int64 array
            :meth:`tracked_rows` of these labels.
        tracked_vectors : float32 array (len(tracked), d)
            Their L2-normalised embeddings.
        fixed : float32 array (V, ``fixed_k``) or None
            Each validation query's best ``fixed_k`` scores among the untracked rows,
            descending (``-inf`` where fewer remain); None when γ is fixed.
        timings : dict, optional
            Seconds of the earlier phases, kept in ``timings_``.
        """
        self._check_params()
        tick = time.perf_counter()
        train_q = check_matrix(train_queries, "train queries", dim=dim)
        val_q, val_rel = None, None
        if self.gamma is None:
            if val_queries is None or val_relevance is None or fixed is None:
                raise ValueError("validation queries, labels and fixed scores are needed")
            val_q, val_rel = check_matrix(val_queries, "validation queries", dim=dim), val_relevance
            if np.shape(fixed) != (len(val_q), self.fixed_k):
                raise ValueError(
                    f"fixed scores have shape {np.shape(fixed)}, "
                    f"expected {(len(val_q), self.fixed_k)}"
                )
        _check_labelled(train_relevance, val_rel)
        if not np.array_equal(self.tracked_rows(train_relevance, val_rel), tracked):
            raise ValueError("the corpus pass did not return exactly the tracked records")
        v = np.ascontiguousarray(tracked_vectors, dtype=np.float32)
        if v.shape != (len(tracked), dim):
            raise ValueError(
                f"tracked vectors have shape {v.shape}, expected {(len(tracked), dim)}"
            )
        timings = dict(timings or {})
        timings["prepare"] = timings.get("prepare", 0.0) + time.perf_counter() - tick
        return self._fit_tracked(
            int(n_records),
            int(dim),
            train_q,
            train_relevance,
            val_q,
            val_rel,
            tracked,
            v,
            fixed,
            timings,
        )

    def _fit_tracked(
        self,
        n: int,
        d: int,
        train_q: np.ndarray,
        train_rel: Relevance,
        val_q: np.ndarray | None,
        val_rel: Relevance | None,
        tracked: np.ndarray,
        v: np.ndarray,
        fixed: np.ndarray | None,
        timings: dict[str, float],
    ) -> _Nudge:
        """Everything after the corpus pass: G, the γ search and the update, on tracked rows."""
        xp = get_backend(self.device)
        tick = time.perf_counter()
        moved_rows, g = query_sums(train_q, train_rel)
        c = np.zeros_like(v)
        c[np.searchsorted(tracked, moved_rows)] = self._direction(g)
        timings["prepare"] = timings.get("prepare", 0.0) + time.perf_counter() - tick

        if val_q is not None and val_rel is not None and fixed is not None:
            tick = time.perf_counter()
            rel = Relevance(
                val_rel.indptr,
                np.searchsorted(tracked, val_rel.indices),
                val_rel.grades,
                len(tracked),
            )
            self.gamma_, self.validation_curve_ = self._search(xp, val_q, v, c, fixed, rel)
            self.validation_accuracy_ = _curve_value(self.validation_curve_, self.gamma_)
            timings["search_gamma"] = time.perf_counter() - tick
        else:
            self.gamma_ = float(self.gamma)  # type: ignore[arg-type]
            self.validation_curve_ = None
            self.validation_accuracy_ = None

        tick = time.perf_counter()
        moves = self._movable(v, c) if self.gamma_ > 0 else np.zeros(len(tracked), dtype=bool)
        self.changed_rows_ = tracked[moves]
        self.changed_embeddings_ = self._update(v[moves], c[moves], self.gamma_)
        self.original_embeddings_ = v[moves]
        self.n_changed_ = int(moves.sum())
        self.n_records_, self.dim_ = n, d
        timings["update"] = time.perf_counter() - tick
        self.timings_ = timings
        return self

    # -- output --------------------------------------------------------------------------
    def iter_transform(self, corpus: Any, block_rows: int | None = None) -> Iterator[np.ndarray]:
        """The new embeddings, block by block: normalised rows, changed rows replaced."""
        self._check_fitted()
        n, d = _corpus_shape(corpus)
        if (n, d) != (self.n_records_, self.dim_):
            raise ValueError(
                f"corpus has shape {(n, d)} but the model was fitted on "
                f"{(self.n_records_, self.dim_)}"
            )
        step = block_rows or self.block_rows
        for start in range(0, n, step):
            stop = min(start + step, n)
            raw = np.asarray(corpus[start:stop], dtype=np.float32)  # in place when float32
            block = raw / check_rows(raw, "corpus", offset=start)[:, None].astype(np.float32)
            lo, hi = np.searchsorted(self.changed_rows_, [start, stop])
            block[self.changed_rows_[lo:hi] - start] = self.changed_embeddings_[lo:hi]
            yield block

    def transform(self, corpus: Any) -> np.ndarray:
        """The whole new embedding matrix (float32, N × d) in memory."""
        return np.concatenate(list(self.iter_transform(corpus)), axis=0)

    def fit_transform(self, corpus: Any, *args: Any, **kwargs: Any) -> np.ndarray:
        return self.fit(corpus, *args, **kwargs).transform(corpus)

    # -- hooks ---------------------------------------------------------------------------
    def _check_params(self) -> None:
        check_gamma(self.gamma)

    def _check_fitted(self) -> None:
        if not hasattr(self, "gamma_"):
            raise RuntimeError(f"{type(self).__name__} is not fitted yet; call fit() first")

    @abstractmethod
    def _direction(self, g: np.ndarray) -> np.ndarray:
        """The per-record move direction stored as c (G itself, or Ĝ)."""

    @abstractmethod
    def _fixed_k(self) -> int:
        """How many best fixed scores per validation query the search needs."""

    @abstractmethod
    def _search(
        self,
        xp: Any,
        val_q: np.ndarray,
        v: np.ndarray,
        c: np.ndarray,
        fixed: np.ndarray,
        rel: Relevance,
    ) -> tuple[float, dict[str, list[float]]]:
        """Pick γ on the validation set; return it and the validation curve."""

    @abstractmethod
    def _movable(self, v: np.ndarray, c: np.ndarray) -> np.ndarray:
        """Which tracked records move for γ > 0."""

    @abstractmethod
    def _update(self, v: np.ndarray, c: np.ndarray, gamma: float) -> np.ndarray:
        """New embeddings of the moving records."""


class NudgeM(_Nudge):
    """NUDGE-M: move each answering record by γ along its normalised G; exact best γ.

    Parameters
    ----------
    gamma : float, optional
        Fixed step size; ``None`` (default) picks the γ that maximises validation top-1
        accuracy exactly (interval sweep).
    device : str, optional
        ``None``/``"cpu"`` for numpy, ``"torch"`` for torch on the CPU, ``"cuda"`` etc.
    block_rows, query_block, block_elements : int
        Working-memory bounds of the corpus pass and of the γ search.

    Attributes
    ----------
    gamma_ : float
    validation_curve_ : dict or None
        ``{"gamma": [...], "accuracy": [...]}``: top-1 validation accuracy as a step
        function, value at and right of each breakpoint.
    validation_accuracy_ : float or None
        Validation accuracy at ``gamma_`` (None when γ was fixed).
    changed_rows_ : int64 array
        Corpus rows whose embedding changed, sorted.
    changed_embeddings_, original_embeddings_ : float32 arrays
        Their new and original (normalised) embeddings.
    n_changed_ : int
    timings_ : dict
        Seconds spent in each phase.

    Notes
    -----
    Outputs are not unit-norm: search them by dot product, not cosine.

    Examples
    --------
    >>> import numpy as np
    >>> from nudgekit import NudgeM
    >>> rng = np.random.default_rng(0)
    >>> corpus = rng.normal(size=(50, 8)).astype(np.float32)
    >>> train_q = corpus[:10] + 0.5 * rng.normal(size=(10, 8)).astype(np.float32)
    >>> val_q = corpus[:5] + 0.5 * rng.normal(size=(5, 8)).astype(np.float32)
    >>> model = NudgeM().fit(corpus, train_q, [[i] for i in range(10)],
    ...                      val_q, [[i] for i in range(5)])
    >>> model.n_changed_ <= 10
    True
    """

    method = "nudge-m"

    def _direction(self, g: np.ndarray) -> np.ndarray:
        return nudge_m.unit_directions(g)

    def _fixed_k(self) -> int:
        return 1

    def _search(self, xp, val_q, v, c, fixed, rel):
        query, lower, upper = nudge_m.winning_intervals(
            xp, val_q, v, c, fixed[:, 0], rel, block_elements=self.block_elements
        )
        result = nudge_m.sweep(*nudge_m.merge_per_query(query, lower, upper))
        accuracy = result.covered / len(val_q)
        curve = {"gamma": result.gammas.tolist(), "accuracy": accuracy.tolist()}
        return result.best_gamma, curve

    def _movable(self, v: np.ndarray, c: np.ndarray) -> np.ndarray:
        return np.any(c != 0, axis=1)

    def _update(self, v: np.ndarray, c: np.ndarray, gamma: float) -> np.ndarray:
        return nudge_m.apply_update(v, c, gamma)


class NudgeN(_Nudge):
    """NUDGE-N: unit-norm outputs with ‖Δ_i‖² ≤ γ; γ picked on a grid by validation.

    Parameters
    ----------
    gamma : float, optional
        Fixed γ in [0, 4]; ``None`` (default) searches ``gammas``.
    val_k : int
        γ maximises mean top-``val_k`` validation accuracy,
        |top-k ∩ relevant| / min(|relevant|, k); the first maximum wins.
    gammas : sequence of float
        The grid, by default nudge-ft's {0, 0.02, ..., 0.48}.
    device, block_rows, query_block, block_elements :
        As for :class:`NudgeM`.

    Attributes
    ----------
    gamma_, validation_curve_, validation_accuracy_, changed_rows_, changed_embeddings_,
    original_embeddings_, n_changed_, timings_ :
        As for :class:`NudgeM`; the curve holds the accuracy at each grid point.

    Notes
    -----
    As in nudge-ft, records whose training queries point away from them (v·G < 0) keep
    their embedding, as do records whose G is parallel to them.
    """

    method = "nudge-n"

    def __init__(
        self,
        gamma: float | None = None,
        *,
        val_k: int = 1,
        gammas: Sequence[float] = nudge_n.DEFAULT_GAMMAS,
        device: str | None = None,
        block_rows: int = 8192,
        query_block: int = 2048,
        block_elements: int = 1 << 24,
    ) -> None:
        super().__init__(
            gamma,
            device=device,
            block_rows=block_rows,
            query_block=query_block,
            block_elements=block_elements,
        )
        self.val_k = val_k
        self.gammas = gammas

    def _check_params(self) -> None:
        super()._check_params()
        if self.gamma is not None and self.gamma > 4:
            raise ValueError(f"gamma must be in [0, 4] for NUDGE-N, got {self.gamma!r}")
        if int(self.val_k) != self.val_k or self.val_k < 1:
            raise ValueError(f"val_k must be a positive integer, got {self.val_k!r}")
        if len(self.gammas) == 0:
            raise ValueError("gammas: the grid is empty")
        for g in self.gammas:
            check_gamma(g, "gammas")
            if g > 4:
                raise ValueError(f"gammas must lie in [0, 4] for NUDGE-N, got {g!r}")

    def _direction(self, g: np.ndarray) -> np.ndarray:
        return g

    def _fixed_k(self) -> int:
        return int(self.val_k)

    def _search(self, xp, val_q, v, c, fixed, rel):
        gammas = tuple(float(g) for g in self.gammas)
        accuracy = nudge_n.validation_accuracy(
            xp,
            val_q,
            v,
            c,
            nudge_n.MoveGeometry.of(v, c),
            fixed,
            rel,
            gammas,
            int(self.val_k),
            block_elements=self.block_elements,
        )
        best = int(np.argmax(accuracy))  # first maximum wins, as in nudge-ft
        return gammas[best], {"gamma": list(gammas), "accuracy": accuracy.tolist()}

    def _movable(self, v: np.ndarray, c: np.ndarray) -> np.ndarray:
        return nudge_n.MoveGeometry.of(v, c).movable

    def _update(self, v: np.ndarray, c: np.ndarray, gamma: float) -> np.ndarray:
        return nudge_n.apply_update(v, c, nudge_n.MoveGeometry.of(v, c), gamma)


def _check_labelled(train: Relevance, val: Relevance | None) -> None:
    if val is not None:
        unlabelled = np.flatnonzero(val.counts() == 0)
        if len(unlabelled):
            raise ValueError(
                f"validation labels: query {int(unlabelled[0])} has no relevant record"
            )
    if train.nnz == 0:
        raise ValueError("train labels: no training query has a relevant record")


def _curve_value(curve: dict[str, list[float]], gamma: float) -> float:
    """The validation curve at ``gamma``: the value at the last point ≤ γ.

    Exact for both curve shapes: NUDGE-M's step function (value at and right of each
    breakpoint) and NUDGE-N's grid (γ is a grid point).
    """
    i = int(np.searchsorted(np.asarray(curve["gamma"]), gamma, side="right")) - 1
    return float(curve["accuracy"][max(i, 0)])


def _corpus_shape(corpus: Any) -> tuple[int, int]:
    if isinstance(corpus, np.ndarray) and corpus.dtype == object:
        raise ValueError("corpus: object arrays are not accepted (need a float matrix)")
    shape = getattr(corpus, "shape", None)
    if shape is None:
        raise ValueError("corpus: expected a 2-D array")
    if len(shape) != 2:
        raise ValueError(f"corpus: expected a 2-D matrix, got shape {tuple(shape)}")
    if shape[0] == 0:
        raise ValueError("corpus: is empty (0 rows)")
    dtype = getattr(corpus, "dtype", None)
    if dtype is not None and np.dtype(dtype).kind not in "fiu":
        raise ValueError(f"corpus: expected float values, got dtype {dtype}")
    return int(shape[0]), int(shape[1])


def phase_counter(
    progress: ProgressCallback | None, phase: str, total: int
) -> Callable[[int], None] | None:
    """Adapt ``progress(phase, done, total)`` to a per-step ``advance(n)`` callback."""
    if progress is None:
        return None
    done = 0

    def advance(n: int) -> None:
        nonlocal done
        done += n
        progress(phase, done, total)

    return advance
