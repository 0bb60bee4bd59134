"""``nudge-n`` and ``nudge-m``: the core estimators behind the method interface."""

from __future__ import annotations

from nudgekit.core import NudgeM, NudgeN
from nudgekit.methods._base import Fitted, Method, Task, raw_queries, register


@register
class NudgeNMethod(Method):
    name = "nudge-n"

    def __init__(self, gamma: float | None = None, val_k: int = 1) -> None:
        self.gamma = gamma
        self.val_k = val_k

    def fit(self, task: Task) -> Fitted:
        model = NudgeN(self.gamma, val_k=self.val_k, device=task.device)
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
class NudgeMMethod(Method):
    name = "nudge-m"

    def __init__(self, gamma: float | None = None) -> None:
        self.gamma = gamma

    def fit(self, task: Task) -> Fitted:
        model = NudgeM(self.gamma, device=task.device)
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
