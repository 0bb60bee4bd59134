"""Store adapters against real LanceDB, Qdrant local mode and FAISS files (no mocks).

Also home of the helpers the apply tests share: building a small store of each kind,
writing a labels directory, reading a store's vectors back without nudgekit.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from nudgekit.stores import Changes, StoreError, digest, open_store, parse_spec
from nudgekit.stores.base import new_id

from .conftest import Problem, make_problem

lancedb = pytest.importorskip("lancedb")
pa = pytest.importorskip("pyarrow")
qdrant_client = pytest.importorskip("qdrant_client")
faiss = pytest.importorskip("faiss")
from qdrant_client import QdrantClient, models  # noqa: E402

KINDS = ("lancedb", "qdrant", "faiss")
#: small, and with enough signal that NUDGE moves records (noise 0.5)
SMALL = {"n": 300, "d": 16, "n_answering": 60, "n_train": 120, "n_val": 30, "n_test": 30}
QDRANT_DISTANCE = {
    "dot": models.Distance.DOT,
    "cosine": models.Distance.COSINE,
    "l2": models.Distance.EUCLID,
}


@dataclass
class Target:
    """A store built for a test, with the data it was built from."""

    kind: str
    root: Path
    spec: str
    table: str | None
    keys: list[Any]  # store-native ids, row i of ``corpus``
    corpus: np.ndarray  # float32 unit rows
    problem: Problem

    @property
    def ids(self) -> list[str]:
        return [str(k) for k in self.keys]

    def open(self, **kwargs: Any):
        return open_store(self.spec, self.table, **kwargs)


def unit_rows(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


#: Qdrant local mode and LanceDB flush every write to disk (Qdrant: once per point), which
#: costs ~25 ms a time on a plain disk; in memory (/dev/shm) the tests run ~20x faster.
FAST_BASE = Path("/dev/shm") if os.access("/dev/shm", os.W_OK) else None
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


@pytest.fixture
def fast_path(tmp_path) -> Iterator[Path]:
    yield from scratch_dir(tmp_path)


def build_store(
    kind: str,
    root: Path,
    *,
    metric: str | None = "dot",
    seed: int = 0,
    **problem: Any,
) -> Target:
    """A store of ``kind`` under ``root`` holding ``make_problem(...)``'s corpus, unit rows.

    LanceDB: table ``docs`` (``id`` string ``doc<i>``, ``vector``, ``text``), with a flat
    vector index of ``metric`` (none when ``metric`` is None). Qdrant: collection ``docs``,
    integer ids, the unnamed vector with ``metric``'s distance. FAISS: ``IndexIDMap`` over
    ``IndexFlatIP`` (``dot``) or ``IndexFlatL2``, integer ids. Each kind of store is built
    once per session and copied.
    """
    p = make_problem(seed=seed, **({"noise": 0.5} | SMALL | problem))
    corpus = unit_rows(p.corpus)
    cache = (kind, metric, seed, tuple(sorted(problem.items())))
    if cache not in _TEMPLATES:
        _TEMPLATES[cache] = _scratch()
        _build(kind, _TEMPLATES[cache], corpus, metric)
    shutil.copytree(_TEMPLATES[cache], root, dirs_exist_ok=True)
    n = len(corpus)
    if kind == "lancedb":
        keys: list[Any] = [f"doc{i}" for i in range(n)]
        return Target(kind, root, f"lancedb:{root / 'lance'}", "docs", keys, corpus, p)
    keys = list(range(1000, 1000 + n))
    if kind == "qdrant":
        return Target(kind, root, f"qdrant:{root / 'qdrant'}", "docs", keys, corpus, p)
    return Target(kind, root, f"faiss:{root / 'index.faiss'}", None, keys, corpus, p)


def _build(kind: str, root: Path, corpus: np.ndarray, metric: str | None) -> None:
    n, d = corpus.shape
    if kind == "lancedb":
        db = lancedb.connect(str(root / "lance"))
        table = db.create_table("docs", lance_rows([f"doc{i}" for i in range(n)], corpus))
        if metric is not None:
            from lancedb.index import IvfFlat

            table.create_index("vector", config=IvfFlat(distance_type=metric, num_partitions=1))
        return
    keys = list(range(1000, 1000 + n))
    if kind == "qdrant":
        client = QdrantClient(path=str(root / "qdrant"))
        client.create_collection(
            "docs", vectors_config=models.VectorParams(size=d, distance=QDRANT_DISTANCE[metric])
        )
        client.upsert(
            "docs",
            points=[
                models.PointStruct(id=k, vector=v.tolist(), payload={"title": f"t{k}"})
                for k, v in zip(keys, corpus, strict=True)
            ],
        )
        client.close()
        return
    flat = faiss.IndexFlatIP(d) if metric == "dot" else faiss.IndexFlatL2(d)
    index = faiss.IndexIDMap(flat)
    index.add_with_ids(corpus, np.asarray(keys, dtype=np.int64))
    faiss.write_index(index, str(root / "index.faiss"))


def lance_rows(keys: list[Any], vectors: np.ndarray) -> Any:
    d = vectors.shape[1]
    return pa.table(
        {
            "id": keys,
            "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), d),
            "text": [f"text of {k}" for k in keys],
        }
    )


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


def raw_vectors(target: Target) -> dict[str, np.ndarray]:
    """What the store holds, read with its own client (nudgekit not involved)."""
    if target.kind == "lancedb":
        table = lancedb.connect(target.spec.partition(":")[2]).open_table("docs")
        data = table.to_arrow()
        d = data.schema.field("vector").type.list_size
        vectors = np.asarray(data.column("vector").combine_chunks().flatten(), np.float32)
        return dict(zip(data.column("id").to_pylist(), vectors.reshape(-1, d), strict=True))
    if target.kind == "qdrant":
        client = QdrantClient(path=target.spec.partition(":")[2])
        try:
            points, _ = client.scroll("docs", limit=100_000, with_vectors=[""])
        finally:
            client.close()
        return {str(p.id): np.asarray(_unnamed(p.vector), np.float32) for p in points}
    index = faiss.read_index(target.spec.partition(":")[2])
    keys = faiss.vector_to_array(index.id_map)
    vectors = index.index.reconstruct_n(0, index.ntotal)
    return {str(k): v for k, v in zip(keys.tolist(), vectors, strict=True)}


def _unnamed(vector: Any) -> Any:
    return vector[""] if isinstance(vector, dict) else vector


def matrix_of(target: Target, state: dict[str, np.ndarray]) -> np.ndarray:
    """A state as a matrix in the target's corpus row order."""
    return np.stack([state[i] for i in target.ids])


