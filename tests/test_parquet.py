"""Parquet corpus layout: convert, read block by block, fit with the local engine.

The local engine must give exactly what ``NudgeN``/``NudgeM.fit`` give on the same data
held as ``corpus.npy``: same γ and curve, same changed records, embeddings within 1e-6.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

pa = pytest.importorskip("pyarrow", reason="the Parquet layout needs pyarrow (nudgekit[scale])")
import pyarrow.parquet as pq  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from nudgekit import NudgeM, NudgeN  # noqa: E402
from nudgekit.core import NudgeIN, NudgeMN, NudgeNClustered, NudgeS, PassResult  # noqa: E402
from nudgekit.engines import EngineSettings, fit  # noqa: E402
from nudgekit.io.dataset import load_dataset  # noqa: E402
from nudgekit.io.parquet import (  # noqa: E402
    CorpusError,
    convert_to_parquet,
    id_bytes,
    load_parquet_dataset,
    open_corpus,
)
from nudgekit.workflows.evaluate import evaluate_dataset  # noqa: E402
from nudgekit.workflows.fit import fit_dataset  # noqa: E402

from .test_dataset import Written, write_dataset  # noqa: E402

METHODS = {"nudge-n": NudgeN, "nudge-m": NudgeM}


# -- helpers shared with test_ray_engine.py -----------------------------------------------------
def make_datasets(root: Path, *, shards: int = 3, row_group_rows: int = 64, **problem):
    """An embedded dataset under ``root/npy`` and its Parquet copy under ``root/pq``."""
    written = write_dataset(root / "npy", **problem)
    convert_to_parquet(root / "npy", root / "pq", shards=shards, row_group_rows=row_group_rows)
    return written, root / "pq"


def reference_fit(written: Written, model):
    """The single-process path: ``model.fit`` on corpus.npy with the dataset's splits."""
    data = load_dataset(written.root)
    train = data.split("train")
    val = data.split("val") if model.searches_gamma else None
    model.fit(
        data.corpus,
        train.queries,
        train.relevance,
        val.queries if val else None,
        val.relevance if val else None,
    )
    return model


def assert_same_fit(ref, written: Written, model) -> None:
    """Same γ, curve, changed records (by id and row), embeddings within 1e-6."""
    assert model.gamma_ == ref.gamma_
    assert model.validation_curve_ == ref.validation_curve_
    np.testing.assert_array_equal(model.changed_rows_, ref.changed_rows_)
    changed_ids = [i.decode("utf-8") for i in model.changed_ids_.tolist()]
    assert changed_ids == [written.corpus_ids[i] for i in ref.changed_rows_]
    np.testing.assert_allclose(model.changed_embeddings_, ref.changed_embeddings_, atol=1e-6)
    np.testing.assert_allclose(model.original_embeddings_, ref.original_embeddings_, atol=1e-6)
    assert model.n_changed_ == ref.n_changed_ > 0


def write_shard(path: Path, ids, vectors, vector_type=None) -> None:
    """One hand-made shard (``vector_type`` overrides the fixed-size list type)."""
    vectors = np.asarray(vectors, dtype=np.float32)
    if vector_type is None:
        column = pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), vectors.shape[1])
    else:
        column = pa.array([list(v) for v in vectors], type=vector_type)
    pq.write_table(pa.table({"id": pa.array(ids, pa.string()), "vector": column}), path)


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    return make_datasets(tmp_path_factory.mktemp("data"))


