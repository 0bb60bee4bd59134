"""The local engine: the corpus pass in this process, shard by shard, block by block."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from nudgekit.core._backend import get_backend
from nudgekit.engines._scan import PassCollector, PassResult, Scanner, ScanPlan
from nudgekit.parquet import CorpusError, ParquetCorpus


def local_pass(
    corpus: ParquetCorpus,
    plan: ScanPlan,
    *,
    device: str | None = None,
    block_rows: int = 8192,
    progress: Callable[[int], None] | None = None,
) -> PassResult:
    """Run the pass over ``corpus`` with pyarrow, ``block_rows`` rows at a time.

    Peak memory is one row group's pages plus about ``block_rows × (d + query_block)``
    floats, whatever the corpus size. The products run on ``device`` (``None``: numpy).
    """
    scanner = Scanner(plan, get_backend(device))
    collector = PassCollector(plan)
    for block in corpus.iter_blocks(block_rows):
        rows = np.arange(block.start, block.start + len(block.vectors), dtype=np.int64)
        part = scanner.scan(rows, block.ids, block.vectors)
        collector.add(part.n_rows, part.top, part.rows, part.ids, part.vectors)
        if progress is not None:
            progress(part.n_rows)
    return collector.result({"engine": "local", "workers": 1})


def check_unique_ids(corpus: ParquetCorpus) -> None:
    """Raise :class:`CorpusError` naming an id that occurs more than once across the shards.

    Reads the id column only (a few % of the bytes of the vectors); holds every id once.
    """
    import pyarrow.compute as pc

    ids = corpus.read_ids()
    if len(pc.unique(ids)) == len(ids):
        return
    counts = pc.value_counts(ids)
    dup = counts.filter(pc.greater(counts.field("counts"), 1))[0]["values"].as_py()
    rows = np.flatnonzero(pc.equal(ids, dup).to_numpy(zero_copy_only=False))[:2]
    raise CorpusError(
        f"duplicate id {dup!r}: {corpus.where(int(rows[0]))} and {corpus.where(int(rows[1]))}"
    )
