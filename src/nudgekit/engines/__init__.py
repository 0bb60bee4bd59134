"""Where the corpus pass runs: this process (``local``) or a Ray cluster (``ray``).

An engine is only a way to run :func:`nudgekit.core.corpus_pass`: the estimator plans the
pass (:meth:`~nudgekit.core.NudgeEstimator.pass_plan`), the engine reads every block of
the source and runs :class:`~nudgekit.core.BlockScanner` on it — in a loop here, in Ray
Data's ``map_batches`` over Parquet shard fragments on Ray (:mod:`.ray`) — and the
estimator finishes from the result (:meth:`~nudgekit.core.NudgeEstimator.fit_from_pass`).
Engines differ only in where the blocks are scanned; their results are identical.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from nudgekit.core import (
    ArraySource,
    BlockSource,
    NudgeEstimator,
    PassPlan,
    PassResult,
    PassRunner,
    ProgressCallback,
    corpus_pass,
)

ENGINES = ("local", "ray")
PASSES = ("exact", "ann")


@dataclass(frozen=True)
class EngineSettings:
    """How and where the corpus pass runs.

    Attributes
    ----------
    engine : {"local", "ray"}
    ray_address : str, optional
        Ray cluster to join (``"auto"``, ``"ray://head:10001"``); default: a running
        session, ``RAY_ADDRESS``, or a new local instance.
    workers : int, optional
        Ray: concurrent scan tasks (default: all CPUs). Local instance: its CPUs.
    block_rows : int
        Rows per block of the pass: bounds every worker's memory.
    check_ids : bool
        Check that ids are unique across a source read by id first (reads the id column).
    quiet : bool
        No Ray progress bars or logs.
    corpus_pass : {"exact", "ann"}
        The exact pass (default), or each validation query's fixed top-k from a FAISS
        index (:mod:`.ann`): ``index`` (a file over the corpus rows; built and saved there
        when missing), ``nprobe`` (IVF lists searched) and ``min_recall`` (below it, on a
        sample of queries, the exact pass is used instead).
    """

    engine: str = "local"
    ray_address: str | None = None
    workers: int | None = None
    block_rows: int = 8192
    check_ids: bool = True
    quiet: bool = False
    corpus_pass: str = "exact"
    index: str | None = None
    nprobe: int = 32
    min_recall: float = 0.9

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise ValueError(f"unknown engine {self.engine!r}; choose from {', '.join(ENGINES)}")
        if self.corpus_pass not in PASSES:
            raise ValueError(f"unknown pass {self.corpus_pass!r}; choose from {', '.join(PASSES)}")
        if self.corpus_pass == "ann" and self.engine != "local":
            raise ValueError("--pass ann runs on the local engine")
        if self.nprobe < 1:
            raise ValueError(f"--nprobe must be at least 1, got {self.nprobe}")
        if not 0.0 <= self.min_recall <= 1.0:
            raise ValueError(f"--min-recall must be in [0, 1], got {self.min_recall}")


def pass_runner(settings: EngineSettings, device: str | None = None) -> PassRunner:
    """``run_pass(source, plan, progress=None) -> PassResult`` on the chosen engine.

    The Ray engine reads Parquet shards only (:class:`nudgekit.io.parquet.ParquetCorpus`);
    ``device`` is where the local engine's products run.
    """

    def run_local(source: BlockSource, plan: PassPlan, progress: Any = None) -> PassResult:
        tick = time.perf_counter()
        check = getattr(source, "check_unique_ids", None)
        if settings.check_ids and plan.by_id and check is not None:
            check()
        checked = time.perf_counter() - tick
        result = corpus_pass(
            source, plan, device=device, block_rows=settings.block_rows, progress=progress
        )
        if checked > 0 and plan.by_id:
            result.stats["check_ids_s"] = checked
        return result

    def run_ray(source: BlockSource, plan: PassPlan, progress: Any = None) -> PassResult:
        from nudgekit.engines import ray as ray_engine
        from nudgekit.io.parquet import ParquetCorpus

        if not isinstance(source, ParquetCorpus):
            raise ValueError(
                "--engine ray reads a Parquet corpus (a corpus/ folder of shards); make one "
                "with: nudgekit convert DATASET_DIR --to parquet --shards N --out DIR"
            )
        with ray_engine.ray_session(
            settings.ray_address, num_cpus=settings.workers, quiet=settings.quiet
        ):
            tick = time.perf_counter()
            if settings.check_ids:
                ray_engine.check_unique_ids(source)
            checked = time.perf_counter() - tick
            result = ray_engine.ray_pass(
                source,
                plan,
                workers=settings.workers,
                block_rows=settings.block_rows,
                progress=progress,
                show_progress=not settings.quiet,
            )
        if settings.check_ids:
            result.stats["check_ids_s"] = checked
        return result

    if settings.corpus_pass == "ann":
        from nudgekit.engines.ann import ann_runner

        return ann_runner(
            settings.index, nprobe=settings.nprobe, min_recall=settings.min_recall,
            device=device, block_rows=settings.block_rows,
        )  # fmt: skip
    return run_ray if settings.engine == "ray" else run_local


def fit(
    model: NudgeEstimator,
    dataset: Any,
    settings: EngineSettings | None = None,
    *,
    progress: ProgressCallback | None = None,
) -> NudgeEstimator:
    """Fit ``model`` on a dataset's train/val splits with one corpus pass on the engine.

    ``dataset`` is an :class:`~nudgekit.io.dataset.EmbeddedDataset` or a
    :class:`~nudgekit.io.parquet.ParquetDataset`. Returns the fitted model; on a dataset
    read by id, ``model.changed_ids_`` names the changed records.
    """
    settings = settings if settings is not None else EngineSettings()
    corpus = dataset.corpus
    source = corpus if isinstance(corpus, BlockSource) else ArraySource(corpus, "corpus")
    return model.fit_source(
        source,
        dataset.fit_problem(model.uses_val),
        run_pass=pass_runner(settings, model.device),
        progress=progress,
    )


__all__ = ["ENGINES", "PASSES", "EngineSettings", "fit", "pass_runner"]