# -- convert -------------------------------------------------------------------------------------
def test_convert_writes_shards_in_corpus_order_and_copies_the_rest(datasets):
    written, pq_dir = datasets
    files = sorted((pq_dir / "corpus").glob("*.parquet"))
    assert [f.name for f in files] == [f"part-{i:05d}.parquet" for i in range(3)]
    table = pa.concat_tables(pq.read_table(f) for f in files)
    assert table.schema.field("vector").type == pa.list_(pa.float32(), 16)
    assert table.column("id").to_pylist() == written.corpus_ids
    vectors = table.column("vector").combine_chunks().flatten().to_numpy().reshape(-1, 16)
    np.testing.assert_array_equal(vectors, written.problem.corpus)
    assert pq.ParquetFile(files[0]).metadata.num_row_groups == 4  # 200 rows, 64 per group
    for name in ("queries.npy", "query_ids.json", "qrels.json", "splits.json"):
        assert (pq_dir / name).read_bytes() == (written.root / name).read_bytes()
    assert not (pq_dir / "corpus.npy").exists()


def test_convert_refuses_a_directory_that_holds_a_corpus(datasets):
    written, pq_dir = datasets
    with pytest.raises(ValueError, match="already holds a corpus"):
        convert_to_parquet(written.root, pq_dir, shards=2)


