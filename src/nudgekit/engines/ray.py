"""The Ray engine: the corpus pass as a Ray Data job over the Parquet shards.

* **Read** — a datasource over the shards' fragments (whole row groups of one shard,
  :meth:`nudgekit.parquet.ParquetCorpus.fragments`), one read task each, yielding blocks
  of at most ``block_rows`` rows with their corpus row numbers (``row``, ``id``,
  ``vector``). Row numbers are what make the result identical to the single-process
  path: the tracked records come back in corpus order, whatever order tasks finish in.
* **Scan** — ``map_batches(scan_batch)``, fused with the read: each block leaves a
  one-row table (its ``V × k`` best scores, the tracked rows it holds, the worker's pid
  and peak RSS), computed by the same :class:`~nudgekit.core.BlockScanner` as the local
  pass. The :class:`~nudgekit.core.PassPlan` (tracked ids and validation queries) is
  ``ray.put`` once and fetched once per worker process.
* **Collect** — the driver streams those small tables and merges them
  (:class:`~nudgekit.core.PassCollector`): it holds ``V × k`` scores plus the tracked
  rows, never a corpus block.

Failures: Ray Data resubmits tasks whose worker or node died (its default, unbounded),
and a task that raises — a flaky read — is retried up to ``max_retries`` times.
Malformed data is not an exception in the workers: a block reports it as a result
(``error``) and the driver raises :class:`~nudgekit.core.CorpusError` at once, so
deterministic errors are never retried. Progress is Ray Data's own (progress bars on a
terminal, log lines otherwise).
"""

from __future__ import annotations

import functools
import os
import resource
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from nudgekit.core import (
    Block,
    BlockResult,
    BlockScanner,
    CorpusError,
    PassCollector,
    PassPlan,
    PassResult,
)
from nudgekit.io.parquet import (
    ID_COLUMN,
    VECTOR_COLUMN,
    Fragment,
    ParquetCorpus,
    block_arrays,
    id_bytes,
    id_hashes,
    read_batches,
    vector_array,
)

#: The scanner a worker process holds, by object ref: fetched once, not per block.
_WORKER_SCANNER: dict[str, BlockScanner] = {}


def _ray() -> Any:
    try:
        import ray
        import ray.data
    except ImportError:
        raise ImportError(
            "--engine ray needs Ray Data: pip install 'nudgekit[scale]' (ray[data], pyarrow)"
        ) from None
    return ray


@contextmanager
def ray_session(
    address: str | None = None, num_cpus: int | None = None, quiet: bool = False
) -> Iterator[Any]:
    """Use the running Ray session, or start/join one for the duration of the block.

    ``address`` is a cluster to join (``"auto"``, ``"ray://head:10001"``,
    ``"10.0.0.1:6379"``); without it ``ray.init`` honours ``RAY_ADDRESS``, else starts a
    local instance with ``num_cpus`` CPUs. A session that was already running is left
    running; one started here is shut down.
    """
    ray = _ray()
    if ray.is_initialized():
        yield ray
        return
    import logging

    ray.init(
        address=address,
        num_cpus=num_cpus if address is None else None,
        include_dashboard=False,
        logging_level=logging.WARNING if quiet else logging.INFO,
        log_to_driver=not quiet,
    )
    try:
        yield ray
    finally:
        ray.shutdown()


@contextmanager
def _data_context(**settings: Any) -> Iterator[Any]:
    """Ray Data settings for this job only (the context is the driver's global)."""
    ray = _ray()
    context = ray.data.DataContext.get_current()
    before = {name: getattr(context, name) for name in settings}
    for name, value in settings.items():
        setattr(context, name, value)
    try:
        yield context
    finally:
        for name, value in before.items():
            setattr(context, name, value)


def _read_task(fragment: Fragment, block_rows: int, ids_only: bool) -> Iterator[Any]:
    """Read task body: raw blocks (checked by the scan, where errors become results)."""
    import pyarrow as pa

    start = fragment.start
    columns = [ID_COLUMN] if ids_only else [ID_COLUMN, VECTOR_COLUMN]
    for batch in read_batches(fragment, block_rows, columns):
        if ids_only:
            yield pa.table({"id": batch.column(0)})
        else:
            rows = np.arange(start, start + batch.num_rows, dtype=np.int64)
            yield pa.table({"row": rows, "id": batch.column(0), "vector": batch.column(1)})
        start += batch.num_rows


