"""nudgekit's default: the move chosen by cross-validation over every labelled query,
then one final fit on all of them.

The paper (and nudge-ft) picks γ on the validation queries and ships the fit on the
training queries alone: the validation labels never move a record. :class:`NudgeCV`
instead

1. pools the training and validation queries (the *labelled* queries, L);
2. scores candidate moves by **5-fold cross-validation**: fold f fits on L minus the
   scored queries of fold f and measures their NDCG@10 — for NUDGE-N's γ grid and for
   *shrink*, a rotation whose size grows with how many queries point to a record
   (:func:`shrink_coefficients`); shrink replaces NUDGE-N only when its cross-validated
   NDCG is higher by more than one paired standard error;
3. refits the chosen move on **all** of L.

All folds share one corpus pass: the tracked records are every record a labelled query
points to (the records any fold may move and every scored query's relevant records);
everything else never moves and enters only through each scored query's best ``k``
scores, computed once (the same argument as NUDGE's own search, docs/design.md). Held-out
scores are then α·(q·v) + β·(q·G_fold) over the tracked records, pruned by the span bound
of :func:`nudgekit.core.nudge_n.grid_hits`.

Measured on every dataset we have (docs/results.md), this beats NUDGE-N as in the paper.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from nudgekit.core.backend import Backend
from nudgekit.core.corpus_pass import PassPlan, PassResult
from nudgekit.core.estimator import FitProblem, GammaChoice, LabelledQueries, NudgeEstimator
from nudgekit.core.nudge_n import (
    DEFAULT_GAMMAS,
    PARALLEL_TOL,
    MoveGeometry,
    apply_update,
    coefficients,
    grid_hits,
)
from nudgekit.core.query_sums import query_sums
from nudgekit.core.relevance import Relevance

#: shrink's κ, largest first (the smallest moves first: ties go to the smaller move)
DEFAULT_KAPPAS: tuple[float, ...] = (32.0, 16.0, 8.0, 4.0, 2.0, 1.0, 0.5, 0.25, 0.125)
#: records × scored queries above which only the validation queries and as many again
#: (half as many) training queries are scored: keeps the pass within 2× the reference's
MAX_PAIRS = 2e9
CV_MODES = ("all", "val", "none")


def shrink_coefficients(
    geometry: MoveGeometry, counts: np.ndarray, kappa: float
) -> tuple[np.ndarray, np.ndarray]:
    """α, β of *shrink*: each movable record turns towards Ĝ by the fraction n/(n + κ) of
    its angle θ to G, n = how many fitting queries point to it (float64).

    X̂ = cos(a)·v + sin(a)·z with a = θ·n/(n+κ) and z the unit part of G orthogonal to v:
    a record many queries agree on goes almost all the way to Ĝ, one with a single query a
    little. Unit norm, in span(v, G), so NUDGE-N's scoring applies.
    """
    vc, cc, m = geometry.vc, geometry.cc, geometry.movable
    alpha, beta = np.ones_like(vc), np.zeros_like(vc)
    ortho = np.sqrt(np.maximum(cc[m] - vc[m] ** 2, 0.0))
    theta = np.arccos(np.clip(vc[m] / np.sqrt(cc[m]), -1.0, 1.0))
    a = theta * counts[m] / (counts[m] + kappa)
    alpha[m] = np.cos(a) - np.sin(a) * vc[m] / ortho
    beta[m] = np.sin(a) / ortho
    return alpha, beta


class NudgeCV(NudgeEstimator):
    """nudgekit's default: NUDGE-N or *shrink*, chosen by 5-fold cross-validation over all
    labelled (train + val) queries, then refitted on all of them. Unit-norm outputs.

    Parameters
    ----------
    gamma : float, optional
        Fixed NUDGE-N γ: no selection, one fit on the training queries (as NudgeN).
    cv : {"all", "val", "none"}
        Which queries cross-validation scores: ``"all"`` labelled queries (the default;
        above ``max_pairs`` records × queries, the validation queries and half as many
        training queries), only ``"val"`` (the cheaper mode: its corpus pass is the
        reference's), or ``"none"``: NUDGE-N's γ chosen on val as nudge-ft does, then the
        refit on all labelled queries (the cheapest).
    folds : int
        Cross-validation folds.
    seed : int
        Seeds the folds (and the sample of scored training queries).
    k : int
        The criterion is mean NDCG@k of the scored queries.
    gammas, kappas : sequences of float
        NUDGE-N's γ grid (nudge-ft's by default) and shrink's κ grid.
    families : sequence of {"nudge-n", "shrink"}
        The moves to choose between.
    max_pairs : float
        See ``cv``.
    refit : bool
        The final fit uses all labelled queries (default); False: the training queries
        only, as the paper does (for measuring what the refit adds).
    device, block_rows, query_block, block_elements :
        As for :class:`~nudgekit.core.NudgeN`.

    Attributes
    ----------
    family_ : str
        The chosen move, ``"nudge-n"`` or ``"shrink"``.
    gamma_ : float
        Its parameter: γ for NUDGE-N, κ for shrink.
    validation_curve_ : dict
        ``gamma`` (the chosen family's parameter grid: γ, or κ for shrink — ``parameter``
        says which) and ``accuracy`` (its cross-validated NDCG@k, ``criterion``), and
        ``families``: every family's grid and scores.
    validation_accuracy_ : float
        The chosen candidate's cross-validated NDCG@k.
    n_labelled_, n_scored_ : int
        Labelled queries the final fit used; queries cross-validation scored.
    changed_rows_, changed_embeddings_, original_embeddings_, n_changed_, timings_ :
        As for :class:`~nudgekit.core.NudgeN`.
    """

    def __init__(
        self,
        gamma: float | None = None,
        *,
        cv: str = "all",
        folds: int = 5,
        seed: int = 0,
        k: int = 10,
        gammas: Sequence[float] = DEFAULT_GAMMAS,
        kappas: Sequence[float] = DEFAULT_KAPPAS,
        families: Sequence[str] = ("nudge-n", "shrink"),
        max_pairs: float = MAX_PAIRS,
        refit: bool = True,
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
        self.cv = cv
        self.folds = folds
        self.seed = seed
        self.k = k
        self.gammas = gammas
        self.kappas = kappas
        self.families = families
        self.max_pairs = max_pairs
        self.refit = refit

    def check_params(self) -> None:
        super().check_params()
        if self.gamma is not None and self.gamma > 4:
            raise ValueError(f"gamma must be in [0, 4] for NUDGE-N, got {self.gamma!r}")
        if self.cv not in CV_MODES:
            raise ValueError(f"cv must be one of {', '.join(CV_MODES)}, got {self.cv!r}")
        for name in ("folds", "k"):
            value = getattr(self, name)
            if int(value) != value or value < (2 if name == "folds" else 1):
                raise ValueError(f"{name} must be an integer ≥ {2 if name == 'folds' else 1}")
        unknown = set(self.families) - {"nudge-n", "shrink"}
        if not self.families or unknown:
            raise ValueError(f"families: choose from nudge-n, shrink (got {list(self.families)})")
        if not len(self.gammas) or any(not 0 <= g <= 4 for g in self.gammas):
            raise ValueError("gammas: a non-empty grid in [0, 4]")
        if not len(self.kappas) or any(not (k > 0 and np.isfinite(k)) for k in self.kappas):
            raise ValueError("kappas: a non-empty grid of positive numbers")

    @property
    def gamma_search(self) -> str:  # type: ignore[override]
        return "grid" if self.cv == "none" else "cross-validation"

    # -- planning: one pass for every fold -------------------------------------------------
    def _labelled(self, problem: FitProblem) -> LabelledQueries:
        """Train and val pooled (train first)."""
        if problem.val is None:
            return problem.train
        train, val = problem.train, problem.val
        queries = np.concatenate([train.queries, val.queries])
        rel = _concat(train.relevance, val.relevance)
        ids = None
        if train.query_ids is not None and val.query_ids is not None:
            ids = [*train.query_ids, *val.query_ids]
        return LabelledQueries(queries, rel, "train+val", ids)

    def _scored(self, problem: FitProblem) -> np.ndarray:
        """Indices into the pooled queries that cross-validation scores (sorted)."""
        n_train = len(problem.train.queries)
        n_val = len(problem.val.queries) if problem.val is not None else 0
        val = np.arange(n_train, n_train + n_val)
        if self.cv in ("val", "none"):
            return val
        n_all = n_train + n_val
        if problem.n_records * n_all <= self.max_pairs:
            return np.arange(n_all)
        rng = np.random.default_rng(self.seed)
        extra = rng.choice(n_train, size=min(n_train, max(n_val // 2, 1)), replace=False)
        return np.union1d(np.sort(extra), val)

    def pass_plan(self, problem: FitProblem) -> PassPlan:
        plan = super().pass_plan(problem)
        if not self.searches_gamma:
            return plan
        scored = self._scored(problem)
        return replace(plan, queries=self._labelled(problem).queries[scored])

    def _fixed_k(self) -> int:
        return 1 if self.cv == "none" else int(self.k)

    def _check_k(self, n_records: int) -> None:
        # NDCG@k still ranks when k covers the whole corpus (the pass pads with -inf)
        if self.cv == "none":
            super()._check_k(n_records)

    # -- fitting ---------------------------------------------------------------------------
    def _fit_labels(self, problem: FitProblem) -> LabelledQueries:
        return self._labelled(problem) if self.refit else problem.train

    def _select(
        self, xp: Backend, problem: FitProblem, tracked: np.ndarray, v: np.ndarray,
        c: np.ndarray, result: PassResult,
    ) -> GammaChoice:  # fmt: skip
        pooled = self._labelled(problem)
        scored = self._scored(problem)
        fixed = result.fixed
        if fixed is None or fixed.shape != (len(scored), self.fixed_k):
            raise ValueError(
                f"the corpus pass returned fixed scores of shape {np.shape(fixed)}, "
                f"expected {(len(scored), self.fixed_k)}"
            )
        local = _over_tracked(pooled.relevance, tracked)
        n_train = len(problem.train.queries)
        if self.cv == "none":
            folds = [(np.arange(n_train), np.arange(len(scored)))]
        else:
            order = np.random.default_rng(self.seed).permutation(len(scored))
            folds = []
            for f in range(int(self.folds)):
                held = np.sort(order[f :: int(self.folds)])  # positions in ``scored``
                fit = np.setdiff1d(np.arange(len(pooled.queries)), scored[held])
                folds.append((fit, held))
        families = ["nudge-n"] if self.cv == "none" else list(self.families)
        grids = {
            "nudge-n": [float(g) for g in self.gammas],
            "shrink": [float(k) for k in self.kappas],
        }
        scores = {f: np.full((len(grids[f]), len(scored)), np.nan) for f in families}
        scored_rel = local.take(scored)
        ideal = scored_rel.ideal_dcg(self.fixed_k)
        for fit, held in folds:
            fit_rel = local.take(fit)
            rows, g = query_sums(pooled.queries[fit], fit_rel)
            c = np.zeros_like(v)
            c[rows] = g
            counts = np.bincount(fit_rel.indices, minlength=len(tracked)).astype(np.float64)
            geometry = MoveGeometry.of(v, c)
            rel = scored_rel.take(held)
            queries = pooled.queries[scored[held]]
            # every candidate of every family in one scoring pass over the held-out block
            coeffs = [
                coefficients(geometry, p)
                if family == "nudge-n"
                else shrink_coefficients(geometry, counts, p)
                for family in families
                for p in grids[family]
            ]
            gain = "hits" if self.cv == "none" else "dcg"
            got = grid_hits(
                xp, queries, v, c, coeffs, fixed[held], rel, self.fixed_k,
                block_elements=self.block_elements, gain=gain,
            )  # fmt: skip
            if gain == "dcg":
                got = got / ideal[held]
            start = 0
            for family in families:
                scores[family][:, held] = got[start : start + len(grids[family])]
                start += len(grids[family])
        means = {f: scores[f].mean(axis=1) for f in families}
        # the curves are flat near their top: pick on a 3-point running mean, so that one
        # noisy grid point does not decide (first maximum: the smallest move)
        best = {f: int(np.argmax(_smoothed(means[f]))) for f in families}
        family = "nudge-n" if "nudge-n" in families else families[0]
        if "shrink" in families and "nudge-n" in families:
            diff = scores["shrink"][best["shrink"]] - scores["nudge-n"][best["nudge-n"]]
            se = diff.std(ddof=1) / np.sqrt(len(diff)) if len(diff) > 1 else np.inf
            family = "shrink" if diff.mean() > se else "nudge-n"
        elif "shrink" in families:
            family = "shrink"
        parameter = grids[family][best[family]]
        name = "gamma" if family == "nudge-n" else "kappa"
        # the chosen family's curve first (the shape every fit.json has), all of them beside
        curve: dict[str, Any] = {
            "gamma": grids[family],
            "accuracy": means[family].tolist(),
            "parameter": name,
            "criterion": "top-1 accuracy (val)" if self.cv == "none" else f"cv ndcg@{self.k}",
            "families": {
                f: {"gamma" if f == "nudge-n" else "kappa": grids[f], "score": means[f].tolist()}
                for f in families
            },
            "chosen": {"family": family, name: parameter},
        }
        return self._choice(family, parameter, curve, float(means[family][best[family]]))

    def _choice(
        self, family: str, parameter: float, curve: dict[str, Any] | None, score: float | None
    ) -> GammaChoice:
        return GammaChoice(
            parameter,
            curve,
            score,
            attributes={"family_": family},
        )

    def _fixed_choice(self) -> GammaChoice:
        return self._choice("nudge-n", float(self.gamma), None, None)  # type: ignore[arg-type]

    def _direction(self, g: np.ndarray) -> np.ndarray:
        return g

    def _choose_gamma(self, xp, val_q, v, c, fixed, rel) -> GammaChoice:  # type: ignore[override]
        raise AssertionError("NudgeCV selects in _select")  # pragma: no cover

    def _movable(self, v: np.ndarray, c: np.ndarray, choice: GammaChoice) -> np.ndarray:
        return MoveGeometry.of(v, c).movable

    def _update(self, v: np.ndarray, c: np.ndarray, gamma: float | np.ndarray) -> np.ndarray:
        geometry = MoveGeometry.of(v, c)
        if self.family_ == "nudge-n":
            return apply_update(v, c, geometry, float(gamma))
        alpha, beta = shrink_coefficients(geometry, self._counts, float(gamma))
        out = alpha[:, None] * v.astype(np.float64) + beta[:, None] * c.astype(np.float64)
        return out.astype(np.float32)

    def _prepare_update(self, fit: Relevance, tracked: np.ndarray, moves: np.ndarray) -> None:
        rows = np.searchsorted(tracked, fit.indices)
        self._counts = np.bincount(rows, minlength=len(tracked)).astype(np.float64)[moves]

    def fit_from_pass(self, problem, result, *, timings=None):  # type: ignore[no-untyped-def]
        self.n_labelled_ = len(self._fit_labels(problem).queries)
        self.n_scored_ = len(self._scored(problem)) if self.searches_gamma else 0
        return super().fit_from_pass(problem, result, timings=timings)

    def _learned(self) -> dict[str, Any]:
        return {
            "family": self.family_,
            "selection": {
                "rule": (
                    f"{int(self.folds)}-fold cross-validation, mean NDCG@{int(self.k)}"
                    if self.cv != "none"
                    else "NUDGE-N's grid on the validation queries (top-1 accuracy)"
                )
                if self.searches_gamma
                else "fixed gamma",
                "cv": self.cv,
                "seed": int(self.seed),
                "n_labelled": int(self.n_labelled_),
                "n_scored": int(self.n_scored_),
                "final_fit": "all labelled queries (train + val)"
                if self.refit
                else "the training queries",
            },
        }


def _smoothed(curve: np.ndarray) -> np.ndarray:
    """A 3-point running mean (2 points at the ends)."""
    padded = np.r_[curve[0], curve, curve[-1]]
    out = (padded[:-2] + padded[1:-1] + padded[2:]) / 3.0
    out[0] = (curve[0] + curve[1]) / 2 if len(curve) > 1 else curve[0]
    out[-1] = (curve[-1] + curve[-2]) / 2 if len(curve) > 1 else curve[-1]
    return out


def _concat(a: Relevance, b: Relevance) -> Relevance:
    return Relevance(
        np.concatenate([a.indptr, b.indptr[1:] + a.indptr[-1]]),
        np.concatenate([a.indices, b.indices]),
        np.concatenate([a.grades, b.grades]),
        a.n_records,
    )


def _over_tracked(rel: Relevance, tracked: np.ndarray) -> Relevance:
    return Relevance(rel.indptr, np.searchsorted(tracked, rel.indices), rel.grades, len(tracked))


__all__ = ["DEFAULT_KAPPAS", "PARALLEL_TOL", "NudgeCV", "shrink_coefficients"]
