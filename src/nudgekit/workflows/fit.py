"""The ``fit`` job: NUDGE on a dataset's train/val splits, new embeddings written out.

A dataset whose corpus is ``corpus.npy`` gets ``OUT/embeddings.npy`` (every row, in corpus
order) and ``OUT/changed_rows.npy``; one whose corpus is a ``corpus/`` folder of Parquet
shards gets ``OUT/changed.parquet`` (the changed records only). Both get ``fit.json``.
The path from the command line to the math::

    cli fit → fit_dataset → MethodSpec.make_estimator → NudgeEstimator.fit_source
            → engine (local | ray) runs core.corpus_pass → NudgeEstimator.fit_from_pass
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from nudgekit import engines
from nudgekit.core import ProgressCallback, phase_counter
from nudgekit.engines import EngineSettings
from nudgekit.io.atomic import atomic_file, write_json
from nudgekit.io.dataset import load_dataset, load_matrix, write_embeddings
from nudgekit.methods import method_spec
from nudgekit.workflows.provenance import fit_record


def fit_dataset(
    dataset_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    method: str = "nudge-n",
    gamma: float | None = None,
    val_k: int = 1,
    device: str | None = None,
    engine: EngineSettings | str = "local",
    labels_dir: str | os.PathLike[str] | None = None,
    queries: str | os.PathLike[str] | None = None,
    qrels: str | os.PathLike[str] | None = None,
    model: str | None = None,
    progress: ProgressCallback | None = None,
) -> dict[str, Any]:
    """Fit NUDGE on a dataset's train/val splits and write the new embeddings.

    Parameters
    ----------
    dataset_dir : path
        An embedded dataset directory (``corpus.npy`` or a ``corpus/`` of Parquet shards).
    out_dir : path
        Where to write ``embeddings.npy`` + ``changed_rows.npy`` (or ``changed.parquet``)
        and ``fit.json``.
    method : str
        Any NUDGE method of :data:`nudgekit.methods.METHODS`.
    gamma, val_k, device :
        Fixed γ (skips the search), NUDGE-N's top-k criterion, where the math runs.
    engine : EngineSettings or str
        Where the corpus pass runs: ``"local"`` (this process, the default), ``"ray"``, or
        settings with the cluster address, workers and block size.
    labels_dir : path, optional
        Take the queries, qrels and splits from this labels folder instead of the dataset's
        (``nudgekit labels`` writes one).
    queries, qrels, model : optional
        Instead: query texts and what answers them (:func:`nudgekit.workflows.labels.build_labels`),
        checked against the dataset's corpus ids and embedded with ``model``.

    Returns
    -------
    dict
        The content of ``fit.json`` (method, γ, validation curve, changed rows, timings,
        versions). Nothing is written if any input is bad.
    """
    if queries is not None:
        from nudgekit.io.dataset import read_id_list
        from nudgekit.workflows.labels import temporary_labels

        root = Path(dataset_dir)
        ids = read_id_list(
            root / "corpus_ids.json", len(load_matrix(root / "corpus.npy")), "corpus.npy"
        )
        with temporary_labels(queries, qrels=qrels, model=model, corpus_ids=ids) as built:
            report = fit_dataset(
                dataset_dir, out_dir, method=method, gamma=gamma, val_k=val_k, device=device,
                engine=engine, labels_dir=built, progress=progress,
            )  # fmt: skip
        report["labels_source"] = str(Path(queries).resolve())
        write_json(Path(out_dir) / "fit.json", report)
        return report
    started = time.perf_counter()
    spec = method_spec(method, nudge=True)
    model = spec.make_estimator(gamma=gamma, val_k=val_k, device=device)
    settings = engine if isinstance(engine, EngineSettings) else EngineSettings(engine)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} exists and is not a directory")
    from nudgekit.io.parquet import is_parquet_dataset  # pyarrow only when needed

    parquet = is_parquet_dataset(dataset_dir)
    if parquet and labels_dir is not None:
        raise ValueError("--labels works with a corpus.npy dataset; a Parquet one has its own")
    if not parquet and settings.engine != "local":
        raise ValueError(
            f"--engine {settings.engine} reads a Parquet corpus (a corpus/ folder of shards); "
            "make one with: nudgekit convert DATASET_DIR --to parquet --shards N --out DIR"
        )
    tick = time.perf_counter()
    if parquet:
        from nudgekit.io.parquet import load_parquet_dataset

        data: Any = load_parquet_dataset(dataset_dir)
    else:
        data = load_dataset(dataset_dir, labels_dir)
    timings = {"load": time.perf_counter() - tick}
    engines.fit(model, data, settings, progress=progress)
    timings.update(model.timings_)
    if "check_ids_s" in model.pass_stats_:
        timings["check_ids"] = model.pass_stats_.pop("check_ids_s")

    tick = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    where: dict[str, Any]
    if parquet:
        from nudgekit.io.parquet import write_changed_rows

        changed = out / "changed.parquet"
        write_changed_rows(
            changed,
            [i.decode("utf-8") for i in model.changed_ids_.tolist()],  # type: ignore[union-attr]
            model.changed_embeddings_,
            model.original_embeddings_,
        )
        where = {
            "engine": settings.engine,
            "corpus_format": "parquet",
            "shards": len(data.corpus.paths),
            "dataset": str(Path(dataset_dir).resolve()),
            "embeddings": None,
            "changed": str(changed.resolve()),
            "model": data.meta.get("model"),
            "engine_stats": {**model.pass_stats_, "block_rows": settings.block_rows},
        }
    else:
        write_embeddings(
            out / "embeddings.npy",
            _reporting(model.iter_transform(data.corpus), progress, data.n_records),
            (data.n_records, data.dim),
        )
        with atomic_file(out / "changed_rows.npy") as f:
            np.save(f, model.changed_rows_.astype(np.int64), allow_pickle=False)
        where = {
            "dataset": str(Path(dataset_dir).resolve()),
            "embeddings": str((out / "embeddings.npy").resolve()),
            "model": data.meta.get("model"),
        }
    timings["write"] = time.perf_counter() - tick
    record = fit_record(
        spec.name,
        model,
        started=started,
        timings=timings,
        n_train_queries=len(data.splits["train"]),
        n_val_queries=len(data.splits["val"]) if model.searches_gamma else 0,
        **where,
    )
    write_json(out / "fit.json", record)
    return record


def _reporting(
    blocks: Iterator[np.ndarray], progress: ProgressCallback | None, total: int
) -> Iterator[np.ndarray]:
    advance = phase_counter(progress, "write embeddings", total)
    for block in blocks:
        yield block
        if advance is not None:
            advance(len(block))