def shard_source(
    corpus: ParquetCorpus, block_rows: int, fragment_rows: int, ids_only: bool = False
) -> Any:
    """A Ray Data datasource: one read task per fragment of whole row groups.

    Blocks hold ``row``, ``id`` and ``vector``, or ``id`` only with ``ids_only``.
    (Defined in a function: Ray is an optional dependency.)
    """
    from ray.data import Datasource
    from ray.data.block import BlockMetadata
    from ray.data.datasource import ReadTask

    fragments = corpus.fragments(fragment_rows)
    row_bytes = 24 if ids_only else corpus.dim * 4 + 24

    class ShardSource(Datasource):
        def estimate_inmemory_data_size(self) -> int:
            return corpus.n_records * row_bytes

        def get_name(self) -> str:
            return "ParquetShardIds" if ids_only else "ParquetShards"

        def get_read_tasks(
            self,
            parallelism: int,
            per_task_row_limit: int | None = None,
            data_context: Any = None,
        ) -> list[Any]:
            # one task per fragment, whatever ``parallelism``: a fragment is the unit of
            # memory (a row group at a time) and of retry
            return [
                ReadTask(
                    functools.partial(_read_task, f, block_rows, ids_only),
                    BlockMetadata(
                        num_rows=f.n_rows,
                        size_bytes=f.n_rows * row_bytes,
                        exec_stats=None,
                        input_files=(f.path,),
                    ),
                    per_task_row_limit=per_task_row_limit,
                )
                for f in fragments
            ]

    return ShardSource()


def scan_batch(table: Any, job: Any) -> Any:
    """``map_batches`` function: one block of ``row``/``id``/``vector`` → one summary row.

    ``job`` is ``(plan, corpus)`` or its object ref (fetched once per process).
    """
    import pyarrow as pa

    if isinstance(job, tuple):
        scanner = BlockScanner(*job)
    else:
        scanner = _WORKER_SCANNER.get(job.hex())
        if scanner is None:  # first block in this worker process
            import ray

            _WORKER_SCANNER.clear()
            scanner = _WORKER_SCANNER[job.hex()] = BlockScanner(*ray.get(job))
    corpus = scanner.source
    rows = table.column("row").to_numpy()
    error, top = None, None
    found = (np.empty(0, np.int64), np.empty(0, "S1"), np.empty((0, corpus.dim), np.float32))
    try:
        ids, vectors = block_arrays(
            table.column("id").combine_chunks(),
            table.column("vector").combine_chunks(),
            corpus.dim,
            int(rows[0]) if len(rows) else 0,
            corpus.where,
        )
        if len(rows):
            part = scanner.scan(Block(int(rows[0]), vectors, id_bytes(ids)))
            top, found = part.top, (part.rows, part.ids, part.vectors)
    except CorpusError as err:  # a result, not a failure: retrying would not help
        error = str(err)
    flat_top = np.empty(0, np.float32) if top is None else top.reshape(-1)
    return pa.table(
        {
            "n": pa.array([len(rows)], pa.int64()),
            "top": _one_list(pa.array(flat_top, pa.float32())),
            "rows": _one_list(pa.array(found[0], pa.int64())),
            "ids": _one_list(pa.array(found[1], pa.binary())),
            "vectors": _one_list(vector_array(found[2]).flatten()),
            "error": pa.array([error], pa.string()),
            "pid": pa.array([os.getpid()], pa.int64()),
            # ru_maxrss is in KiB on Linux
            "peak_rss": pa.array([resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024]),
        }
    )


def _one_list(values: Any) -> Any:
    import pyarrow as pa

    return pa.LargeListArray.from_arrays(pa.array([0, len(values)], pa.int64()), values)


