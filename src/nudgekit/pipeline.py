"""Whole jobs on an embedded dataset directory: fit NUDGE, evaluate embeddings.

Each CLI command calls exactly one function here, so everything the CLI can do is also
a Python call.
"""

from __future__ import annotations

import os
import platform
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from nudgekit import __version__
from nudgekit.core import NudgeM, NudgeN
from nudgekit.core._estimators import ProgressCallback, phase_counter
from nudgekit.dataset import load_dataset, load_matrix, write_embeddings, write_json
from nudgekit.metrics import retrieval_metrics
from nudgekit.retrieval import search

METHODS: dict[str, Callable[..., NudgeM | NudgeN]] = {"nudge-n": NudgeN, "nudge-m": NudgeM}


def fit_dataset(
    dataset_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    method: str = "nudge-n",
    gamma: float | None = None,
    val_k: int = 1,
    device: str | None = None,
    progress: ProgressCallback | None = None,
    engine: str = "local",
    ray_address: str | None = None,
    workers: int | None = None,
    quiet: bool = False,
) -> dict[str, Any]:
    """Fit NUDGE on a dataset's train/val splits and write the new embeddings.

    Writes ``out_dir/embeddings.npy`` (float32, N × d, corpus row order) and
    ``out_dir/fit.json`` (method, γ, validation curve, changed rows, timings, versions),
    and returns the ``fit.json`` content. Nothing is written if any input is bad.

    A dataset whose corpus is a ``corpus/`` folder of Parquet shards
    (:mod:`nudgekit.parquet`) is fitted with one pass over the shards by ``engine``
    (``"local"``: this process, block by block; ``"ray"``: a Ray Data job, on the cluster
    at ``ray_address`` or a local Ray instance with ``workers`` CPUs), and
    ``out_dir/changed.parquet`` (``id``, ``vector`` new, ``original``) replaces
    ``embeddings.npy``: only the changed records are written.
    """
    started = time.perf_counter()
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
    if method == "nudge-m" and val_k != 1:
        raise ValueError("--val-k applies to nudge-n only (NUDGE-M maximises top-1 accuracy)")
    # imported here: the in-memory path needs neither the engines nor pyarrow
    from nudgekit.engines import ENGINES
    from nudgekit.parquet import is_parquet_dataset

    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; choose from {', '.join(ENGINES)}")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} exists and is not a directory")
    if is_parquet_dataset(dataset_dir):
        return _fit_parquet_dataset(
            dataset_dir,
            out,
            method=method,
            gamma=gamma,
            val_k=val_k,
            device=device,
            progress=progress,
            engine=engine,
            ray_address=ray_address,
            workers=workers,
            quiet=quiet,
            started=started,
        )
    if engine != "local":
        raise ValueError(
            f"--engine {engine} reads a Parquet corpus (a corpus/ folder of shards); make one "
            "with: nudgekit convert DATASET_DIR --to parquet --shards N --out DIR"
        )
    tick = time.perf_counter()
    data = load_dataset(dataset_dir)
    train = data.split("train")
    val = data.split("val").check_labelled() if gamma is None else None
    load_s = time.perf_counter() - tick

    model = make_estimator(method, gamma, val_k, device)
    model.fit(
        data.corpus,
        train.queries,
        train.relevance,
        val.queries if val else None,
        val.relevance if val else None,
        progress=progress,
    )

    tick = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    write_embeddings(
        out / "embeddings.npy",
        _reporting(model.iter_transform(data.corpus), progress, data.n_records),
        (data.n_records, data.dim),
    )
    write_s = time.perf_counter() - tick

    return _write_report(
        out,
        model,
        method=method,
        val_k=val_k,
        device=device,
        started=started,
        timings={"load": load_s, **model.timings_, "write": write_s},
        n_records=data.n_records,
        dim=data.dim,
        n_train_queries=len(train.query_ids),
        n_val_queries=len(val.query_ids) if val else 0,
        dataset=str(Path(dataset_dir).resolve()),
        embeddings=str((out / "embeddings.npy").resolve()),
        model=data.meta.get("model"),
    )


