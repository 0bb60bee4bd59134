"""The paper's further NUDGE variants behind the method interface (docs/variants.md).

``nudge-mn`` (NUDGE-M, then normalised), ``nudge-s`` (L1-bounded moves), ``nudge-im`` and
``nudge-in`` (the M/N problems by projected gradient ascent), ``nudge-n-clustered``
(NUDGE-N with one γ per k-means cluster of records).
"""

from __future__ import annotations

from collections.abc import Sequence

from nudgekit.core import nudge_n
from nudgekit.core.clustered import NudgeNClustered
from nudgekit.core.iterative import NudgeIM, NudgeIN
from nudgekit.core.nudge_mn import DEFAULT_GAMMAS_MN, NudgeMN
from nudgekit.core.nudge_s import NudgeS
from nudgekit.methods._base import Fitted, Method, Task, register
from nudgekit.methods.nudge import fit_estimator


@register
class NudgeMNMethod(Method):
    name = "nudge-mn"

    def __init__(
        self,
        gamma: float | None = None,
        search: str = "grid",
        val_k: int = 1,
        gammas: Sequence[float] = DEFAULT_GAMMAS_MN,
    ) -> None:
        self.gamma = gamma
        self.search = search
        self.val_k = val_k
        self.gammas = gammas

    def fit(self, task: Task) -> Fitted:
        model = NudgeMN(
            self.gamma, search=self.search, val_k=self.val_k, gammas=self.gammas,
            device=task.device,
        )  # fmt: skip
        return fit_estimator(model, task)


@register
class NudgeSMethod(Method):
    name = "nudge-s"

    def __init__(self, gamma: float | None = None) -> None:
        self.gamma = gamma

    def fit(self, task: Task) -> Fitted:
        return fit_estimator(NudgeS(self.gamma, device=task.device), task)


@register
class NudgeIMMethod(Method):
    name = "nudge-im"

    def __init__(
        self, gamma: float | None = None, step: float = 0.1, n_iter: int = 500, tol: float = 1e-7
    ) -> None:
        self.gamma = gamma
        self.step = step
        self.n_iter = n_iter
        self.tol = tol

    def fit(self, task: Task) -> Fitted:
        model = NudgeIM(
            self.gamma, step=self.step, n_iter=self.n_iter, tol=self.tol, device=task.device
        )
        fitted = fit_estimator(model, task)
        fitted.info["n_iter"] = model.n_iter_
        return fitted


@register
class NudgeINMethod(Method):
    name = "nudge-in"

    def __init__(
        self,
        gamma: float | None = None,
        step: float = 0.1,
        n_iter: int = 500,
        tol: float = 1e-7,
        val_k: int = 1,
    ) -> None:
        self.gamma = gamma
        self.step = step
        self.n_iter = n_iter
        self.tol = tol
        self.val_k = val_k

    def fit(self, task: Task) -> Fitted:
        model = NudgeIN(
            self.gamma, step=self.step, n_iter=self.n_iter, tol=self.tol, val_k=self.val_k,
            device=task.device,
        )  # fmt: skip
        fitted = fit_estimator(model, task)
        fitted.info["n_iter"] = model.n_iter_
        return fitted


@register
class NudgeNClusteredMethod(Method):
    """NUDGE-N with a γ per k-means cluster; ``r`` clusters, ``r=1`` is ``nudge-n``."""

    name = "nudge-n-clustered"

    def __init__(
        self,
        r: int = 4,
        seed: int = 0,
        val_k: int = 1,
        gammas: Sequence[float] = nudge_n.DEFAULT_GAMMAS,
    ) -> None:
        self.r = r
        self.seed = seed
        self.val_k = val_k
        self.gammas = gammas

    def fit(self, task: Task) -> Fitted:
        model = NudgeNClustered(
            n_clusters=self.r, seed=self.seed, val_k=self.val_k, gammas=self.gammas,
            device=task.device,
        )  # fmt: skip
        fitted = fit_estimator(model, task)
        fitted.info["cluster_gammas"] = model.cluster_gammas_.tolist()
        fitted.info["cluster_n_val"] = model.cluster_n_val_.tolist()
        return fitted
