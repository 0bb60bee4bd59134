"""``nudge-n`` and ``nudge-m``: the core estimators behind the method interface."""

from __future__ import annotations

from nudgekit.core import NudgeM, NudgeN
from nudgekit.core._estimators import _Nudge
from nudgekit.methods._base import Fitted, Method, Task, raw_queries, register


def fit_estimator(model: _Nudge, task: Task) -> Fitted:
    """Fit a NUDGE estimator on the task; records move, queries stay as they are."""
    model.fit(
        task.corpus, task.train.queries, task.train.relevance,
        task.val.queries, task.val.relevance,
    )  # fmt: skip
    return Fitted(
        model.transform(task.corpus),
        raw_queries,
        model.gamma_,
        {"n_changed": model.n_changed_, "validation_curve": model.validation_curve_},
    )


@register
class NudgeNMethod(Method):
    name = "nudge-n"

    def __init__(self, gamma: float | None = None, val_k: int = 1) -> None:
        self.gamma = gamma
        self.val_k = val_k

    def fit(self, task: Task) -> Fitted:
        return fit_estimator(NudgeN(self.gamma, val_k=self.val_k, device=task.device), task)


@register
class NudgeMMethod(Method):
    name = "nudge-m"

    def __init__(self, gamma: float | None = None) -> None:
        self.gamma = gamma

    def fit(self, task: Task) -> Fitted:
        return fit_estimator(NudgeM(self.gamma, device=task.device), task)
