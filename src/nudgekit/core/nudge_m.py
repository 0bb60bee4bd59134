"""NUDGE-M: X̂_i = X_i + γ·Ĝ_i with γ the exact optimum of validation top-1 accuracy
(paper §3.2).

For a validation query q and a relevant record y, every score is linear in γ:
q·X̂_i = S_i + γ·T_i with S_i = q·X_i and T_i = q·Ĝ_i. So "y ranks first" holds on an
interval [L, U] of γ ≥ 0 (ties count as correct). γ* is the smallest point covered by
the most intervals. Records that never move (T_i = 0) enter only through the best
score among them, which the corpus pass (:mod:`nudgekit.core.corpus_pass`) computes once.

:class:`NudgeM` is the estimator.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from nudgekit.core.backend import Backend
from nudgekit.core.checks import check_gamma
from nudgekit.core.estimator import GammaChoice, NudgeEstimator, curve_value
from nudgekit.core.nudge_n import grid_hits
from nudgekit.core.relevance import Relevance

#: γ grid of ``criterion="ndcg"`` (a ranking metric has no exact sweep): 0 to 8, finer low
NDCG_GAMMAS: tuple[float, ...] = (
    0.0, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.7, 1.0, 1.5, 2.0, 3.0, 5.0, 8.0,
)  # fmt: skip
CRITERIA = ("top1", "ndcg")


def unit_directions(g: np.ndarray) -> np.ndarray:
    """Ĝ = G/‖G‖ row-wise, zero rows kept zero (float32)."""
    norms = np.sqrt(np.einsum("ij,ij->i", g, g, dtype=np.float64))
    safe = np.where(norms > 0, norms, 1.0)
    return (g / safe[:, None]).astype(np.float32)


def apply_update(v: np.ndarray, g_hat: np.ndarray, gamma: float) -> np.ndarray:
    """X̂ = X + γ·Ĝ (float32)."""
    return (v.astype(np.float64) + gamma * g_hat.astype(np.float64)).astype(np.float32)


def winning_intervals(
    xp: Backend,
    queries: np.ndarray,
    v: np.ndarray,
    g_hat: np.ndarray,
    fixed_best: np.ndarray,
    relevance: Relevance,
    *,
    block_elements: int = 1 << 23,
) -> tuple[np.ndarray, np.ndarray]:
    """The interval [L, U] of γ ≥ 0 on which each (query, relevant record) pair ranks first.

    Parameters
    ----------
    queries : float32 (V, d)
    v, g_hat : float32 (L, d)
        The tracked records (all that can move or answer a validation query), unit norm,
        and their Ĝ (zero rows for records that do not move).
    fixed_best : float32 (V,)
        Each query's best score among all other records (they have slope 0).
    relevance : Relevance over the L tracked records.

    Returns
    -------
    query, lower, upper : arrays
        One entry per pair that can rank first for some γ ≥ 0: its query, and the
        interval (``upper`` may be inf).

    Notes
    -----
    y beats record i at γ iff γ·(T_y − T_i) ≥ S_i − S_y: a lower bound where T_y > T_i, an
    upper bound where T_y < T_i, and a pair-killer where the slopes are equal and i scores
    higher. Most records score below y and rise more slowly (S_i < S_y, T_i < T_y): they
    bound nothing, so each block keeps only the other (record, pair) entries, and the
    bounds are reduced over those. Pairs are processed in blocks of about
    ``block_elements / L``.
    """
    n_tracked = v.shape[0]
    pair_query = relevance.query_of_entry()
    pair_record = relevance.indices
    v_t, g_t = xp.asarray(v).T, xp.asarray(g_hat).T
    step = max(1, block_elements // max(n_tracked, 1))
    queries_ok, lowers, uppers = [], [], []
    for p0 in range(0, len(pair_query), step):
        pq = pair_query[p0 : p0 + step]
        n_pairs = len(pq)
        qb = xp.asarray(queries[pq])
        gap, rise = qb @ v_t, qb @ g_t
        at_y = (xp.index(np.arange(n_pairs)), xp.index(pair_record[p0 : p0 + step]))
        s_y, t_y = xp.to_numpy(gap[at_y]), xp.to_numpy(rise[at_y])
        gap -= xp.asarray(s_y)[:, None]  # S_i − S_y
        rise -= xp.asarray(t_y)[:, None]  # T_i − T_y = −slope (negation is exact)
        rows, cols = xp.nonzero((gap > 0) | (rise >= 0))
        gap_c = xp.to_numpy(gap[rows, cols])
        slope_c = -xp.to_numpy(rise[rows, cols])
        rows = xp.to_numpy(rows)
        # the never-moving records: one more competitor, with slope T_y − 0
        gap_f = fixed_best[pq].astype(np.float32) - s_y
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio_c = gap_c / slope_c
            ratio_f = gap_f / t_y
        lower = _row_extreme(
            np.maximum, rows, ratio_c, (gap_c > 0) & (slope_c > 0), n_pairs, -np.inf
        )
        lower = np.maximum(lower, np.where(t_y > 0, ratio_f, -np.inf))
        upper = _row_extreme(np.minimum, rows, ratio_c, slope_c < 0, n_pairs, np.inf)
        upper = np.minimum(upper, np.where(t_y < 0, ratio_f, np.inf))
        killed = np.zeros(n_pairs, dtype=bool)
        killed[rows[(slope_c == 0) & (gap_c > 0)]] = True
        killed |= (t_y == 0) & (gap_f > 0)
        lower, upper = np.maximum(lower.astype(np.float64), 0.0), upper.astype(np.float64)
        ok = ~killed & (upper >= lower)
        queries_ok.append(pq[ok])
        lowers.append(lower[ok])
        uppers.append(upper[ok])
    if not lowers:
        return np.empty(0, dtype=np.int64), np.empty(0), np.empty(0)
    return np.concatenate(queries_ok), np.concatenate(lowers), np.concatenate(uppers)


def _row_extreme(
    ufunc: np.ufunc,
    rows: np.ndarray,
    values: np.ndarray,
    keep: np.ndarray,
    n_rows: int,
    empty: float,
) -> np.ndarray:
    """``ufunc`` (max or min) of ``values[keep]`` per row; ``empty`` for rows with none.

    ``rows`` must be sorted (as ``nonzero`` returns them).
    """
    out = np.full(n_rows, empty, dtype=np.float32)
    rows, values = rows[keep], values[keep]
    if len(rows):
        starts = np.flatnonzero(np.r_[True, rows[1:] != rows[:-1]])
        out[rows[starts]] = ufunc.reduceat(values, starts)
    return out


def merge_per_query(
    query: np.ndarray, lower: np.ndarray, upper: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Union of each query's winning intervals.

    A query with several relevant records is right once, not once per record: where one
    relevant record hands the top spot to another, their intervals touch, and counting
    both would count the query twice at that γ.
    """
    order = np.lexsort((lower, query))
    query, lower, upper = query[order], lower[order], upper[order]
    if len(query) == 0:
        return lower, upper
    # one record is strictly first between crossings, so a query's intervals only touch
    # (or overlap by rounding): merge neighbours that meet
    starts = np.flatnonzero(np.r_[True, (query[1:] != query[:-1]) | (lower[1:] > upper[:-1])])
    return lower[starts], np.maximum.reduceat(upper, starts)


