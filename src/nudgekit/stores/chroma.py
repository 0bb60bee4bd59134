"""Chroma (embedded): ``chroma:PATH`` (``chromadb.PersistentClient(PATH)``), collection =
``--table``.

Only the embeddings of changed records change, with ``collection.update(ids, embeddings)``:
documents, metadatas, the collection's metadata and configuration stay as they were, and
Chroma brings its HNSW index up to date itself, so ``collection.query`` searches the new
vectors at once. The ledger (originals, digests, history) is the directory
``PATH/.nudgekit/<collection>/``; Chroma only opens ``chroma.sqlite3`` and the segment
folders it names, so neither its search nor ``chroma vacuum`` ever sees it.

One ``update`` call is one entry of Chroma's write-ahead log (SQLite) and lands whole, and a
write takes as few calls as Chroma allows (``max_batch_size`` records each). A write of
more records than that is not atomic by itself: the base class's journal makes it so —
once it is recorded, the next nudgekit command finishes an interrupted write
(:meth:`nudgekit.stores.base.VectorStore.recover`); until then Chroma's own readers can
see some batches written and not others.

Chroma does not lock its folder: several processes may open it, and each caches the HNSW
index it has loaded, so a client opened before another process wrote reads the old vectors
until it writes or is reopened. nudgekit's writer lock serialises nudgekit processes, and
the adapter reopens its client once it holds the lock (:meth:`ChromaStore.lock`), so an
apply always starts from what the store holds then.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
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

#: Chroma's ``space`` (``hnsw:space``) → nudgekit's metric names.
_SPACES = {"ip": "dot", "cosine": "cosine", "l2": "l2"}

#: What SQLite's lock errors say (Chroma passes them on as its own errors' text).
_LOCKED = ("database is locked", "database table is locked", "database is busy", "sqlite_busy")

#: Ids per ``get(ids=...)`` call (reads stay well under SQLite's variable limit).
_READ_BATCH = 8192


class ChromaStore(VectorStore):
    """One collection of a Chroma persistent directory.

    Parameters
    ----------
    location : path
        The directory given to ``chromadb.PersistentClient(path=...)``.
    table : str
        The collection name.
    id_column, vector_column : None
        A Chroma record has one id (a string) and one embedding: nothing to choose.
    write_batch : int, optional
        Records per ``collection.update`` call; by default (and at most) the client's
        ``max_batch_size`` (5461 with chromadb 1.5), so a write of up to that many records
        is one ``update``: Chroma's readers see all of it or none of it.
    """

    kind = "chroma"

    def __init__(
        self,
        location: str | os.PathLike[str],
        table: str | None = None,
        *,
        id_column: str | None = None,
        vector_column: str | None = None,
        write_batch: int | None = None,
    ) -> None:
        super().__init__(location, table)
        self._chromadb = client_module("chromadb", "chroma")
        if not table:
            raise StoreError("chroma stores need --table (the collection name)")
        if id_column or vector_column:
            raise StoreError(
                "a Chroma record has one id and one embedding: drop --id-column and --vector-column"
            )
        if not (self.location / "chroma.sqlite3").is_file():
            raise StoreError(
                f"no Chroma persistent directory at {self.location} (no chroma.sqlite3)"
            )
        self.write_batch = write_batch
        self.client: Any = None
        self._open()
        try:
            self._dim = self._dimension()
            self._space, self._space_source = self._read_space()
            self.ledger = Ledger(DirectoryFiles(self.location / ".nudgekit" / table), self.dim)
        except BaseException:
            self.close()
            raise

    # -- the client ------------------------------------------------------------------------
    def _open(self) -> None:
        with self._errors():
            try:
                self.client = self._chromadb.PersistentClient(path=str(self.location))
            except ValueError as err:  # another client of this process, other settings
                raise StoreError(f"{self.spec}: cannot open it here ({err})") from None
        try:
            self.collection = self._collection()
            self._max_batch = int(self.client.get_max_batch_size())
        except BaseException:
            self.close()
            raise

    def _collection(self) -> Any:
        with self._errors():
            names = sorted(c.name for c in self.client.list_collections())
            if self.table not in names:
                raise StoreError(
                    f"collection {self.table!r} not found in chroma:{self.location} "
                    f"(collections: {', '.join(names) or 'none'})"
                )
            # no embedding function: nudgekit passes embeddings, and building the
            # collection's own one could need its API keys or model files
            return self.client.get_collection(self.table, embedding_function=None)

    def close(self) -> None:
        if self.client is not None:
            self.client.close()  # the last client of a path releases Chroma's caches
            self.client = None

    def lock(self) -> Any:
        return self._locked()

    @contextmanager
    def _locked(self) -> Iterator[None]:
        with self.ledger.files.lock():
            # a client caches the HNSW index it loaded: reopen, to read what the store
            # holds now that no other nudgekit process can change it
            self.close()
            self._open()
            yield

    @contextmanager
    def _errors(self) -> Iterator[None]:
        """Chroma's lock errors as one clear line (SQLite waits long before it gives up)."""
        try:
            yield
        except StoreError:
            raise
        except Exception as err:
            text = str(err)
            if any(sign in text.lower() for sign in _LOCKED):
                raise StoreError(
                    f"chroma:{self.location} is locked by another process ({text}); "
                    "nothing more was written — run again when it has finished"
                ) from None
            raise

    # -- reading ---------------------------------------------------------------------------
    @property
    def dim(self) -> int:
        return self._dim

    def _dimension(self) -> int:
        with self._errors():
            first = self.collection.get(limit=1, include=["embeddings"])
        if len(first["ids"]):
            return int(np.asarray(first["embeddings"]).shape[1])
        # emptied since: Chroma keeps the dimension of the first embedding added
        recorded = getattr(getattr(self.collection, "_model", None), "dimension", None)
        if recorded:
            return int(recorded)
        raise StoreError(
            f"collection {self.table!r} in chroma:{self.location} is empty: it holds no "
            "embeddings yet, so there is nothing to nudge"
        )

    def count(self) -> int:
        with self._errors():
            return int(self.collection.count())

    def read(self, batch_size: int = 65536) -> Iterator[RowBatch]:
        # the ids first, then their embeddings by id: offset paging (Chroma orders by
        # insertion) would skip or repeat rows if someone deleted some meanwhile
        with self._errors():
            ids = list(self.collection.get(include=[])["ids"])
        step = max(1, min(batch_size, _READ_BATCH))
        for start in range(0, len(ids), step):
            found = self._get(ids[start : start + step])
            if found[0]:
                yield RowBatch(list(found[0]), list(found[0]), found[1])

    def current(self, keys: list[Any]) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        wanted = [str(k) for k in keys]
        for start in range(0, len(wanted), _READ_BATCH):
            ids, vectors = self._get(wanted[start : start + _READ_BATCH])
            out.update(zip(ids, vectors, strict=True))
        return out

    def _get(self, ids: list[str]) -> tuple[list[str], np.ndarray]:
        """The records of ``ids`` that exist (in Chroma's order) and their embeddings."""
        if not ids:
            return [], np.empty((0, self.dim), np.float32)
        with self._errors():
            got = self.collection.get(ids=ids, include=["embeddings"])
        found = [str(i) for i in got["ids"]]
        vectors = np.asarray(got["embeddings"], dtype=np.float32).reshape(len(found), self.dim)
        return found, vectors  # Chroma hands float32 values back as float64: exact

    def key_of(self, text: str, is_int: bool) -> Any:
        return text  # Chroma ids are strings

    def metric(self) -> MetricInfo:
        return MetricInfo(_SPACES.get(self._space, self._space), self._space_source)

    def search(self, queries: np.ndarray, n: int) -> list[list[Any]]:
        found: list[list[Any]] = []
        with self._errors():
            for q0 in range(0, len(queries), 1024):
                part = np.asarray(queries[q0 : q0 + 1024], dtype=np.float32)
                answer = self.collection.query(
                    query_embeddings=part, n_results=min(n, self.count()), include=[]
                )
                found.extend(list(ids) for ids in answer["ids"])
        return found

    def _read_space(self) -> tuple[str, str]:
        config = self.collection.configuration_json or {}
        for index in ("hnsw", "spann"):
            space = (config.get(index) or {}).get("space")
            if space:
                where = f"the collection's configuration ({index} space {space!r})"
                return str(space).lower(), where
        space = (self.collection.metadata or {}).get("hnsw:space")
        if space:
            return str(space).lower(), f"the collection's metadata (hnsw:space {space!r})"
        return "l2", "Chroma's default space 'l2' (the collection configures none)"

    def stored(self, vectors: np.ndarray) -> np.ndarray:
        if self._space != "cosine":
            return vectors
        # Chroma's HNSW keeps v·(1/(‖v‖+1e-30)) and ‖v‖ for cosine, and hands back their
        # product: the same float32 arithmetic (a sequential sum of squares) gives its bits
        v = np.ascontiguousarray(vectors, dtype=np.float32)
        if v.size == 0:
            return v
        norm = np.sqrt(np.cumsum(v * v, axis=1, dtype=np.float32)[:, -1:])
        unit = v * (np.float32(1) / (norm + np.float32(1e-30)))
        return (unit * norm).astype(np.float32)

    def model(self) -> str | None:
        # a collection created with one of Chroma's embedding functions names it (and its
        # model) in its configuration; "default" is Chroma's fallback, often unused
        ef = (self.collection.configuration_json or {}).get("embedding_function") or {}
        if not isinstance(ef, dict) or ef.get("name") in (None, "default"):
            return None
        config = ef.get("config") or {}
        found = (
            config.get("model_name") or config.get("model") if isinstance(config, dict) else None
        )
        return str(found) if found else None

    # -- writing ---------------------------------------------------------------------------
    def write_vectors(
        self, keys: list[Any], vectors: np.ndarray, progress: ProgressCallback | None = None
    ) -> None:
        step = max(1, min(self.write_batch or self._max_batch, self._max_batch))
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        for start in range(0, len(keys), step):
            stop = min(start + step, len(keys))
            with self._errors():  # ids deleted meanwhile are skipped by Chroma
                self.collection.update(
                    ids=[str(k) for k in keys[start:stop]], embeddings=vectors[start:stop]
                )
            checkpoint("chroma.batch")
            if progress is not None:
                progress("write", stop, len(keys))
