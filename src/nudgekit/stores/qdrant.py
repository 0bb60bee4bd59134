"""Qdrant local mode: ``qdrant:PATH`` (``QdrantClient(path=PATH)``), collection = ``--table``.

The nudged vector is written in place, into the vector the collection is searched by
(``--vector-column``: the unnamed vector or one named vector), with ``update_vectors``;
the collection's schema is never changed, so searches and ingestion keep working. The
ledger (originals, digests, history) is the directory ``PATH/.nudgekit/<collection>/``.

Local mode persists each point on its own, so a write of many points is not atomic by
itself: the base class's journal makes it so — once it is recorded, the next nudgekit
command finishes an interrupted write (:meth:`nudgekit.stores.base.VectorStore.recover`).
Local mode also locks its folder: a second client (another nudgekit, your own process)
gets a clear error instead of a half-written collection.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import numpy as np

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

_DISTANCES = {"Dot": "dot", "Cosine": "cosine", "Euclid": "l2", "Manhattan": "l1"}


class QdrantStore(VectorStore):
    """One collection of a Qdrant local-mode directory.

    Parameters
    ----------
    location : path
        The directory given to ``QdrantClient(path=...)``.
    table : str
        The collection.
    vector_column : str, optional
        The vector to nudge: by default the collection's only vector (unnamed or named).
    id_column : None
        Qdrant point ids are the ids (unsigned integers or UUIDs); qrels name them as text.
    write_batch : int
        Points per ``update_vectors`` call.
    """

    kind = "qdrant"

    def __init__(
        self,
        location: str | os.PathLike[str],
        table: str | None = None,
        *,
        id_column: str | None = None,
        vector_column: str | None = None,
        write_batch: int = 256,
    ) -> None:
        super().__init__(location, table)
        client = client_module("qdrant_client", "qdrant")
        QdrantClient, models = client.QdrantClient, client.models
        self._models = models
        self.write_batch = write_batch
        if not table:
            raise StoreError("qdrant stores need --table (the collection name)")
        if id_column:
            raise StoreError("qdrant points are identified by their point id: drop --id-column")
        if not (self.location / "meta.json").is_file():
            raise StoreError(f"no Qdrant local-mode storage at {self.location} (no meta.json)")
        try:
            self.client = QdrantClient(path=str(self.location))
        except RuntimeError as err:  # the directory is locked by another client
            raise StoreError(
                f"qdrant:{self.location} is open in another process ({err}); nothing was "
                "read or written — close it or run again when it has finished"
            ) from None
        try:
            if not self.client.collection_exists(table):
                names = ", ".join(c.name for c in self.client.get_collections().collections)
                raise StoreError(
                    f"collection {table!r} not found in qdrant:{self.location} "
                    f"(collections: {names or 'none'})"
                )
            files = DirectoryFiles(self.location / ".nudgekit" / table)
            recorded = Ledger(files, 0).settings().get("vector_column")
            self._resolve_vector(vector_column if vector_column is not None else recorded)
            self.ledger = Ledger(files, self.dim)
        except BaseException:
            self.client.close()
            raise

    def close(self) -> None:
        self.client.close()

    def _vectors_config(self) -> dict[str, Any]:
        config = self.client.get_collection(self.table).config.params.vectors
        if isinstance(config, self._models.VectorParams):
            return {"": config}
        return dict(config or {})

    def _resolve_vector(self, name: str | None) -> None:
        own = self._vectors_config()
        if name is None:
            if len(own) != 1:
                listed = ", ".join(repr(k) for k in own) or "none"
                raise StoreError(
                    f"collection {self.table!r} has several vectors ({listed}): say which one "
                    "to nudge with --vector-column"
                )
            name = next(iter(own))
        if name not in own:
            listed = ", ".join(repr(k) for k in own) or "none"
            raise StoreError(
                f"collection {self.table!r} has no vector {name!r} (--vector-column); "
                f"vectors: {listed}"
            )
        params = own[name]
        if getattr(params, "multivector_config", None) is not None:
            raise StoreError(
                f"vector {name!r} is a multivector; nudgekit needs one vector per point"
            )
        self.vector_name = name
        self._params = params

    @property
    def dim(self) -> int:
        return int(self._params.size)

    # -- reading ---------------------------------------------------------------------------
    def count(self) -> int:
        return int(self.client.count(self.table, exact=True).count)

    def read(self, batch_size: int = 65536) -> Iterator[RowBatch]:
        offset = None
        while True:
            points, offset = self.client.scroll(
                self.table,
                limit=batch_size,
                offset=offset,
                with_payload=False,
                with_vectors=[self.vector_name],
            )
            if not points:
                break
            keys = [p.id for p in points]
            vectors = np.asarray([self._vector_of(p, self.vector_name) for p in points])
            yield RowBatch([str(k) for k in keys], keys, vectors.astype(np.float32))
            if offset is None:
                break

    def current(self, keys: list[Any]) -> dict[str, np.ndarray]:
        found: dict[str, np.ndarray] = {}
        for start in range(0, len(keys), 1024):
            points = self.client.retrieve(
                self.table,
                keys[start : start + 1024],
                with_payload=False,
                with_vectors=[self.vector_name],
            )
            for point in points:
                vector = _named(point.vector, self.vector_name)
                if vector is not None:
                    found[str(point.id)] = np.asarray(vector, dtype=np.float32)
        return found

    def columns(self) -> dict[str, Any]:
        return {"vector_column": self.vector_name}

    def search(self, queries: np.ndarray, n: int) -> list[list[Any]]:
        models = self._models
        found: list[list[Any]] = []
        for q0 in range(0, len(queries), 256):
            requests = [
                models.QueryRequest(
                    query=row.tolist(),
                    limit=n,
                    using=self.vector_name or None,
                    with_payload=False,
                    with_vector=False,
                )
                for row in np.asarray(queries[q0 : q0 + 256], dtype=np.float32)
            ]
            answers = self.client.query_batch_points(self.table, requests=requests)
            found.extend([p.id for p in answer.points] for answer in answers)
        return found

    def stored(self, vectors: np.ndarray) -> np.ndarray:
        if self.metric().name != "cosine":
            return vectors
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)  # Qdrant stores v / ‖v‖
        return (vectors / np.where(norms > 0, norms, 1)).astype(np.float32)

    def _vector_of(self, point: Any, name: str) -> list[float]:
        vector = _named(point.vector, name)
        if vector is None:
            raise StoreError(
                f"collection {self.table!r}: point {point.id!r} has no vector {name!r}"
            )
        return vector

    def metric(self) -> MetricInfo:
        distance = getattr(self._params.distance, "value", str(self._params.distance))
        where = "" if self.vector_name == "" else f" of vector {self.vector_name!r}"
        return MetricInfo(_DISTANCES.get(distance, distance.lower()), f"collection distance{where}")

    # -- writing ---------------------------------------------------------------------------
    def write_vectors(
        self, keys: list[Any], vectors: np.ndarray, progress: ProgressCallback | None = None
    ) -> None:
        models = self._models
        for start in range(0, len(keys), self.write_batch):
            stop = min(start + self.write_batch, len(keys))
            points = [
                models.PointVectors(id=keys[k], vector={self.vector_name: vectors[k].tolist()})
                for k in range(start, stop)
            ]
            self.client.update_vectors(self.table, points=points)
            checkpoint("qdrant.batch")
            if progress is not None:
                progress("write", stop, len(keys))


def _named(vector: Any, name: str) -> list[float] | None:
    """One vector of a point: ``vector`` is a list (the unnamed vector alone) or a dict."""
    if isinstance(vector, dict):
        return vector.get(name)
    return vector if name == "" else None
