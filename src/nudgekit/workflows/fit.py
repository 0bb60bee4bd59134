"""The ``fit`` job: NUDGE on a dataset's train/val splits, new embeddings written out.

A dataset whose corpus is ``corpus.npy`` gets ``OUT/embeddings.npy`` (every row, in corpus
order) and ``OUT/changed_rows.npy``; one whose corpus is a ``corpus/`` folder of Parquet
shards gets ``OUT/changed.parquet`` (the changed records only). Both get ``fit.json``.
The path from the command line to the math::

    cli fit → fit_dataset → MethodSpec.make_estimator → NudgeEstimator.fit_source
            → engine (local | ray) runs core.corpus_pass → NudgeEstimator.fit_from_pass
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from nudgekit import engines
from nudgekit.core import ProgressCallback, phase_counter
from nudgekit.engines import EngineSettings
from nudgekit.io.atomic import atomic_dir, atomic_file, write_json
from nudgekit.io.dataset import load_dataset, load_matrix, write_embeddings
from nudgekit.methods import DEFAULT_METHOD, method_spec
from nudgekit.workflows.provenance import fit_record


def fit_dataset(
    dataset_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    method: str = DEFAULT_METHOD,
    gamma: float | None = None,
    val_k: int = 1,
    params: Mapping[str, Any] | None = None,
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
    params : mapping, optional
        Further parameters of the method's estimator (e.g. ``{"cv": "val"}`` for
        ``nudge-cv``, ``{"criterion": "ndcg"}`` for ``nudge-m``); recorded in fit.json.
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
        _check_out(Path(out_dir))  # before the queries are embedded
        with temporary_labels(queries, qrels=qrels, model=model, corpus_ids=ids) as built:
            return _fit(
                dataset_dir, out_dir, method=method, gamma=gamma, val_k=val_k, params=params,
                device=device, engine=engine, labels_dir=built, progress=progress,
                labels_source=str(Path(queries).resolve()),
            )  # fmt: skip
    return _fit(
        dataset_dir, out_dir, method=method, gamma=gamma, val_k=val_k, params=params,
        device=device, engine=engine, labels_dir=labels_dir, progress=progress,
    )  # fmt: skip


def _fit(
    dataset_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    method: str,
    gamma: float | None,
    val_k: int,
    params: Mapping[str, Any] | None,
    device: str | None,
    engine: EngineSettings | str,
    labels_dir: str | os.PathLike[str] | None,
    progress: ProgressCallback | None,
    labels_source: str | None = None,
) -> dict[str, Any]:
    started = time.perf_counter()
    spec = method_spec(method, nudge=True)
    model = spec.make_estimator(gamma=gamma, val_k=val_k, device=device, params=params)
    settings = engine if isinstance(engine, EngineSettings) else EngineSettings(engine)
    out = Path(out_dir)
    _check_out(out)
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
    # every input is read and checked; the output folder is made (and so known writable)
    # before the fit runs, written whole, and published in one step
    with _writer_lock(out), atomic_dir(out) as work:
        engines.fit(model, data, settings, progress=progress)
        timings.update(model.timings_)
        if "check_ids_s" in model.pass_stats_:
            timings["check_ids"] = model.pass_stats_.pop("check_ids_s")
        tick = time.perf_counter()
        record = _write_outputs(work, out, model, data, parquet, dataset_dir, settings, progress)
        labelled, unlabelled = training_queries(data)
        timings["write"] = time.perf_counter() - tick
        record = fit_record(
            spec.name,
            model,
            started=started,
            timings=timings,
            n_train_queries=labelled,
            n_val_queries=len(data.splits["val"]) if model.uses_val else 0,
            n_train_queries_without_labels=unlabelled,
            params=dict(params or {}),
            **record,
            **({"labels_source": labels_source} if labels_source else {}),
        )
        write_json(work / "fit.json", record)
    return record


def _write_outputs(
    work: Path,
    out: Path,
    model: Any,
    data: Any,
    parquet: bool,
    dataset_dir: str | os.PathLike[str],
    settings: EngineSettings,
    progress: ProgressCallback | None,
) -> dict[str, Any]:
    """Write the fit's files into ``work`` (published as ``out``); return where they are."""
    where: dict[str, Any]
    if parquet:
        from nudgekit.io.parquet import write_changed_rows

        write_changed_rows(
            work / "changed.parquet",
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
            "changed": str((out / "changed.parquet").resolve()),
            "model": data.meta.get("model"),
            "engine_stats": {**model.pass_stats_, "block_rows": settings.block_rows},
        }
    else:
        write_embeddings(
            work / "embeddings.npy",
            _reporting(model.iter_transform(data.corpus), progress, data.n_records),
            (data.n_records, data.dim),
        )
        with atomic_file(work / "changed_rows.npy") as f:
            np.save(f, model.changed_rows_.astype(np.int64), allow_pickle=False)
        where = {
            "dataset": str(Path(dataset_dir).resolve()),
            "embeddings": str((out / "embeddings.npy").resolve()),
            "model": data.meta.get("model"),
        }
    # which corpus pass chose γ: exact, or through an index (with its measured recall)
    where["pass"] = model.pass_stats_.get("pass", {"kind": "exact"})
    return where


#: What a fit (and a report of it) writes into its folder: --out may hold only these.
OUTPUTS = ("embeddings.npy", "changed_rows.npy", "changed.parquet", "fit.json", "report.html")


def _check_out(out: Path) -> None:
    """--out is a new folder, or one a fit wrote (it is replaced whole): never a folder of
    the user's other files, which publishing the new run would remove."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} exists and is not a directory")
    blocked = next((p for p in out.parents if p.exists() and not p.is_dir()), None)
    if blocked is not None:
        raise ValueError(f"--out {out}: {blocked} is a file, not a directory")
    if out.is_dir():
        others = sorted(
            p.name for p in out.iterdir() if p.name not in OUTPUTS and p.suffix != ".png"
        )
        if others:
            raise ValueError(
                f"--out {out} holds files a fit did not write ({', '.join(others[:3])}"
                + (", ..." if len(others) > 3 else "")
                + "); a fit replaces its folder whole — choose a new or empty one"
            )


@contextmanager
def _writer_lock(out: Path) -> Iterator[None]:
    """One fit at a time into ``out``: a second stops at once with a clear line."""
    out.parent.mkdir(parents=True, exist_ok=True)
    path = out.parent / f".{out.name}.nudgekit-lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ValueError(
                f"another nudgekit fit is writing --out {out}; nothing was written — run "
                "again when it has finished, or choose another --out"
            ) from None
        try:
            yield
        finally:
            path.unlink(missing_ok=True)
    finally:
        os.close(fd)


def training_queries(data: Any) -> tuple[int, int]:
    """Training queries with a relevant record, and without one (those teach nothing)."""
    ids = data.splits["train"]
    labelled = sum(1 for q in ids if data.qrels.get(q))
    return labelled, len(ids) - labelled


def _reporting(
    blocks: Iterator[np.ndarray], progress: ProgressCallback | None, total: int
) -> Iterator[np.ndarray]:
    advance = phase_counter(progress, "write embeddings", total)
    for block in blocks:
        yield block
        if advance is not None:
            advance(len(block))