def some_changes(store: Any, target: Target, rows: list[int], shift: float = 0.1) -> Changes:
    vectors = unit_rows(target.corpus[rows] + shift)
    return Changes(
        keys=[target.keys[r] for r in rows],
        ids=[target.ids[r] for r in rows],
        vectors=vectors,
        originals=target.corpus[rows],
        digests=digest(vectors),
        before=target.corpus[rows],
    )


def record(**extra: Any) -> dict[str, Any]:
    """A minimal apply record, as :func:`nudgekit.apply.apply_to_store` would pass."""
    base = {"id": new_id(), "kind": "apply", "created": "2026-01-01T00:00:00+00:00"}
    return base | {"n_written": 0} | extra


@pytest.fixture(params=KINDS)
def target(request, fast_path) -> Target:
    return build_store(request.param, fast_path / request.param)


# -- reading -------------------------------------------------------------------------------
def test_read_returns_every_row_once_in_batches(target):
    with target.open() as store:
        batches = list(store.read(batch_size=7))
        assert store.count() == len(target.ids) and store.dim == target.corpus.shape[1]
    assert max(len(b.ids) for b in batches) <= 7
    ids = [i for b in batches for i in b.ids]
    vectors = np.concatenate([b.vectors for b in batches])
    assert sorted(ids) == sorted(target.ids)
    row = {i: r for r, i in enumerate(target.ids)}
    np.testing.assert_array_equal(vectors, target.corpus[[row[i] for i in ids]])
    assert not any(b.has_original.any() for b in batches)


