"""The ``demo`` job: fit each method on a dataset, then test metrics before and after."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from nudgekit.core import ProgressCallback
from nudgekit.io.sample import sample_dir
from nudgekit.workflows.evaluate import evaluate_dataset
from nudgekit.workflows.fit import fit_dataset


def run_demo(
    out_dir: str | os.PathLike[str],
    *,
    methods: tuple[str, ...] = ("nudge-cv", "nudge-n", "nudge-m"),
    dataset_dir: str | os.PathLike[str] | None = None,
    progress: ProgressCallback | None = None,
) -> list[dict[str, Any]]:
    """The main job end to end: fit each method, then test metrics before and after.

    Uses the bundled sample unless ``dataset_dir`` is given. Returns one row per method
    (and one for the raw embeddings) with γ, changed records, fit time and test metrics;
    each method's embeddings and fit.json are written under ``out_dir/<method>``.
    """
    dataset = Path(dataset_dir) if dataset_dir is not None else sample_dir()
    raw = evaluate_dataset(dataset, progress=progress)
    rows: list[dict[str, Any]] = [{"method": "none", "gamma": None, "n_changed": 0, **raw}]
    for method in methods:
        fitted = fit_dataset(dataset, Path(out_dir) / method, method=method, progress=progress)
        after = evaluate_dataset(dataset, embeddings=fitted["embeddings"], progress=progress)
        rows.append(
            {
                "method": method,
                "gamma": fitted["gamma"],
                "n_changed": fitted["n_changed"],
                "fit_s": fitted["timings_s"]["total"],
                **after,
            }
        )
    return rows
