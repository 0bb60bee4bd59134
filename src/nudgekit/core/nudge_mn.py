"""NUDGE-M+N: NUDGE-M, then the moved rows normalised.

**NUDGE-M+N.** NUDGE-M, then the moved rows normalised: X̂_i = (v + γĜ)/‖v + γĜ‖. Scores
are no longer linear in γ, but each X̂_i is α_i(γ)·v + β_i(γ)·Ĝ with α = 1/n, β = γ/n,
n = √(1 + 2γ·v·Ĝ + γ²), a unit vector of span(v, Ĝ): NUDGE-N's grid scoring applies
(:func:`nudgekit.core.nudge_n.grid_hits`). By default γ is picked on a grid by
validation top-1; ``search="sweep"`` takes NUDGE-M's γ instead.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from nudgekit.core.checks import check_gamma
from nudgekit.core.estimator import GammaChoice
from nudgekit.core.nudge_m import NudgeM
from nudgekit.core.nudge_n import grid_hits, query_accuracy

#: NUDGE-M+N's default γ grid: 0, 0.02, ..., 1.0 (γ is a step length here, not NUDGE-N's
#: squared one; NUDGE-M's exact γ on the data we tried lies well inside).
DEFAULT_GAMMAS_MN: tuple[float, ...] = tuple(0.02 * x for x in range(51))

#: ‖v + γĜ‖ below this: the step cancels the record (Ĝ = −v, γ = 1); it is left unchanged.
VANISHING_NORM = 1e-6


def mn_coefficients(
    v: np.ndarray, g_hat: np.ndarray, gamma: float
) -> tuple[np.ndarray, np.ndarray]:
    """α_i, β_i with (v + γĜ)/‖v + γĜ‖ = α_i·v + β_i·Ĝ (NUDGE-M+N's update; float64).

    Records that do not move (Ĝ = 0) or whose step would vanish get α = 1, β = 0.
    """
    vg = np.einsum("ij,ij->i", v, g_hat, dtype=np.float64)
    gg = np.einsum("ij,ij->i", g_hat, g_hat, dtype=np.float64)
    # ‖v‖ = ‖Ĝ‖ = 1 for moving records
    norm = np.sqrt(np.maximum(1.0 + 2.0 * gamma * vg + gamma**2 * gg, 0.0))
    moves = (gg > 0) & (norm > VANISHING_NORM)
    safe = np.where(moves, norm, 1.0)
    alpha = np.where(moves, 1.0 / safe, 1.0)
    beta = np.where(moves, gamma / safe, 0.0)
    return alpha, beta


class NudgeMN(NudgeM):
    """NUDGE-M+N: NUDGE-M's step, then the moved rows normalised to unit norm.

    Parameters
    ----------
    gamma : float, optional
        Fixed step length before normalisation; ``None`` (default) searches it.
    search : {"grid", "sweep"}
        ``"grid"`` (default): the γ of ``gammas`` with the best mean top-``val_k``
        validation accuracy of the *normalised* embeddings (first maximum wins).
        ``"sweep"``: NUDGE-M's exact γ for the unnormalised embeddings, then normalise.
    val_k : int
        Accuracy cut-off of the grid search.
    gammas : sequence of float
        The grid, by default 0, 0.02, ..., 1.0.
    device, block_rows, query_block, block_elements :
        As for :class:`NudgeM`.

    Attributes
    ----------
    gamma_, validation_curve_, changed_rows_, changed_embeddings_, original_embeddings_,
    n_changed_, timings_ :
        As for :class:`NudgeM`; the curve is the grid's accuracy (``search="grid"``) or
        NUDGE-M's step function (``"sweep"``).

    Notes
    -----
    Every record with G ≠ 0 moves, also when v·G < 0 (NUDGE-N leaves those alone). As γ
    grows, X̂_i goes along the arc from v_i to Ĝ_i — NUDGE-N's path, at a record-dependent
    speed.
    """

    def __init__(
        self,
        gamma: float | None = None,
        *,
        search: str = "grid",
        val_k: int = 1,
        gammas: Sequence[float] = DEFAULT_GAMMAS_MN,
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
        self.search = search
        self.val_k = val_k
        self.gammas = gammas

    @property
    def gamma_search(self) -> str:  # type: ignore[override]
        return "sweep" if self.search == "sweep" else "grid"

    def check_params(self) -> None:
        super().check_params()
        if self.search not in ("grid", "sweep"):
            raise ValueError(f"search must be 'grid' or 'sweep', got {self.search!r}")
        if int(self.val_k) != self.val_k or self.val_k < 1:
            raise ValueError(f"val_k must be a positive integer, got {self.val_k!r}")
        if self.search == "sweep" and self.val_k != 1:
            raise ValueError("search='sweep' maximises top-1 accuracy: val_k must be 1")
        if len(self.gammas) == 0:
            raise ValueError("gammas: the grid is empty")
        for g in self.gammas:
            check_gamma(g, "gammas")

    def _fixed_k(self) -> int:
        return int(self.val_k)

    def _choose_gamma(self, xp, val_q, v, c, fixed, rel) -> GammaChoice:  # type: ignore[override]
        if self.search == "sweep":
            return super()._choose_gamma(xp, val_q, v, c, fixed, rel)
        k = int(self.val_k)
        gammas = tuple(float(g) for g in self.gammas)
        coeffs = [mn_coefficients(v, c, g) for g in gammas]
        hits = grid_hits(xp, val_q, v, c, coeffs, fixed, rel, k, block_elements=self.block_elements)
        accuracy = query_accuracy(hits, rel, k).mean(axis=1)
        best = int(np.argmax(accuracy))  # first maximum wins, as in NUDGE-N
        curve = {"gamma": list(gammas), "accuracy": accuracy.tolist()}
        return GammaChoice(gammas[best], curve, float(accuracy[best]))

    def _movable(self, v: np.ndarray, c: np.ndarray, choice: GammaChoice) -> np.ndarray:
        return mn_coefficients(v, c, choice.gamma)[1] != 0

    def _update(self, v: np.ndarray, c: np.ndarray, gamma: float | np.ndarray) -> np.ndarray:
        alpha, beta = mn_coefficients(v, c, float(gamma))
        out = alpha[:, None] * v.astype(np.float64) + beta[:, None] * c.astype(np.float64)
        return out.astype(np.float32)
