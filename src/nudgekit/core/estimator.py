"""The estimator every NUDGE method is: validate, plan one corpus pass, fit from the pass.

:class:`NudgeEstimator` is scikit-learn style — the constructor stores parameters,
:meth:`~NudgeEstimator.fit` validates inputs and does the work, what is learned ends in
an underscore — and it is also the seam every engine uses::

    problem = estimator.problem(...)          # checked labels (or FitProblem(...) directly)
    plan = estimator.pass_plan(problem)        # which records to gather, which scores to keep
    result = <any engine>(source, plan)        # the one corpus pass (core.corpus_pass)
    estimator.fit_from_pass(problem, result)   # G, the γ search, the update: tracked rows only

:meth:`~NudgeEstimator.fit_source` runs those steps with a pass runner of the caller's
choice (this process by default). What differs between methods — the move direction, how
γ is chosen, which records move and where to — are five small hooks.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

import numpy as np

from nudgekit.core.backend import Backend, get_backend
from nudgekit.core.blocks import ArraySource, BlockSource, CorpusError, normalised_rows
from nudgekit.core.checks import (
    RelevanceLike,
    check_gamma,
    check_matrix,
    check_relevance,
    row_norms,
)
from nudgekit.core.corpus_pass import Advance, PassPlan, PassResult, corpus_pass
from nudgekit.core.query_sums import query_sums
from nudgekit.core.relevance import Relevance

#: progress(phase, done, total) — called as long steps advance (done is cumulative).
ProgressCallback = Callable[[str, int, int], None]

#: The largest norm a new embedding may have: beyond it a record's scores swamp every
#: other record's (and, a few orders of magnitude on, overflow float32 in a search).
MAX_OUTPUT_NORM = 1e6

#: run_pass(source, plan, progress=advance) -> PassResult: where the corpus pass runs.
PassRunner = Callable[..., PassResult]


@dataclass(frozen=True)
class LabelledQueries:
    """Checked queries of one split and what they point to.

    ``relevance`` indexes corpus rows, or the ids of :attr:`FitProblem.label_ids`.
    ``name`` and ``query_ids`` only serve messages.
    """

    queries: np.ndarray
    relevance: Relevance
    name: str = "train"
    query_ids: Sequence[str] | None = None


@dataclass(frozen=True)
class FitProblem:
    """Everything a fit needs besides the corpus itself.

    Attributes
    ----------
    n_records, dim : int
        Corpus shape.
    train : LabelledQueries
    val : LabelledQueries or None
        Needed when γ is searched, ignored otherwise.
    label_ids : bytes array, optional
        Sorted record ids: when given, the labels index these ids (the corpus is read by
        id, e.g. Parquet shards or a store) and the pass finds their rows
        (:meth:`over_rows`).
    labels_name : str
        The labels' file, for messages.
    """

    n_records: int
    dim: int
    train: LabelledQueries
    val: LabelledQueries | None = None
    label_ids: np.ndarray | None = None
    labels_name: str = "qrels.json"

    def over_rows(self, result: PassResult) -> FitProblem:
        """This problem with labels over corpus rows, from a by-id pass's result."""
        if self.label_ids is None:
            return self
        rows = result.rows_of(self.label_ids)
        splits = [s for s in (self.train, self.val) if s is not None]
        for split in splits:
            missing = np.flatnonzero(rows[split.relevance.indices] < 0)
            if len(missing):
                entry = int(missing[0])
                query = int(np.searchsorted(split.relevance.indptr, entry, side="right")) - 1
                doc = self.label_ids[split.relevance.indices[entry]].decode("utf-8")
                qid = split.query_ids[query] if split.query_ids is not None else query
                raise CorpusError(
                    f"{self.labels_name}: relevant id {doc!r} (query {qid!r}, split "
                    f"{split.name!r}) is not in the corpus"
                )

        def mapped(split: LabelledQueries | None) -> LabelledQueries | None:
            if split is None:
                return None
            rel = split.relevance
            # from_coo re-sorts each query's entries by corpus row, as row labels have them
            over = Relevance.from_coo(
                rel.query_of_entry(), rows[rel.indices], rel.n_queries, self.n_records, rel.grades
            )
            return replace(split, relevance=over)

        return replace(self, train=mapped(self.train), val=mapped(self.val), label_ids=None)


