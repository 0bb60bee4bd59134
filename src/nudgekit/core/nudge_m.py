"""NUDGE-M: X̂_i = X_i + γ·Ĝ_i with γ the exact optimum of validation top-1 accuracy
(paper §3.2).

For a validation query q and a relevant record y, every score is linear in γ:
q·X̂_i = S_i + γ·T_i with S_i = q·X_i and T_i = q·Ĝ_i. So "y ranks first" holds on an
interval [L, U] of γ ≥ 0 (ties count as correct). γ* is the smallest point covered by
the most intervals. Records that never move (T_i = 0) enter only through the best
score among them, which :func:`nudgekit.core._passes.top_k_excluding` computes once.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nudgekit.core._backend import Backend
from nudgekit.core._relevance import Relevance


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
    higher. Pairs are processed in blocks of about ``block_elements / L``.
    """
    n_tracked = v.shape[0]
    pair_query = relevance.query_of_entry()
    pair_record = relevance.indices
    v_t, g_t = xp.asarray(v).T, xp.asarray(g_hat).T
    step = max(1, block_elements // max(n_tracked, 1))
    queries_ok, lowers, uppers = [], [], []
    for p0 in range(0, len(pair_query), step):
        pq = pair_query[p0 : p0 + step]
        py = xp.index(pair_record[p0 : p0 + step])
        qb = xp.asarray(queries[pq])
        s, t = qb @ v_t, qb @ g_t
        arange = xp.index(np.arange(len(pq)))
        s_y, t_y = s[arange, py], t[arange, py]
        # the never-moving records as one more competitor with slope 0
        s = xp.concat([s, xp.asarray(fixed_best[pq])[:, None]], axis=1)
        t = xp.concat([t, xp.full((len(pq), 1), 0.0)], axis=1)
        slope = t_y[:, None] - t
        gap = s - s_y[:, None]
        ratio = gap / xp.where(slope == 0, 1.0, slope)
        lower = xp.amax(xp.where(slope > 0, ratio, -np.inf), axis=1)
        upper = xp.amin(xp.where(slope < 0, ratio, np.inf), axis=1)
        killed = xp.any((slope == 0) & (gap > 0), axis=1)
        lower, upper = xp.to_numpy(lower).astype(np.float64), xp.to_numpy(upper).astype(np.float64)
        lower = np.maximum(lower, 0.0)
        ok = ~xp.to_numpy(killed) & (upper >= lower)
        queries_ok.append(pq[ok])
        lowers.append(lower[ok])
        uppers.append(upper[ok])
    if not lowers:
        return np.empty(0, dtype=np.int64), np.empty(0), np.empty(0)
    return np.concatenate(queries_ok), np.concatenate(lowers), np.concatenate(uppers)


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