@pytest.mark.parametrize(
    ("kind", "metric", "expected"),
    [
        ("lancedb", "dot", "dot"),
        ("lancedb", "cosine", "cosine"),
        ("lancedb", None, None),
        ("qdrant", "dot", "dot"),
        ("qdrant", "cosine", "cosine"),
        ("qdrant", "l2", "l2"),
        ("faiss", "dot", "dot"),
        ("faiss", "l2", "l2"),
    ],
)
def test_metric_is_the_one_the_store_is_configured_for(fast_path, kind, metric, expected):
    target = build_store(kind, fast_path, metric=metric)
    with target.open() as store:
        info = store.metric()
    assert info.name == expected
    assert info.declarable == (expected is None)


def test_spec_must_name_a_known_kind():
    assert parse_spec("lancedb:/data/db") == ("lancedb", "/data/db")
    for bad in ("/data/db", "pinecone:x", "lancedb:"):
        with pytest.raises(StoreError, match="lancedb:PATH, qdrant:PATH or faiss:PATH"):
            parse_spec(bad)


@pytest.mark.parametrize(
    ("kind", "kwargs", "message"),
    [
        ("lancedb", {"table": "nope"}, r"table 'nope' not found .* \(tables: docs\)"),
        ("lancedb", {"table": None}, "need --table"),
        ("lancedb", {"table": "docs", "vector_column": "emb"}, "no column 'emb'"),
        ("lancedb", {"table": "docs", "id_column": "key"}, "no column 'key'"),
        ("lancedb", {"table": "docs", "vector_column": "text"}, "expected a fixed-size list"),
        ("qdrant", {"table": "nope"}, r"collection 'nope' not found .* \(collections: docs\)"),
        ("qdrant", {"table": "docs", "vector_column": "dense"}, "no vector 'dense'"),
        ("faiss", {"table": "docs"}, "no tables or columns"),
    ],
)
def test_unknown_table_or_column_is_refused(fast_path, kind, kwargs, message):
    target = build_store(kind, fast_path)
    table = kwargs.pop("table", target.table)
    with pytest.raises(StoreError, match=message):
        open_store(target.spec, table, **kwargs)


def test_a_missing_store_is_refused(tmp_path):
    for spec in (f"lancedb:{tmp_path}/none", f"qdrant:{tmp_path}", f"faiss:{tmp_path}/x.faiss"):
        with pytest.raises(StoreError, match=r"no .* at"):
            open_store(spec, "docs" if not spec.startswith("faiss") else None)


def test_faiss_needs_an_id_map_over_a_flat_index(tmp_path):
    path = tmp_path / "plain.faiss"
    faiss.write_index(faiss.IndexFlatIP(4), str(path))
    with pytest.raises(StoreError, match="needs an IndexIDMap"):
        open_store(f"faiss:{path}")
    faiss.write_index(faiss.IndexIDMap(faiss.IndexHNSWFlat(4, 8)), str(path))
    with pytest.raises(StoreError, match="only flat indexes"):
        open_store(f"faiss:{path}")


def test_lancedb_variable_length_vectors_are_refused(fast_path):
    db = lancedb.connect(str(fast_path))
    db.create_table("docs", pa.table({"id": ["a"], "emb": pa.array([[1.0, 2.0]])}))
    with pytest.raises(StoreError, match="expected a fixed-size list of floats"):
        open_store(f"lancedb:{fast_path}", "docs", vector_column="emb")


