"""Per-cluster γ for NUDGE-N, and the per-query grid scoring it shares with NUDGE-M+N.

The paper picks one γ for the whole corpus. Here the records are split into ``r``
k-means clusters, each validation query belongs to the cluster of its first relevant
record, and each cluster gets the γ of the NUDGE-N grid that maximises *its* validation
queries' accuracy; a cluster without validation queries keeps the global γ.

* :class:`NudgeNClustered` — the estimator.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from nudgekit.core import nudge_n
from nudgekit.core.estimator import GammaChoice
from nudgekit.core.kmeans import kmeans_assign, kmeans_fit
from nudgekit.core.nudge_n import NudgeN


class NudgeNClustered(NudgeN):
    """NUDGE-N with one γ per k-means cluster of records, each picked on its own queries.

    Parameters
    ----------
    gamma : float, optional
        ``None`` (default) searches γ per cluster; a fixed γ applies to every record (the
        model is then :class:`NudgeN` with that γ and no clustering happens).
    n_clusters : int
        r, the number of k-means clusters of the tracked records.
    seed : int
        Seed of the k-means sample and k-means++ seeding.
    sample_size : int
        k-means fits its centroids on at most this many tracked records.
    val_k, gammas, device, block_rows, query_block, block_elements :
        As for :class:`NudgeN`.

    Attributes
    ----------
    gamma_ : float
        The global γ (NUDGE-N over all validation queries); clusters without a validation
        query use it.
    centroids_ : float64 (r, d) or None
        k-means centroids of the tracked records (None when γ was fixed).
    cluster_gammas_ : float64 (r,)
        The γ of each cluster.
    cluster_n_val_ : int64 (r,)
        Validation queries assigned to each cluster.
    validation_curve_ : dict or None
        ``gamma`` and the global ``accuracy`` (as NudgeN), plus ``cluster_accuracy``: per
        cluster, its queries' mean accuracy at each grid point (empty for empty clusters).
    changed_rows_, changed_embeddings_, original_embeddings_, n_changed_, timings_ :
        As for :class:`NudgeN`.

    Notes
    -----
    The clusters are fitted on the *tracked* records (those that may move or answer a
    validation query), not on the whole corpus: only they are ever moved or judged, they
    are already in memory, and centroids spent on regions without labels would only fall
    back to the global γ. Each cluster's accuracy at a grid point γ is measured with every
    record at γ (one scoring pass serves all clusters); the chosen γs are then applied
    together. With ``n_clusters=1`` the model is exactly :class:`NudgeN`.
    """

    def __init__(
        self,
        gamma: float | None = None,
        *,
        n_clusters: int = 4,
        seed: int = 0,
        sample_size: int = 16384,
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
        self.n_clusters = n_clusters
        self.seed = seed
        self.sample_size = sample_size

    def check_params(self) -> None:
        super().check_params()
        if int(self.n_clusters) != self.n_clusters or self.n_clusters < 1:
            raise ValueError(f"n_clusters must be a positive integer, got {self.n_clusters!r}")
        if int(self.sample_size) != self.sample_size or self.sample_size < 1:
            raise ValueError(f"sample_size must be a positive integer, got {self.sample_size!r}")

    def _fixed_choice(self) -> GammaChoice:
        # fixed γ: one γ for all, nothing clustered
        return GammaChoice(
            float(self.gamma),  # type: ignore[arg-type]
            attributes={
                "centroids_": None,
                "cluster_gammas_": np.array([float(self.gamma)]),  # type: ignore[arg-type]
                "cluster_n_val_": np.zeros(1, dtype=np.int64),
            },
        )

    def _learned(self) -> dict[str, object]:
        return {
            "cluster_gammas": self.cluster_gammas_.tolist(),
            "cluster_n_val": self.cluster_n_val_.tolist(),
        }

    def _choose_gamma(self, xp, val_q, v, c, fixed, rel) -> GammaChoice:  # type: ignore[override]
        k = int(self.val_k)
        gammas = tuple(float(g) for g in self.gammas)
        geometry = nudge_n.MoveGeometry.of(v, c)
        coeffs = [nudge_n.coefficients(geometry, g) for g in gammas]
        hits = nudge_n.grid_hits(
            xp, val_q, v, c, coeffs, fixed, rel, k, block_elements=self.block_elements
        )
        acc = nudge_n.query_accuracy(hits, rel, k)  # (grid, V)
        overall = acc.mean(axis=1)
        global_gamma = gammas[int(np.argmax(overall))]  # first maximum, as NudgeN

        centroids = kmeans_fit(
            v, int(self.n_clusters), seed=int(self.seed), sample_size=int(self.sample_size)
        )
        r = len(centroids)
        labels = kmeans_assign(v, centroids, block_rows=self.block_rows)
        query_cluster = labels[rel.indices[rel.indptr[:-1]]]  # the first relevant record's
        n_val = np.bincount(query_cluster, minlength=r)
        # sum of accuracies per (grid point, cluster); a loop over the grid only
        per_cluster = np.stack([np.bincount(query_cluster, a, minlength=r) for a in acc])
        cluster_gammas = np.where(
            n_val > 0, _best_near(per_cluster, np.asarray(gammas), global_gamma), global_gamma
        )
        curve = {
            "gamma": list(gammas),
            "accuracy": overall.tolist(),
            "cluster_accuracy": [
                (per_cluster[:, j] / n_val[j]).tolist() if n_val[j] else [] for j in range(r)
            ],
        }
        accuracy = float(overall[gammas.index(global_gamma)])
        # one γ per record: its cluster's (every tracked record has a cluster)
        return GammaChoice(
            global_gamma,
            curve,
            accuracy,
            record_gamma=cluster_gammas[labels],
            attributes={
                "centroids_": centroids,
                "cluster_gammas_": cluster_gammas,
                "cluster_n_val_": n_val,
            },
        )

    def _movable(self, v: np.ndarray, c: np.ndarray, choice: GammaChoice) -> np.ndarray:
        return nudge_n.MoveGeometry.of(v, c).movable

    def _update(self, v: np.ndarray, c: np.ndarray, gamma: float | np.ndarray) -> np.ndarray:
        record_gamma = np.broadcast_to(np.asarray(gamma, dtype=np.float64), (len(v),))
        out = np.empty(v.shape, dtype=np.float32)
        for g in np.unique(record_gamma):  # a loop over the (few) distinct cluster γs
            rows = np.flatnonzero(record_gamma == g)
            out[rows] = nudge_n.apply_update(
                v[rows], c[rows], nudge_n.MoveGeometry.of(v[rows], c[rows]), float(g)
            )
        return out


def _best_near(score: np.ndarray, gammas: np.ndarray, prior: float) -> np.ndarray:
    """Per column of ``score`` (grid × clusters), the best γ; ties go to the one nearest ``prior``.

    A cluster holds few validation queries, so its accuracy is often flat over a range of
    γ: within that range, staying nearest the global γ is the choice the data cannot fault.
    """
    # equal up to rounding: the sums of the same accuracies in another order must tie
    top = score.max(axis=0, keepdims=True)
    best = score >= top - 1e-9 * np.maximum(top, 1.0)
    distance = np.where(best, np.abs(gammas - prior)[:, None], np.inf)
    return gammas[np.argmin(distance, axis=0)]  # equal distances: the smaller γ