def ray_pass(
    corpus: ParquetCorpus,
    plan: PassPlan,
    *,
    workers: int | None = None,
    block_rows: int = 8192,
    fragment_rows: int = 1 << 17,
    max_retries: int = 3,
    progress: Callable[[int], None] | None = None,
    show_progress: bool = True,
) -> PassResult:
    """Run the pass as a Ray Data job in the current Ray session (see :func:`ray_session`).

    Parameters
    ----------
    corpus, plan :
        The shards and what to compute.
    workers : int, optional
        At most this many scan tasks at once (one CPU each); default: as many as the
        cluster's CPUs allow. Below the cluster's CPU count the cap keeps Ray Data from
        fusing read and scan into one task (blocks then pass through the object store).
    block_rows : int
        Rows per block: a worker holds one row group's pages plus about
        ``block_rows × (d + query_block)`` floats.
    fragment_rows : int
        Rows per read task (whole row groups): the unit of scheduling and retry.
    max_retries : int
        Retries of a task that raised (a flaky read); lost workers are always resubmitted.
    progress : callable, optional
        ``progress(rows)`` as block results arrive on the driver.
    show_progress : bool
        Ray Data's progress bars / log lines.
    """
    ray = _ray()
    job_ref = ray.put((plan, corpus))
    collector = PassCollector(plan, corpus)
    peaks: dict[int, int] = {}
    k, n_q = plan.k, 0 if plan.queries is None else plan.queries.shape[0]
    with _data_context(
        enable_progress_bars=show_progress,
        print_on_execution_start=show_progress,
        retried_map_errors=max_retries > 0,
        max_map_retries=max_retries,
        # Ray Data coalesces what a read task yields into blocks of up to this size (128
        # MiB by default): cap it at our block so that block_rows bounds worker memory
        target_max_block_size=block_rows * (corpus.dim * 4 + 24),
    ):
        source = shard_source(corpus, block_rows, fragment_rows)
        # a concurrency cap on the map stops Ray Data from fusing it with the read (blocks
        # would then travel through the object store): cap only below the cluster's CPUs
        capped = workers is not None and workers < int(ray.cluster_resources().get("CPU", 0))
        # as many read tasks as fragments: more would make Ray split our blocks into
        # slivers (more per-block work, not less memory)
        scanned = ray.data.read_datasource(
            source, override_num_blocks=len(corpus.fragments(fragment_rows))
        ).map_batches(
            scan_batch,
            fn_kwargs={"job": job_ref},
            batch_size=None,  # one read block at a time: the block size bounds memory
            batch_format="pyarrow",
            compute=ray.data.TaskPoolStrategy(size=workers) if capped else None,
            num_cpus=1,
        )
        try:
            for batch in scanned.iter_batches(batch_size=None, batch_format="pyarrow"):
                errors = batch.column("error").drop_null()
                if len(errors):
                    raise CorpusError(errors[0].as_py())
                b, n_rows = batch.num_rows, int(_flat(batch, "n").sum())
                top = _flat(batch, "top").reshape(b, n_q, k) if n_q else None
                part = BlockResult(
                    n_rows,
                    # blocks side by side: (V, b·k)
                    None if top is None else top.transpose(1, 0, 2).reshape(n_q, b * k),
                    _flat(batch, "rows"),
                    id_bytes(batch.column("ids").combine_chunks().flatten()),
                    _flat(batch, "vectors").reshape(-1, corpus.dim),
                )
                collector.add(part, n_blocks=b)
                pids, rss = batch.column("pid").to_pylist(), batch.column("peak_rss").to_pylist()
                for pid, peak in zip(pids, rss, strict=True):  # one per block, not per row
                    peaks[pid] = max(peaks.get(pid, 0), peak)
                if progress is not None:
                    progress(n_rows)
        except CorpusError:
            raise
        except Exception as error:
            raise _concise(error) from None
    if collector.n_rows != corpus.n_records:
        raise RuntimeError(
            f"the corpus pass read {collector.n_rows} rows, the shards hold {corpus.n_records}"
        )
    return collector.result(
        {
            "engine": "ray",
            "workers": workers,
            "fused_read_and_scan": not capped,
            "worker_processes": len(peaks),
            "worker_peak_rss_bytes": sorted(peaks.values(), reverse=True),
            "fragments": len(corpus.fragments(fragment_rows)),
        }
    )


def _flat(batch: Any, name: str) -> np.ndarray:
    column = batch.column(name).combine_chunks()
    values = column.flatten() if hasattr(column.type, "value_type") else column
    return values.to_numpy(zero_copy_only=False)


