"""Every store adapter against its real store (no mocks): the same contract for each kind.

An adapter only reads and writes vectors; the write protocol, bookkeeping, history, lock
and row-wise rollback are the base class's. So every test here runs for every kind
(:data:`storekit.ALL_KINDS`); a kind whose client library is missing is skipped alone.
"""

from __future__ import annotations

import multiprocessing
from typing import Any

import numpy as np
import pytest

from nudgekit.stores import Changes, LedgerError, StoreError, digest, open_store, parse_spec
from nudgekit.stores.base import new_id

from .storekit import ALL_KINDS, KINDS, Target, build_store, kind_param, scratch_dir, unit_rows


@pytest.fixture
def fast_path(tmp_path):
    yield from scratch_dir(tmp_path)


@pytest.fixture(params=ALL_KINDS)
def target(request, fast_path) -> Target:
    return build_store(request.param, fast_path / request.param)


def changes_for(target: Target, rows: list[int], shift: float = 0.1) -> Changes:
    return Changes(
        keys=[target.keys[r] for r in rows],
        ids=[target.ids[r] for r in rows],
        vectors=unit_rows(target.corpus[rows] + shift),
        originals=target.corpus[rows],
        before=target.corpus[rows],
    )


def record(**extra: Any) -> dict[str, Any]:
    """A minimal apply record, as :func:`nudgekit.workflows.apply.apply_to_store` passes."""
    return {"id": new_id(), "kind": "apply", "created": "2026-01-01T00:00:00+00:00"} | extra


def write(target: Target, rows: list[int], shift: float = 0.1) -> tuple[dict[str, Any], Changes]:
    changes = changes_for(target, rows, shift)
    with target.open() as store, store.lock():
        store.recover()
        return store.write(changes, record()), changes


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
    np.testing.assert_allclose(vectors, target.corpus[[row[i] for i in ids]], atol=1e-6)


def test_current_reads_given_rows_and_leaves_out_missing_ones(target):
    with target.open() as store:
        missing = -1 if target.kind.int_ids else "no-such-id"
        got = store.current([target.keys[3], target.keys[7], missing])
    assert set(got) == {target.ids[3], target.ids[7]}
    np.testing.assert_allclose(got[target.ids[7]], target.corpus[7], atol=1e-6)


@pytest.mark.parametrize(
    ("kind", "metric"),
    [kind_param(k, m) for k, spec in KINDS.items() for m in spec.metrics],
)
def test_metric_is_the_one_the_store_is_configured_for(fast_path, kind, metric):
    with build_store(kind, fast_path, metric=metric).open() as store:
        info = store.metric()
    assert (info.name, info.declarable) == (metric, False)


@pytest.mark.parametrize("kind", [kind_param("lancedb")])
def test_a_lancedb_table_without_an_index_lets_the_user_declare_the_metric(fast_path, kind):
    with build_store(kind, fast_path, metric=None).open() as store:
        info = store.metric()
    assert info.name is None and info.declarable


def test_spec_must_name_a_known_kind():
    assert parse_spec("lancedb:/data/db") == ("lancedb", "/data/db")
    for bad in ("/data/db", "pinecone:x", "lancedb:"):
        with pytest.raises(StoreError, match="expected lancedb:PATH"):
            parse_spec(bad)


@pytest.mark.parametrize(
    ("kind", "kwargs", "message"),
    [
        kind_param("lancedb", {"table": "nope"}, r"table 'nope' not found .* \(tables: docs\)"),
        kind_param("lancedb", {"table": None}, "need --table"),
        kind_param("lancedb", {"table": "docs", "vector_column": "emb"}, "no column 'emb'"),
        kind_param("lancedb", {"table": "docs", "id_column": "key"}, "no column 'key'"),
        kind_param(
            "lancedb",
            {"table": "docs", "vector_column": "text"},
            "expected a fixed-size list",
        ),
        kind_param(
            "qdrant",
            {"table": "nope"},
            r"collection 'nope' not found .* \(collections: docs\)",
        ),
        kind_param("qdrant", {"table": "docs", "vector_column": "dense"}, "no vector 'dense'"),
        kind_param("faiss", {"table": "docs"}, "no tables or columns"),
    ],
)
def test_unknown_table_or_column_is_refused(fast_path, kind, kwargs, message):
    target = build_store(kind, fast_path)
    kwargs = dict(kwargs)
    table = kwargs.pop("table", target.table)
    with pytest.raises(StoreError, match=message):
        open_store(target.spec, table, **kwargs)


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_a_missing_store_is_refused(tmp_path, kind):
    spec = KINDS[kind].spec(tmp_path / "none")
    with pytest.raises(StoreError, match=r"no .* at"):
        open_store(spec, KINDS[kind].table)


# -- the write protocol --------------------------------------------------------------------
def test_write_changes_only_the_given_rows_and_keeps_their_originals(target):
    before = target.raw()
    rows = [3, 10, 42]
    done, changes = write(target, rows)
    after = target.raw()
    for k, r in enumerate(rows):
        np.testing.assert_allclose(after[target.ids[r]], changes.vectors[k], atol=1e-6)
    for i in set(before) - {target.ids[r] for r in rows}:
        np.testing.assert_array_equal(after[i], before[i])
    with target.open() as store:
        kept = store.bookkeeping()
    assert kept.ids.tolist() == sorted(target.ids[r] for r in rows)
    at, _ = kept.find([target.ids[r] for r in rows])
    np.testing.assert_array_equal(kept.originals[at], target.corpus[rows])
    assert (kept.digests[at] == digest(np.stack([after[target.ids[r]] for r in rows]))).all()
    assert (done["status"], done["seq"], done["n_written"], done["n_skipped"]) == ("done", 1, 3, 0)
    assert done["version_after"] == done["version_before"] + 1


