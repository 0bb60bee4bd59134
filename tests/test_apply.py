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

from .test_stores import (
    KINDS,
    Target,
    build_store,
    faiss,
    lance_rows,
    lancedb,
    matrix_of,
    models,
    overwrite,
    pa,
    raw_vectors,
    scratch_dir,
    unit_rows,
    write_labels,
)

GAMMA = 0.1
runner = CliRunner()


@pytest.fixture
def fast_path(tmp_path):
    yield from scratch_dir(tmp_path)


@pytest.fixture(params=KINDS)
def target(request, fast_path) -> Target:
    return build_store(request.param, fast_path / request.param)


def run(target: Target, labels: Path, **kwargs: Any) -> dict[str, Any]:
    return apply_to_store(target.spec, labels, table=target.table, **({"gamma": GAMMA} | kwargs))


def expected(target: Target, corpus: np.ndarray, labels_train: list[int], **kwargs: Any):
    """What a fresh NUDGE-N fit (fixed γ) on ``corpus`` with these training queries gives."""
    p = target.problem
    model = NudgeN(gamma=GAMMA, **kwargs).fit(
        corpus, p.train_q[labels_train], [p.train_rel[j] for j in labels_train]
    )
    out = corpus.copy()
    out[model.changed_rows_] = model.changed_embeddings_
    return model, out


def state(target: Target) -> np.ndarray:
    return matrix_of(target, raw_vectors(target))


def snapshot(target: Target) -> tuple[np.ndarray, int]:
    """The store's vectors, and (LanceDB) its number of versions."""
    versions = 0
    if target.kind == "lancedb":
        table = lancedb.connect(target.spec.partition(":")[2]).open_table("docs")
        versions = len(table.list_versions())
    return state(target), versions


def nothing_written(target: Target, before: tuple[np.ndarray, int]) -> None:
    """The store holds what it held, and nudgekit left no trace in it."""
    np.testing.assert_array_equal(state(target), before[0])
    assert store_history(target.spec, table=target.table) == []
    if target.kind == "lancedb":
        table = lancedb.connect(target.spec.partition(":")[2]).open_table("docs")
        assert not [c for c in table.schema.names if c.startswith("nudgekit")]
        assert len(table.list_versions()) == before[1]
    else:
        sidecar = (
            target.root / "qdrant" / ".nudgekit"
            if target.kind == "qdrant"
            else target.root / "index.faiss.nudgekit"
        )
        assert not sidecar.exists()


# -- what is written -----------------------------------------------------------------------
def test_apply_writes_exactly_the_rows_nudge_moves(target, fast_path):
    labels = write_labels(target, fast_path / "labels")
    report = run(target, labels)
    model, want = expected(target, target.corpus, list(range(len(target.problem.train_q))))
    assert report["n_written"] == report["n_nudged"] == model.n_changed_ > 0
    assert report["n_new_originals"] == model.n_changed_ and report["n_reverted"] == 0
    got = state(target)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
    untouched = np.setdiff1d(np.arange(len(target.corpus)), model.changed_rows_)
    np.testing.assert_array_equal(got[untouched], target.corpus[untouched])  # bit for bit


def test_applying_the_same_labels_again_writes_nothing(target, fast_path):
    labels = write_labels(target, fast_path / "labels")
    first = run(target, labels)
    after_first = state(target)
    again = run(target, labels)
    assert again["n_written"] == 0 and again["n_changed"] == first["n_changed"]
    np.testing.assert_array_equal(state(target), after_first)  # started from the originals


def test_a_new_gamma_is_computed_from_the_originals_not_the_nudged_vectors(target, fast_path):
    labels = write_labels(target, fast_path / "labels")
    run(target, labels, gamma=0.3)
    run(target, labels, gamma=GAMMA)
    fresh = build_store(target.kind, fast_path / "fresh")
    run(fresh, labels, gamma=GAMMA)
    np.testing.assert_array_equal(state(target), state(fresh))


