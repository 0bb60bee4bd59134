"""The approximate pass's index: a FAISS file over the corpus rows, given or built here.

``fit --pass ann`` uses a FAISS file whose ids are corpus rows (``--index PATH``; any
FAISS index type), or, when ``PATH`` does not exist or is not given, an IVF index
(``IndexIVFScalarQuantizer``, 8-bit, inner product; √N lists) built here over the
L2-normalised rows and saved to ``PATH`` for the next fit. An IVF index (IVFFlat, IVFPQ,
IVFSQ …) is used for its partition only — the coarse centroids and each list's ids, read
through a memory map — and scanned list by list (:func:`nudgekit.core.ann_pass.ivf_pass`);
any other type (HNSW, a flat index …) answers each query's candidates
(:func:`nudgekit.core.ann_pass.ann_pass`). For a store, :func:`store_search_runner` takes
the candidates from the store's own search. FAISS is the optional extra ``nudgekit[faiss]``.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from nudgekit.core import (
    ArraySource,
    Block,
    BlockSource,
    PassPlan,
    PassResult,
    corpus_pass,
    id_bytes_of,
    normalised_rows,
)
from nudgekit.core.ann_pass import (
    MIN_RECALL,
    InvertedLists,
    ann_pass,
    ivf_pass,
    streamed_candidate_pass,
)

#: search(queries (V, d) unit rows, n) -> each query's nearest records' ids, best first
KeySearch = Callable[[np.ndarray, int], list[list[Any]]]

#: IVF lists per √N, and the lists probed per query (bench/ann_pass.py)
LISTS_PER_ROOT = 1
NPROBE = 32
#: candidates asked beyond k (tracked records among them are dropped)
OVER_FETCH = 32
#: training rows per list (FAISS warns below 39), and k-means iterations
TRAIN_PER_LIST = 40
TRAIN_ITERATIONS = 10


def _faiss() -> Any:
    try:
        import faiss
    except ImportError:
        raise ValueError(
            "--pass ann needs FAISS: pip install 'nudgekit[faiss]' (or faiss-cpu)"
        ) from None
    return faiss


def build_ivf(source: BlockSource, nlist: int | None = None, *, block_rows: int = 65536) -> Any:
    """An IVF index (inner product, 8-bit codes) over the normalised rows, ids = rows.

    Trained on ``40 × nlist`` rows: drawn at random from a source that gathers rows, every
    ``N / (40 × nlist)``-th row of one that reads in order (Parquet shards: one more read).
    """
    faiss = _faiss()
    n = source.n_records
    nlist = nlist or max(1, min(n // TRAIN_PER_LIST, round(LISTS_PER_ROOT * math.sqrt(n))))
    # 8-bit codes: a usable index (near-exact scores) a quarter of the corpus's size, so
    # saving it costs a quarter of the time; the pass itself reads only its lists' ids
    index = faiss.IndexIVFScalarQuantizer(
        faiss.IndexFlatIP(source.dim), source.dim, nlist, faiss.ScalarQuantizer.QT_8bit,
        faiss.METRIC_INNER_PRODUCT,
    )  # fmt: skip
    index.cp.niter = TRAIN_ITERATIONS
    index.cp.min_points_per_centroid = 1  # a small corpus trains on all it has, unwarned
    index.train(_training_rows(source, nlist * TRAIN_PER_LIST, block_rows))
    for block in source.blocks(block_rows):
        index.add(normalised_rows(block, source))
    return index


def _training_rows(source: BlockSource, count: int, block_rows: int) -> np.ndarray:
    n = source.n_records
    if isinstance(source, ArraySource):
        rows = np.sort(np.random.default_rng(0).choice(n, size=min(n, count), replace=False))
        return normalised_rows(source.take(rows), source)
    stride = max(1, n // count)
    parts = []
    for block in source.blocks(block_rows):
        at = np.flatnonzero((block.start + np.arange(len(block))) % stride == 0)
        ids = None if block.ids is None else block.ids[at]
        rows = block.start + at
        parts.append(normalised_rows(Block(block.start, block.vectors[at], ids, rows), source))
    return np.concatenate(parts)[:count]


def load_index(path: str | os.PathLike[str], source: BlockSource) -> Any:
    """A FAISS index file over ``source``'s rows; refuses one of another shape."""
    faiss = _faiss()
    try:
        try:  # an IVF index's lists stay on disk: the pass reads only their ids
            index = faiss.read_index(str(path), faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY)
        except RuntimeError:
            index = faiss.read_index(str(path))
    except RuntimeError as error:
        raise ValueError(f"--index {path}: not a FAISS index file ({error})") from None
    if index.d != source.dim or index.ntotal != source.n_records:
        raise ValueError(
            f"--index {path} holds {index.ntotal} vectors of dimension {index.d}; the corpus "
            f"has {source.n_records} of dimension {source.dim} (its ids must be corpus rows)"
        )
    return index


