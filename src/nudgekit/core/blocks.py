"""A corpus as a source of row blocks, and the one check every corpus row goes through.

Every pass over a corpus — the NUDGE pass, writing new embeddings, evaluation, the report,
reading a vector store — reads it as :class:`Block` s from a :class:`BlockSource`: an
in-memory or memory-mapped array (:class:`ArraySource`), Parquet shards
(:class:`nudgekit.io.parquet.ParquetCorpus`) or a store's pages. Each block is checked by
:func:`checked_rows` (NaN/inf values, all-zero rows) with a message that names the row
where the source keeps it (a row number, a shard and row, a store id).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

from nudgekit.core.checks import row_norms


class CorpusError(ValueError):
    """Malformed corpus data: a NaN/inf or all-zero vector, a bad length, a duplicate id."""


@dataclass(frozen=True)
class Block:
    """Rows ``start .. start + len(vectors)`` of a corpus, as read.

    Attributes
    ----------
    start : int
        Corpus row of the first row.
    vectors : array (n, d)
        The rows as stored (float16/32/64, not normalised; may be a read-only view).
    ids : bytes array (n,), optional
        Record ids (see :func:`nudgekit.core.corpus_pass.id_bytes`), for sources whose
        records are addressed by id (Parquet shards, stores).
    rows : int64 array (n,), optional
        Corpus rows of a gathered (non-contiguous) block; ``None``: ``start, start + 1, ...``.
    """

    start: int
    vectors: np.ndarray
    ids: np.ndarray | None = None
    rows: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.vectors)

    def row(self, i: int) -> int:
        """Corpus row of the block's row ``i``."""
        return int(self.rows[i]) if self.rows is not None else self.start + i


@runtime_checkable
class BlockSource(Protocol):
    """A corpus that can be read in order, block by block."""

    @property
    def n_records(self) -> int: ...

    @property
    def dim(self) -> int: ...

    def blocks(self, block_rows: int) -> Iterator[Block]:
        """The whole corpus in order, at most ``block_rows`` rows per block."""
        ...

    def describe(self, block: Block, i: int, problem: str) -> str:
        """A message for row ``i`` of ``block``, naming where it is stored."""
        ...

    def where(self, row: int) -> str:
        """Where corpus row ``row`` is stored, for messages."""
        ...


class ArraySource:
    """An (N, d) array or read-only memory map as a :class:`BlockSource`.

    Parameters
    ----------
    array : array-like (N, d)
        float16/32/64 (integers accepted); read block by block, never copied whole.
    name : str
        How messages name it (``"corpus"``, a file name).
    """

    def __init__(self, array: Any, name: str = "corpus") -> None:
        self.n_records, self.dim = corpus_shape(array, name)
        self.array = array
        self.name = name

    def blocks(self, block_rows: int) -> Iterator[Block]:
        for start in range(0, self.n_records, block_rows):
            yield Block(start, self.array[start : start + block_rows])

    def take(self, rows: np.ndarray) -> Block:
        """Corpus rows ``rows`` (sorted) gathered into one block."""
        vectors = np.asarray(self.array[rows]).reshape(len(rows), self.dim)
        return Block(-1, vectors, rows=np.asarray(rows, dtype=np.int64))

    def describe(self, block: Block, i: int, problem: str) -> str:
        return f"{self.name}: row {block.row(i)} {problem}"

    def where(self, row: int) -> str:
        return f"{self.name} row {row}"


def checked_rows(
    block: Block, source: BlockSource, *, allow_zero: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """The one row check: ``block`` as float32 and its row norms (float32, shape (n, 1)).

    A float32 block is not copied (a memory map is read in place). Raises
    :class:`CorpusError` naming the first row with NaN/inf values or all zeros (unless
    ``allow_zero``: plain k-NN search scores a zero row 0, which is well defined).
    """
    raw = np.asarray(block.vectors, dtype=np.float32)
    norms = row_norms(raw)
    bad = np.flatnonzero(~np.isfinite(norms) | ((norms == 0) & (not allow_zero)))
    if len(bad):
        i = int(bad[0])
        problem = "is all zeros" if norms[i] == 0 else "contains NaN or infinite values"
        raise CorpusError(source.describe(block, i, problem))
    return raw, norms[:, None].astype(np.float32)


def normalised_rows(block: Block, source: BlockSource) -> np.ndarray:
    """``block`` checked and L2-normalised, as a new float32 array."""
    raw, norms = checked_rows(block, source)
    return raw / norms


def corpus_shape(corpus: Any, name: str = "corpus") -> tuple[int, int]:
    """``(N, d)`` of a corpus-like array; raise a clear error for anything else."""
    if isinstance(corpus, np.ndarray) and corpus.dtype == object:
        raise ValueError(f"{name}: object arrays are not accepted (need a float matrix)")
    shape = getattr(corpus, "shape", None)
    if shape is None:
        raise ValueError(f"{name}: expected a 2-D array")
    if len(shape) != 2:
        raise ValueError(f"{name}: expected a 2-D matrix, got shape {tuple(shape)}")
    if shape[0] == 0:
        raise ValueError(f"{name}: is empty (0 rows)")
    dtype = getattr(corpus, "dtype", None)
    if dtype is not None and np.dtype(dtype).kind not in "fiu":
        raise ValueError(f"{name}: expected float values, got dtype {dtype}")
    return int(shape[0]), int(shape[1])
