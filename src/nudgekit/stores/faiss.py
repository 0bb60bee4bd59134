"""A FAISS index file: ``faiss:PATH``, an ``IndexIDMap`` over a flat index.

FAISS ids are int64, so the documents' ids in qrels must be those integers written in
decimal (``"42"``); map string ids to integers before building the index. Positions inside
a plain index are not stable ids (they shift on removal), which is why an ``IndexIDMap``
is required.

The index file has no room for anything else: the ledger is the directory
``PATH.nudgekit/`` (:mod:`nudgekit.stores.ledger`). A write rewrites the changed ids in
memory (``remove_ids``, then ``add_with_ids``) and replaces ``PATH`` with the whole new
index in one rename (:meth:`FaissStore.flush`): readers of the file see the old index or
the new one. The writer lock is a ``flock`` on ``PATH.nudgekit/lock``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import numpy as np

from nudgekit.io.atomic import atomic_file
from nudgekit.stores.base import (
    MetricInfo,
    ProgressCallback,
    RowBatch,
    StoreError,
    VectorStore,
    checkpoint,
    client_module,
)
from nudgekit.stores.ledger import DirectoryFiles, Ledger


class FaissStore(VectorStore):
    """A FAISS ``IndexIDMap`` (or ``IndexIDMap2``) over ``IndexFlatIP`` / ``IndexFlatL2``.

    Parameters
    ----------
    location : path
        The index file (``faiss.write_index``).
    table : None
        FAISS files hold one index; tables and columns do not apply.
    """

    kind = "faiss"

    def __init__(
        self,
        location: str | os.PathLike[str],
        table: str | None = None,
        *,
        id_column: str | None = None,
        vector_column: str | None = None,
    ) -> None:
        super().__init__(location, None)
        self._faiss = client_module("faiss", "faiss")
        if table or id_column or vector_column:
            raise StoreError(
                "a faiss index file has no tables or columns: drop --table, --id-column and "
                "--vector-column (ids are the index's int64 ids)"
            )
        if not self.location.is_file():
            raise StoreError(f"no FAISS index file at {self.location}")
        self._load()
        self.ledger = Ledger(
            DirectoryFiles(self.location.with_name(self.location.name + ".nudgekit")), self.dim
        )

    def _load(self) -> None:
        faiss = self._faiss
        try:
            index = faiss.read_index(str(self.location))
        except RuntimeError as err:
            raise StoreError(f"{self.location}: not a readable FAISS index ({err})") from None
        if not isinstance(index, faiss.IndexIDMap):
            raise StoreError(
                f"{self.location}: a {type(index).__name__}; nudgekit needs an IndexIDMap over "
                "a flat index (faiss.IndexIDMap(faiss.IndexFlatIP(d))), whose ids stay put "
                "when rows are rewritten"
            )
        inner = faiss.downcast_index(index.index)
        if not isinstance(inner, faiss.IndexFlat):
            raise StoreError(
                f"{self.location}: the IndexIDMap wraps a {type(inner).__name__}; only flat "
                "indexes (IndexFlatIP, IndexFlatL2) keep the exact vectors nudgekit reads"
            )
        self.index, self.inner = index, inner
        self._ids = faiss.vector_to_array(index.id_map).astype(np.int64)
        self._order = np.argsort(self._ids, kind="stable")
        self._dirty = False

    @property
    def dim(self) -> int:
        return int(self.index.d)

    # -- reading ---------------------------------------------------------------------------
    def count(self) -> int:
        return int(self.index.ntotal)

    def read(self, batch_size: int = 65536) -> Iterator[RowBatch]:
        n = self.count()
        for start in range(0, n, batch_size):
            stop = min(start + batch_size, n)
            keys = self._ids[start:stop].tolist()
            vectors = np.asarray(self.inner.reconstruct_n(start, stop - start), dtype=np.float32)
            yield RowBatch([str(k) for k in keys], keys, vectors)

    def current(self, keys: list[Any]) -> dict[str, np.ndarray]:
        wanted = np.asarray(keys, dtype=np.int64)
        if not len(wanted) or not len(self._ids):
            return {}
        sorted_ids = self._ids[self._order]
        at = np.minimum(np.searchsorted(sorted_ids, wanted), len(sorted_ids) - 1)
        found = sorted_ids[at] == wanted
        positions = self._order[at[found]]
        vectors = (
            np.stack([self.inner.reconstruct(int(p)) for p in positions])
            if len(positions)
            else np.empty((0, self.dim), np.float32)
        )
        return {str(k): v for k, v in zip(wanted[found].tolist(), vectors, strict=True)}

    def search(self, queries: np.ndarray, n: int) -> list[list[Any]]:
        ids = self.index.search(np.ascontiguousarray(queries, dtype=np.float32), int(n))[1]
        return [[int(i) for i in row if i >= 0] for row in ids]

    def metric(self) -> MetricInfo:
        faiss = self._faiss
        names = {faiss.METRIC_INNER_PRODUCT: "dot", faiss.METRIC_L2: "l2"}
        metric = int(self.index.metric_type)
        return MetricInfo(names.get(metric, f"faiss metric {metric}"), "the index's metric_type")

    # -- writing ---------------------------------------------------------------------------
    def write_vectors(
        self, keys: list[Any], vectors: np.ndarray, progress: ProgressCallback | None = None
    ) -> None:
        ids = np.asarray(keys, dtype=np.int64)
        try:
            self.index.remove_ids(ids)
            self.index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), ids)
        except BaseException:
            self._load()  # the in-memory index is half-changed: back to the file
            raise
        self._ids = self._faiss.vector_to_array(self.index.id_map).astype(np.int64)
        self._order = np.argsort(self._ids, kind="stable")
        self._dirty = True
        if progress is not None:
            progress("write", len(ids), len(ids))

    def flush(self) -> None:
        """Replace the index file with the index in memory: one rename, the commit point."""
        if not self._dirty:
            return
        data = self._faiss.serialize_index(self.index)
        with atomic_file(self.location, durable=True) as f:
            f.write(memoryview(data))
            checkpoint("faiss.tmp-written")
        self._dirty = False