@dataclass(frozen=True)
class Sweep:
    """Coverage of the γ axis by the winning intervals: a step function."""

    gammas: np.ndarray  # breakpoints, ascending
    covered: np.ndarray  # intervals covering each breakpoint (closed intervals)

    @property
    def best_gamma(self) -> float:
        """The smallest γ covered by the most intervals (0 when there is none)."""
        if len(self.gammas) == 0:
            return 0.0
        return float(self.gammas[int(np.argmax(self.covered))])


def sweep(lower: np.ndarray, upper: np.ndarray) -> Sweep:
    """Count, at every interval endpoint, how many closed intervals [L, U] cover it.

    The maximum of the coverage is attained at some L, so the L values and U values
    together describe the whole step function.
    """
    points = np.unique(np.concatenate([lower, upper[np.isfinite(upper)], [0.0]]))
    lo, up = np.sort(lower), np.sort(upper)
    started = np.searchsorted(lo, points, side="right")
    ended = np.searchsorted(up, points, side="left")
    return Sweep(points, (started - ended).astype(np.int64))


class NudgeM(NudgeEstimator):
    """NUDGE-M: move each answering record by γ along its normalised G; exact best γ.

    Parameters
    ----------
    gamma : float, optional
        Fixed step size; ``None`` (default) searches it on the validation queries.
    criterion : {"top1", "ndcg"}
        ``"top1"`` (default, as the paper and nudge-ft): the γ that maximises validation
        top-1 accuracy exactly (interval sweep). ``"ndcg"``: the γ of ``gammas`` with the
        best mean validation NDCG@``k`` (first maximum: the smallest γ) — top-1's optimum
        can be far too large where queries have several relevant records.
    k, gammas :
        The cut-off and the grid of ``criterion="ndcg"``.
    device : str, optional
        ``None``/``"cpu"`` for numpy, ``"torch"`` for torch on the CPU, ``"cuda"`` etc.
    block_rows, query_block, block_elements : int
        Working-memory bounds of the corpus pass and of the γ search.

    Attributes
    ----------
    gamma_ : float
    validation_curve_ : dict or None
        ``{"gamma": [...], "accuracy": [...]}``: top-1 validation accuracy as a step
        function, value at and right of each breakpoint (``"ndcg"``: NDCG at each grid
        point, and ``"criterion"``).
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

    def __init__(
        self,
        gamma: float | None = None,
        *,
        criterion: str = "top1",
        k: int = 10,
        gammas: Sequence[float] = NDCG_GAMMAS,
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
        self.criterion = criterion
        self.k = k
        self.gammas = gammas

    @property
    def gamma_search(self) -> str:  # type: ignore[override]
        return "sweep" if self.criterion == "top1" else "grid"

    def check_params(self) -> None:
        super().check_params()
        if self.criterion not in CRITERIA:
            raise ValueError(
                f"criterion must be one of {', '.join(CRITERIA)}, got {self.criterion!r}"
            )
        if self.criterion == "ndcg":
            if int(self.k) != self.k or self.k < 1:
                raise ValueError(f"k must be a positive integer, got {self.k!r}")
            if len(self.gammas) == 0:
                raise ValueError("gammas: the grid is empty")
            for g in self.gammas:
                check_gamma(g, "gammas")

    def _direction(self, g: np.ndarray) -> np.ndarray:
        return unit_directions(g)

    def _fixed_k(self) -> int:
        return 1 if self.criterion == "top1" else int(self.k)

    def _check_k(self, n_records: int) -> None:
        # NDCG@k still ranks when k covers the whole corpus (the pass pads with -inf)
        if self.criterion == "top1":
            super()._check_k(n_records)

    def _choose_gamma(self, xp, val_q, v, c, fixed, rel) -> GammaChoice:  # type: ignore[override]
        if self.criterion == "ndcg":
            return self._choose_by_ndcg(xp, val_q, v, c, fixed, rel)
        query, lower, upper = winning_intervals(
            xp, val_q, v, c, fixed[:, 0], rel, block_elements=self.block_elements
        )
        result = sweep(*merge_per_query(query, lower, upper))
        accuracy = result.covered / len(val_q)
        curve = {"gamma": result.gammas.tolist(), "accuracy": accuracy.tolist()}
        return GammaChoice(result.best_gamma, curve, curve_value(curve, result.best_gamma))

    def _choose_by_ndcg(self, xp, val_q, v, c, fixed, rel) -> GammaChoice:  # type: ignore[no-untyped-def]
        """The γ of the grid with the best mean validation NDCG@k; X̂ = v + γ·c is scored
        in span(v, c) as NUDGE-N's grid is, its norm bounded at the largest γ."""
        k = int(self.k)
        gammas = tuple(float(g) for g in self.gammas)
        vv = np.einsum("ij,ij->i", v, v, dtype=np.float64)
        vc = np.einsum("ij,ij->i", v, c, dtype=np.float64)
        cc = np.einsum("ij,ij->i", c, c, dtype=np.float64)
        norms2 = [vv + 2 * g * vc + g * g * cc for g in gammas]
        max_norm = np.sqrt(np.maximum(np.max(norms2, axis=0), 0.0)) * (1 + 1e-6)
        ones = np.ones(len(v))
        coeffs = [(ones, np.full(len(v), g)) for g in gammas]
        dcg = grid_hits(
            xp, val_q, v, c, coeffs, fixed, rel, k,
            block_elements=self.block_elements, gain="dcg", max_norm=max_norm,
        )  # fmt: skip
        ndcg = (dcg / rel.ideal_dcg(k)).mean(axis=1)
        best = int(np.argmax(ndcg))  # first maximum: the smallest γ
        curve = {
            "gamma": list(gammas),
            "accuracy": ndcg.tolist(),
            "criterion": f"validation ndcg@{k}",
        }
        return GammaChoice(gammas[best], curve, float(ndcg[best]))

    def _movable(self, v: np.ndarray, c: np.ndarray, choice: GammaChoice) -> np.ndarray:
        return np.any(c != 0, axis=1)

    def _update(self, v: np.ndarray, c: np.ndarray, gamma: float | np.ndarray) -> np.ndarray:
        return apply_update(v, c, float(gamma))