def _fit_parquet_dataset(
    dataset_dir: str | os.PathLike[str],
    out: Path,
    *,
    method: str,
    gamma: float | None,
    val_k: int,
    device: str | None,
    progress: ProgressCallback | None,
    engine: str,
    ray_address: str | None,
    workers: int | None,
    quiet: bool,
    started: float,
) -> dict[str, Any]:
    """:func:`fit_dataset` on a Parquet corpus: one pass by ``engine``, changed rows out."""
    from nudgekit.engines import fit_parquet
    from nudgekit.parquet import load_parquet_dataset, write_changed_rows

    tick = time.perf_counter()
    data = load_parquet_dataset(dataset_dir)
    load_s = time.perf_counter() - tick
    fitted = fit_parquet(
        make_estimator(method, gamma, val_k, device),
        data,
        engine=engine,
        ray_address=ray_address,
        workers=workers,
        progress=progress,
        quiet=quiet,
    )
    model = fitted.model

    tick = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    changed = out / "changed.parquet"
    write_changed_rows(
        changed, fitted.changed_ids, model.changed_embeddings_, model.original_embeddings_
    )
    write_s = time.perf_counter() - tick

    return _write_report(
        out,
        model,
        method=method,
        val_k=val_k,
        device=device,
        started=started,
        timings={"load": load_s, **model.timings_, "write": write_s},
        n_records=data.n_records,
        dim=data.dim,
        n_train_queries=fitted.n_train_queries,
        n_val_queries=fitted.n_val_queries,
        engine=engine,
        corpus_format="parquet",
        shards=len(data.corpus.paths),
        dataset=str(Path(dataset_dir).resolve()),
        embeddings=None,
        changed=str(changed.resolve()),
        model=data.meta.get("model"),
        engine_stats=fitted.stats,
    )


def evaluate_dataset(
    dataset_dir: str | os.PathLike[str],
    *,
    embeddings: str | os.PathLike[str] | None = None,
    split: str = "test",
    k: int = 10,
    progress: ProgressCallback | None = None,
) -> dict[str, Any]:
    """Exact inner-product k-NN retrieval quality of a split's queries.

    Scores ``embeddings`` (an N × d ``.npy`` in corpus row order) or, without it, the raw
    corpus. Returns ``ndcg@k``, ``recall@k``, ``r_cap@k``, ``mrr@k``, ``map@100``,
    ``accuracy@1`` and friends.

    On a Parquet dataset (a ``corpus/`` folder of shards) ``embeddings`` is the
    ``changed.parquet`` of a fit: the corpus is scored as that fit's output, i.e. rows
    L2-normalised and the changed records replaced, exactly what ``embeddings.npy`` holds
    on the ``.npy`` layout.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    from nudgekit.parquet import is_parquet_dataset

    if is_parquet_dataset(dataset_dir):
        return _evaluate_parquet_dataset(
            dataset_dir, changed=embeddings, split=split, k=k, progress=progress
        )
    data = load_dataset(dataset_dir)
    chosen = data.split(split)
    corpus = data.corpus
    if embeddings is not None:
        corpus = load_matrix(Path(embeddings))
        if corpus.shape != data.corpus.shape:
            raise ValueError(
                f"{embeddings}: shape {corpus.shape} does not match the corpus {data.corpus.shape}"
            )
    ks = sorted({1, k, 100})
    _, indices = search(
        chosen.queries,
        corpus,
        max(ks),
        corpus_name=str(embeddings) if embeddings is not None else "corpus.npy",
        progress=None if progress is None else lambda done: progress("search", done, len(corpus)),
    )
    metrics = retrieval_metrics(indices, chosen.relevance, ks=ks)
    return {
        "split": split,
        "embeddings": str(embeddings) if embeddings is not None else None,
        **metrics,
    }


def _evaluate_parquet_dataset(
    dataset_dir: str | os.PathLike[str],
    *,
    changed: str | os.PathLike[str] | None,
    split: str,
    k: int,
    progress: ProgressCallback | None,
) -> dict[str, Any]:
    """:func:`evaluate_dataset` on Parquet shards: one pass, ``changed.parquet`` overlaid."""
    from nudgekit.core import Relevance
    from nudgekit.core._checks import check_rows
    from nudgekit.parquet import id_bytes, load_parquet_dataset, read_changed_rows
    from nudgekit.retrieval import block_rows_for, search_blocks

    data = load_parquet_dataset(dataset_dir)
    labels, splits = data.labelled_splits((split,))
    chosen = splits[split]
    new_ids, new_vectors = (
        read_changed_rows(changed, data.dim) if changed is not None else (None, None)
    )
    rows_of_label = np.full(len(labels), -1, dtype=np.int64)
    applied = np.zeros(0 if new_ids is None else len(new_ids), dtype=bool)
    corpus = data.corpus

    def blocks() -> Iterator[tuple[int, np.ndarray]]:
        for block in corpus.iter_blocks(block_rows_for(len(chosen.queries), 8192)):
            keys = id_bytes(block.ids)
            at, found = _positions(labels, keys)
            rows_of_label[at[found]] = block.start + np.flatnonzero(found)
            vectors = np.asarray(block.vectors, dtype=np.float32)
            if new_ids is not None:
                # a fit's output: normalised rows (as the fit's writer), changed ones replaced
                norms = check_rows(vectors, "corpus", offset=block.start)
                vectors = vectors / norms[:, None].astype(np.float32)
                at, found = _positions(new_ids, keys)
                vectors[found] = new_vectors[at[found]]
                applied[at[found]] = True
            yield block.start, vectors

    ks = sorted({1, k, 100})
    _, indices = search_blocks(
        chosen.queries,
        blocks(),
        max(ks),
        n_records=corpus.n_records,
        progress=None
        if progress is None
        else lambda done: progress("search", done, corpus.n_records),
        corpus_name=str(Path(dataset_dir) / "corpus"),
    )
    missing = np.flatnonzero(rows_of_label < 0)
    if len(missing):
        raise ValueError(
            f"qrels.json: relevant id {labels[missing[0]].decode('utf-8')!r} (split "
            f"{split!r}) is not in the corpus"
        )
    if not applied.all():
        raise ValueError(
            f"{changed}: id {new_ids[np.flatnonzero(~applied)[0]].decode('utf-8')!r} "  # type: ignore[index]
            "is not in the corpus"
        )
    relevance = Relevance.from_coo(
        chosen.relevance.query_of_entry(),
        rows_of_label[chosen.relevance.indices],
        chosen.relevance.n_queries,
        corpus.n_records,
        chosen.relevance.grades,
    )
    return {
        "split": split,
        "embeddings": str(changed) if changed is not None else None,
        **retrieval_metrics(indices, relevance, ks=ks),
    }


def _positions(sorted_keys: np.ndarray, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Where each of ``keys`` stands in ``sorted_keys``, and whether it is there at all."""
    at = np.searchsorted(sorted_keys, keys)
    found = at < len(sorted_keys)
    found[found] = sorted_keys[at[found]] == keys[found]
    return at, found