# -- writing and rolling back ---------------------------------------------------------------
def test_write_changes_only_the_given_rows_and_keeps_their_originals(target):
    before = raw_vectors(target)
    rows = [3, 10, 42]
    with target.open() as store:
        list(store.read())
        changes = some_changes(store, target, rows)
        done = store.write(changes, record(n_written=3))
    after = raw_vectors(target)
    changed = {target.ids[r] for r in rows}
    for i, v in after.items():
        if i in changed:
            np.testing.assert_array_equal(
                v, changes.vectors[[target.ids[r] for r in rows].index(i)]
            )
        else:
            np.testing.assert_array_equal(v, before[i])
    with target.open() as store:
        batches = list(store.read())
    kept = {i: b.originals[k] for b in batches for k, i in enumerate(b.ids) if b.has_original[k]}
    assert set(kept) == changed
    for r in rows:
        np.testing.assert_array_equal(kept[target.ids[r]], target.corpus[r])
    digests = {i: b.digests[k] for b in batches for k, i in enumerate(b.ids) if b.has_original[k]}
    assert all(digests[i] == digest(after[i][None])[0] for i in changed)
    assert done["status"] == "done" and done["seq"] == 1
    assert done["version_after"] != done["version_before"]


def test_rollback_restores_the_rows_and_marks_the_apply(target):
    before = raw_vectors(target)
    with target.open() as store:
        list(store.read())
        applied = store.write(some_changes(store, target, [1, 2]), record(n_written=2))
        back = store.rollback()
        history = store.history()
    assert back["rolled_back"] == applied["id"]
    after = raw_vectors(target)
    assert all(np.array_equal(after[i], before[i]) for i in before)
    assert [(r["kind"], r["status"]) for r in history] == [
        ("apply", "rolled back"),
        ("rollback", "done"),
    ]
    with target.open() as store, pytest.raises(ValueError, match="nothing to roll back"):
        store.rollback()


def test_an_empty_write_only_records_the_apply(target):
    before = raw_vectors(target)
    with target.open() as store:
        list(store.read())
        done = store.write(some_changes(store, target, []), record())
        assert done["version_before"] == done["version_after"]
        assert [r["id"] for r in store.history()] == [done["id"]]
    assert all(np.array_equal(v, before[i]) for i, v in raw_vectors(target).items())


def test_lancedb_apply_is_one_commit_and_tagged(fast_path):
    target = build_store("lancedb", fast_path)
    with target.open() as store:
        list(store.read())
        first = store.write(some_changes(store, target, [1]), record(n_written=1))
        list(store.read())
        second = store.write(some_changes(store, target, [2], shift=0.2), record(n_written=1))
    # the first apply also adds the bookkeeping columns (one commit of its own)
    assert first["version_after"] == first["version_before"] + 2
    assert second["version_after"] == second["version_before"] + 1
    tags = lancedb.connect(str(fast_path / "lance")).open_table("docs").tags.list()
    assert tags["nudgekit-2"]["version"] == second["version_after"]
    assert tags["nudgekit-2-before"]["version"] == second["version_before"]


def test_lancedb_rollback_refuses_to_discard_later_writes_unless_forced(fast_path):
    target = build_store("lancedb", fast_path)
    with target.open() as store:
        list(store.read())
        store.write(some_changes(store, target, [1]), record(n_written=1))
    table = lancedb.connect(str(fast_path / "lance")).open_table("docs")
    table.delete("id = 'doc299'")  # someone else's write after the apply
    with target.open() as store:
        with pytest.raises(ValueError, match=r"changed since apply #1 .* --force"):
            store.rollback()
        store.rollback(force=True)
    assert "doc299" in raw_vectors(target)  # restored along with everything else


