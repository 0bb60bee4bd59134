"""The ``bench`` job: fine-tuning methods side by side on one embedded dataset.

:func:`load_task` turns a dataset directory into the :class:`~nudgekit.methods.Task` every
method gets; :func:`evaluate_fitted` scores a fitted method on a split with the same exact
inner-product search and metrics as ``nudgekit eval``; :func:`run_bench` does both for a
list of methods, as ``nudgekit bench`` does.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from nudgekit.evaluation import retrieval_metrics, search
from nudgekit.io.dataset import Split, load_dataset
from nudgekit.io.splits import ood_splits
from nudgekit.methods import METHODS, Fitted, Task, Texts, get_method
from nudgekit.methods.hybrid import Hybrid
from nudgekit.workflows.provenance import versions


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
    return _task(data, beir_dir, model, device), data.split("test")


def _task(
    data: Any, beir_dir: str | os.PathLike[str] | None, model: str | None, device: str | None
) -> Task:
    texts = None
    if beir_dir is not None:
        if model is None:
            raise ValueError("a BEIR directory needs the model that embedded it (--model)")
        texts = Texts(Path(beir_dir), model)
    return Task(data.corpus, data.corpus_ids, data.split("train"), data.split("val"), texts, device)


def evaluate_fitted(
    fitted: Fitted, split: Split, ks: Sequence[int] = (1, 10, 100)
) -> dict[str, float]:
    """Exact inner-product retrieval metrics of a fitted method on ``split``."""
    queries = fitted.encode(split)
    _, indices = search(queries, fitted.corpus, max(ks))
    return retrieval_metrics(indices, split.relevance, ks=ks)


#: The columns of the bench table: (key in a result row, heading).
TABLE_COLUMNS = (
    ("r_cap@1", "R@1"),
    ("r_cap@10", "R@10"),
    ("ndcg@10", "NDCG@10"),
    ("recall@10", "recall@10"),
    ("mrr@10", "MRR@10"),
)


def run_bench(
    dataset_dir: str | os.PathLike[str],
    methods: Sequence[str],
    *,
    ood: bool = False,
    beir_dir: str | os.PathLike[str] | None = None,
    model: str | None = None,
    device: str | None = None,
    params: Mapping[str, Mapping[str, Any]] | None = None,
    on_method: Callable[[str, dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Fit each method on the same task and score it on the test split(s).

    ``params[name]`` holds constructor parameters of method ``name`` (e.g.
    ``{"adaptor": {"warmup_steps": 10000}}``); they are checked against the method's
    signature before anything runs.

    With ``ood``, the task is the paper's out-of-distribution split: fine-tune on
    k-means cluster 0's train/val queries, evaluate cluster 0's test queries
    (``in``) and cluster 1's (``out``) separately. A method that fails is reported with
    its error and the others still run. ``on_method(name, row)`` is called as each
    method finishes.

    A hybrid (``x+nudge-n``) listed after ``x`` with the same parameters for ``x``
    reuses that fit of ``x``: its row says ``reused``, its ``fit_s`` includes ``x``'s
    time and its ``peak_mb`` covers only the second part.

    Returns
    -------
    dict
        ``{"dataset", "ood", "params", "methods": [row, ...], "versions"}``; a row holds
        the method, status, γ, fit seconds, peak extra memory (MB) and the test metrics
        (``test`` or ``test_in``/``test_out``).
    """
    params = {name: dict(values) for name, values in (params or {}).items()}
    check_params(params, methods)
    data = load_dataset(dataset_dir)
    if ood:
        parts = ood_splits(data)
        data.splits = {
            "train": parts["train_in"],
            "val": parts["val_in"],
            "test_in": parts["test_in"],
            "test_out": parts["test_out"],
        }
        tests = {"in": data.split("test_in"), "out": data.split("test_out")}
    else:
        tests = {"test": data.split("test")}
    task = _task(data, beir_dir, model, device)

    rows: list[dict[str, Any]] = []
    # a hybrid whose first part also runs alone, earlier and with the same parameters,
    # reuses that fit (PTFT alone takes most of an hour on a CPU)
    reusable = {_hybrid_first_key(n, params.get(n, {})) for n in methods}
    parts: dict[str, tuple[Fitted, float]] = {}
    for name in methods:
        row: dict[str, Any] = {"method": name}
        try:
            method = get_method(name, **params.get(name, {}))
            reused = parts.get(_hybrid_first_key(name, params.get(name, {})))
            with PeakMemory() as memory:
                started = time.perf_counter()
                if reused is not None:
                    fitted = method.fit_after(task, reused[0])  # type: ignore[attr-defined]
                else:
                    fitted = method.fit(task)
                row["fit_s"] = time.perf_counter() - started
            if reused is not None:
                row["reused"] = type(method).first_name  # type: ignore[attr-defined]
                row["fit_s"] += reused[1]
            key = _part_key(name, params.get(name, {}))
            if key in reusable:
                parts[key] = (fitted, row["fit_s"])
            row["peak_mb"] = memory.peak_mb
            row["gamma"] = fitted.gamma
            for part, split in tests.items():
                row[part] = evaluate_fitted(fitted, split)
            row["status"] = "ok"
        except Exception as error:  # one failing method must not stop the others
            row["status"] = "failed"
            row["error"] = f"{type(error).__name__}: {error}"
        rows.append(row)
        if on_method is not None:
            on_method(name, row)
    return {
        "dataset": str(Path(dataset_dir).resolve()),
        "ood": ood,
        "n_test": {part: len(split.query_ids) for part, split in tests.items()},
        "params": params,
        "methods": rows,
        "versions": versions(),
    }