def inverted_lists(index: Any) -> InvertedLists | None:
    """The partition of a FAISS IVF index (None for other types, or a pre-transformed one)."""
    faiss = _faiss()
    ivf = faiss.downcast_index(index)
    if not isinstance(ivf, faiss.IndexIVF):
        return None  # not IVF, or wrapped (OPQ, PCA, an id map) around one
    try:
        centroids = ivf.quantizer.reconstruct_n(0, ivf.nlist)
    except RuntimeError:  # a quantizer that cannot give its centroids back
        return None
    invlists = ivf.invlists
    sizes = np.array([invlists.list_size(i) for i in range(ivf.nlist)], dtype=np.int64)

    def rows_of(i: int) -> np.ndarray:
        if sizes[i] == 0:
            return np.empty(0, dtype=np.int64)
        ids = invlists.get_ids(i)
        rows = faiss.rev_swig_ptr(ids, int(sizes[i])).astype(np.int64)
        invlists.release_ids(i, ids)
        return rows

    metric = "ip" if ivf.metric_type == faiss.METRIC_INNER_PRODUCT else "l2"
    return InvertedLists(np.asarray(centroids, dtype=np.float32), sizes, rows_of, metric)


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
        if plan.queries is None:  # γ given: nothing to search, no index to build
            return corpus_pass(source, plan, block_rows=block_rows, progress=progress)
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
        lists = inverted_lists(index) if isinstance(source, ArraySource) else None
        if not isinstance(source, ArraySource):
            # Parquet shards are read in order only: the index's candidates (ids = row
            # positions in that order) are scored as they go by
            queries = np.ascontiguousarray(plan.queries, dtype=np.float32)
            rows = index.search(queries, min(plan.k + OVER_FETCH, source.n_records))[1]
            result = streamed_candidate_pass(
                source, plan, rows, by_row=True, min_recall=min_recall, device=device,
                block_rows=block_rows, progress=progress,
            )  # fmt: skip
        elif lists is not None:
            result = ivf_pass(
                source, plan, lists, nprobe=nprobe, min_recall=min_recall, device=device,
                block_rows=block_rows, progress=progress,
            )  # fmt: skip
        else:

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
            "scan": "by list" if lists is not None else "candidates",
            **({} if isinstance(source, ArraySource) else {"over_fetch": OVER_FETCH}),
            "nlist": None if ivf is None else int(ivf.nlist),
            "nprobe": None if ivf is None else int(ivf.nprobe),
            "index_s": index_s,
        }
        return result

    return run


def store_search_runner(
    search: KeySearch,
    *,
    over_fetch: int = 32,
    min_recall: float = MIN_RECALL,
    device: str | None = None,
    block_rows: int = 8192,
) -> Any:
    """``run_pass`` for a store: candidates from its own search, scored in one read.

    ``search`` is the store's (:meth:`nudgekit.stores.VectorStore.search`): each query's
    ``k + over_fetch`` nearest records by the store's index, as the store's ids; the pass
    reads the store once (:func:`nudgekit.core.ann_pass.streamed_candidate_pass`).
    """

    def run(source: BlockSource, plan: PassPlan, progress: Any = None) -> PassResult:
        if plan.queries is None:
            return corpus_pass(source, plan, block_rows=block_rows, progress=progress)
        tick = time.perf_counter()
        queries = np.ascontiguousarray(plan.queries, dtype=np.float32)
        answers = search(queries, plan.k + over_fetch)
        lengths = np.array([len(a) for a in answers], dtype=np.int64)
        flat = id_bytes_of([key for answer in answers for key in answer])
        candidates = np.full((len(queries), max(int(lengths.max(initial=0)), 1)), b"",
                             dtype=flat.dtype)  # fmt: skip
        starts = np.cumsum(lengths) - lengths
        at = np.arange(len(flat)) - np.repeat(starts, lengths)
        candidates[np.repeat(np.arange(len(queries)), lengths), at] = flat
        search_s = time.perf_counter() - tick
        result = streamed_candidate_pass(
            source, plan, candidates, min_recall=min_recall, device=device,
            block_rows=block_rows, progress=progress,
        )  # fmt: skip
        result.stats["pass"] = {
            **result.stats.get("pass", {"kind": "exact"}),
            "index": "the store's own search",
            "over_fetch": over_fetch,
            "search_s": search_s,
        }
        return result

    return run


__all__ = ["ann_runner", "build_ivf", "inverted_lists", "load_index", "store_search_runner"]
