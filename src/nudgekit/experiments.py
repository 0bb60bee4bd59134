"""Running fine-tuning methods side by side on one embedded dataset.

:func:`load_task` turns a dataset directory into the :class:`~nudgekit.methods.Task` every
method gets; :func:`evaluate_fitted` scores a fitted method on a split with the same exact
inner-product search and metrics as ``nudgekit eval``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from nudgekit.dataset import Split, load_dataset
from nudgekit.methods import Fitted, Task, Texts
from nudgekit.metrics import retrieval_metrics
from nudgekit.retrieval import search


def load_task(
    dataset_dir: str | os.PathLike[str],
    *,
    beir_dir: str | os.PathLike[str] | None = None,
    model: str | None = None,
    device: str | None = None,
) -> tuple[Task, Split]:
    """The task (train/val) and the test split of an embedded dataset directory.

    ``beir_dir`` and ``model`` are needed only by methods that re-embed texts (``ptft``).
    """
    data = load_dataset(dataset_dir)
    texts = None
    if beir_dir is not None:
        if model is None:
            raise ValueError("a BEIR directory needs the model that embedded it (--model)")
        texts = Texts(Path(beir_dir), model)
    task = Task(data.corpus, data.corpus_ids, data.split("train"), data.split("val"), texts, device)
    return task, data.split("test")


def evaluate_fitted(
    fitted: Fitted, split: Split, ks: Sequence[int] = (1, 10, 100)
) -> dict[str, float]:
    """Exact inner-product retrieval metrics of a fitted method on ``split``."""
    queries = fitted.encode(split)
    _, indices = search(queries, fitted.corpus, max(ks))
    return retrieval_metrics(indices, split.relevance, ks=ks)
