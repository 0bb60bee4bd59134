"""``apply_to_store`` / ``rollback_store`` / ``store_history`` and their commands, on real
LanceDB tables, Qdrant local-mode collections and FAISS index files."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

import nudgekit.cli._store  # noqa: F401  (registers apply, rollback, history)
from nudgekit import NudgeM, NudgeN
from nudgekit.cli import app
from nudgekit.core import check_relevance
from nudgekit.evaluation.metrics import retrieval_metrics
from nudgekit.evaluation.retrieval import search
from nudgekit.workflows.apply import apply_to_store, rollback_store, store_history

from .storekit import (
    ALL_KINDS,
    Target,
    build_store,
    kind_param,
    lance_rows,
    scratch_dir,
    unit_rows,
    write_labels,
)

runner = CliRunner()


@pytest.fixture
def fast_path(tmp_path):
    yield from scratch_dir(tmp_path)


@pytest.fixture(params=ALL_KINDS)
def target(request, fast_path) -> Target:
    return build_store(request.param, fast_path / request.param)


def run(target: Target, labels: Path, **kwargs: Any) -> dict[str, Any]:
    """``apply`` with NUDGE-N as in the paper (the store machinery is what these tests are
    about; γ searched on the validation queries unless given)."""
    return apply_to_store(
        target.spec, labels, table=target.table, **({"method": "nudge-n"} | kwargs)
    )


def expected(target: Target, corpus: np.ndarray, labels_train: list[int], **kwargs: Any):
    """What a fresh NUDGE-N fit on ``corpus`` with these training queries gives (γ searched
    on the validation queries, as apply does, unless ``gamma`` is given)."""
    p = target.problem
    model = NudgeN(**kwargs).fit(
        corpus, p.train_q[labels_train], [p.train_rel[j] for j in labels_train], p.val_q, p.val_rel
    )
    out = corpus.copy()
    out[model.changed_rows_] = model.changed_embeddings_
    return model, out


def state(target: Target) -> np.ndarray:
    return target.matrix()


def snapshot(target: Target) -> tuple[np.ndarray, Any]:
    """The store's vectors, and what else the user's store holds (schema, LanceDB versions)."""
    extra: Any = target.kind.schema(target)
    if target.kind.name == "lancedb":
        import lancedb

        table = lancedb.connect(target.path).open_table("docs")
        extra = (extra, len(table.list_versions()))
    return state(target), extra


def nothing_written(target: Target, before: tuple[np.ndarray, Any]) -> None:
    """The store holds what it held, and nudgekit left no trace anywhere."""
    np.testing.assert_array_equal(state(target), before[0])
    assert snapshot(target)[1] == before[1]
    assert store_history(target.spec, table=target.table) == []
    assert not target.kind.traces(target)


# -- what is written -----------------------------------------------------------------------
def test_apply_writes_exactly_the_rows_nudge_moves(target, fast_path):
    labels = write_labels(target, fast_path / "labels")
    report = run(target, labels)
    model, want = expected(target, target.corpus, list(range(len(target.problem.train_q))))
    assert report["gamma"] == model.gamma_ > 0 and report["gamma_searched"]
    assert report["n_written"] == report["n_nudged"] == model.n_changed_ > 0
    assert report["n_new_originals"] == model.n_changed_ and report["n_reverted"] == 0
    got = state(target)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
    untouched = np.setdiff1d(np.arange(len(target.corpus)), model.changed_rows_)
    np.testing.assert_array_equal(got[untouched], target.corpus[untouched])  # bit for bit


def test_applying_the_same_labels_again_writes_and_records_nothing(target, fast_path):
    labels = write_labels(target, fast_path / "labels")
    first = run(target, labels)
    after_first = state(target)
    again = run(target, labels)
    assert again["n_written"] == 0 and again["n_changed"] == first["n_changed"]
    assert not again["recorded"] and len(store_history(target.spec, table=target.table)) == 1
    np.testing.assert_array_equal(state(target), after_first)  # started from the originals
    rollback_store(target.spec, table=target.table)  # undoes the real apply, not a no-op
    np.testing.assert_array_equal(state(target), target.corpus)


def test_a_new_gamma_is_computed_from_the_originals_not_the_nudged_vectors(target, fast_path):
    labels = write_labels(target, fast_path / "labels")
    run(target, labels, gamma=0.3)
    run(target, labels)
    fresh = build_store(target.kind.name, fast_path / "fresh")
    run(fresh, labels)
    np.testing.assert_array_equal(state(target), state(fresh))


def test_adding_labels_touches_only_affected_rows_and_equals_a_fresh_fit(target, fast_path):
    n_train = len(target.problem.train_q)
    half = write_labels(target, fast_path / "half", train=slice(0, n_train // 2))
    full = write_labels(target, fast_path / "full")
    run(target, half)
    after_half = state(target)
    report = run(target, full)
    after_full = state(target)

    fresh = build_store(target.kind.name, fast_path / "fresh")
    run(fresh, full)
    np.testing.assert_array_equal(after_full, state(fresh))
    touched = np.flatnonzero(~np.all(after_half == after_full, axis=1))
    assert report["n_written"] == len(touched) > 0


def test_removing_labels_puts_rows_back_to_their_originals(target, fast_path):
    n_train = len(target.problem.train_q)
    run(target, write_labels(target, fast_path / "full"))
    kept = list(range(0, n_train, 2))
    report = run(target, write_labels(target, fast_path / "fewer", train=kept))
    model, want = expected(target, target.corpus, kept)
    assert report["gamma"] == model.gamma_
    got = state(target)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
    still_labelled = {r for j in kept for r in target.problem.train_rel[j]}
    gone = sorted({r for rel in target.problem.train_rel for r in rel} - still_labelled)
    assert report["n_reverted"] >= len(gone) > 0
    np.testing.assert_array_equal(got[gone], target.corpus[gone])  # exactly the originals


def test_new_and_deleted_documents_work(target, fast_path):
    labels = write_labels(target, fast_path / "labels")
    first = run(target, labels)
    assert first["n_written"] > 0
    p = target.problem
    # delete a nudged record (and the queries naming it); add two records and label one
    gone = p.train_rel[0][0]
    train = [j for j in range(len(p.train_q)) if gone not in p.train_rel[j]]
    # the first new record answers a training query it is near (v·G > 0: NUDGE moves it)
    rng = np.random.default_rng(7)
    near = p.train_q[train[0]] + 0.5 * unit_rows(rng.normal(size=(1, target.corpus.shape[1])))
    new_vectors = unit_rows(np.concatenate([near, rng.normal(size=(1, near.shape[1]))]))
    new_keys = [5000, 5001] if target.kind.int_ids else ["new0", "new1"]
    target.kind.delete(target, [target.keys[gone]])
    target.kind.insert(target, new_keys, new_vectors)
    relabelled = write_labels(target, fast_path / "relabelled", train=train)
    qrels = json.loads((relabelled / "qrels.json").read_text())
    for q in qrels.values():
        q.pop(target.ids[gone], None)
    qrels[f"train{train[0]}"][str(new_keys[0])] = 1
    (relabelled / "qrels.json").write_text(json.dumps(qrels))
    report = run(target, relabelled)

    # the same documents, never nudged, fitted on the same labels
    fresh = build_store(target.kind.name, fast_path / "fresh")
    fresh.kind.delete(fresh, [fresh.keys[gone]])
    fresh.kind.insert(fresh, new_keys, new_vectors)
    run(fresh, relabelled)
    got, want = target.raw(), fresh.raw()
    assert set(got) == set(want) and target.ids[gone] not in got
    assert all(np.array_equal(got[i], want[i]) for i in want)
    assert report["n_records"] == len(target.ids) + 1
    assert not np.array_equal(got[str(new_keys[0])], new_vectors[0])  # the new record moved


def test_a_row_re_embedded_since_is_taken_as_its_new_original(target, fast_path):
    labels = write_labels(target, fast_path / "labels")
    first = run(target, labels)
    model, _ = expected(target, target.corpus, list(range(len(target.problem.train_q))))
    row = int(model.changed_rows_[0])
    reembedded = unit_rows(target.corpus[row : row + 1] + 0.2)[0]
    target.kind.overwrite(target, target.keys[row], reembedded)
    report = run(target, labels)
    assert report["n_stale_originals"] == 1 and "changed outside nudgekit" in report["warnings"][0]
    corpus = target.corpus.copy()
    corpus[row] = reembedded
    _, want = expected(target, corpus, list(range(len(target.problem.train_q))))
    np.testing.assert_allclose(state(target)[row], want[row], rtol=0, atol=1e-6)
    assert first["n_written"] > 0


def test_test_split_quality_is_reported_before_and_after(target, fast_path):
    labels = write_labels(target, fast_path / "labels")
    report = run(target, labels)
    p = target.problem

    def quality(matrix: np.ndarray) -> dict[str, float]:
        rel = check_relevance(p.test_rel, "test", n_queries=len(p.test_q), n_records=len(matrix))
        _, idx = search(p.test_q, matrix, 100)
        return retrieval_metrics(idx, rel, ks=(1, 10, 100))

    before, after = quality(target.corpus), quality(state(target))
    for key in ("ndcg@10", "recall@10", "accuracy@1"):
        assert report["test_before"][key] == pytest.approx(before[key])
        assert report["test_after"][key] == pytest.approx(after[key])
    assert report["n_test_queries"] == len(p.test_q)


def test_dry_run_writes_nothing(target, fast_path):
    before = snapshot(target)
    report = run(target, write_labels(target, fast_path / "labels"), dry_run=True)
    assert report["n_written"] > 0 and report["dry_run"]
    nothing_written(target, before)


@pytest.mark.parametrize("kind", [kind_param("lancedb")])
def test_float16_lancedb_vectors_are_written_in_their_own_precision(fast_path, kind):
    import lancedb
    import pyarrow as pa

    target = build_store(kind, fast_path / "tmp")
    db_dir = fast_path / "f16"
    half = target.corpus.astype(np.float16)
    vectors = pa.FixedSizeListArray.from_arrays(pa.array(half.ravel()), 16)
    lancedb.connect(str(db_dir)).create_table(
        "docs", pa.table({"id": target.ids, "vector": vectors})
    )
    f16 = replace(target, spec=f"lancedb:{db_dir}", corpus=half.astype(np.float32))
    labels = write_labels(target, fast_path / "labels")
    assert run(f16, labels)["n_written"] > 0
    again = run(f16, labels)  # rounded to float16 before comparing: nothing left to write
    assert again["n_written"] == 0 and again["n_stale_originals"] == 0
    rollback_store(f16.spec, table="docs")
    np.testing.assert_array_equal(state(f16), half.astype(np.float32))


# -- rollback and history ------------------------------------------------------------------
def test_rollback_goes_back_one_apply_at_a_time(target, fast_path):
    n_train = len(target.problem.train_q)
    run(target, write_labels(target, fast_path / "half", train=slice(0, n_train // 2)))
    after_half = state(target)
    run(target, write_labels(target, fast_path / "full"))
    rollback_store(target.spec, table=target.table)
    np.testing.assert_array_equal(state(target), after_half)
    rollback_store(target.spec, table=target.table)
    np.testing.assert_array_equal(state(target), target.corpus)
    with pytest.raises(ValueError, match="nothing to roll back"):
        rollback_store(target.spec, table=target.table)
    history = store_history(target.spec, table=target.table)
    assert [(r["seq"], r["kind"], r["status"]) for r in history] == [
        (1, "apply", "rolled back"),
        (2, "apply", "rolled back"),
        (3, "rollback", "done"),
        (4, "rollback", "done"),
    ]
    assert [r["rolled_back_seq"] for r in history[2:]] == [2, 1]
    # and an apply after rollbacks starts from the originals again
    run(target, write_labels(target, fast_path / "full"))
    fresh = build_store(target.kind.name, fast_path / "fresh")
    run(fresh, write_labels(target, fast_path / "full"))
    np.testing.assert_array_equal(state(target), state(fresh))


def test_history_records_what_each_apply_did(target, fast_path):
    labels = write_labels(target, fast_path / "labels", meta={"model": "org/model-a", "dims": 16})
    report = run(target, labels, method="nudge-m")
    (entry,) = store_history(target.spec, table=target.table)
    for key in ("method", "gamma", "n_changed", "n_written", "model", "dim", "created"):
        assert entry[key] == report[key]
    assert entry["model"] == "org/model-a" and entry["dim"] == 16
    assert entry["version_after"] == entry["version_before"] + 1
    assert entry["gamma_searched"] and entry["n_written"] > 0


# -- the metric guard ----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kind", "metric", "allowed"),
    [
        kind_param("lancedb", "dot", True),
        kind_param("lancedb", "cosine", False),
        kind_param("lancedb", None, False),  # no index: the metric is unknown
        kind_param("qdrant", "dot", True),
        kind_param("qdrant", "cosine", False),
        kind_param("qdrant", "l2", False),
        kind_param("faiss", "dot", True),
        kind_param("faiss", "l2", False),
    ],
)
def test_nudge_m_is_written_only_where_search_is_by_dot_product(
    fast_path,
    kind,
    metric,
    allowed,
):
    target = build_store(kind, fast_path / "store", metric=metric)
    labels = write_labels(target, fast_path / "labels")
    before = snapshot(target)
    if allowed:
        assert run(target, labels, method="nudge-m")["n_written"] > 0
        return
    with pytest.raises(ValueError, match=r"refusing to write NUDGE-M output.*--force-metric"):
        run(target, labels, method="nudge-m")
    nothing_written(target, before)
    forced = run(target, labels, method="nudge-m", force_metric=True)
    assert forced["n_written"] > 0 and forced["metric_forced"]
    assert "--force-metric" in forced["warnings"][0]
    assert run(target, labels)["n_written"] > 0  # NUDGE-N (unit-norm) is fine anywhere


@pytest.mark.parametrize("kind", [kind_param("lancedb")])
def test_a_declared_lancedb_metric_is_recorded_for_later_applies(fast_path, kind):
    target = build_store(kind, fast_path / "store", metric=None)
    labels = write_labels(target, fast_path / "labels")
    first = run(target, labels, method="nudge-m", metric="dot")
    assert first["metric"] == "dot" and first["metric_source"] == "--metric (declared)"
    second = run(target, labels, method="nudge-m", gamma=0.2)
    assert second["metric"] == "dot" and second["n_written"] > 0


@pytest.mark.parametrize("kind", [kind_param("lancedb")])
def test_a_metric_contradicting_the_index_is_refused(fast_path, kind):
    target = build_store(kind, fast_path / "store", metric="cosine")
    with pytest.raises(ValueError, match=r"--metric dot contradicts .* vector index"):
        run(target, write_labels(target, fast_path / "labels"), metric="dot")


# -- bad inputs: a clear error, nothing written ----------------------------------------------
def test_label_ids_the_store_lacks_are_refused(target, fast_path):
    labels = write_labels(target, fast_path / "labels")
    qrels = json.loads((labels / "qrels.json").read_text())
    qrels["train3"]["ghost"] = 1
    (labels / "qrels.json").write_text(json.dumps(qrels))
    before = snapshot(target)
    with pytest.raises(ValueError, match=r"1 relevant document id\(s\) are not in .*'ghost'"):
        run(target, labels)
    nothing_written(target, before)


@pytest.mark.parametrize(
    ("kind", "problem", "message"),
    [
        kind_param("lancedb", "duplicate", "holds id 'doc1' twice"),
        kind_param("faiss", "duplicate", "holds id '1001' twice"),
        kind_param("lancedb", "zero", "id 'odd' is all zeros"),
        kind_param("faiss", "nan", "id '9999' contains NaN"),  # (LanceDB refuses NaN vectors)
    ],
)
def test_bad_store_rows_are_refused(fast_path, kind, problem, message):
    target = build_store(kind, fast_path / "store")
    labels = write_labels(target, fast_path / "labels")
    vector = {"duplicate": target.corpus[1], "nan": np.full(16, np.nan), "zero": np.zeros(16)}
    if problem == "duplicate":
        key = target.keys[1]
    else:
        key = 9999 if target.kind.int_ids else "odd"
    target.kind.insert(target, [key], np.asarray(vector[problem], dtype=np.float32)[None])
    before = snapshot(target)
    with pytest.raises(ValueError, match=message):
        run(target, labels)
    nothing_written(target, before)


def test_a_dimension_mismatch_is_refused(target, fast_path):
    labels = write_labels(target, fast_path / "labels")
    queries = np.load(labels / "queries.npy")
    np.save(labels / "queries.npy", np.pad(queries, ((0, 0), (0, 1))))
    before = snapshot(target)
    with pytest.raises(ValueError, match=r"dimension mismatch: .* 17 values per query .* 16"):
        run(target, labels)
    nothing_written(target, before)


def test_labels_from_another_model_are_refused(target, fast_path):
    run(target, write_labels(target, fast_path / "a", meta={"model": "org/model-a"}))
    other = write_labels(target, fast_path / "b", meta={"model": "org/model-b"})
    after = state(target)
    with pytest.raises(ValueError, match=r"model mismatch: .*'org/model-b'.*'org/model-a'"):
        run(target, other, gamma=0.2)
    np.testing.assert_array_equal(state(target), after)
    assert len(store_history(target.spec, table=target.table)) == 1
    assert run(target, other, gamma=0.2, force_model=True)["n_written"] > 0


@pytest.mark.parametrize("kind", [kind_param("lancedb")])
def test_labels_from_another_model_than_the_tables_embedding_function_are_refused(fast_path, kind):
    import lancedb

    target = build_store(kind, fast_path / "store")
    config = [{"name": "sentence-transformers", "model": {"name": "org/model-a"},
               "source_column": "text", "vector_column": "vector"}]  # fmt: skip
    data = lance_rows(target.keys, target.corpus)
    data = data.replace_schema_metadata({"embedding_functions": json.dumps(config)})
    lancedb.connect(str(fast_path / "own")).create_table("docs", data)
    own = replace(target, spec=f"lancedb:{fast_path / 'own'}")
    labels = write_labels(target, fast_path / "labels", meta={"model": "model-b"})
    with pytest.raises(ValueError, match="the table's embedding function"):
        run(own, labels)
    same = write_labels(target, fast_path / "same", meta={"model": "org/model-a"})
    assert run(own, same)["n_written"] > 0


@pytest.mark.parametrize(
    ("edit", "error", "message"),
    [
        (lambda d: (d / "splits.json").unlink(), FileNotFoundError, "missing splits.json"),
        (
            lambda d: (d / "splits.json").write_text(json.dumps({"train": ["train0"]})),
            ValueError,
            "no split named 'val'",
        ),
        (
            lambda d: (d / "qrels.json").write_text(
                json.dumps({**json.loads((d / "qrels.json").read_text()), "val0": {}})
            ),
            ValueError,
            "query 'val0' has no relevant record",
        ),
    ],
)
def test_incomplete_labels_are_refused(fast_path, edit, error, message):
    pytest.importorskip("lancedb")
    target = build_store("lancedb", fast_path / "store")
    labels = write_labels(target, fast_path / "labels")
    edit(labels)
    before = snapshot(target)
    with pytest.raises(error, match=message):
        run(target, labels, gamma=None)
    nothing_written(target, before)


# -- the commands --------------------------------------------------------------------------
def test_cli_apply_then_rollback_on_a_plain_id_vector_table(fast_path):
    # the shape of the external check: columns id (string) and vector (float32 list) only
    lancedb = pytest.importorskip("lancedb")
    import pyarrow as pa

    template = build_store("lancedb", fast_path / "tmp")
    db_dir = fast_path / "db"
    table = lancedb.connect(str(db_dir)).create_table(
        "T",
        pa.table(
            {
                "id": template.ids,
                "vector": pa.FixedSizeListArray.from_arrays(pa.array(template.corpus.ravel()), 16),
            }
        ),
    )
    labels = write_labels(template, fast_path / "labels")
    command = f"apply --store lancedb:{db_dir} --table T --labels {labels} --method nudge-n"
    applied = runner.invoke(app, command.split())
    assert applied.exit_code == 0, applied.output
    assert "nudge-n: γ =" in applied.output and "ndcg@10" in applied.output
    back = runner.invoke(app, ["rollback", "--store", f"lancedb:{db_dir}", "--table", "T"])
    assert back.exit_code == 0, back.output
    assert "rolled back apply #1" in back.output
    data = table.to_arrow()
    got = dict(zip(data.column("id").to_pylist(), data.column("vector").to_pylist(), strict=True))
    np.testing.assert_array_equal(np.array([got[i] for i in template.ids]), template.corpus)
    listed = runner.invoke(
        app, ["history", "--store", f"lancedb:{db_dir}", "--table", "T", "--json"]
    )
    assert [(r["kind"], r["status"]) for r in json.loads(listed.stdout)] == [
        ("apply", "rolled back"),
        ("rollback", "done"),
    ]


def test_cli_apply_json_and_history_table(fast_path):
    pytest.importorskip("faiss")
    target = build_store("faiss", fast_path / "store")
    labels = write_labels(target, fast_path / "labels")
    result = runner.invoke(
        app, ["apply", "--store", target.spec, "--labels", str(labels), "--gamma", "0.1", "--json"]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["n_written"] > 0 and report["store"] == target.spec
    listed = runner.invoke(app, ["history", "--store", target.spec])
    assert listed.exit_code == 0 and "nudge-cv" in listed.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--table", "nope"], "table 'nope' not found"),
        (["--table", "docs", "--method", "nudge-m"], "refusing to write NUDGE-M output"),
        (["--table", "docs", "--metric", "manhattan"], "--metric must be one of"),
    ],
)
def test_cli_errors_are_one_line_with_exit_code_2(fast_path, args, message):
    pytest.importorskip("lancedb")
    target = build_store("lancedb", fast_path / "store", metric=None)
    labels = write_labels(target, fast_path / "labels")
    result = runner.invoke(app, ["apply", "--store", target.spec, "--labels", str(labels), *args])
    assert result.exit_code == 2
    assert message in result.output and "Traceback" not in result.output


def test_nudge_m_output_is_what_nudge_m_computes(fast_path):
    pytest.importorskip("qdrant_client")
    target = build_store("qdrant", fast_path / "store")
    labels = write_labels(target, fast_path / "labels")
    run(target, labels, method="nudge-m", gamma=0.2)
    p = target.problem
    model = NudgeM(gamma=0.2).fit(target.corpus, p.train_q, p.train_rel)
    got = state(target)
    np.testing.assert_allclose(got[model.changed_rows_], model.changed_embeddings_, atol=1e-6)


def test_copied_store_directories_stay_independent(fast_path):
    # (guards the tests' own template copying: a store copy must not share files)
    pytest.importorskip("lancedb")
    a = build_store("lancedb", fast_path / "a")
    b = build_store("lancedb", fast_path / "b")
    run(a, write_labels(a, fast_path / "labels"))
    np.testing.assert_array_equal(state(b), b.corpus)
    shutil.rmtree(fast_path / "a")


# -- the user's store, as the user uses it ---------------------------------------------------
def test_the_stores_own_search_gives_the_improved_test_ranking(target, fast_path):
    labels = write_labels(target, fast_path / "labels")
    report = run(target, labels)
    p = target.problem
    row_of = {i: r for r, i in enumerate(target.ids)}
    relevance = check_relevance(
        p.test_rel, "test", n_queries=len(p.test_q), n_records=len(p.corpus)
    )

    def ndcg(indices: np.ndarray) -> float:
        return retrieval_metrics(indices, relevance, ks=(10,))["ndcg@10"]

    # the store's default search call, as its docs write it, after the apply
    found = np.array([[row_of[i] for i in target.search(q, 10)] for q in p.test_q])
    _, fitted = expected(target, target.corpus, list(range(len(p.train_q))))
    _, reference = search(p.test_q, fitted, 10)  # what `nudgekit fit` + eval computes
    assert ndcg(found) == pytest.approx(ndcg(reference), abs=1e-4)
    assert report["test_after"]["ndcg@10"] == pytest.approx(ndcg(reference), abs=1e-4)
    assert report["test_after"]["ndcg@10"] > report["test_before"]["ndcg@10"]


def test_inserts_and_maintenance_since_the_apply_survive_its_rollback(target, fast_path):
    run(target, write_labels(target, fast_path / "labels"))
    new_key = 99_999 if target.kind.int_ids else "added-later"
    added = unit_rows(np.random.default_rng(3).normal(size=(1, target.corpus.shape[1])))
    target.kind.insert(target, [new_key], added)
    target.kind.maintain(target)  # e.g. LanceDB's table.optimize(): compaction, re-indexing
    back = rollback_store(target.spec, table=target.table)
    assert back["n_restored"] > 0 and back["n_changed_since"] == back["n_deleted_since"] == 0
    after = target.raw()
    np.testing.assert_allclose(np.stack([after[i] for i in target.ids]), target.corpus, atol=1e-6)
    np.testing.assert_allclose(after[str(new_key)], added[0], atol=1e-6)


@pytest.mark.parametrize("kind", [kind_param("lancedb")])
def test_history_and_rollback_need_only_the_store_and_table(fast_path, kind):
    import lancedb
    import pyarrow as pa

    template = build_store(kind, fast_path / "tmp")
    db_dir = fast_path / "db"
    vectors = pa.FixedSizeListArray.from_arrays(pa.array(template.corpus.ravel()), 16)
    lancedb.connect(str(db_dir)).create_table(
        "T", pa.table({"key": template.ids, "emb": vectors, "title": template.ids})
    )
    labels = write_labels(template, fast_path / "labels")
    spec = f"lancedb:{db_dir}"
    apply_to_store(spec, labels, table="T", id_column="key", vector_column="emb")
    (entry,) = store_history(spec, table="T")  # no column options
    assert entry["columns"] == {"id_column": "key", "vector_column": "emb"}
    rollback_store(spec, table="T")
    data = lancedb.connect(str(db_dir)).open_table("T").to_arrow()
    assert data.schema.names == ["key", "emb", "title"]
    got = dict(zip(data.column("key").to_pylist(), data.column("emb").to_pylist(), strict=True))
    np.testing.assert_array_equal(np.array([got[i] for i in template.ids]), template.corpus)


@pytest.mark.parametrize("kind", [kind_param("lancedb")])
def test_lancedb_ann_index_is_brought_up_to_date_or_the_user_is_told(fast_path, kind):
    import lancedb

    target = build_store(kind, fast_path / "a", metric=None)
    table = lancedb.connect(target.path).open_table("docs")
    table.create_index(metric="dot", num_partitions=2, num_sub_vectors=4, index_type="IVF_PQ")
    labels = write_labels(target, fast_path / "labels")
    report = run(target, labels)
    assert report["n_written"] > 0 and "updated" in report["index"]
    stats = table.index_stats(table.list_indices()[0].name)
    assert stats.num_unindexed_rows == 0  # the rewritten rows are in the index again
    # searched through the index, the nudged table ranks a test query's answer higher
    p = target.problem
    q, answer = p.test_q[0], target.ids[p.test_rel[0][0]]
    ranks = [i["id"] for i in table.search(q).distance_type("dot").limit(300).to_list()]
    raw = np.argsort(-(target.corpus @ q), kind="stable")
    assert ranks.index(answer) <= int(np.flatnonzero(raw == p.test_rel[0][0])[0])

    later = build_store(kind, fast_path / "b", metric=None)
    lancedb.connect(later.path).open_table("docs").create_index(
        metric="dot", num_partitions=2, num_sub_vectors=4, index_type="IVF_PQ"
    )
    hint = run(later, labels, reindex=False)["index"]
    assert "outside the vector index" in hint and ".optimize()" in hint


@pytest.mark.parametrize("kind", [kind_param("lancedb")])
def test_lancedb_rollback_to_a_version_restores_it_exactly(fast_path, kind):
    import lancedb

    target = build_store(kind, fast_path / "a")
    table = lancedb.connect(target.path).open_table("docs")
    start = table.version
    run(target, write_labels(target, fast_path / "labels"))
    target.kind.insert(target, ["later"], target.corpus[:1])
    record = rollback_store(target.spec, table="docs", to_version=start)
    assert record["kind"] == "restore" and record["restored_version"] == start
    assert "later" not in target.raw()  # exact: the later insert is gone too
    np.testing.assert_array_equal(state(target), target.corpus)
    assert [r["kind"] for r in store_history(target.spec, table="docs")] == ["apply", "restore"]
    with pytest.raises(ValueError, match="has no version 999"):
        rollback_store(target.spec, table="docs", to_version=999)


def test_apply_through_the_stores_own_search_is_the_exact_apply(target, fast_path):
    # a small store, where the store's own search finds every competitor: the same γ and
    # vectors as the exact pass, from candidates scored exactly in the one read
    labels = write_labels(target, fast_path / "labels")
    report = run(target, labels, corpus_pass="ann")
    model, want = expected(target, target.corpus, list(range(len(target.problem.train_q))))
    info = report["pass"]
    assert info["kind"] == "ann" and info["index"] == "the store's own search"
    assert info["recall_top1"] == 1.0 and info["n_sample"] == len(target.problem.val_q)
    assert report["gamma"] == model.gamma_ > 0
    np.testing.assert_allclose(state(target), want, rtol=0, atol=1e-6)
    assert store_history(target.spec, table=target.table)[-1]["pass"]["kind"] == "ann"


def test_cli_apply_pass_ann_reports_the_pass(fast_path):
    target = build_store("lancedb", fast_path / "lancedb")
    labels = write_labels(target, fast_path / "labels")
    args = ["apply", "--store", target.spec, "--table", "docs", "--labels", str(labels)]
    result = runner.invoke(app, [*args, "--pass", "ann", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["pass"]["kind"] == "ann"
    bad = runner.invoke(app, [*args, "--pass", "fast"])
    assert bad.exit_code == 2 and "unknown pass 'fast'" in bad.stderr


@pytest.mark.parametrize("kind", [kind_param("lancedb")])
def test_apply_pass_ann_through_a_lancedb_ivf_pq_index(fast_path, kind):
    # the table's IVF_PQ index proposes the candidates (probed wide, re-ranked on the full
    # vectors); every score is exact, so with all its 2 partitions probed the fit is exact
    import lancedb
    from lancedb.index import IvfPq

    from nudgekit.stores.lancedb import LanceDBStore

    target = build_store(kind, fast_path / "a", metric=None)
    lancedb.connect(target.path).open_table("docs").create_index(
        "vector", config=IvfPq(distance_type="cosine", num_partitions=2, num_sub_vectors=4)
    )
    labels = write_labels(target, fast_path / "labels")
    with LanceDBStore(target.path, "docs") as store:
        answers = store.search(target.problem.val_q[:3], 5)
    assert [len(a) for a in answers] == [5, 5, 5]
    exact = np.argsort(-(target.corpus @ target.problem.val_q[:3].T), axis=0, kind="stable")
    assert [a[0] for a in answers] == [target.keys[i] for i in exact[0]]  # re-ranked: exact
    report = run(target, labels, corpus_pass="ann", dry_run=True)
    assert report["pass"]["kind"] == "ann" and report["pass"]["recall_top1"] == 1.0
    model, _ = expected(target, target.corpus, list(range(len(target.problem.train_q))))
    assert report["gamma"] == model.gamma_