def sample_dir() -> Path:
    """The small embedded sample dataset that ships with nudgekit (see docs/sample.md)."""
    return Path(str(resources.files("nudgekit") / "_sample"))


def run_demo(
    out_dir: str | os.PathLike[str],
    *,
    methods: tuple[str, ...] = ("nudge-n", "nudge-m"),
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


def versions() -> dict[str, str]:
    found = {"nudgekit": __version__, "numpy": np.__version__, "python": platform.python_version()}
    for name in ("torch", "pyarrow", "ray"):  # reported when this run used them
        if name in sys.modules:
            found[name] = sys.modules[name].__version__
    return found


def make_estimator(method: str, gamma: float | None, val_k: int, device: str | None) -> Any:
    """The unfitted estimator of ``method`` (a key of :data:`METHODS`)."""
    kwargs: dict[str, Any] = {"gamma": gamma, "device": device}
    if method == "nudge-n":
        kwargs["val_k"] = val_k
    return METHODS[method](**kwargs)


def _write_report(
    out: Path,
    estimator: Any,
    *,
    method: str,
    val_k: int,
    device: str | None,
    started: float,
    timings: dict[str, float],
    n_records: int,
    dim: int,
    n_train_queries: int,
    n_val_queries: int,
    **where: Any,
) -> dict[str, Any]:
    """Write ``out/fit.json`` (both corpus formats) and return its content.

    ``where`` holds the format's own keys (dataset, embeddings or changed rows, engine ...),
    placed after the common ones as before.
    """
    report: dict[str, Any] = {
        "method": method,
        "gamma": estimator.gamma_,
        "gamma_searched": estimator.gamma is None,
        "val_k": val_k if method == "nudge-n" else 1,
        "validation_accuracy": estimator.validation_accuracy_,
        "validation_curve": estimator.validation_curve_,
        "n_changed": estimator.n_changed_,
        "n_records": n_records,
        "dim": dim,
        "n_train_queries": n_train_queries,
        "n_val_queries": n_val_queries,
        "device": device or "cpu",
        **where,
        "timings_s": timings,
        "versions": versions(),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    report["timings_s"]["total"] = time.perf_counter() - started
    write_json(out / "fit.json", report)
    return report


def _reporting(
    blocks: Iterator[np.ndarray], progress: ProgressCallback | None, total: int
) -> Iterator[np.ndarray]:
    advance = phase_counter(progress, "write embeddings", total)
    for block in blocks:
        yield block
        if advance is not None:
            advance(len(block))
