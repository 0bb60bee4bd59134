"""The approximate pass's index: a FAISS file over the corpus rows, given or built here.

``fit --pass ann`` (:func:`nudgekit.core.ann_pass.ann_pass`) asks an index for each
validation query's candidate rows. The index is a FAISS file whose ids are corpus rows
(``--index PATH``; any FAISS index type), or, when ``PATH`` does not exist or is not
given, an ``IndexIVFFlat`` (inner product) built here over the L2-normalised rows and
saved to ``PATH`` for the next fit. FAISS is the optional extra ``nudgekit[faiss]``.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from nudgekit.core import ArraySource, BlockSource, PassPlan, PassResult, normalised_rows
from nudgekit.core.ann_pass import MIN_RECALL, ann_pass

#: IVF lists per √N, and the lists probed per query (recall ≈ 0.9 on SciFact, man pages)
LISTS_PER_ROOT = 4
NPROBE = 32
#: training rows per list (FAISS warns below 39)
TRAIN_PER_LIST = 40


def _faiss() -> Any:
    try:
        import faiss
    except ImportError:
        raise ValueError(
            "--pass ann needs FAISS: pip install 'nudgekit[faiss]' (or faiss-cpu)"
        ) from None
    return faiss


def build_ivf(source: ArraySource, nlist: int | None = None, *, block_rows: int = 65536) -> Any:
    """An ``IndexIVFFlat`` (inner product) over the normalised rows, ids = corpus rows."""
    faiss = _faiss()
    n = source.n_records
    nlist = nlist or max(1, min(n // TRAIN_PER_LIST, round(LISTS_PER_ROOT * math.sqrt(n))))
    rows = np.sort(
        np.random.default_rng(0).choice(n, size=min(n, nlist * TRAIN_PER_LIST), replace=False)
    )
    index = faiss.IndexIVFFlat(faiss.IndexFlatIP(source.dim), source.dim, nlist,
                               faiss.METRIC_INNER_PRODUCT)  # fmt: skip
    index.train(normalised_rows(source.take(rows), source))
    for block in source.blocks(block_rows):
        index.add(normalised_rows(block, source))
    return index


def load_index(path: str | os.PathLike[str], source: BlockSource) -> Any:
    """A FAISS index file over ``source``'s rows; refuses one of another shape."""
    faiss = _faiss()
    try:
        index = faiss.read_index(str(path))
    except RuntimeError as error:
        raise ValueError(f"--index {path}: not a FAISS index file ({error})") from None
    if index.d != source.dim or index.ntotal != source.n_records:
        raise ValueError(
            f"--index {path} holds {index.ntotal} vectors of dimension {index.d}; the corpus "
            f"has {source.n_records} of dimension {source.dim} (its ids must be corpus rows)"
        )
    return index


def ann_runner(
    index_path: str | os.PathLike[str] | None = None,
    *,
    nprobe: int = NPROBE,
    min_recall: float = MIN_RECALL,
    device: str | None = None,
    block_rows: int = 8192,
) -> Any:
    """``run_pass(source, plan, progress=None)`` through a FAISS index (module docstring)."""

    def run(source: BlockSource, plan: PassPlan, progress: Any = None) -> PassResult:
        if not isinstance(source, ArraySource):
            raise ValueError("--pass ann reads a corpus.npy dataset (not Parquet shards)")
        tick = time.perf_counter()
        path = Path(index_path) if index_path is not None else None
        built = path is None or not path.exists()
        if path is not None and not path.parent.is_dir():
            raise ValueError(f"--index {path}: {path.parent} is not a directory")
        index = build_ivf(source) if built else load_index(path, source)  # type: ignore[arg-type]
        index_s = time.perf_counter() - tick
        ivf = _faiss().try_extract_index_ivf(index)
        if ivf is not None:
            ivf.nprobe = int(nprobe)

        def search(queries: np.ndarray, n: int) -> np.ndarray:
            return index.search(queries, int(n))[1]

        result = ann_pass(
            source, plan, search, min_recall=min_recall, device=device,
            block_rows=block_rows, progress=progress,
        )  # fmt: skip
        if built and path is not None:
            # saved only once the pass has read and checked every row: a corpus that
            # fails its checks leaves no index behind
            tick = time.perf_counter()
            from nudgekit.io.atomic import atomic_file

            with atomic_file(path) as f:
                _faiss().write_index(index, _faiss().PyCallbackIOWriter(f.write))
            index_s += time.perf_counter() - tick
        result.stats["pass"] = {
            **result.stats.get("pass", {"kind": "exact"}),
            "index": str(path.resolve()) if path is not None else None,
            "index_built": built,
            "index_type": type(index).__name__,
            "nlist": None if ivf is None else int(ivf.nlist),
            "nprobe": None if ivf is None else int(ivf.nprobe),
            "index_s": index_s,
        }
        return result

    return run


__all__ = ["ann_runner", "build_ivf", "load_index"]
