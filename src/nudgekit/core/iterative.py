"""NUDGE-IM / NUDGE-IN: the NUDGE-M and NUDGE-N problems solved by projected gradient ascent.

Both maximise Σ_i G_i·X̂_i, which separates per record, with gradient G_i (constant: the
objective is linear). From X̂_i = v_i, each iteration takes X̂_i ← P(X̂_i + η·G_i), all
records at once, where P projects onto the record's feasible set:

* NUDGE-M, the ball ‖X̂_i − v_i‖ ≤ γ: P pulls the point radially back onto the ball.
* NUDGE-N, the spherical cap {‖X̂_i‖ = 1, ‖X̂_i − v_i‖² ≤ γ} = {unit x : x·v_i ≥ 1 − γ/2}:
  P normalises, and a point outside the cap goes to the cap's boundary along the great
  circle through v_i. This is the *exact* Euclidean projection onto the cap (the cap is
  not convex, but its nearest point to y maximises x·y over the cap; writing
  y = y_v·v + y_w·w, w ⊥ v unit, the best x is cos θ·v + sin θ·w with θ the angle of y
  capped at the cap's angle). It is unique unless y is a multiple of −v (or 0).

The iterates stay in span(v_i, G_i) and reach the closed forms of :mod:`nudge_m` and
:mod:`nudge_n`: they exist to measure what the closed forms save. γ is chosen by the
closed forms' own search (NUDGE-M's sweep, NUDGE-N's grid), so only the solver differs.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from nudgekit.core import nudge_m, nudge_n
from nudgekit.core.estimator import GammaChoice
from nudgekit.core.nudge_m import NudgeM
from nudgekit.core.nudge_n import NudgeN


def project_ball(v: np.ndarray, x: np.ndarray, gamma: float) -> np.ndarray:
    """Euclidean projection of each row of ``x`` onto the ball ‖x_i − v_i‖ ≤ γ (NUDGE-M's set)."""
    delta = x - v
    norm = np.sqrt(np.einsum("ij,ij->i", delta, delta))
    scale = np.where(norm > gamma, gamma / np.where(norm > 0, norm, 1.0), 1.0)
    return v + scale[:, None] * delta


def project_cap(v: np.ndarray, y: np.ndarray, gamma: float) -> np.ndarray:
    """Euclidean projection of each row of ``y`` onto {unit x : ‖x − v_i‖² ≤ γ} (NUDGE-N's set).

    Normalise; rows left outside the cap (x·v < 1 − γ/2) go to the boundary point
    (1 − γ/2)·v + ½√(γ(4 − γ))·w, w the unit part of y orthogonal to v. ``v`` unit rows.
    Rows of y that are 0 or point exactly away from v have no unique projection: they
    stay at v.
    """
    norm = np.sqrt(np.einsum("ij,ij->i", y, y))
    x = y / np.where(norm > 0, norm, 1.0)[:, None]
    cos_edge = 1.0 - gamma / 2.0
    along = np.einsum("ij,ij->i", x, v)
    ortho = x - along[:, None] * v
    ortho_norm = np.sqrt(np.einsum("ij,ij->i", ortho, ortho))
    degenerate = (norm == 0) | (ortho_norm == 0) & (along < 0)
    outside = (along < cos_edge) & ~degenerate
    w = ortho[outside] / ortho_norm[outside][:, None]
    sin_edge = 0.5 * np.sqrt(gamma * max(4.0 - gamma, 0.0))
    x[outside] = cos_edge * v[outside] + sin_edge * w
    x[degenerate] = v[degenerate]
    return x


def ascend(
    v: np.ndarray,
    g: np.ndarray,
    gamma: float,
    project: str,
    *,
    step: float = 0.1,
    n_iter: int = 500,
    tol: float = 1e-7,
) -> tuple[np.ndarray, int]:
    """Projected gradient ascent on Σ_i G_i·X̂_i from X̂ = v (paper §3.2/§3.3 problems).

    Parameters
    ----------
    v : (L, d)
        Unit-norm starting embeddings.
    g : (L, d)
        G_i, the gradient of record i's objective.
    gamma : float
    project : {"ball", "cap"}
        NUDGE-M's or NUDGE-N's feasible set.
    step : float
        Fixed step size η.
    n_iter : int
        Most iterations.
    tol : float
        Stop once no coordinate moved by more than ``tol`` in an iteration (0: never).

    Returns
    -------
    x : float64 (L, d)
    iterations : int
        Iterations run.
    """
    proj = {"ball": project_ball, "cap": project_cap}[project]
    v = v.astype(np.float64)
    g = g.astype(np.float64)
    x = v.copy()
    iterations = 0
    while iterations < n_iter:  # a loop over iterations; records are vectorised
        nxt = proj(v, x + step * g, gamma)
        moved = float(np.max(np.abs(nxt - x))) if len(x) else 0.0
        x = nxt
        iterations += 1
        if moved <= tol:
            break
    return x, iterations


def _check_solver(step: float, n_iter: int, tol: float) -> None:
    if not np.isfinite(step) or step <= 0:
        raise ValueError(f"step must be a positive number, got {step!r}")
    if int(n_iter) != n_iter or n_iter < 1:
        raise ValueError(f"n_iter must be a positive integer, got {n_iter!r}")
    if not np.isfinite(tol) or tol < 0:
        raise ValueError(f"tol must be a number >= 0, got {tol!r}")


class NudgeIM(NudgeM):
    """NUDGE-IM: NUDGE-M's problem solved by projected gradient ascent (ball ‖Δ_i‖ ≤ γ).

    Parameters
    ----------
    gamma : float, optional
        ``None`` (default): NUDGE-M's exact sweep picks γ (the closed form's γ).
    step, n_iter, tol :
        Fixed step size, most iterations, stopping tolerance (see :func:`ascend`).
    device, block_rows, query_block, block_elements :
        As for :class:`NudgeM` (the ascent itself runs in numpy float64).

    Attributes
    ----------
    n_iter_ : int
        Iterations the ascent ran.
    gamma_, validation_curve_, changed_rows_, changed_embeddings_, original_embeddings_,
    n_changed_, timings_ :
        As for :class:`NudgeM`.
    """

    def __init__(
        self,
        gamma: float | None = None,
        *,
        step: float = 0.1,
        n_iter: int = 500,
        tol: float = 1e-7,
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
        self.step = step
        self.n_iter = n_iter
        self.tol = tol

    def check_params(self) -> None:
        super().check_params()
        _check_solver(self.step, self.n_iter, self.tol)

    def _direction(self, g: np.ndarray) -> np.ndarray:
        return g  # the raw gradient; the sweep below scores along Ĝ

    def _choose_gamma(self, xp, val_q, v, c, fixed, rel) -> GammaChoice:  # type: ignore[override]
        return super()._choose_gamma(xp, val_q, v, nudge_m.unit_directions(c), fixed, rel)

    def _update(self, v: np.ndarray, c: np.ndarray, gamma: float | np.ndarray) -> np.ndarray:
        x, self.n_iter_ = ascend(
            v, c, float(gamma), "ball", step=self.step, n_iter=int(self.n_iter), tol=self.tol
        )
        return x.astype(np.float32)

    def _learned(self) -> dict[str, object]:
        return {"n_iter": int(getattr(self, "n_iter_", 0))}


class NudgeIN(NudgeN):
    """NUDGE-IN: NUDGE-N's problem solved by projected gradient ascent (spherical cap).

    Parameters
    ----------
    gamma : float, optional
        Fixed γ in [0, 4]; ``None`` (default): NUDGE-N's grid picks γ.
    step, n_iter, tol :
        Fixed step size, most iterations, stopping tolerance (see :func:`ascend`).
    val_k, gammas, device, block_rows, query_block, block_elements :
        As for :class:`NudgeN` (the ascent itself runs in numpy float64).

    Attributes
    ----------
    n_iter_ : int
        Iterations the ascent ran.
    gamma_, validation_curve_, changed_rows_, changed_embeddings_, original_embeddings_,
    n_changed_, timings_ :
        As for :class:`NudgeN`.

    Notes
    -----
    The records NUDGE-N leaves alone (v·G < 0, or G parallel to v) are left alone here too.
    """

    def __init__(
        self,
        gamma: float | None = None,
        *,
        step: float = 0.1,
        n_iter: int = 500,
        tol: float = 1e-7,
        val_k: int = 1,
        gammas: Sequence[float] = nudge_n.DEFAULT_GAMMAS,
        device: str | None = None,
        block_rows: int = 8192,
        query_block: int = 2048,
        block_elements: int = 1 << 24,
    ) -> None:
        super().__init__(
            gamma,
            val_k=val_k,
            gammas=gammas,
            device=device,
            block_rows=block_rows,
            query_block=query_block,
            block_elements=block_elements,
        )
        self.step = step
        self.n_iter = n_iter
        self.tol = tol

    def check_params(self) -> None:
        super().check_params()
        _check_solver(self.step, self.n_iter, self.tol)

    def _update(self, v: np.ndarray, c: np.ndarray, gamma: float | np.ndarray) -> np.ndarray:
        x, self.n_iter_ = ascend(
            v, c, float(gamma), "cap", step=self.step, n_iter=int(self.n_iter), tol=self.tol
        )
        return x.astype(np.float32)

    def _learned(self) -> dict[str, object]:
        return {"n_iter": int(getattr(self, "n_iter_", 0))}
