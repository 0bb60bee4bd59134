"""Any NUDGE estimator behind the bench interface: records move, queries stay as they are."""

from __future__ import annotations

from typing import Any

from nudgekit.core import NudgeEstimator
from nudgekit.methods.base import Fitted, Method, Task, raw_queries


class EstimatorMethod(Method):
    """A :class:`~nudgekit.core.NudgeEstimator` class with constructor ``params``.

    The task's device is used unless ``params`` names one.
    """

    def __init__(self, estimator: type[NudgeEstimator], name: str, **params: Any) -> None:
        self.estimator = estimator
        self.name = name  # type: ignore[misc]
        self.params = params

    def fit(self, task: Task) -> Fitted:
        model = self.estimator(**{"device": task.device, **self.params})
        model.fit(
            task.corpus, task.train.queries, task.train.relevance,
            task.val.queries, task.val.relevance,
        )  # fmt: skip
        info = model.summary()
        return Fitted(model.transform(task.corpus), raw_queries, info.pop("gamma"), info)
