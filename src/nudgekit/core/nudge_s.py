"""NUDGE-S: NUDGE-M with an L1 ball in place of the L2 ball (sparse moves).

**NUDGE-S.** Maximise Σ_i G_i·Δ_i subject to ‖Δ_i‖₁ ≤ γ (NUDGE-M's problem with the L1
ball in place of the L2 ball). The problem separates per record, and a linear function
over the L1 ball (the convex hull of ±γ·e_j) is maximised at a vertex: Δ_i = γ·sign(G_ij)·e_j
for j the coordinate of largest |G_ij|, with value γ·‖G_i‖_∞. Where several coordinates
tie, every convex combination of their vertices is optimal; we split the mass evenly, so
Δ_i = γ·D_i with D_i = (1/|J|)·Σ_{j∈J} sign(G_ij)·e_j, ‖D_i‖₁ = 1. Scores are again
linear in γ (q·X̂_i = q·X_i + γ·q·D_i), so γ is chosen *exactly* by NUDGE-M's interval sweep
with D in place of Ĝ.
"""

from __future__ import annotations

import numpy as np

from nudgekit.core.nudge_m import NudgeM


def l1_directions(g: np.ndarray) -> np.ndarray:
    """D_i, the maximiser of G_i·D over the unit L1 ball (NUDGE-S, the per-record step).

    All the mass goes to the coordinate of largest |G_ij|, split evenly across exact ties;
    zero rows stay zero. float32, each non-zero row has ‖D_i‖₁ = 1.
    """
    g = np.asarray(g)
    size = np.abs(g)
    top = size.max(axis=1, keepdims=True) if g.shape[1] else np.zeros((len(g), 1), g.dtype)
    tied = (size == top) & (top > 0)
    n_tied = np.maximum(tied.sum(axis=1, keepdims=True), 1)
    return (np.sign(g) * tied / n_tied).astype(np.float32)


class NudgeS(NudgeM):
    """NUDGE-S: each record moves by γ along one coordinate (L1 ball); exact best γ.

    Parameters
    ----------
    gamma : float, optional
        Fixed L1 radius; ``None`` (default) picks the γ that maximises validation top-1
        accuracy exactly (NUDGE-M's interval sweep, with D in place of Ĝ).
    device, block_rows, query_block, block_elements :
        As for :class:`NudgeM`.

    Attributes
    ----------
    gamma_, validation_curve_, changed_rows_, changed_embeddings_, original_embeddings_,
    n_changed_, timings_ :
        As for :class:`NudgeM`.

    Notes
    -----
    Only the coordinate(s) of largest |G_i| change, by γ in total; outputs are not
    unit-norm (search them by dot product).
    """

    def _direction(self, g: np.ndarray) -> np.ndarray:
        return l1_directions(g)
