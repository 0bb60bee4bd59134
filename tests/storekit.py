"""Real stores for the tests: build one of each kind, and do to it what its user would.

Every kind is a :class:`Kind` with the same operations, written with the store's own
client (nudgekit not involved): build a store from a corpus, read what it holds, insert,
delete and re-embed rows, run its maintenance (``optimize``, compaction ...), and search it
the way its documentation writes the default search call. Tests take the kinds they need
with :func:`kind_param`, so a missing client library skips only that kind's tests.
"""

from __future__ import annotations

import atexit
import importlib
import json
import os
import shutil
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest

from nudgekit.stores import open_store

from .conftest import Problem, make_problem

#: small, with queries off their records (shift) so that validation picks γ > 0
SMALL = {
    "n": 300,
    "d": 16,
    "n_answering": 60,
    "n_train": 120,
    "n_val": 30,
    "n_test": 30,
    "shift": 1.0,
}

#: Qdrant local mode and LanceDB flush every write to disk (Qdrant: once per point), which
#: costs ~25 ms a time on a plain disk; in memory (/dev/shm) the tests run ~20x faster.
FAST_BASE = Path("/dev/shm") if os.access("/dev/shm", os.W_OK) else None


def unit_rows(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@dataclass
class Target:
    """A store built for a test, with the data it was built from."""

    kind: Kind
    root: Path
    spec: str
    table: str | None
    keys: list[Any]  # store-native ids, row i of ``corpus``
    corpus: np.ndarray  # float32 unit rows
    problem: Problem

    @property
    def ids(self) -> list[str]:
        return [str(k) for k in self.keys]

    @property
    def path(self) -> str:
        return self.spec.partition(":")[2]

    def open(self, **kwargs: Any) -> Any:
        return open_store(self.spec, self.table, **kwargs)

    # the user's operations, through the kind
    def raw(self) -> dict[str, np.ndarray]:
        return self.kind.raw(self)

    def matrix(self, state: dict[str, np.ndarray] | None = None) -> np.ndarray:
        """A state (default: now) as a matrix in the corpus row order."""
        state = self.raw() if state is None else state
        return np.stack([state[i] for i in self.ids])

    def search(self, query: np.ndarray, k: int = 10) -> list[str]:
        return self.kind.search(self, query, k)


class Kind(ABC):
    """One kind of store; subclasses implement the user's operations with its client."""

    name: ClassVar[str]
    module: ClassVar[str]  # the client library: missing → this kind's tests skip
    table: ClassVar[str | None] = "docs"
    int_ids: ClassVar[bool] = True
    metrics: ClassVar[tuple[str, ...]] = ("dot", "cosine", "l2")

    def available(self) -> bool:
        try:
            importlib.import_module(self.module)
        except ImportError:
            return False
        return True

    def clone(self, source: Path, root: Path) -> None:
        """Make ``root`` an independent copy of the store built under ``source``."""
        shutil.copytree(source, root, dirs_exist_ok=True)

    def keys(self, n: int) -> list[Any]:
        return list(range(1000, 1000 + n)) if self.int_ids else [f"doc{i}" for i in range(n)]

    @abstractmethod
    def spec(self, root: Path) -> str: ...

    @abstractmethod
    def build(
        self, root: Path, keys: list[Any], corpus: np.ndarray, metric: str | None
    ) -> None: ...

    @abstractmethod
    def raw(self, target: Target) -> dict[str, np.ndarray]: ...

    @abstractmethod
    def insert(self, target: Target, keys: list[Any], vectors: np.ndarray) -> None: ...

    @abstractmethod
    def delete(self, target: Target, keys: list[Any]) -> None: ...

    @abstractmethod
    def overwrite(self, target: Target, key: Any, vector: np.ndarray) -> None:
        """Re-embed one record behind nudgekit's back (as the user's own pipeline would)."""

    def maintain(self, target: Target) -> None:  # noqa: B027  (most stores need none)
        """The store's own maintenance its docs recommend (compaction, re-indexing)."""

    def schema(self, target: Target) -> Any:
        """What the user's code depends on: columns and types, index, collection config."""
        return None

    def traces(self, target: Target) -> list[str]:
        """What nudgekit left in or beside the store (its ledger), by name."""
        return [str(p) for p in target.root.rglob("*nudgekit*")]

    @abstractmethod
    def search(self, target: Target, query: np.ndarray, k: int) -> list[str]:
        """The store's default search call, as its documentation writes it: ids, best first."""


class LanceDB(Kind):
    name = "lancedb"
    module = "lancedb"
    int_ids = False

    def spec(self, root: Path) -> str:
        return f"lancedb:{root / 'lance'}"

    def _table(self, target: Target) -> Any:
        import lancedb

        return lancedb.connect(target.path).open_table("docs")

    def build(self, root: Path, keys: list[Any], corpus: np.ndarray, metric: str | None) -> None:
        import lancedb

        db = lancedb.connect(str(root / "lance"))
        table = db.create_table("docs", lance_rows(keys, corpus))
        if metric is not None:
            from lancedb.index import IvfFlat

            table.create_index("vector", config=IvfFlat(distance_type=metric, num_partitions=1))

    def raw(self, target: Target) -> dict[str, np.ndarray]:
        data = self._table(target).to_arrow()
        d = data.schema.field("vector").type.list_size
        vectors = np.asarray(data.column("vector").combine_chunks().flatten(), np.float32)
        return dict(zip(data.column("id").to_pylist(), vectors.reshape(-1, d), strict=True))

    def insert(self, target: Target, keys: list[Any], vectors: np.ndarray) -> None:
        self._table(target).add(lance_rows(keys, vectors))

    def delete(self, target: Target, keys: list[Any]) -> None:
        listed = ", ".join(f"'{k}'" for k in keys)
        self._table(target).delete(f"id IN ({listed})")

    def overwrite(self, target: Target, key: Any, vector: np.ndarray) -> None:
        self._table(target).update(where=f"id = '{key}'", values={"vector": vector.tolist()})

    def maintain(self, target: Target) -> None:
        self._table(target).optimize()

    def schema(self, target: Target) -> Any:
        table = self._table(target)
        indices = [(i.name, i.index_type, tuple(i.columns)) for i in table.list_indices()]
        return str(table.schema), indices

    def search(self, target: Target, query: np.ndarray, k: int) -> list[str]:
        # LanceDB's docs: tbl.search(query).limit(k).to_list()
        return [row["id"] for row in self._table(target).search(query).limit(k).to_list()]


def lance_rows(keys: list[Any], vectors: np.ndarray) -> Any:
    import pyarrow as pa

    d = vectors.shape[1]
    return pa.table(
        {
            "id": keys,
            "vector": pa.FixedSizeListArray.from_arrays(
                pa.array(np.ascontiguousarray(vectors, np.float32).ravel()), d
            ),
            "text": [f"text of {k}" for k in keys],
        }
    )


class Qdrant(Kind):
    name = "qdrant"
    module = "qdrant_client"

    def spec(self, root: Path) -> str:
        return f"qdrant:{root / 'qdrant'}"

    def _client(self, target_path: str) -> Any:
        from qdrant_client import QdrantClient

        return QdrantClient(path=target_path)

    def build(self, root: Path, keys: list[Any], corpus: np.ndarray, metric: str | None) -> None:
        from qdrant_client import models

        distance = {
            "dot": models.Distance.DOT,
            "cosine": models.Distance.COSINE,
            "l2": models.Distance.EUCLID,
        }[metric or "dot"]
        client = self._client(str(root / "qdrant"))
        client.create_collection(
            "docs", vectors_config=models.VectorParams(size=corpus.shape[1], distance=distance)
        )
        self._upsert(client, keys, corpus)
        client.close()

    def _upsert(self, client: Any, keys: list[Any], vectors: np.ndarray) -> None:
        from qdrant_client import models

        client.upsert(
            "docs",
            points=[
                models.PointStruct(id=k, vector=v.tolist(), payload={"title": f"t{k}"})
                for k, v in zip(keys, vectors, strict=True)
            ],
        )

    def schema(self, target: Target) -> Any:
        client = self._client(target.path)
        try:
            return str(client.get_collection("docs").config.params)
        finally:
            client.close()

    def raw(self, target: Target) -> dict[str, np.ndarray]:
        client = self._client(target.path)
        try:
            points, _ = client.scroll("docs", limit=100_000, with_vectors=True)
        finally:
            client.close()
        return {str(p.id): np.asarray(_unnamed(p.vector), np.float32) for p in points}

    def insert(self, target: Target, keys: list[Any], vectors: np.ndarray) -> None:
        client = self._client(target.path)
        try:
            self._upsert(client, keys, vectors)
        finally:
            client.close()

    def delete(self, target: Target, keys: list[Any]) -> None:
        from qdrant_client import models

        client = self._client(target.path)
        try:
            client.delete("docs", points_selector=models.PointIdsList(points=list(keys)))
        finally:
            client.close()

    def overwrite(self, target: Target, key: Any, vector: np.ndarray) -> None:
        from qdrant_client import models

        client = self._client(target.path)
        try:
            client.update_vectors(
                "docs", points=[models.PointVectors(id=key, vector=vector.tolist())]
            )
        finally:
            client.close()

    def search(self, target: Target, query: np.ndarray, k: int) -> list[str]:
        client = self._client(target.path)
        try:  # Qdrant's docs: client.query_points(collection, query=vector, limit=k)
            hits = client.query_points("docs", query=query.tolist(), limit=k).points
        finally:
            client.close()
        return [str(h.id) for h in hits]


def _unnamed(vector: Any) -> Any:
    return vector[""] if isinstance(vector, dict) else vector


class Faiss(Kind):
    name = "faiss"
    module = "faiss"
    table = None
    metrics = ("dot", "l2")

    def spec(self, root: Path) -> str:
        return f"faiss:{root / 'index.faiss'}"

    def build(self, root: Path, keys: list[Any], corpus: np.ndarray, metric: str | None) -> None:
        import faiss

        d = corpus.shape[1]
        flat = faiss.IndexFlatL2(d) if metric == "l2" else faiss.IndexFlatIP(d)
        index = faiss.IndexIDMap(flat)
        index.add_with_ids(corpus, np.asarray(keys, dtype=np.int64))
        faiss.write_index(index, str(root / "index.faiss"))

    def _index(self, target: Target) -> Any:
        import faiss

        return faiss.read_index(target.path)

    def raw(self, target: Target) -> dict[str, np.ndarray]:
        import faiss

        index = self._index(target)
        keys = faiss.vector_to_array(index.id_map)
        vectors = index.index.reconstruct_n(0, index.ntotal)
        return {str(k): v for k, v in zip(keys.tolist(), vectors, strict=True)}

    def schema(self, target: Target) -> Any:
        import faiss

        index = self._index(target)
        return type(faiss.downcast_index(index.index)).__name__, index.d, index.metric_type

    def _save(self, target: Target, index: Any) -> None:
        import faiss

        faiss.write_index(index, target.path)

    def insert(self, target: Target, keys: list[Any], vectors: np.ndarray) -> None:
        index = self._index(target)
        index.add_with_ids(np.ascontiguousarray(vectors, np.float32), np.asarray(keys, np.int64))
        self._save(target, index)

    def delete(self, target: Target, keys: list[Any]) -> None:
        index = self._index(target)
        index.remove_ids(np.asarray(keys, dtype=np.int64))
        self._save(target, index)

    def overwrite(self, target: Target, key: Any, vector: np.ndarray) -> None:
        index = self._index(target)
        ids = np.array([key], dtype=np.int64)
        index.remove_ids(ids)
        index.add_with_ids(vector[None].astype(np.float32), ids)
        self._save(target, index)

    def search(self, target: Target, query: np.ndarray, k: int) -> list[str]:
        _, ids = self._index(target).search(query[None].astype(np.float32), k)  # index.search
        return [str(i) for i in ids[0].tolist() if i >= 0]


#: every kind, by name; store tests parametrise over these
KINDS: dict[str, Kind] = {k.name: k for k in (LanceDB(), Qdrant(), Faiss())}
# kinds defined in modules of their own (tests/storekit_<name>.py, each with ``KIND``)
for _path in sorted(Path(__file__).parent.glob("storekit_*.py")):
    _kind = importlib.import_module(f".{_path.stem}", __package__).KIND
    KINDS[_kind.name] = _kind


def kind_param(name: str, *values: Any) -> Any:
    """``(name, *values)`` as a pytest parameter that skips when the store's client is
    missing."""
    kind = KINDS[name]
    return pytest.param(
        name,
        *values,
        id="-".join([name, *(str(v)[:24] for v in values)]),
        marks=pytest.mark.skipif(not kind.available(), reason=f"{kind.module} is not installed"),
    )


ALL_KINDS = [kind_param(name) for name in KINDS]

_TEMPLATES: dict[tuple[Any, ...], Path] = {}


def _scratch() -> Path:
    path = Path(tempfile.mkdtemp(dir=FAST_BASE, prefix="nudgekit-test-"))
    atexit.register(shutil.rmtree, path, True)
    return path


def scratch_dir(tmp_path: Path) -> Iterator[Path]:
    """A scratch directory, in memory where possible (see FAST_BASE), removed afterwards."""
    if FAST_BASE is None:
        yield tmp_path
        return
    path = Path(tempfile.mkdtemp(dir=FAST_BASE, prefix="nudgekit-test-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def build_store(
    kind: str, root: Path, *, metric: str | None = "dot", seed: int = 0, **problem: Any
) -> Target:
    """A store of ``kind`` under ``root`` holding ``make_problem(...)``'s corpus, unit rows.

    Table or collection ``docs`` (FAISS: one index file), with ``metric`` where the kind
    configures one (LanceDB: a flat vector index, none when ``metric`` is None). Each store
    is built once per session and copied.
    """
    spec = KINDS[kind]
    p = make_problem(seed=seed, **({"noise": 0.5} | SMALL | problem))
    corpus = unit_rows(p.corpus)
    keys = spec.keys(len(corpus))
    cache = (kind, metric, seed, tuple(sorted(problem.items())))
    if cache not in _TEMPLATES:
        _TEMPLATES[cache] = _scratch()
        spec.build(_TEMPLATES[cache], keys, corpus, metric)
    spec.clone(_TEMPLATES[cache], root)
    return Target(spec, root, spec.spec(root), spec.table, keys, corpus, p)


def clone(target: Target, root: Path) -> Target:
    """An independent copy of ``target``'s store under ``root``, in the state it is in now."""
    target.kind.clone(target.root, root)
    return replace(target, root=root, spec=target.kind.spec(root))


def write_labels(
    target: Target,
    root: Path,
    *,
    train: slice | list[int] = slice(None),
    test: bool = True,
    meta: dict[str, Any] | None = None,
) -> Path:
    """A labels directory for ``target``: its problem's queries, ``train`` selecting which
    training queries to keep; doc ids are the store's ids."""
    p = target.problem
    ids = target.ids
    n_train = len(p.train_q)
    kept = np.arange(n_train)[train] if isinstance(train, slice) else np.asarray(train)
    queries = [p.train_q[kept], p.val_q] + ([p.test_q] if test else [])
    rels = [p.train_rel[j] for j in kept] + p.val_rel + (p.test_rel if test else [])
    qids = [f"train{j}" for j in kept] + [f"val{j}" for j in range(len(p.val_q))]
    splits: dict[str, list[str]] = {"train": qids[: len(kept)], "val": qids[len(kept) :]}
    if test:
        splits["test"] = [f"test{j}" for j in range(len(p.test_q))]
        qids += splits["test"]
    root.mkdir(parents=True, exist_ok=True)
    np.save(root / "queries.npy", np.concatenate(queries).astype(np.float32))
    (root / "query_ids.json").write_text(json.dumps(qids))
    qrels = {q: {ids[r]: 1 for r in rel} for q, rel in zip(qids, rels, strict=True)}
    (root / "qrels.json").write_text(json.dumps(qrels))
    (root / "splits.json").write_text(json.dumps(splits))
    if meta is not None:
        (root / "embed_meta.json").write_text(json.dumps(meta))
    return root