def test_adding_labels_touches_only_affected_rows_and_equals_a_fresh_fit(target, fast_path):
    n_train = len(target.problem.train_q)
    half = write_labels(target, fast_path / "half", train=slice(0, n_train // 2))
    full = write_labels(target, fast_path / "full")
    run(target, half)
    after_half = state(target)
    report = run(target, full)
    after_full = state(target)

    fresh = build_store(target.kind, fast_path / "fresh")
    run(fresh, full)
    np.testing.assert_array_equal(after_full, state(fresh))
    touched = np.flatnonzero(~np.all(after_half == after_full, axis=1))
    assert report["n_written"] == len(touched) > 0
    # only records some added query points to can move
    added = {r for j in range(n_train // 2, n_train) for r in target.problem.train_rel[j]}
    assert set(touched.tolist()) <= added
    assert len(touched) < len(added) + report["n_reverted"] or report["n_reverted"] == 0


def test_removing_labels_puts_rows_back_to_their_originals(target, fast_path):
    n_train = len(target.problem.train_q)
    run(target, write_labels(target, fast_path / "full"))
    kept = list(range(0, n_train, 2))
    report = run(target, write_labels(target, fast_path / "fewer", train=kept))
    _, want = expected(target, target.corpus, kept)
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
    new_vectors = unit_rows(np.random.default_rng(7).normal(size=(2, target.corpus.shape[1])))
    new_keys = ["new0", "new1"] if target.kind == "lancedb" else [5000, 5001]
    delete_docs(target, [target.keys[gone]])
    add_docs(target, new_keys, new_vectors)
    train = [j for j in range(len(p.train_q)) if gone not in p.train_rel[j]]
    relabelled = write_labels(target, fast_path / "relabelled", train=train)
    qrels = json.loads((relabelled / "qrels.json").read_text())
    for q in qrels.values():
        q.pop(target.ids[gone], None)
    qrels["train0" if 0 in train else f"train{train[0]}"][str(new_keys[0])] = 1
    (relabelled / "qrels.json").write_text(json.dumps(qrels))
    report = run(target, relabelled)

    # the same documents, never nudged, fitted on the same labels
    fresh = build_store(target.kind, fast_path / "fresh")
    delete_docs(fresh, [fresh.keys[gone]])
    add_docs(fresh, new_keys, new_vectors)
    run(fresh, relabelled)
    got, want = raw_vectors(target), raw_vectors(fresh)
    assert set(got) == set(want) and target.ids[gone] not in got
    assert all(np.array_equal(got[i], want[i]) for i in want)
    assert report["n_records"] == len(target.ids) + 1
    assert not np.array_equal(got[str(new_keys[0])], new_vectors[0])  # the new record moved


def delete_docs(target: Target, keys: list[Any]) -> None:
    path = target.spec.partition(":")[2]
    if target.kind == "lancedb":
        table = lancedb.connect(path).open_table("docs")
        table.delete(" OR ".join(f"id = '{k}'" for k in keys))
    elif target.kind == "qdrant":
        from qdrant_client import QdrantClient

        client = QdrantClient(path=path)
        client.delete("docs", points_selector=models.PointIdsList(points=keys))
        client.close()
    else:
        index = faiss.read_index(path)
        index.remove_ids(np.asarray(keys, dtype=np.int64))
        faiss.write_index(index, path)


def add_docs(target: Target, keys: list[Any], vectors: np.ndarray) -> None:
    path = target.spec.partition(":")[2]
    if target.kind == "lancedb":
        lancedb.connect(path).open_table("docs").add(lance_rows(keys, vectors))
    elif target.kind == "qdrant":
        from qdrant_client import QdrantClient

        client = QdrantClient(path=path)
        client.upsert(
            "docs",
            points=[
                models.PointStruct(id=k, vector=v.tolist())
                for k, v in zip(keys, vectors, strict=True)
            ],
        )
        client.close()
    else:
        index = faiss.read_index(path)
        index.add_with_ids(vectors, np.asarray(keys, dtype=np.int64))
        faiss.write_index(index, path)


def test_a_row_re_embedded_since_is_taken_as_its_new_original(target, fast_path):
    labels = write_labels(target, fast_path / "labels")
    first = run(target, labels)
    model, _ = expected(target, target.corpus, list(range(len(target.problem.train_q))))
    row = int(model.changed_rows_[0])
    reembedded = unit_rows(target.corpus[row : row + 1] + 0.2)[0]
    overwrite(target, target.keys[row], reembedded)
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


def test_float16_lancedb_vectors_are_written_in_their_own_precision(fast_path):
    target = build_store("lancedb", fast_path / "tmp")
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
    fresh = build_store(target.kind, fast_path / "fresh")
    run(fresh, write_labels(target, fast_path / "full"))
    np.testing.assert_array_equal(state(target), state(fresh))


def test_history_records_what_each_apply_did(target, fast_path):
    labels = write_labels(target, fast_path / "labels", meta={"model": "org/model-a", "dims": 16})
    report = run(
        target, labels, method="nudge-m", metric="dot" if target.kind == "lancedb" else None
    )
    (entry,) = store_history(target.spec, table=target.table)
    for key in ("method", "gamma", "n_changed", "n_written", "model", "dim", "created"):
        assert entry[key] == report[key]
    assert entry["model"] == "org/model-a" and entry["dim"] == 16
    assert entry["version_before"] != entry["version_after"]


# -- the metric guard ----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kind", "metric", "allowed"),
    [
        ("lancedb", "dot", True),
        ("lancedb", "cosine", False),
        ("lancedb", None, False),  # no index: the metric is unknown
        ("qdrant", "dot", True),
        ("qdrant", "cosine", False),
        ("qdrant", "l2", False),
        ("faiss", "dot", True),
        ("faiss", "l2", False),
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


def test_a_declared_lancedb_metric_is_recorded_for_later_applies(fast_path):
    target = build_store("lancedb", fast_path / "store", metric=None)
    labels = write_labels(target, fast_path / "labels")
    first = run(target, labels, method="nudge-m", metric="dot")
    assert first["metric"] == "dot" and first["metric_source"] == "--metric (declared)"
    second = run(target, labels, method="nudge-m", gamma=0.2)
    assert second["metric"] == "dot" and second["n_written"] > 0


def test_a_metric_contradicting_the_index_is_refused(fast_path):
    target = build_store("lancedb", fast_path / "store", metric="cosine")
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
        ("lancedb", "duplicate", "holds id 'doc1' twice"),
        ("faiss", "duplicate", "holds id '1001' twice"),
        ("lancedb", "zero", "id 'odd' is all zeros"),
        ("faiss", "nan", "id '9999' contains NaN"),  # (LanceDB itself refuses NaN vectors)
    ],
)
def test_bad_store_rows_are_refused(fast_path, kind, problem, message):
    target = build_store(kind, fast_path / "store")
    labels = write_labels(target, fast_path / "labels")
    vector = {"duplicate": target.corpus[1], "nan": np.full(16, np.nan), "zero": np.zeros(16)}
    if problem == "duplicate":
        key = target.keys[1]
    else:
        key = "odd" if kind == "lancedb" else 9999
    add_docs(target, [key], np.asarray(vector[problem], dtype=np.float32)[None])
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


def test_labels_from_another_model_than_the_tables_embedding_function_are_refused(
    fast_path,
):
    target = build_store("lancedb", fast_path / "store")
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
    target = build_store("faiss", fast_path / "store")
    labels = write_labels(target, fast_path / "labels")
    result = runner.invoke(
        app, ["apply", "--store", target.spec, "--labels", str(labels), "--gamma", "0.1", "--json"]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["n_written"] > 0 and report["store"] == target.spec
    listed = runner.invoke(app, ["history", "--store", target.spec])
    assert listed.exit_code == 0 and "nudge-n" in listed.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--table", "nope"], "table 'nope' not found"),
        (["--table", "docs", "--method", "nudge-m"], "refusing to write NUDGE-M output"),
        (["--table", "docs", "--metric", "manhattan"], "--metric must be one of"),
    ],
)
def test_cli_errors_are_one_line_with_exit_code_2(fast_path, args, message):
    target = build_store("lancedb", fast_path / "store", metric=None)
    labels = write_labels(target, fast_path / "labels")
    result = runner.invoke(app, ["apply", "--store", target.spec, "--labels", str(labels), *args])
    assert result.exit_code == 2
    assert message in result.output and "Traceback" not in result.output


def test_nudge_m_output_is_what_nudge_m_computes(fast_path):
    target = build_store("qdrant", fast_path / "store")
    labels = write_labels(target, fast_path / "labels")
    run(target, labels, method="nudge-m", gamma=0.2)
    p = target.problem
    model = NudgeM(gamma=0.2).fit(target.corpus, p.train_q, p.train_rel)
    got = state(target)
    np.testing.assert_allclose(got[model.changed_rows_], model.changed_embeddings_, atol=1e-6)


def test_copied_store_directories_stay_independent(fast_path):
    # (guards the tests' own template copying: a store copy must not share files)
    a = build_store("lancedb", fast_path / "a")
    b = build_store("lancedb", fast_path / "b")
    run(a, write_labels(a, fast_path / "labels"))
    np.testing.assert_array_equal(state(b), b.corpus)
    shutil.rmtree(fast_path / "a")
