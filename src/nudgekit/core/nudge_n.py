"""NUDGE-N: unit-norm outputs, ‖Δ_i‖² ≤ γ, closed form per record (paper §3.3).

With v = X_i (unit), c = G_i and z the unit component of c orthogonal to v, the optimum is

    X̂_i = (1 − γ/2)·v + ½·√(γ(4 − γ))·z,   or X̂_i = ĉ when v·ĉ ≥ 1 − γ/2,

i.e. v rotated towards ĉ by an angle whose chord is √γ, stopping at ĉ. Written in v and c,
X̂_i = α_i(γ)·v + β_i(γ)·c, so a validation score q·X̂_i is α_i·(q·v) + β_i·(q·c): with
S = Q·Vᵀ and T = Q·Cᵀ computed once, trying a γ costs O(queries × records that can move),
not a pass over the corpus. γ is picked from a grid by top-``k`` validation accuracy.

:class:`NudgeN` is the estimator.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from nudgekit.core.backend import Backend
from nudgekit.core.checks import check_gamma
from nudgekit.core.estimator import GammaChoice, NudgeEstimator
from nudgekit.core.relevance import Relevance

#: The reference's grid (nudge-ft 0.1.2): 0, 0.02, ..., 0.48, generated the same way.
DEFAULT_GAMMAS: tuple[float, ...] = tuple(0.02 * x for x in range(25))

#: c is taken as parallel to v when its orthogonal part holds less than this share of ‖c‖².
PARALLEL_TOL = 1e-10


@dataclass(frozen=True)
class MoveGeometry:
    """Per-record scalars of NUDGE-N: v·c, c·c, and which records may move at all.

    A record moves only where c ≠ 0, c is not parallel to v, and v·c ≥ 0 — the reference
    (nudge-ft) leaves records whose queries point away from them (v·c < 0) unchanged.
    """

    vc: np.ndarray
    cc: np.ndarray
    movable: np.ndarray

    @classmethod
    def of(cls, v: np.ndarray, c: np.ndarray) -> MoveGeometry:
        vc = np.einsum("ij,ij->i", v, c, dtype=np.float64)
        cc = np.einsum("ij,ij->i", c, c, dtype=np.float64)
        ortho = cc - vc**2
        movable = (cc > 0) & (ortho > PARALLEL_TOL * cc) & (vc >= 0)
        return cls(vc, cc, movable)


def coefficients(geometry: MoveGeometry, gamma: float) -> tuple[np.ndarray, np.ndarray]:
    """α_i(γ), β_i(γ) with X̂_i = α_i·v_i + β_i·c_i (float64; α=1, β=0 where nothing moves)."""
    vc, cc, movable = geometry.vc, geometry.cc, geometry.movable
    alpha = np.ones_like(vc)
    beta = np.zeros_like(vc)
    if gamma == 0:
        return alpha, beta
    m = movable
    ortho = np.sqrt(np.maximum(cc[m] - vc[m] ** 2, 0.0))
    half_chord = 0.5 * np.sqrt(gamma * (4.0 - gamma))
    a = (1.0 - gamma / 2.0) - half_chord * vc[m] / ortho
    b = half_chord / ortho
    # past ĉ the rotation stops at ĉ itself
    capped = vc[m] / np.sqrt(cc[m]) >= 1.0 - gamma / 2.0
    a = np.where(capped, 0.0, a)
    b = np.where(capped, 1.0 / np.sqrt(cc[m]), b)
    alpha[m], beta[m] = a, b
    return alpha, beta


def apply_update(v: np.ndarray, c: np.ndarray, geometry: MoveGeometry, gamma: float) -> np.ndarray:
    """X̂ = α·v + β·c for the given records (float32)."""
    alpha, beta = coefficients(geometry, gamma)
    out = alpha[:, None] * v.astype(np.float64) + beta[:, None] * c.astype(np.float64)
    return out.astype(np.float32)


def validation_accuracy(
    xp: Backend,
    queries: np.ndarray,
    v: np.ndarray,
    c: np.ndarray,
    geometry: MoveGeometry,
    fixed_top: np.ndarray,
    relevance: Relevance,
    gammas: tuple[float, ...],
    k: int,
    *,
    block_elements: int = 1 << 24,
) -> np.ndarray:
    """Mean top-``k`` validation accuracy of NUDGE-N for each γ in ``gammas``.

    Accuracy of a query is |top-k ∩ relevant| / min(|relevant|, k), as in nudge-ft; see
    :func:`grid_hits` for the inputs and how each γ costs only a few candidates per query.
    """
    hits = grid_hits(
        xp,
        queries,
        v,
        c,
        [coefficients(geometry, g) for g in gammas],
        fixed_top,
        relevance,
        k,
        block_elements=block_elements,
    )
    return query_accuracy(hits, relevance, k).mean(axis=1)


def query_accuracy(hits: np.ndarray, relevance: Relevance, k: int) -> np.ndarray:
    """Per-query top-k accuracy |top-k ∩ relevant| / min(|relevant|, k), as in nudge-ft."""
    return hits / np.minimum(relevance.counts(), k).astype(np.float64)


def grid_hits(
    xp: Backend,
    queries: np.ndarray,
    v: np.ndarray,
    c: np.ndarray,
    coeffs: Sequence[tuple[np.ndarray, np.ndarray]],
    fixed_top: np.ndarray,
    relevance: Relevance,
    k: int,
    *,
    block_elements: int = 1 << 24,
    gain: str = "hits",
    max_norm: np.ndarray | None = None,
) -> np.ndarray:
    """Relevant records in each query's top-``k``, for each grid point (paper §3.3, γ search).

    Shared by NUDGE-N, per-cluster γ and NUDGE-M+N: any per-record coefficients, counts
    per query (so callers can average over any subset of queries, e.g. a cluster).

    Parameters
    ----------
    queries : float32 (V, d)
    v, c : float32 (L, d)
        The tracked records, unit norm, and their move direction (zero rows for records
        that do not move).
    coeffs : sequence of (alpha, beta), each float (L,)
        One pair per grid point: X̂_i = alpha_i·v_i + beta_i·c_i. Each X̂_i must be a unit
        vector of span(v_i, c_i), or v_i itself (alpha = 1, beta = 0) — or, with
        ``max_norm``, any vector of that span no longer than ``max_norm[i]``.
    fixed_top : float32 (V, k)
        Each query's best ``k`` scores among the other records, descending.
    relevance : Relevance over the L tracked records
    k : int
    block_elements : int
        Queries are processed in blocks of about ``block_elements / L``.
    gain : {"hits", "dcg"}
        What each relevant record in the top-k adds: 1, or its grade / log2(rank + 2)
        (DCG@k, for NDCG as ``nudgekit eval`` computes it).
    max_norm : float (L,), optional
        An upper bound on ‖X̂_i‖ over every grid point, for moves that leave the unit
        sphere (NUDGE-M's X̂ = v + γĜ); by default every X̂_i has norm 1.

    Returns
    -------
    float64 (len(coeffs), V)
        Per query: the number of relevant records in its top-k, or its DCG@k; ties go to
        relevant records.

    Notes
    -----
    Every unit vector of span(v, c) scores at most ‖(q·v, q·z)‖ with z the unit part of c
    orthogonal to v, so records whose bound is below a query's k-th fixed score are dropped
    once per block (as in NUDGE-N's search) and each grid point ranks only the candidates.
    """
    n_queries, n_tracked = queries.shape[0], v.shape[0]
    coeffs32 = [(a.astype(np.float32), b.astype(np.float32)) for a, b in coeffs]
    vc = np.einsum("ij,ij->i", v, c, dtype=np.float64)
    cc = np.einsum("ij,ij->i", c, c, dtype=np.float64)
    ortho = cc - vc**2
    # the bound needs z wherever c spans a plane with v, whether or not the record moves
    spans = (cc > 0) & (ortho > PARALLEL_TOL * cc)
    inv_ortho = np.zeros(n_tracked)
    inv_ortho[spans] = 1.0 / np.sqrt(ortho[spans])
    vc_x, inv_ortho_x = xp.asarray(vc), xp.asarray(inv_ortho)
    v_t, c_t = xp.asarray(v).T, xp.asarray(c).T
    scale2 = None if max_norm is None else xp.asarray(np.asarray(max_norm, np.float64) ** 2)
    rel_keys = relevance.query_of_entry() * n_tracked + relevance.indices  # sorted
    hits = np.zeros((len(coeffs32), n_queries), dtype=np.float64)
    step = max(1, block_elements // max(n_tracked, 1))
    for q0 in range(0, n_queries, step):
        q1 = min(q0 + step, n_queries)
        qb = xp.asarray(queries[q0:q1])
        s, t = qb @ v_t, qb @ c_t
        fixed = fixed_top[q0:q1]
        threshold = fixed[:, k - 1]
        # bound² = s² + z², z = (t − s·vc)/‖c⊥‖, in place: this runs on every (query,
        # record) pair, so it is written as few passes over the block as possible
        bound2 = s * vc_x
        bound2 -= t
        bound2 *= inv_ortho_x
        bound2 *= bound2
        bound2 += s * s
        if scale2 is not None:
            bound2 *= scale2
        limit = threshold - 1e-5 * (np.abs(threshold) + 1.0)  # the bound is float32 too
        limit2 = np.where(limit > 0, limit * limit, -1.0)  # any bound passes a limit ≤ 0
        rows, cols = xp.nonzero(bound2 >= xp.asarray(limit2)[:, None])
        s_c, t_c = xp.to_numpy(s[rows, cols]), xp.to_numpy(t[rows, cols])
        rows, cols = xp.to_numpy(rows), xp.to_numpy(cols)
        for gi, (alpha, beta) in enumerate(coeffs32):
            scores = s_c * alpha[cols] + t_c * beta[cols]
            keep = scores >= threshold[rows]
            hits[gi, q0:q1] = _hits_at_k(
                rows[keep],
                cols[keep],
                scores[keep],
                fixed,
                q0,
                rel_keys,
                n_tracked,
                k,
                relevance.grades if gain == "dcg" else None,
            )
    return hits


def _hits_at_k(
    rows: np.ndarray,
    cols: np.ndarray,
    scores: np.ndarray,
    fixed: np.ndarray,
    q0: int,
    rel_keys: np.ndarray,
    n_tracked: int,
    k: int,
    grades: np.ndarray | None = None,
) -> np.ndarray:
    """Relevant records in each query's top-k, from candidate (row, col, score) triplets;
    with ``grades`` (of the relevance entries), DCG@k instead.

    ``rows`` are positions within the block of queries that starts at query ``q0``.
    """
    keys = (rows + q0) * n_tracked + cols
    pos = np.minimum(np.searchsorted(rel_keys, keys), max(len(rel_keys) - 1, 0))
    relevant = (rel_keys[pos] == keys) if len(rel_keys) else np.zeros(len(keys), dtype=bool)
    n_block = fixed.shape[0]
    all_rows = np.concatenate([rows, np.repeat(np.arange(n_block), k)])
    all_scores = np.concatenate([scores.astype(np.float64), fixed.reshape(-1)])
    all_rel = np.concatenate([relevant, np.zeros(n_block * k, dtype=bool)])
    # rank within each query: score descending, relevant first among equal scores
    order = np.lexsort((~all_rel, -all_scores, all_rows))
    sorted_rows = all_rows[order]
    first = np.searchsorted(sorted_rows, sorted_rows, side="left")
    rank = np.arange(len(order)) - first
    top_rel = (rank < k) & all_rel[order]
    if grades is None:
        return np.bincount(sorted_rows[top_rel], minlength=n_block).astype(np.float64)
    entry_grade = np.concatenate([np.where(relevant, grades[pos], 0.0), np.zeros(n_block * k)])
    gain = entry_grade[order][top_rel] / np.log2(rank[top_rel] + 2.0)
    return np.bincount(sorted_rows[top_rel], weights=gain, minlength=n_block)


class NudgeN(NudgeEstimator):
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
        As for :class:`~nudgekit.core.NudgeM`.

    Attributes
    ----------
    gamma_, validation_curve_, validation_accuracy_, changed_rows_, changed_embeddings_,
    original_embeddings_, n_changed_, timings_ :
        As for :class:`~nudgekit.core.NudgeM`; the curve holds the accuracy at each grid
        point.

    Notes
    -----
    As in nudge-ft, records whose training queries point away from them (v·G < 0) keep
    their embedding, as do records whose G is parallel to them.
    """

    def __init__(
        self,
        gamma: float | None = None,
        *,
        val_k: int = 1,
        gammas: Sequence[float] = DEFAULT_GAMMAS,
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

    def check_params(self) -> None:
        super().check_params()
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

    def _choose_gamma(self, xp, val_q, v, c, fixed, rel) -> GammaChoice:  # type: ignore[override]
        gammas = tuple(float(g) for g in self.gammas)
        accuracy = validation_accuracy(
            xp,
            val_q,
            v,
            c,
            MoveGeometry.of(v, c),
            fixed,
            rel,
            gammas,
            int(self.val_k),
            block_elements=self.block_elements,
        )
        best = int(np.argmax(accuracy))  # first maximum wins, as in nudge-ft
        curve = {"gamma": list(gammas), "accuracy": accuracy.tolist()}
        return GammaChoice(gammas[best], curve, float(accuracy[best]))

    def _movable(self, v: np.ndarray, c: np.ndarray, choice: GammaChoice) -> np.ndarray:
        return MoveGeometry.of(v, c).movable

    def _update(self, v: np.ndarray, c: np.ndarray, gamma: float | np.ndarray) -> np.ndarray:
        return apply_update(v, c, MoveGeometry.of(v, c), float(gamma))