def test_the_users_schema_and_default_search_are_untouched(target):
    query = target.corpus[5]
    assert target.search(query, 3)[0] == target.ids[5]
    schema = target.kind.schema(target)
    write(target, [5], shift=0.5)
    moved = unit_rows(target.corpus[[5]] + 0.5)[0]
    assert target.search(moved, 3)[0] == target.ids[5]  # the store's own search finds it
    assert target.kind.schema(target) == schema
    with target.open() as store, store.lock():
        store.rollback()
    assert target.search(query, 3)[0] == target.ids[5]


def test_an_empty_write_is_refused(target):
    with target.open() as store, pytest.raises(ValueError, match="changes nothing"):
        store.write(changes_for(target, []), record())


def test_a_row_changed_between_read_and_write_is_left_alone(target):
    changes = changes_for(target, [1, 2])
    edited = unit_rows(target.corpus[2:3] - 0.3)[0]
    target.kind.overwrite(target, target.keys[2], edited)  # after nudgekit read it
    with target.open() as store, store.lock():
        done = store.write(changes, record())
    assert (done["n_written"], done["n_skipped"]) == (1, 1)
    after = target.raw()
    np.testing.assert_allclose(after[target.ids[1]], changes.vectors[0], atol=1e-6)
    np.testing.assert_allclose(after[target.ids[2]], edited, atol=1e-6)


# -- rollback --------------------------------------------------------------------------------
def test_rollback_restores_the_rows_and_marks_the_apply(target):
    before = target.raw()
    applied, _ = write(target, [1, 2])
    with target.open() as store, store.lock():
        back = store.rollback()
        history = store.history()
    assert back["rolled_back"] == applied["id"] and back["n_restored"] == 2
    after = target.raw()
    for i in before:
        np.testing.assert_allclose(after[i], before[i], atol=1e-6)
    assert [(r["kind"], r["status"]) for r in history] == [
        ("apply", "rolled back"),
        ("rollback", "done"),
    ]
    with target.open() as store:
        assert len(store.bookkeeping()) == 0  # back to no originals kept
        with pytest.raises(ValueError, match="nothing to roll back"):
            store.rollback()


def test_rollback_is_row_wise_and_keeps_what_the_user_wrote_since(target):
    write(target, [1, 2, 3])
    edited = unit_rows(target.corpus[2:3] - 0.3)[0]
    target.kind.overwrite(target, target.keys[2], edited)  # re-embedded since
    target.kind.delete(target, [target.keys[3]])  # deleted since
    new_key = 99_999 if target.kind.int_ids else "new-doc"
    new_vector = unit_rows(target.corpus[7:8] + 1.0)
    target.kind.insert(target, [new_key], new_vector)  # added since
    target.kind.maintain(target)  # the store's own maintenance (LanceDB: optimize)
    with target.open() as store, store.lock():
        back = store.rollback()
    assert (back["n_restored"], back["n_changed_since"], back["n_deleted_since"]) == (1, 1, 1)
    after = target.raw()
    np.testing.assert_allclose(after[target.ids[1]], target.corpus[1], atol=1e-6)
    np.testing.assert_allclose(after[target.ids[2]], edited, atol=1e-6)
    assert target.ids[3] not in after
    np.testing.assert_allclose(after[str(new_key)], new_vector[0], atol=1e-6)


def test_rollback_goes_back_one_apply_at_a_time(target):
    write(target, [1])
    second, _ = write(target, [1, 4], shift=0.3)
    first_state = unit_rows(target.corpus[[1]] + 0.1)[0]
    with target.open() as store, store.lock():
        back = store.rollback()
    assert back["rolled_back"] == second["id"]
    after = target.raw()
    np.testing.assert_allclose(after[target.ids[1]], first_state, atol=1e-6)  # the first's
    np.testing.assert_allclose(after[target.ids[4]], target.corpus[4], atol=1e-6)
    with target.open() as store:
        kept = store.bookkeeping()
    assert kept.ids.tolist() == [target.ids[1]]  # the first apply's bookkeeping is back


# -- concurrency -----------------------------------------------------------------------------
def _try_lock(spec: str, table: str | None, queue: Any) -> None:
    try:
        with open_store(spec, table) as store, store.lock():
            queue.put("locked")
    except (LedgerError, StoreError) as err:
        queue.put(f"refused: {err}")


def test_a_second_writer_is_refused_while_the_lock_is_held(target):
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    with target.open() as store, store.lock():
        if target.kind.name == "qdrant":
            store.close()  # local mode locks its folder itself; release it for the probe
        other = context.Process(target=_try_lock, args=(target.spec, target.table, queue))
        other.start()
        other.join(120)
        answer = queue.get(timeout=5)
    assert answer.startswith("refused: ") and "another" in answer, answer


def test_digest_is_fixed_arithmetic():
    # stored digests must stay valid across numpy versions: pin the function's values
    v = np.array([[0.5, -0.25, 1.0], [0.0, -0.0, 1.0]], dtype=np.float32)
    assert digest(v).tolist() == [-4273615216954500919, 200579033938205409]
    assert digest(v).dtype == np.int64 and (digest(v) != 0).all()
    assert digest(v[:1])[0] != digest(v[:1] + np.float32(1e-7))[0]
