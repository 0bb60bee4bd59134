"""NudgeN / NudgeM fitted from a corpus pass run elsewhere (the seam the engines need).

``_Nudge.fit`` does three things in order: prepare (checks, G, the tracked set), the
corpus pass (``top_k_excluding`` plus gathering the tracked rows), and the rest (γ search
and update, on tracked rows only). The engines run the middle step themselves — over
Parquet shards, possibly on a Ray cluster — so :func:`fit_from_pass` runs the first and
last steps exactly as ``_Nudge.fit`` does, through the estimator's own hooks
(``_direction``, ``_fixed_k``, ``_search``, ``_movable``, ``_update``), and leaves the
estimator in the same fitted state. It is the adapter for a ``fit_from_pass`` method on
``_Nudge`` in core (see docs/scale.md, "core seam"); once core has it, this module shrinks
to one call.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from nudgekit.core import NudgeM, NudgeN, Relevance
from nudgekit.core._backend import get_backend
from nudgekit.core._checks import check_matrix
from nudgekit.core._passes import query_sums

#: The estimators whose ``fit`` is exactly prepare → pass → search/update (the variants
#: override ``fit`` or the hooks' contract, so they are refused rather than approximated).
SUPPORTED = (NudgeN, NudgeM)


def check_model(model: Any) -> None:
    """Refuse estimators whose fit is not the plain NUDGE flow; check its parameters."""
    if type(model) not in SUPPORTED:
        raise ValueError(
            f"{type(model).__name__}: the scale-out engines fit NudgeN and NudgeM only"
        )
    model._check_params()


def tracked_rows(model: Any, train_relevance: Relevance, val_relevance: Relevance | None):
    """The rows ``_Nudge.fit`` tracks: records with a training label, plus val-relevant ones."""
    moved = np.unique(train_relevance.indices)
    if model.gamma is None and val_relevance is not None:
        return np.union1d(moved, val_relevance.indices).astype(np.int64)
    return moved.astype(np.int64)


def fit_from_pass(
    model: Any,
    *,
    n_records: int,
    dim: int,
    train_queries: np.ndarray,
    train_relevance: Relevance,
    val_queries: np.ndarray | None,
    val_relevance: Relevance | None,
    tracked: np.ndarray,
    tracked_vectors: np.ndarray,
    fixed: np.ndarray | None,
    timings: dict[str, float] | None = None,
) -> Any:
    """Finish ``model.fit`` from the results of a corpus pass; return the fitted model.

    Parameters
    ----------
    model : NudgeN or NudgeM
        Unfitted (its parameters are used: ``gamma``, ``device``, ``val_k`` ...).
    n_records, dim : int
        Corpus shape.
    train_queries, val_queries : float32 arrays
    train_relevance, val_relevance : Relevance
        Over corpus rows (``n_records``). ``val_*`` are ignored when ``model.gamma`` is set.
    tracked : int64 array
        Sorted corpus rows of the tracked records: must equal :func:`tracked_rows`.
    tracked_vectors : float32 array (len(tracked), d)
        Their L2-normalised embeddings (``normalized_rows(corpus, tracked)``).
    fixed : float32 array (V, k) or None
        ``top_k_excluding(xp, val_queries, corpus, tracked, model._fixed_k())``; ``None``
        when γ is fixed.
    timings : dict, optional
        Seconds of the earlier phases (``prepare``, ``scan_corpus`` ...), kept in
        ``timings_``.
    """
    check_model(model)
    timings = dict(timings or {})
    searching = model.gamma is None
    xp = get_backend(model.device)
    tick = time.perf_counter()
    train_q = check_matrix(train_queries, "train queries", dim=dim)
    if train_relevance.nnz == 0:
        raise ValueError("train labels: no training query has a relevant record")
    expected = tracked_rows(model, train_relevance, val_relevance if searching else None)
    if not np.array_equal(expected, tracked):
        raise ValueError("the corpus pass did not return exactly the tracked records")
    moved_rows, g = query_sums(train_q, train_relevance)
    v = np.ascontiguousarray(tracked_vectors, dtype=np.float32)
    c = np.zeros_like(v)
    c[np.searchsorted(tracked, moved_rows)] = model._direction(g)
    timings["prepare"] = timings.get("prepare", 0.0) + time.perf_counter() - tick

    if searching:
        if val_queries is None or val_relevance is None or fixed is None:
            raise ValueError("validation queries, labels and fixed scores are needed")
        val_q = check_matrix(val_queries, "validation queries", dim=dim)
        if len(np.flatnonzero(val_relevance.counts() == 0)):
            raise ValueError("validation labels: a query has no relevant record")
        tick = time.perf_counter()
        rel = Relevance(
            val_relevance.indptr,
            np.searchsorted(tracked, val_relevance.indices),
            val_relevance.grades,
            len(tracked),
        )
        model.gamma_, model.validation_curve_ = model._search(xp, val_q, v, c, fixed, rel)
        model.validation_accuracy_ = _curve_value(model.validation_curve_, model.gamma_)
        timings["search_gamma"] = time.perf_counter() - tick
    else:
        model.gamma_ = float(model.gamma)
        model.validation_curve_ = None
        model.validation_accuracy_ = None

    tick = time.perf_counter()
    moves = model._movable(v, c) if model.gamma_ > 0 else np.zeros(len(tracked), dtype=bool)
    model.changed_rows_ = tracked[moves]
    model.changed_embeddings_ = model._update(v[moves], c[moves], model.gamma_)
    model.original_embeddings_ = v[moves]
    model.n_changed_ = int(moves.sum())
    model.n_records_, model.dim_ = int(n_records), int(dim)
    timings["update"] = time.perf_counter() - tick
    model.timings_ = timings
    return model


def _curve_value(curve: dict[str, list[float]], gamma: float) -> float:
    # the curve's value at γ: the last point <= γ (step function or grid alike)
    i = int(np.searchsorted(np.asarray(curve["gamma"]), gamma, side="right")) - 1
    return float(curve["accuracy"][max(i, 0)])
