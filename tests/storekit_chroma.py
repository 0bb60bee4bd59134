"""Chroma as its user runs it: a ``chromadb.PersistentClient`` directory, collection "docs".

Every operation opens its own client and closes it (``with PersistentClient(...)``): a
client caches the HNSW index it has loaded, and the last one of a path to close releases
it, so what one operation (or another process) wrote is what the next one reads. Each
record has a document and metadata derived from its id, and :meth:`Chroma.raw` checks
they are still exactly that: nudgekit changes embeddings only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .storekit import Kind, Target

#: nudgekit's metric → Chroma's space
SPACES = {"dot": "ip", "cosine": "cosine", "l2": "l2"}


def document(key: Any) -> str:
    return f"text of {key}"


def metadata(key: Any) -> dict[str, Any]:
    return {"title": f"t{key}", "source": "storekit"}


class Chroma(Kind):
    name = "chroma"
    module = "chromadb"
    int_ids = False
    metrics = ("dot", "cosine", "l2")

    def spec(self, root: Path) -> str:
        return f"chroma:{root / 'chroma'}"

    def _client(self, path: str | Path) -> Any:
        import chromadb

        return chromadb.PersistentClient(path=str(path))

    def build(self, root: Path, keys: list[Any], corpus: np.ndarray, metric: str | None) -> None:
        # the ways users set the space: the configuration (Chroma's docs today), the
        # legacy "hnsw:space" metadata, or nothing at all (Chroma's default, l2)
        space = SPACES[metric or "dot"]
        if space == "l2":
            options: dict[str, Any] = {}
        elif space == "cosine":
            options = {"metadata": {"hnsw:space": "cosine"}}
        else:
            options = {"configuration": {"hnsw": {"space": space}}}
        with self._client(root / "chroma") as client:
            collection = client.create_collection(name="docs", **options)
            self._add(collection, keys, corpus)

    def _add(self, collection: Any, keys: list[Any], vectors: np.ndarray) -> None:
        collection.add(
            ids=list(keys),
            embeddings=np.ascontiguousarray(vectors, np.float32),
            documents=[document(k) for k in keys],
            metadatas=[metadata(k) for k in keys],
        )

    def raw(self, target: Target) -> dict[str, np.ndarray]:
        with self._client(target.path) as client:
            got = client.get_collection("docs").get(
                include=["embeddings", "documents", "metadatas"]
            )
        for key, text, meta in zip(got["ids"], got["documents"], got["metadatas"], strict=True):
            assert (text, meta) == (document(key), metadata(key)), (key, text, meta)
        vectors = np.asarray(got["embeddings"], np.float32)
        return dict(zip(got["ids"], vectors, strict=True))

    def insert(self, target: Target, keys: list[Any], vectors: np.ndarray) -> None:
        with self._client(target.path) as client:
            self._add(client.get_collection("docs"), keys, vectors)

    def delete(self, target: Target, keys: list[Any]) -> None:
        with self._client(target.path) as client:
            client.get_collection("docs").delete(ids=list(keys))

    def overwrite(self, target: Target, key: Any, vector: np.ndarray) -> None:
        with self._client(target.path) as client:
            client.get_collection("docs").update(ids=[key], embeddings=[vector.tolist()])

    def maintain(self, target: Target) -> None:
        # `chroma vacuum --path PATH --force`, the maintenance Chroma's docs recommend for a
        # persistent directory (this is what the `chroma` command runs)
        import chromadb_rust_bindings

        chromadb_rust_bindings.cli(["chroma", "vacuum", "--path", target.path, "--force"])

    def schema(self, target: Target) -> Any:
        with self._client(target.path) as client:
            collection = client.get_collection("docs")
            schema = collection.schema
            return (
                collection.name,
                collection.metadata,
                collection.configuration_json,
                schema.serialize_to_json() if schema is not None else None,
            )

    def search(self, target: Target, query: np.ndarray, k: int) -> list[str]:
        with self._client(target.path) as client:
            # Chroma's docs: collection.query(query_embeddings=[...], n_results=k)
            result = client.get_collection("docs").query(
                query_embeddings=[query.tolist()], n_results=k
            )
        return list(result["ids"][0])


KIND = Chroma()
