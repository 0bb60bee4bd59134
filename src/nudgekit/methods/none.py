"""``none``: the raw embeddings, no fine-tuning (the baseline every table starts with)."""

from __future__ import annotations

import numpy as np

from nudgekit.methods.base import Fitted, Method, Task, raw_queries


class NoFineTuning(Method):
    name = "none"

    def fit(self, task: Task) -> Fitted:
        return Fitted(np.asarray(task.corpus, dtype=np.float32), raw_queries)