@pytest.mark.parametrize("kind", ["qdrant", "faiss"])
def test_rollback_leaves_rows_edited_since_the_apply_alone(fast_path, kind):
    target = build_store(kind, fast_path)
    with target.open() as store:
        list(store.read())
        store.write(some_changes(store, target, [1, 2]), record(n_written=2))
    edited = unit_rows(target.corpus[2:3] - 0.3)[0]
    overwrite(target, target.keys[2], edited)
    with target.open() as store:
        back = store.rollback()
    assert (back["n_restored"], back["n_skipped"]) == (1, 1)
    after = raw_vectors(target)
    np.testing.assert_array_equal(after[target.ids[1]], target.corpus[1])
    np.testing.assert_array_equal(after[target.ids[2]], edited)


def overwrite(target: Target, key: Any, vector: np.ndarray) -> None:
    """Re-embed one record behind nudgekit's back (as the user's own pipeline would)."""
    path = target.spec.partition(":")[2]
    if target.kind == "lancedb":
        table = lancedb.connect(path).open_table("docs")
        table.update(where=f"id = '{key}'", values={"vector": vector.tolist()})
    elif target.kind == "qdrant":
        client = QdrantClient(path=path)
        client.update_vectors(
            "docs", points=[models.PointVectors(id=key, vector={"": vector.tolist()})]
        )
        client.close()
    else:
        index = faiss.read_index(path)
        index.remove_ids(np.array([key], dtype=np.int64))
        index.add_with_ids(vector[None].astype(np.float32), np.array([key], dtype=np.int64))
        faiss.write_index(index, path)


def test_qdrant_keeps_the_original_as_a_named_vector_where_vectors_are_named(fast_path):
    target = build_store("qdrant", fast_path)
    client = QdrantClient(path=str(fast_path / "qdrant"))
    client.create_collection(
        "named",
        vectors_config={"dense": models.VectorParams(size=16, distance=models.Distance.DOT)},
    )
    client.upsert(
        "named",
        points=[
            models.PointStruct(id=k, vector={"dense": v.tolist()}, payload={"title": f"t{k}"})
            for k, v in zip(target.keys, target.corpus, strict=True)
        ],
    )
    client.close()
    with open_store(target.spec, "named") as store:
        assert store.vector_name == "dense"
        list(store.read())
        store.write(some_changes(store, target, [5]), record(n_written=1))
    client = QdrantClient(path=str(fast_path / "qdrant"))
    try:
        (point,) = client.retrieve("named", [target.keys[5]], with_vectors=True, with_payload=True)
        hits = client.query_points(
            "named", query=target.corpus[5].tolist(), using="nudgekit_original", limit=1
        )
    finally:
        client.close()
    np.testing.assert_array_equal(point.vector["nudgekit_original"], target.corpus[5])
    assert point.payload == {"title": f"t{target.keys[5]}"}  # payload untouched
    assert hits.points[0].id == target.keys[5]


def test_qdrant_unnamed_vector_collection_keeps_its_schema(fast_path):
    # a named vector would make Qdrant refuse the user's unnamed upserts from then on
    target = build_store("qdrant", fast_path)
    with target.open() as store:
        list(store.read())
        store.write(some_changes(store, target, [5]), record(n_written=1))
    client = QdrantClient(path=str(fast_path / "qdrant"))
    try:
        config = client.get_collection("docs").config.params.vectors
        assert isinstance(config, models.VectorParams)
        client.upsert("docs", points=[models.PointStruct(id=7, vector=[0.5] * 16)])
    finally:
        client.close()
    with target.open() as store:
        kept = {i for b in store.read() for i, h in zip(b.ids, b.has_original, strict=True) if h}
    assert kept == {target.ids[5]}


def test_digest_is_fixed_arithmetic():
    # stored digests must stay valid across numpy versions: pin the function's values
    v = np.array([[0.5, -0.25, 1.0], [0.0, -0.0, 1.0]], dtype=np.float32)
    assert digest(v).tolist() == DIGESTS
    assert digest(v).dtype == np.int64 and (digest(v) != 0).all()
    assert digest(v[:1])[0] != digest(v[:1] + np.float32(1e-7))[0]


DIGESTS = [-4273615216954500919, 200579033938205409]
