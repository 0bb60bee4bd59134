"""What every workflow records about a run: software versions and the fit record."""

from __future__ import annotations

import platform
import sys
import time
from datetime import UTC, datetime
from typing import Any

import numpy as np

from nudgekit import __version__
from nudgekit.core import NudgeEstimator


def versions() -> dict[str, str]:
    """nudgekit, numpy and Python, plus torch, pyarrow and ray when this run used them."""
    found = {"nudgekit": __version__, "numpy": np.__version__, "python": platform.python_version()}
    for name in ("torch", "pyarrow", "ray"):
        if name in sys.modules:
            found[name] = sys.modules[name].__version__
    return found


def now() -> str:
    """UTC time, ISO 8601 to the second."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def fit_record(
    method: str,
    estimator: NudgeEstimator,
    *,
    started: float,
    timings: dict[str, float],
    n_train_queries: int,
    n_val_queries: int,
    n_train_queries_without_labels: int = 0,
    **where: Any,
) -> dict[str, Any]:
    """The content of ``fit.json``: method, what the model learned, sizes, where, when.

    ``where`` holds the layout's own keys (dataset, embeddings or changed rows, engine ...).
    """
    learned = estimator.summary()
    record: dict[str, Any] = {
        "method": method,
        "gamma": learned.pop("gamma"),
        "gamma_searched": learned.pop("gamma_searched"),
        "gamma_search": learned.pop("gamma_search"),
        "val_k": learned.pop("val_k"),
        "validation_accuracy": learned.pop("validation_accuracy"),
        "validation_curve": learned.pop("validation_curve"),
        "n_changed": learned.pop("n_changed"),
        "n_records": estimator.n_records_,
        "dim": estimator.dim_,
        "n_train_queries": n_train_queries,
        "n_val_queries": n_val_queries,
        "n_train_queries_without_labels": n_train_queries_without_labels,
        "device": estimator.device or "cpu",
        **learned,
        **where,
        "timings_s": dict(timings),
        "versions": versions(),
        "created": now(),
    }
    record["timings_s"]["total"] = time.perf_counter() - started
    return record