def test_convert_cli(datasets, tmp_path):
    import nudgekit.cli._scale  # noqa: F401  (registers `convert` on the app)
    from nudgekit.cli import app

    written, _ = datasets
    result = CliRunner().invoke(
        app, ["convert", str(written.root), "--to", "parquet", "--shards", "2", "--out",
              str(tmp_path / "o"), "--quiet"]
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert len(list((tmp_path / "o/corpus").glob("*.parquet"))) == 2
    bad = CliRunner().invoke(app, ["convert", str(written.root), "--to", "csv", "--out", "x"])
    assert bad.exit_code == 2 and "only parquet" in bad.output


# -- reading ------------------------------------------------------------------------------------
def test_blocks_are_bounded_and_never_cross_shards(datasets):
    _, pq_dir = datasets
    corpus = open_corpus(pq_dir / "corpus", dim=16)
    assert corpus.shape == (600, 16)
    blocks = list(corpus.blocks(block_rows=50))
    assert max(len(b.vectors) for b in blocks) <= 50
    assert [b.start for b in blocks] == list(np.cumsum([0] + [len(b.vectors) for b in blocks])[:-1])
    for b in blocks:  # each block inside one shard
        shard = int(np.searchsorted(corpus.offsets, b.start, side="right")) - 1
        assert corpus.offsets[shard] <= b.start < b.start + len(b) <= corpus.offsets[shard + 1]
    fragments = corpus.fragments(target_rows=100)
    assert sum(f.n_rows for f in fragments) == 600
    assert all(f.n_rows <= 100 or len(f.row_groups) == 1 for f in fragments)


def test_id_bytes_keeps_order_and_handles_slices_and_unicode():
    ids = pa.array(["b", "a", "é9", "", "longer-id"])
    out = id_bytes(ids.slice(1, 3))
    assert out.tolist() == [b"a", "é9".encode(), b""]
    assert np.argsort(id_bytes(ids), kind="stable").tolist() == [3, 1, 0, 4, 2]


# -- fitting: identical to the in-memory path ----------------------------------------------------
@pytest.mark.parametrize(
    ("method", "kwargs"),
    [("nudge-n", {}), ("nudge-m", {}), ("nudge-n", {"gamma": 0.1}), ("nudge-m", {"gamma": 0.2})],
)
def test_local_engine_matches_the_in_memory_fit(datasets, method, kwargs):
    written, pq_dir = datasets
    ref = reference_fit(written, METHODS[method](**kwargs))
    fitted = fit(
        METHODS[method](**kwargs), load_parquet_dataset(pq_dir), EngineSettings(block_rows=100)
    )
    assert_same_fit(ref, written, fitted)


@pytest.mark.parametrize(
    "make_model",
    [
        lambda: NudgeNClustered(n_clusters=3),
        lambda: NudgeMN(),
        lambda: NudgeS(),
        lambda: NudgeIN(n_iter=20),
    ],
    ids=["clustered", "mn", "s", "in"],
)
def test_local_engine_fits_the_variants_as_their_own_fit_does(datasets, make_model):
    # the engines meet the estimators at fit_from_pass, which every variant inherits
    written, pq_dir = datasets
    ref = reference_fit(written, make_model())
    fitted = fit(make_model(), load_parquet_dataset(pq_dir), EngineSettings(block_rows=100))
    assert_same_fit(ref, written, fitted)
    if isinstance(ref, NudgeNClustered):
        np.testing.assert_array_equal(fitted.cluster_gammas_, ref.cluster_gammas_)


def test_fit_from_pass_checks_what_the_pass_returned(datasets):
    written, _ = datasets
    data = load_dataset(written.root)
    model = NudgeN()
    problem = data.fit_problem()
    tracked = model.tracked(problem)
    d = data.corpus.shape[1]
    n_val = len(problem.val.queries)
    good = PassResult(
        np.zeros((n_val, model.fixed_k), np.float32),
        tracked,
        None,
        np.zeros((len(tracked), d), np.float32),
        len(data.corpus),
    )
    with pytest.raises(ValueError, match="exactly the tracked records"):
        model.fit_from_pass(problem, replace(good, rows=tracked[1:]))
    with pytest.raises(ValueError, match="tracked vectors have shape"):
        model.fit_from_pass(problem, replace(good, vectors=good.vectors[1:]))
    with pytest.raises(ValueError, match="fixed scores of shape"):
        model.fit_from_pass(problem, replace(good, fixed=np.zeros((n_val, 2), np.float32)))


def test_top_k_fixed_scores_float16_corpus_and_many_small_shards(tmp_path):
    # val_k = 3 keeps three fixed scores per query; on this problem it picks γ > 0
    written, pq_dir = make_datasets(
        tmp_path, shards=7, row_group_rows=10, corpus_dtype=np.float16, noise=0.9
    )
    ref = reference_fit(written, NudgeN(val_k=3))
    fitted = fit(NudgeN(val_k=3), load_parquet_dataset(pq_dir), EngineSettings(block_rows=33))
    assert_same_fit(ref, written, fitted)


def test_fit_dataset_writes_changed_rows_as_parquet(datasets, tmp_path):
    written, pq_dir = datasets
    report = fit_dataset(pq_dir, tmp_path / "out", method="nudge-n")
    reference = fit_dataset(written.root, tmp_path / "ref", method="nudge-n")
    assert not (tmp_path / "out/embeddings.npy").exists()
    table = pq.read_table(tmp_path / "out/changed.parquet")
    assert table.column_names == ["id", "vector", "original"]
    assert table.num_rows == report["n_changed"] == reference["n_changed"]
    rows = np.array([written.corpus_ids.index(i) for i in table.column("id").to_pylist()])
    full = np.load(tmp_path / "ref/embeddings.npy")
    new = table.column("vector").combine_chunks().flatten().to_numpy().reshape(-1, 16)
    original = table.column("original").combine_chunks().flatten().to_numpy().reshape(-1, 16)
    np.testing.assert_allclose(new, full[rows], atol=1e-6)
    corpus = written.problem.corpus[rows]
    np.testing.assert_allclose(
        original, corpus / np.linalg.norm(corpus, axis=1, keepdims=True), atol=1e-6
    )
    for key in ("gamma", "validation_accuracy", "validation_curve", "n_val_queries"):
        assert report[key] == reference[key]
    saved = json.loads((tmp_path / "out/fit.json").read_text())
    assert saved["engine"] == "local" and saved["corpus_format"] == "parquet"
    assert saved["changed"].endswith("changed.parquet") and saved["embeddings"] is None


# -- evaluation: the same numbers as on the .npy layout ------------------------------------------
def test_eval_on_parquet_matches_the_npy_layout_before_and_after_a_fit(datasets, tmp_path):
    written, pq_dir = datasets
    for split in ("test", "val"):
        assert evaluate_dataset(pq_dir, split=split) == pytest.approx(
            evaluate_dataset(written.root, split=split), abs=1e-12
        )
    fit_dataset(pq_dir, tmp_path / "pq", method="nudge-n")
    fit_dataset(written.root, tmp_path / "npy", method="nudge-n")
    after = evaluate_dataset(pq_dir, embeddings=tmp_path / "pq/changed.parquet", k=5)
    expected = evaluate_dataset(written.root, embeddings=tmp_path / "npy/embeddings.npy", k=5)
    assert {key: v for key, v in after.items() if key != "embeddings"} == pytest.approx(
        {key: v for key, v in expected.items() if key != "embeddings"}, abs=1e-12
    )
    assert after["ndcg@5"] > evaluate_dataset(pq_dir, k=5)["ndcg@5"]


def test_eval_cli_reads_changed_parquet_and_refuses_foreign_ids(datasets, tmp_path):
    from nudgekit.cli import app

    _, pq_dir = datasets
    fit_dataset(pq_dir, tmp_path / "pq", method="nudge-m")
    changed = tmp_path / "pq/changed.parquet"
    result = CliRunner().invoke(
        app, ["eval", str(pq_dir), "--embeddings", str(changed), "--json", "--quiet"]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["embeddings"] == str(changed)

    table = pq.read_table(changed)
    foreign = table.set_column(0, "id", pa.array(["no-such-id"] * table.num_rows, pa.string()))
    pq.write_table(foreign.slice(0, 1), tmp_path / "foreign.parquet")
    bad = CliRunner().invoke(
        app, ["eval", str(pq_dir), "--embeddings", str(tmp_path / "foreign.parquet")]
    )
    assert bad.exit_code == 2 and "'no-such-id' is not in the corpus" in bad.output
    short = table.set_column(1, "vector", pa.array([[0.5] * 3] * table.num_rows))
    pq.write_table(short, tmp_path / "short.parquet")
    bad = CliRunner().invoke(
        app, ["eval", str(pq_dir), "--embeddings", str(tmp_path / "short.parquet")]
    )
    assert bad.exit_code == 2 and "expected 16" in bad.output


def test_ray_engine_needs_a_parquet_corpus(datasets, tmp_path):
    written, _ = datasets
    with pytest.raises(ValueError, match=r"reads a Parquet corpus.*nudgekit convert"):
        fit_dataset(written.root, tmp_path / "o", engine="ray")
    with pytest.raises(ValueError, match="unknown engine"):
        fit_dataset(written.root, tmp_path / "o", engine="spark")


# -- malformed data: one clear error, nothing written --------------------------------------------
def corrupt_copy(pq_dir: Path, tmp_path: Path) -> Path:
    """A copy of the Parquet dataset whose shards the test can replace."""
    import shutil

    target = tmp_path / "bad"
    shutil.copytree(pq_dir, target)
    return target


def shard_arrays(path: Path) -> tuple[list[str], np.ndarray]:
    table = pq.read_table(path)
    vectors = table.column("vector").combine_chunks().flatten().to_numpy().reshape(-1, 16)
    return table.column("id").to_pylist(), vectors.copy()


def fit_error(root: Path, tmp_path: Path, engine: str = "local", error=ValueError) -> str:
    with pytest.raises(error) as info:
        fit_dataset(root, tmp_path / "out", engine=EngineSettings(engine, quiet=True))
    assert not (tmp_path / "out/changed.parquet").exists()
    return str(info.value)


def test_nan_vector_names_the_shard_row(datasets, tmp_path):
    _, pq_dir = datasets
    bad = corrupt_copy(pq_dir, tmp_path)
    ids, vectors = shard_arrays(bad / "corpus/part-00001.parquet")
    vectors[17, 3] = np.nan
    write_shard(bad / "corpus/part-00001.parquet", ids, vectors)
    message = fit_error(bad, tmp_path)
    assert "corpus/part-00001.parquet row 17 (corpus row 217)" in message
    assert "NaN" in message


def test_zero_vector_is_refused(datasets, tmp_path):
    _, pq_dir = datasets
    bad = corrupt_copy(pq_dir, tmp_path)
    ids, vectors = shard_arrays(bad / "corpus/part-00002.parquet")
    vectors[5] = 0
    write_shard(bad / "corpus/part-00002.parquet", ids, vectors)
    assert "part-00002.parquet row 5 (corpus row 405)" in fit_error(bad, tmp_path)


def test_wrong_vector_length(datasets, tmp_path):
    _, pq_dir = datasets
    bad = corrupt_copy(pq_dir, tmp_path)
    ids, vectors = shard_arrays(bad / "corpus/part-00000.parquet")
    write_shard(bad / "corpus/part-00000.parquet", ids, vectors[:, :15])
    assert "vectors have 15 values but 16 are expected" in fit_error(bad, tmp_path)
    # a variable-length list column: checked row by row (vectorised) as it is read
    ragged = [list(v) for v in vectors]
    ragged[9] = ragged[9][:-1]
    table = pa.table({"id": ids, "vector": pa.array(ragged, pa.list_(pa.float32()))})
    pq.write_table(table, bad / "corpus/part-00000.parquet")
    message = fit_error(bad, tmp_path)
    assert "part-00000.parquet row 9 (corpus row 9): the vector has 15 values, expected 16" in (
        message
    )


def test_duplicate_id_across_shards(datasets, tmp_path):
    _, pq_dir = datasets
    bad = corrupt_copy(pq_dir, tmp_path)
    ids, vectors = shard_arrays(bad / "corpus/part-00002.parquet")
    ids[3] = "d5"  # d5 is row 5 of shard 0
    write_shard(bad / "corpus/part-00002.parquet", ids, vectors)
    message = fit_error(bad, tmp_path, error=CorpusError)
    assert "duplicate id 'd5'" in message
    assert "part-00000.parquet row 5" in message and "part-00002.parquet row 3" in message


def test_null_vector_and_missing_columns(datasets, tmp_path):
    _, pq_dir = datasets
    bad = corrupt_copy(pq_dir, tmp_path)
    ids, vectors = shard_arrays(bad / "corpus/part-00001.parquet")
    column = pa.array([None if i == 2 else list(v) for i, v in enumerate(vectors)],
                      pa.list_(pa.float32(), 16))  # fmt: skip
    pq.write_table(pa.table({"id": ids, "vector": column}), bad / "corpus/part-00001.parquet")
    assert "part-00001.parquet row 2 (corpus row 202): no vector (null)" in fit_error(bad, tmp_path)
    pq.write_table(pa.table({"key": ids}), bad / "corpus/part-00001.parquet")
    assert "no 'id' column" in fit_error(bad, tmp_path) or "no 'vector' column" in fit_error(
        bad, tmp_path
    )


def test_relevant_id_missing_from_the_corpus(datasets, tmp_path):
    written, pq_dir = datasets
    bad = corrupt_copy(pq_dir, tmp_path)
    qid = written.splits["train"][0]
    qrels = json.loads((bad / "qrels.json").read_text())
    qrels[qid]["nowhere"] = 1
    (bad / "qrels.json").write_text(json.dumps(qrels))
    message = fit_error(bad, tmp_path)
    assert f"relevant id 'nowhere' (query '{qid}', split 'train') is not in the corpus" in message


def test_both_corpus_forms_is_an_error(datasets, tmp_path):
    written, pq_dir = datasets
    bad = corrupt_copy(pq_dir, tmp_path)
    (bad / "corpus.npy").write_bytes((written.root / "corpus.npy").read_bytes())
    assert "has both corpus.npy and corpus/" in fit_error(bad, tmp_path)


def test_query_dimension_must_match_the_shards(datasets, tmp_path):
    _, pq_dir = datasets
    bad = corrupt_copy(pq_dir, tmp_path)
    np.save(bad / "queries.npy", np.load(bad / "queries.npy")[:, :8])
    assert "dimension mismatch" in fit_error(bad, tmp_path)
