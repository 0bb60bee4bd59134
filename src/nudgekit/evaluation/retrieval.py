"""Exact inner-product k-nearest-neighbour search over a corpus too large for one score matrix.

The corpus is read as row blocks from a block source (:mod:`nudgekit.core.blocks`: an
array or read-only ``np.memmap``, float16 or float32, Parquet shards, a store), each
block goes through the one row check and is scored against all queries with one float32
matmul, and a running top-k per query is merged with the block's best. Peak memory is a
few ``n_queries × block_size`` arrays, never ``n_queries × n_records``.
"""

from __future__ import annotations

import operator
from collections.abc import Callable

import numpy as np

from nudgekit.core import ArraySource, BlockSource, checked_rows

__all__ = ["TopK", "block_rows_for", "search", "search_source"]

# Padding for ragged candidate lists: ranks after every real entry, ties included.
_PAD_SCORE = np.float32(-np.inf)
_PAD_INDEX = np.iinfo(np.int64).max
_MAX_BLOCK_ENTRIES = 1 << 25  # 128 MB of float32 scores per block


def search(
    queries: np.ndarray,
    corpus: np.ndarray,
    k: int,
    *,
    block_size: int = 16384,
    progress: Callable[[int], None] | None = None,
    corpus_name: str = "corpus",
) -> tuple[np.ndarray, np.ndarray]:
    """Find the ``k`` corpus rows with the largest inner product with each query (exact).

    Parameters
    ----------
    queries : array, shape (n_queries, dim)
        Query embeddings; computed in float32.
    corpus : array or np.memmap, shape (n_records, dim)
        Record embeddings, float16 or float32; read one block of rows at a time.
    k : int
        Number of neighbours per query, >= 1. When ``k > n_records`` all
        ``n_records`` rows are returned.
    block_size : int, default 16384
        Corpus rows scored per step; peak memory is proportional to
        ``n_queries * block_size``; capped so that one block holds at most 2**25 scores.
    progress : callable, optional
        Called after each block with the number of corpus rows scanned so far.
    corpus_name : str, default "corpus"
        How error messages name the corpus (e.g. the file it came from).

    Returns
    -------
    scores : float32 array, shape (n_queries, min(k, n_records))
        Inner products, descending along each row.
    indices : int64 array, shape (n_queries, min(k, n_records))
        Corpus rows of the scores; equal scores are ordered by lower row first.

    Raises
    ------
    ValueError
        If the arrays are not 2-D numeric, their dimensions differ, they hold
        non-finite values, or ``k`` or ``block_size`` is below 1.

    Examples
    --------
    >>> import numpy as np
    >>> corpus = np.array([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]], dtype=np.float32)
    >>> scores, indices = search(np.array([[1.0, 0.0]]), corpus, k=2)
    >>> indices.tolist(), scores.tolist()
    ([[0, 2]], [[1.0, 0.5]])
    """
    queries = _as_matrix(queries, "queries")
    corpus = _as_matrix(corpus, corpus_name, convert=False)  # a memmap stays on disk
    block_size = positive_int(block_size, "block_size")
    k = positive_int(k, "k")
    if corpus.shape[0] == 0:
        if queries.shape[1] != corpus.shape[1]:
            raise ValueError(f"queries: dimension mismatch with the corpus {corpus.shape}")
        empty = (queries.shape[0], 0)
        return np.empty(empty, dtype=np.float32), np.empty(empty, dtype=np.int64)
    return search_source(
        queries,
        ArraySource(corpus, corpus_name),
        k,
        block_size=block_size,
        progress=progress,
        allow_zero=True,
    )


