"""Vector-store adapters: read a store's vectors, write changed rows back atomically.

A store is named ``kind:PATH``:

- ``lancedb:PATH`` — a LanceDB database directory, with a table name (the default store);
- ``qdrant:PATH`` — a Qdrant local-mode directory (``QdrantClient(path=PATH)``), with a
  collection name;
- ``faiss:PATH`` — a FAISS index file (``IndexIDMap`` over a flat index);
- ``chroma:PATH`` — a Chroma ``PersistentClient`` directory, with a collection name;
- ``postgresql://…`` or ``pgvector:DSN`` — a PostgreSQL table with a pgvector column.

Each adapter is one small module that only reads and writes vectors; bookkeeping, the write
protocol, history, locking and rollback are :class:`VectorStore`'s, written once
(:mod:`.base`, :mod:`.ledger`). The store libraries are imported only when a store of that
kind is opened.
"""

from __future__ import annotations

import importlib
import os
from typing import Any

from nudgekit.stores.base import (
    METRICS,
    Changes,
    MetricInfo,
    RowBatch,
    StoreError,
    VectorStore,
    digest,
)
from nudgekit.stores.ledger import LedgerError

#: kind → "module:class", imported on first use.
KINDS = {
    "lancedb": "nudgekit.stores.lancedb:LanceDBStore",
    "qdrant": "nudgekit.stores.qdrant:QdrantStore",
    "faiss": "nudgekit.stores.faiss:FaissStore",
    "chroma": "nudgekit.stores.chroma:ChromaStore",
    "pgvector": "nudgekit.stores.pgvector:PgvectorStore",
}


def parse_spec(spec: str | os.PathLike[str]) -> tuple[str, str]:
    """Split ``"kind:PATH"`` into its kind and path; raise a clear error otherwise."""
    text = os.fspath(spec)
    if text.startswith(("postgresql://", "postgres://")):
        return "pgvector", text  # a DSN as PostgreSQL clients write it
    kind, sep, path = text.partition(":")
    if not sep or kind not in KINDS or not path:
        raise StoreError(
            f"--store {text!r}: expected lancedb:PATH, qdrant:PATH, faiss:PATH, chroma:PATH or "
            "postgresql://USER@HOST/DB (a LanceDB database directory, a Qdrant local-mode "
            "directory, a FAISS index file, a Chroma persistent directory, a PostgreSQL DSN)"
        )
    return kind, path


def store_class(kind: str) -> type[VectorStore]:
    module, _, name = KINDS[kind].partition(":")
    return getattr(importlib.import_module(module), name)


def open_store(
    spec: str | os.PathLike[str],
    table: str | None = None,
    *,
    id_column: str | None = None,
    vector_column: str | None = None,
    **options: Any,
) -> VectorStore:
    """Open ``spec`` (``kind:PATH``) for reading and writing.

    Parameters
    ----------
    spec : str
        ``lancedb:PATH``, ``qdrant:PATH`` or ``faiss:PATH``.
    table : str, optional
        Table (LanceDB) or collection (Qdrant); FAISS files take none.
    id_column, vector_column : str, optional
        Columns to use where the store has columns (defaults per store).
    **options :
        Passed to the adapter (e.g. ``write_batch`` for Qdrant).

    Returns
    -------
    VectorStore
        Use it as a context manager to release locks (Qdrant local mode locks its folder).

    Raises
    ------
    StoreError
        For a malformed spec, a missing database, table, column or index.
    ImportError
        When the store's client library is not installed.
    """
    kind, path = parse_spec(spec)
    return store_class(kind)(
        path, table, id_column=id_column, vector_column=vector_column, **options
    )


__all__ = [
    "KINDS",
    "METRICS",
    "Changes",
    "LedgerError",
    "MetricInfo",
    "RowBatch",
    "StoreError",
    "VectorStore",
    "digest",
    "open_store",
    "parse_spec",
]
