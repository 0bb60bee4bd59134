"""Where the corpus pass runs: this process (``local``) or a Ray cluster (``ray``).

Both engines fit NUDGE on a Parquet dataset (:mod:`nudgekit.parquet`) the same way:

1. the labelled doc ids of the train (and val) queries are the *tracked* set;
2. one pass over the shards (:mod:`._scan`): every row is checked and normalised, the
   tracked rows are gathered, every other row only updates each validation query's best
   ``k`` scores — the local engine in a loop (:mod:`._local`), Ray in ``map_batches``
   over a datasource of shard fragments (:mod:`._ray`);
3. the estimator finishes on that small remainder (``fit_from_pass``), exactly as ``fit``
   does on an in-memory corpus.

Engines differ only in where step 2 runs; their results are identical.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from nudgekit.core import Relevance
from nudgekit.core._estimators import _Nudge, phase_counter
from nudgekit.engines._scan import PassResult, ScanPlan
from nudgekit.parquet import CorpusError, ParquetDataset

ENGINES = ("local", "ray")

ProgressCallback = Callable[[str, int, int], None]


@dataclass
class ParquetFit:
    """A fitted model on a Parquet corpus and what the report needs."""

    model: Any
    changed_ids: list[str]
    n_train_queries: int
    n_val_queries: int
    stats: dict[str, Any] = field(default_factory=dict)


def fit_parquet(
    model: Any,
    dataset: ParquetDataset,
    *,
    engine: str = "local",
    ray_address: str | None = None,
    workers: int | None = None,
    block_rows: int = 8192,
    check_ids: bool = True,
    progress: ProgressCallback | None = None,
    quiet: bool = False,
) -> ParquetFit:
    """Fit ``model`` (an unfitted NUDGE estimator) on a Parquet dataset with one corpus pass.

    Parameters
    ----------
    model : NudgeN, NudgeM or one of their variants
    dataset : ParquetDataset
    engine : {"local", "ray"}
    ray_address : str, optional
        Ray cluster to join (``"auto"``, ``"ray://head:10001"``); default: a running
        session, ``RAY_ADDRESS``, or a new local instance.
    workers : int, optional
        Ray: concurrent scan tasks (default: all CPUs). Local instance: its CPUs.
    block_rows : int
        Rows per block of the pass: bounds every worker's memory.
    check_ids : bool
        Check that ids are unique across all shards first (reads the id column).
    progress : callable, optional
        ``progress(phase, done, total)``.
    quiet : bool
        No Ray progress bars or logs.

    Raises
    ------
    ValueError
        Bad labels, malformed shards (wrong vector length, null, NaN/inf or zero vector,
        duplicate id), or a relevant id missing from the corpus.
    """
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; choose from {', '.join(ENGINES)}")
    if not isinstance(model, _Nudge):
        raise ValueError(f"{type(model).__name__}: the engines fit NUDGE estimators only")
    model._check_params()
    tick = time.perf_counter()
    searching = model.gamma is None
    labels, splits = dataset.labelled_splits(("train", "val") if searching else ("train",))
    train, val = splits["train"], splits.get("val")
    if train.relevance.nnz == 0:
        raise ValueError("train labels: no training query has a relevant record")
    if val is not None:
        val.check_labelled()
    corpus = dataset.corpus
    plan = ScanPlan(
        labels=labels,
        queries=val.queries if val is not None else None,
        k=model.fixed_k,
        dim=corpus.dim,
        n_records=corpus.n_records,
        shard_names=corpus.shard_names(),
        shard_offsets=corpus.offsets,
        query_block=model.query_block,
    )
    timings = {"prepare": time.perf_counter() - tick}
    advance = phase_counter(progress, "scan corpus", corpus.n_records)

    if engine == "local":
        from nudgekit.engines import _local

        if check_ids:
            tick = time.perf_counter()
            _local.check_unique_ids(corpus)
            timings["check_ids"] = time.perf_counter() - tick
        tick = time.perf_counter()
        result = _local.local_pass(
            corpus, plan, device=model.device, block_rows=block_rows, progress=advance
        )
        timings["scan_corpus"] = time.perf_counter() - tick
    else:
        from nudgekit.engines import _ray

        with _ray.ray_session(ray_address, num_cpus=workers, quiet=quiet):
            if check_ids:
                tick = time.perf_counter()
                _ray.check_unique_ids(
                    corpus, progress=phase_counter(progress, "check ids", corpus.n_records)
                )
                timings["check_ids"] = time.perf_counter() - tick
            tick = time.perf_counter()
            result = _ray.ray_pass(
                corpus,
                plan,
                workers=workers,
                block_rows=block_rows,
                progress=advance,
                show_progress=not quiet,
            )
            timings["scan_corpus"] = time.perf_counter() - tick

    rows_of_label = _rows_of_labels(labels, result, splits)
    train_rel = _over_rows(train.relevance, rows_of_label, corpus.n_records)
    val_rel = _over_rows(val.relevance, rows_of_label, corpus.n_records) if val else None
    model.fit_from_pass(
        n_records=corpus.n_records,
        dim=corpus.dim,
        train_queries=train.queries,
        train_relevance=train_rel,
        val_queries=val.queries if val is not None else None,
        val_relevance=val_rel,
        tracked=result.rows,
        tracked_vectors=result.vectors,
        fixed=result.fixed,
        timings=timings,
    )
    changed = result.ids[np.searchsorted(result.rows, model.changed_rows_)]
    return ParquetFit(
        model,
        [i.decode("utf-8") for i in changed.tolist()],  # changed records only
        len(train.query_ids),
        len(val.query_ids) if val is not None else 0,
        {**result.stats, "n_tracked": len(result.rows), "block_rows": block_rows},
    )


def _rows_of_labels(labels: np.ndarray, result: PassResult, splits: dict[str, Any]) -> np.ndarray:
    """Corpus row of each labelled id; an id the pass did not find is an error."""
    rows = np.full(len(labels), -1, dtype=np.int64)
    if len(result.ids):
        pos = np.searchsorted(labels, result.ids)
        rows[pos] = result.rows
    missing = np.flatnonzero(rows < 0)
    if len(missing):
        label = int(missing[0])
        for name, split in splits.items():  # two splits at most
            entry = np.flatnonzero(split.relevance.indices == label)
            if len(entry):
                query = int(np.searchsorted(split.relevance.indptr, entry[0], side="right")) - 1
                raise CorpusError(
                    f"qrels.json: relevant id {labels[label].decode('utf-8')!r} (query "
                    f"{split.query_ids[query]!r}, split {name!r}) is not in the corpus"
                )
    return rows


def _over_rows(relevance: Relevance, rows_of_label: np.ndarray, n_records: int) -> Relevance:
    # from_coo re-sorts each query's entries by corpus row, as the in-memory path has them
    return Relevance.from_coo(
        relevance.query_of_entry(),
        rows_of_label[relevance.indices],
        relevance.n_queries,
        n_records,
        relevance.grades,
    )


__all__ = ["ENGINES", "CorpusError", "ParquetFit", "fit_parquet"]