def block_rows_for(n_queries: int, block_size: int = 16384) -> int:
    """Corpus rows per block for ``n_queries`` queries: one block of scores stays ≤ 2**25."""
    return min(block_size, max(1024, _MAX_BLOCK_ENTRIES // max(n_queries, 1)))


def search_source(
    queries: np.ndarray,
    source: BlockSource,
    k: int,
    *,
    block_size: int = 16384,
    progress: Callable[[int], None] | None = None,
    allow_zero: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`search` over any block source (Parquet shards, a store's pages, an array).

    Rows are scored as stored (not normalised); every row goes through the one row check
    (:func:`nudgekit.core.checked_rows`: NaN/inf rows are refused, and all-zero rows —
    which nudgekit's fits refuse — unless ``allow_zero``).
    """
    queries = _as_matrix(queries, "queries")
    if queries.shape[1] != source.dim:
        raise ValueError(
            f"queries: dimension mismatch, queries have {queries.shape[1]} values per row "
            f"but the corpus has {source.dim}"
        )
    if not np.isfinite(queries).all():
        raise ValueError("queries: contain NaN or infinite values")
    top = TopK(queries, min(positive_int(k, "k"), source.n_records))
    for block in source.blocks(block_rows_for(queries.shape[0], block_size)):
        rows, _ = checked_rows(block, source, allow_zero=allow_zero)
        top.add(rows, block.start)
        if progress is not None:
            progress(block.start + len(rows))
    return top.result()


class TopK:
    """Each query's ``k`` best rows so far (score desc, row asc), fed block by block.

    Lets one read of a corpus feed several searches (the same queries against the corpus
    before and after a write, say); :func:`search_source` is one of these.
    """

    def __init__(self, queries: np.ndarray, k: int) -> None:
        self.queries = _as_matrix(queries, "queries")
        self.k = positive_int(k, "k")
        n = self.queries.shape[0]
        self.scores = np.empty((n, 0), dtype=np.float32)
        self.indices = np.empty((n, 0), dtype=np.int64)

    def add(self, rows: np.ndarray, start: int) -> None:
        """Fold in checked float32 ``rows`` that are corpus rows ``start, start + 1, ...``
        (blocks must come in corpus order: a later row loses ties)."""
        k = self.k
        scores = self.queries @ rows.T
        candidates = None
        if self.scores.shape[1] == k:
            # Every row of this block comes after the running top-k, so it loses ties and
            # only scores strictly above the running k-th best can enter.
            candidates = _above(scores, self.scores.min(axis=1), start)
        if candidates is None:
            ids = np.arange(start, start + len(rows), dtype=np.int64)
            candidates = _top_k(scores, ids, k)
        self.scores, self.indices = _top_k(
            np.concatenate([self.scores, candidates[0]], axis=1),
            np.concatenate([self.indices, candidates[1]], axis=1),
            k,
        )

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        """``(scores, indices)``, each row sorted by score desc, then row asc."""
        order = np.lexsort((self.indices, -self.scores), axis=-1)
        return (
            np.take_along_axis(self.scores, order, axis=1),
            np.take_along_axis(self.indices, order, axis=1),
        )


def _top_k(scores: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` best (score desc, id asc) entries of each row, in no particular order.

    ``ids`` is either one id per column (1-D, shared by all rows) or one per entry (2-D).
    """
    n = scores.shape[1]
    if n <= k:
        return scores, np.broadcast_to(ids, scores.shape).copy()
    part = np.argpartition(scores, n - k, axis=1)[:, n - k :]
    top = np.take_along_axis(scores, part, axis=1)
    # argpartition splits ties at the k-th best score arbitrarily; redo the rows where that
    # happened with a full (score, id) sort so lower ids win, as a brute-force sort would.
    kth = top.min(axis=1, keepdims=True)
    split = np.flatnonzero(np.count_nonzero(scores >= kth, axis=1) > k)
    if ids.ndim == 1:
        top_ids = ids[part]
        split_ids = np.broadcast_to(ids, (len(split), n))
    else:
        top_ids = np.take_along_axis(ids, part, axis=1)
        split_ids = ids[split]
    if len(split):
        split_scores = scores[split]
        order = np.lexsort((split_ids, -split_scores), axis=-1)[:, :k]
        top[split] = np.take_along_axis(split_scores, order, axis=1)
        top_ids[split] = np.take_along_axis(split_ids, order, axis=1)
    return top, top_ids


def _above(
    scores: np.ndarray, threshold: np.ndarray, offset: int
) -> tuple[np.ndarray, np.ndarray] | None:
    """Entries of each row scoring above its threshold, padded to a common width.

    Once the running top-k has settled, a block holds few such entries, and gathering them is
    much cheaper than a partition of the whole block. Returns None when the widest row keeps
    more than an eighth of the block, where the partition is the better choice.
    """
    mask = scores > threshold[:, None]
    counts = np.count_nonzero(mask, axis=1)
    width = int(counts.max(initial=0))
    if width > max(scores.shape[1] // 8, 1):
        return None
    rows, cols = np.nonzero(mask)  # row-major, so each row's entries are contiguous
    slot = np.arange(len(rows)) - np.repeat(np.cumsum(counts) - counts, counts)
    cand_scores = np.full((scores.shape[0], width), _PAD_SCORE, dtype=np.float32)
    cand_ids = np.full((scores.shape[0], width), _PAD_INDEX, dtype=np.int64)
    cand_scores[rows, slot] = scores[rows, cols]
    cand_ids[rows, slot] = cols + offset
    return cand_scores, cand_ids


def _as_matrix(array: np.ndarray, name: str, *, convert: bool = True) -> np.ndarray:
    """Check for a 2-D real array; return it as C-contiguous float32 when ``convert``."""
    dtype = getattr(array, "dtype", None)
    if dtype is None:
        array = np.asarray(array)
        dtype = array.dtype
    if not (np.issubdtype(dtype, np.floating) or np.issubdtype(dtype, np.integer)):
        raise ValueError(f"{name}: expected a real-valued matrix, got dtype {dtype}")
    if array.ndim != 2:
        raise ValueError(
            f"{name}: expected a 2-D matrix (rows × dimension), got shape {array.shape}; "
            "use reshape(1, -1) for a single vector"
        )
    if convert:
        return np.ascontiguousarray(array, dtype=np.float32)
    return array


def positive_int(value: int, name: str) -> int:
    try:
        value = operator.index(value)
    except TypeError:
        raise ValueError(f"{name}: expected an integer, got {value!r}") from None
    if value < 1:
        raise ValueError(f"{name}: must be at least 1, got {value}")
    return value