def _concise(error: BaseException) -> BaseException:
    """A task that failed for good on bad input (corrupt file ...) as one ValueError line.

    Ray wraps the worker's exception with its traceback; the CLI wants the cause only.
    Anything that is not an I/O or value error is passed through unchanged.
    """
    cause: BaseException = error
    seen: set[int] = set()
    while id(cause) not in seen:
        seen.add(id(cause))
        inner = getattr(cause, "cause", None) or cause.__cause__
        if not isinstance(inner, BaseException):
            break
        cause = inner
    if isinstance(cause, OSError | ValueError):
        return ValueError(f"the Ray corpus pass failed: {type(cause).__name__}: {cause}")
    return error


def _id_partitions(fragment: Fragment, partitions: int) -> tuple[Any, ...]:
    """Map task of the id check: one fragment's ids, hash-partitioned, as (keys, hashes, rows)."""
    keys = [id_bytes(b.column(0)) for b in read_batches(fragment, 1 << 16, [ID_COLUMN])]
    key = np.concatenate(keys) if keys else np.empty(0, "S1")
    hashes = id_hashes(key)
    rows = np.arange(fragment.start, fragment.start + len(key), dtype=np.int64)
    part = (hashes % np.uint64(partitions)).astype(np.int64)
    order = np.argsort(part, kind="stable")
    bounds = np.searchsorted(part[order], np.arange(1, partitions))
    out = tuple(
        (k, h, r)
        for k, h, r in zip(
            np.split(key[order], bounds),
            np.split(hashes[order], bounds),
            np.split(rows[order], bounds),
            strict=True,
        )
    )
    return out if partitions > 1 else out[0]


def _first_duplicate(*parts: tuple[np.ndarray, np.ndarray, np.ndarray]) -> tuple[bytes, int, int]:
    """Reduce task of the id check: the first repeated id of one hash partition, or None."""
    keys = np.concatenate([p[0] for p in parts])
    hashes = np.concatenate([p[1] for p in parts])
    rows = np.concatenate([p[2] for p in parts])
    order = np.lexsort((rows, hashes))  # equal ids have equal hashes: neighbours after this
    keys, hashes, rows = keys[order], hashes[order], rows[order]
    same = np.flatnonzero((hashes[1:] == hashes[:-1]) & (keys[1:] == keys[:-1]))
    if len(same) == 0:
        return None
    i = int(same[0])
    return bytes(keys[i]), int(rows[i]), int(rows[i + 1])


def check_unique_ids(
    corpus: ParquetCorpus,
    *,
    partitions: int | None = None,
    max_retries: int = 3,
    progress: Callable[[int], None] | None = None,
) -> None:
    """Raise :class:`CorpusError` if an id occurs twice across the shards (a Ray job).

    A hash partitioning of the id column: one map task per fragment (about 2^20 rows)
    reads its ids and splits them by ``hash % partitions``; one reduce task per partition
    sorts what it receives and reports the first repeated id. No process holds more than
    a fragment's or a partition's ids (about ``N × (id bytes + 16) / partitions`` bytes);
    the vectors are never read. Plain Ray tasks rather than a Ray Data group-by: the
    latter's shuffle costs seconds of set-up even on a few rows.
    """
    ray = _ray()
    fragments = corpus.fragments(1 << 20)
    if partitions is None:  # ~4M ids per reducer, at least one per CPU
        cpus = int(ray.cluster_resources().get("CPU", 1))
        partitions = max(cpus, corpus.n_records // (1 << 22) + 1)
    options = {"max_retries": max_retries, "retry_exceptions": [OSError]}
    split = ray.remote(num_returns=partitions, **options)(_id_partitions)
    reduce = ray.remote(**options)(_first_duplicate)
    try:
        mapped = [split.remote(f, partitions) for f in fragments]
        if partitions == 1:
            mapped = [[m] for m in mapped]
        if progress is not None:  # map tasks as they finish
            pending = [m[0] for m in mapped]
            by_ref = {m[0]: f.n_rows for m, f in zip(mapped, fragments, strict=True)}
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                progress(by_ref[done[0]])
        found = ray.get([reduce.remote(*[m[p] for m in mapped]) for p in range(partitions)])
    except Exception as error:
        raise _concise(error) from None
    hits = [f for f in found if f is not None]
    if hits:
        key, a, b = min(hits, key=lambda h: h[1])  # the earliest corpus row: deterministic
        raise CorpusError(
            f"duplicate id {key.decode('utf-8', 'replace')!r}: {corpus.where(a)} and "
            f"{corpus.where(b)}"
        )