def _part_key(name: str, values: Mapping[str, Any]) -> str:
    return f"{name} {json.dumps(dict(values), sort_keys=True, default=str)}"


def _hybrid_first_key(name: str, values: Mapping[str, Any]) -> str | None:
    """The key of a hybrid's first part (its name and parameters); None for other methods."""
    spec = METHODS.get(name)
    if spec is None or not (isinstance(spec.method, type) and issubclass(spec.method, Hybrid)):
        return None
    return _part_key(spec.method.first_name, values.get("first") or {})


def check_params(params: Mapping[str, Mapping[str, Any]], methods: Sequence[str]) -> None:
    """Every ``params[name][key]`` must name a benchmarked method and one of its parameters."""
    for name, values in params.items():
        if name not in methods:
            raise ValueError(f"parameters for {name!r}, which is not among the methods")
        if name not in METHODS:
            continue  # reported as that method's failure, like any unknown method
        accepted = METHODS[name].parameters()
        for key in values:
            if key not in accepted:
                raise ValueError(
                    f"{name} has no parameter {key!r} (it has: {', '.join(accepted) or 'none'})"
                )


def bench_markdown(result: dict[str, Any]) -> str:
    """The bench result as a markdown table (one row per method)."""
    parts = ["in", "out"] if result["ood"] else ["test"]
    head = ["method"]
    for part in parts:
        suffix = f" ({part})" if result["ood"] else ""
        head += [f"{title}{suffix}" for _, title in TABLE_COLUMNS]
    head += ["fit s", "peak MB", "γ"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in result["methods"]:
        if row["status"] != "ok":
            cells = [row["method"], f"failed: {row['error']}"] + [""] * (len(head) - 2)
        else:
            reused = f" (reuses the {row['reused']} fit above)" if row.get("reused") else ""
            cells = [row["method"] + reused]
            for part in parts:
                cells += [f"{row[part][key]:.4f}" for key, _ in TABLE_COLUMNS]
            gamma = row["gamma"]
            cells += [
                f"{row['fit_s']:.2f}",
                f"{row['peak_mb']:.0f}",
                "–" if gamma is None else f"{gamma:.4g}",
            ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


class PeakMemory:
    """Peak resident memory above the level at entry, sampled by a background thread.

    Peak RSS of the whole process (``getrusage``) never goes down, so after the first
    method it would say nothing about the next; sampling ``/proc/self/statm`` does.
    Elsewhere than Linux it reports 0.
    """

    def __init__(self, interval_s: float = 0.01) -> None:
        self.interval_s = interval_s
        self.peak_mb = 0.0

    def __enter__(self) -> PeakMemory:
        self._base = _rss_mb()
        self._peak = self._base
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._peak = max(self._peak, _rss_mb())

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._peak = max(self._peak, _rss_mb())
        self.peak_mb = self._peak - self._base


def _rss_mb() -> float:
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
    except OSError:
        return 0.0
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