@dataclass(frozen=True)
class GammaChoice:
    """What the γ search decided: γ, the validation curve, and optional per-record γs."""

    gamma: float
    curve: dict[str, Any] | None = None
    accuracy: float | None = None
    #: one γ per tracked record (clustered NUDGE-N); None: ``gamma`` for all
    record_gamma: np.ndarray | None = None
    #: further learned attributes to set on the estimator (``name_`` → value)
    attributes: dict[str, Any] = field(default_factory=dict)


class NudgeEstimator(ABC):
    """What every NUDGE estimator shares: input checks, G, the tracked records, the pass.

    Parameters
    ----------
    gamma : float, optional
        Fixed step size; ``None`` searches it on the validation queries.
    device : str, optional
        ``None``/``"cpu"`` for numpy, ``"torch"`` for torch on the CPU, ``"cuda"`` etc.
    block_rows, query_block, block_elements : int
        Working-memory bounds of the corpus pass and of the γ search.
    """

    #: How γ is chosen: ``"sweep"`` (exact, NUDGE-M's step function) or ``"grid"``.
    gamma_search: ClassVar[str] = "grid"

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

    # -- parameters ----------------------------------------------------------------------
    def check_params(self) -> None:
        """Raise ``ValueError`` for a constructor parameter out of range."""
        check_gamma(self.gamma)
        for name in ("block_rows", "query_block", "block_elements"):
            value = getattr(self, name)
            if int(value) != value or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")

    @property
    def searches_gamma(self) -> bool:
        """Whether γ is chosen on validation queries (no fixed ``gamma``)."""
        return self.gamma is None

    @property
    def uses_val(self) -> bool:
        """Whether the fit needs the validation queries (to choose γ, or to fit on)."""
        return self.searches_gamma

    @property
    def fixed_k(self) -> int:
        """Best scores among the records that do not move that the γ search needs per
        validation query (what the corpus pass keeps); 0 when γ is fixed."""
        return self._fixed_k() if self.searches_gamma else 0

    # -- planning ------------------------------------------------------------------------
    def problem(
        self,
        n_records: int,
        dim: int,
        train_queries: Any,
        train_relevant: RelevanceLike,
        val_queries: Any = None,
        val_relevant: RelevanceLike = None,
        *,
        corpus_ids: Sequence[str] | None = None,
        train_query_ids: Sequence[str] | None = None,
        val_query_ids: Sequence[str] | None = None,
    ) -> FitProblem:
        """Check the labelled queries of a fit over a corpus of ``n_records × dim``."""
        train_q = check_matrix(train_queries, "train queries", dim=dim)
        train_rel = check_relevance(
            train_relevant,
            "train labels",
            n_queries=len(train_q),
            n_records=n_records,
            corpus_ids=corpus_ids,
            query_ids=train_query_ids,
        )
        val = None
        if self.uses_val:
            if val_queries is None or val_relevant is None:
                raise ValueError("validation queries and labels are needed to choose gamma")
            val_q = check_matrix(val_queries, "validation queries", dim=dim)
            val_rel = check_relevance(
                val_relevant,
                "validation labels",
                n_queries=len(val_q),
                n_records=n_records,
                corpus_ids=corpus_ids,
                query_ids=val_query_ids,
            )
            val = LabelledQueries(val_q, val_rel, "val")
        return FitProblem(n_records, dim, LabelledQueries(train_q, train_rel, "train"), val)

    def tracked(self, problem: FitProblem) -> np.ndarray:
        """Sorted indices (corpus rows, or positions in ``label_ids``) the pass must
        return whole: every record a training query points to and, when γ is searched,
        every record relevant to a validation query. All other rows only feed each
        validation query's best ``fixed_k`` scores."""
        rows = np.unique(problem.train.relevance.indices)
        if self.uses_val and problem.val is not None:
            rows = np.union1d(rows, problem.val.relevance.indices)
        return rows.astype(np.int64)

    def pass_plan(self, problem: FitProblem) -> PassPlan:
        """The corpus pass this fit needs."""
        self.check_params()
        _check_labelled(problem, self.uses_val)
        tracked = self.tracked(problem)
        if self.searches_gamma:
            self._check_k(problem.n_records)
        queries = problem.val.queries if self.searches_gamma else None  # type: ignore[union-attr]
        k, block = self.fixed_k, int(self.query_block)
        if problem.label_ids is not None:
            return PassPlan(queries, k, tracked_ids=problem.label_ids[tracked], query_block=block)
        return PassPlan(queries, k, tracked_rows=tracked, query_block=block)

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
    ) -> NudgeEstimator:
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
            and ``train_query_ids``; entries of other queries are ignored), a scipy sparse
            matrix, or a :class:`~nudgekit.core.Relevance`.
        val_queries, val_relevant :
            Validation queries and labels, same formats; needed unless ``gamma`` is fixed.
        progress : callable, optional
            ``progress(phase, done, total)`` for long steps.

        Returns
        -------
        self
        """
        self.check_params()
        tick = time.perf_counter()
        source = ArraySource(corpus)
        problem = self.problem(
            source.n_records,
            source.dim,
            train_queries,
            train_relevant,
            val_queries,
            val_relevant,
            corpus_ids=corpus_ids,
            train_query_ids=train_query_ids,
            val_query_ids=val_query_ids,
        )
        return self.fit_source(
            source, problem, progress=progress, timings={"prepare": time.perf_counter() - tick}
        )

    def fit_source(
        self,
        source: BlockSource,
        problem: FitProblem,
        *,
        run_pass: PassRunner | None = None,
        progress: ProgressCallback | None = None,
        timings: dict[str, float] | None = None,
    ) -> NudgeEstimator:
        """:meth:`fit` on any block source: plan, one pass by ``run_pass``, finish.

        ``run_pass(source, plan, progress=advance)`` is where the pass runs (default: this
        process, :func:`~nudgekit.core.corpus_pass.corpus_pass` with this estimator's
        device and block size); an engine passes its own.
        """
        timings = dict(timings or {})
        plan = self.pass_plan(problem)
        if run_pass is None:

            def run_pass(source: BlockSource, plan: PassPlan, **kw: Any) -> PassResult:
                return corpus_pass(
                    source, plan, device=self.device, block_rows=int(self.block_rows), **kw
                )

        tick = time.perf_counter()
        advance = phase_counter(progress, "scan corpus", source.n_records)
        result = run_pass(source, plan, progress=advance)
        # a fixed γ on an array gathers the tracked rows only: part of preparing
        phase = "prepare" if result.stats.get("engine") == "gather" else "scan_corpus"
        timings[phase] = timings.get(phase, 0.0) + time.perf_counter() - tick
        return self.fit_from_pass(problem.over_rows(result), result, timings=timings)

    def fit_from_pass(
        self, problem: FitProblem, result: PassResult, *, timings: dict[str, float] | None = None
    ) -> NudgeEstimator:
        """Everything after the corpus pass: G, the γ search and the update, on the
        tracked records only. ``problem`` has labels over corpus rows; ``result`` is the
        pass of :meth:`pass_plan`. The model ends in the state :meth:`fit` leaves it in."""
        self.check_params()
        _check_labelled(problem, self.uses_val)
        timings = dict(timings or {})
        tick = time.perf_counter()
        tracked = self.tracked(problem)
        if not np.array_equal(tracked, result.rows):
            raise ValueError("the corpus pass did not return exactly the tracked records")
        v = np.ascontiguousarray(result.vectors, dtype=np.float32)
        if v.shape != (len(tracked), problem.dim):
            raise ValueError(
                f"tracked vectors have shape {v.shape}, expected {(len(tracked), problem.dim)}"
            )
        xp = get_backend(self.device)
        fit = self._fit_labels(problem)
        moved_rows, g = query_sums(fit.queries, fit.relevance)
        c = np.zeros_like(v)
        c[np.searchsorted(tracked, moved_rows)] = self._direction(g)
        timings["prepare"] = timings.get("prepare", 0.0) + time.perf_counter() - tick

        if self.searches_gamma:
            tick = time.perf_counter()
            choice = self._select(xp, problem, tracked, v, c, result)
            timings["search_gamma"] = time.perf_counter() - tick
        else:
            choice = self._fixed_choice()
        self.gamma_ = choice.gamma
        self.validation_curve_ = choice.curve
        self.validation_accuracy_ = choice.accuracy
        for name, value in choice.attributes.items():
            setattr(self, name, value)

        tick = time.perf_counter()
        gammas = (
            np.full(len(tracked), choice.gamma)
            if choice.record_gamma is None
            else choice.record_gamma
        )
        moves = self._movable(v, c, choice) & (gammas > 0)
        self._prepare_update(fit.relevance, tracked, moves)
        step = choice.gamma if choice.record_gamma is None else choice.record_gamma[moves]
        self.changed_rows_ = tracked[moves]
        self.changed_embeddings_ = self._update(v[moves], c[moves], step)
        _check_outputs(self.changed_embeddings_, choice.gamma)
        self.original_embeddings_ = v[moves]
        self.n_changed_ = int(moves.sum())
        self.n_records_, self.dim_ = int(problem.n_records), int(problem.dim)
        # a pass by id (Parquet shards, a store) names the changed records by id too
        self.changed_ids_ = (
            None if result.ids is None else result.ids[np.searchsorted(tracked, self.changed_rows_)]
        )
        self.pass_stats_ = {**result.stats, "n_tracked": len(tracked)}
        timings["update"] = time.perf_counter() - tick
        self.timings_ = timings
        return self

    # -- output --------------------------------------------------------------------------
    def iter_transform(self, corpus: Any, block_rows: int | None = None) -> Iterator[np.ndarray]:
        """The new embeddings, block by block: normalised rows, changed rows replaced."""
        self._check_fitted()
        source = corpus if isinstance(corpus, BlockSource) else ArraySource(corpus)
        if (source.n_records, source.dim) != (self.n_records_, self.dim_):
            raise ValueError(
                f"corpus has shape {(source.n_records, source.dim)} but the model was fitted "
                f"on {(self.n_records_, self.dim_)}"
            )
        for block in source.blocks(block_rows or int(self.block_rows)):
            out = normalised_rows(block, source)
            start, stop = block.start, block.start + len(block)
            lo, hi = np.searchsorted(self.changed_rows_, [start, stop])
            out[self.changed_rows_[lo:hi] - start] = self.changed_embeddings_[lo:hi]
            yield out

    def transform(self, corpus: Any) -> np.ndarray:
        """The whole new embedding matrix (float32, N × d) in memory."""
        return np.concatenate(list(self.iter_transform(corpus)), axis=0)

    def fit_transform(self, corpus: Any, *args: Any, **kwargs: Any) -> np.ndarray:
        return self.fit(corpus, *args, **kwargs).transform(corpus)

    def summary(self) -> dict[str, Any]:
        """What the fit learned, as JSON-ready values (what fit.json and bench report)."""
        self._check_fitted()
        return {
            "gamma": float(self.gamma_),
            "gamma_searched": self.searches_gamma,
            "gamma_search": self.gamma_search if self.searches_gamma else "fixed",
            "val_k": int(getattr(self, "val_k", 1)),
            "validation_accuracy": self.validation_accuracy_,
            "validation_curve": self.validation_curve_,
            "n_changed": self.n_changed_,
            **self._learned(),
        }

    # -- hooks ---------------------------------------------------------------------------
    def _check_fitted(self) -> None:
        if not hasattr(self, "gamma_"):
            raise RuntimeError(f"{type(self).__name__} is not fitted yet; call fit() first")

    def _learned(self) -> dict[str, Any]:
        """Method-specific results for :meth:`summary`."""
        return {}

    def _check_k(self, n_records: int) -> None:
        """Refuse a top-k accuracy criterion that no γ can change."""
        if self.fixed_k >= n_records:
            raise ValueError(
                f"val_k {self.fixed_k} is not below the {n_records} records: every "
                "validation query would count as answered at every γ — choose a smaller val_k"
            )

    def _fit_labels(self, problem: FitProblem) -> LabelledQueries:
        """The labelled queries whose sums move the records (the training queries)."""
        return problem.train

    def _select(
        self,
        xp: Backend,
        problem: FitProblem,
        tracked: np.ndarray,
        v: np.ndarray,
        c: np.ndarray,
        result: PassResult,
    ) -> GammaChoice:
        """Choose γ on the validation queries (the fixed scores of ``result``)."""
        val, fixed = problem.val, result.fixed
        if val is None or fixed is None or np.shape(fixed) != (len(val.queries), self.fixed_k):
            raise ValueError(
                f"the corpus pass returned fixed scores of shape {np.shape(fixed)}, "
                f"expected {(len(val.queries) if val else 0, self.fixed_k)}"
            )
        rel = val.relevance
        local = Relevance(
            rel.indptr, np.searchsorted(tracked, rel.indices), rel.grades, len(tracked)
        )
        return self._choose_gamma(xp, val.queries, v, c, fixed, local)

    def _prepare_update(self, fit: Relevance, tracked: np.ndarray, moves: np.ndarray) -> None:  # noqa: B027
        """Called before :meth:`_update` with the fitting labels and the moving records."""

    def _fixed_choice(self) -> GammaChoice:
        """The choice when γ is fixed (no validation search)."""
        return GammaChoice(float(self.gamma))  # type: ignore[arg-type]

    @abstractmethod
    def _direction(self, g: np.ndarray) -> np.ndarray:
        """The per-record move direction stored as c (G itself, or Ĝ)."""

    @abstractmethod
    def _fixed_k(self) -> int:
        """How many best fixed scores per validation query the search needs."""

    @abstractmethod
    def _choose_gamma(
        self,
        xp: Backend,
        val_q: np.ndarray,
        v: np.ndarray,
        c: np.ndarray,
        fixed: np.ndarray,
        rel: Relevance,
    ) -> GammaChoice:
        """Pick γ on the validation set (``rel`` indexes the tracked records)."""

    @abstractmethod
    def _movable(self, v: np.ndarray, c: np.ndarray, choice: GammaChoice) -> np.ndarray:
        """Which tracked records can move (the base class adds: where their γ > 0)."""

    @abstractmethod
    def _update(self, v: np.ndarray, c: np.ndarray, gamma: float | np.ndarray) -> np.ndarray:
        """New embeddings of the moving records (``gamma`` per row for per-record γs)."""


def _check_labelled(problem: FitProblem, searching: bool) -> None:
    val = problem.val
    if searching and val is not None:
        unlabelled = np.flatnonzero(val.relevance.counts() == 0)
        if len(unlabelled):
            j = int(unlabelled[0])
            qid = val.query_ids[j] if val.query_ids is not None else j
            raise ValueError(f"validation labels: query {qid} has no relevant record")
    if problem.train.relevance.nnz == 0:
        raise ValueError("train labels: no training query has a relevant record")


def _check_outputs(embeddings: np.ndarray, gamma: float) -> None:
    """Refuse a fit whose new embeddings are not finite and searchable (a huge γ)."""
    if not len(embeddings):
        return
    norms = row_norms(np.asarray(embeddings))
    largest = float(np.max(norms)) if np.isfinite(norms).all() else float("inf")
    if largest > MAX_OUTPUT_NORM:
        raise ValueError(
            f"gamma {gamma:g} moves records to vectors of norm {largest:.3g} (at most "
            f"{MAX_OUTPUT_NORM:g} stays searchable): their scores would swamp or overflow "
            "every other record's — choose a smaller gamma"
        )


def curve_value(curve: dict[str, list[float]], gamma: float) -> float:
    """The validation curve at ``gamma``: the value at the last point ≤ γ.

    Exact for both curve shapes: NUDGE-M's step function (value at and right of each
    breakpoint) and NUDGE-N's grid (γ is a grid point).
    """
    i = int(np.searchsorted(np.asarray(curve["gamma"]), gamma, side="right")) - 1
    return float(curve["accuracy"][max(i, 0)])


def phase_counter(progress: ProgressCallback | None, phase: str, total: int) -> Advance | None:
    """Adapt ``progress(phase, done, total)`` to a per-step ``advance(n)`` callback."""
    if progress is None:
        return None
    done = 0

    def advance(n: int) -> None:
        nonlocal done
        done += n
        progress(phase, done, total)

    return advance
