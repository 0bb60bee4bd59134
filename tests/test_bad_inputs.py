"""Bad inputs fail early and clearly: a message naming the problem, a non-zero exit, no output.

From the command line every bad input exits with code 2, prints one ``error:`` line on
stderr (no traceback, nothing on stdout) and leaves nothing in ``--out``. From Python the
estimators raise ``ValueError`` with the same wording.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from nudgekit import NudgeM, NudgeN
from nudgekit.cli import app
from nudgekit.io.dataset import REQUIRED_FILES, load_dataset
from nudgekit.workflows.fit import fit_dataset

from .conftest import make_problem
from .test_dataset import Written, rewrite_json, write_dataset

runner = CliRunner()
METHODS = {"nudge-n": NudgeN, "nudge-m": NudgeM}


# -- helpers -----------------------------------------------------------------------------


@pytest.fixture
def written(tmp_path: Path) -> Written:
    return write_dataset(tmp_path / "data")


@pytest.fixture(scope="module")
def shared(tmp_path_factory) -> Written:
    """A valid dataset for the tests that do not change it."""
    return write_dataset(tmp_path_factory.mktemp("shared"))


def invoke(*args: str | Path):
    return runner.invoke(app, [str(a) for a in args])


def assert_clean_failure(result, *phrases: str) -> str:
    """Exit code 2, one ``error:`` line on stderr holding every phrase, nothing on stdout."""
    assert result.exit_code == 2, (result.exit_code, result.stderr, result.exception)
    assert isinstance(result.exception, SystemExit)
    message = result.stderr
    assert message.startswith("error: ")
    assert len(message.splitlines()) == 1, message
    assert "Traceback" not in message
    for phrase in phrases:
        assert phrase in message
    assert result.stdout == ""
    return message


def assert_no_output(out: Path) -> None:
    assert not (out / "embeddings.npy").exists()
    assert not (out / "fit.json").exists()
    assert not out.exists() or list(out.iterdir()) == []  # no partial files either


def fit_fails(root: Path, out: Path, *phrases: str, options: tuple[str, ...] = ()) -> str:
    message = assert_clean_failure(invoke("fit", root, "--out", out, *options), *phrases)
    assert_no_output(out)
    return message


def edit_npy(path: Path, edit: Callable[[np.ndarray], object]) -> None:
    arr = np.load(path).copy()
    edit(arr)
    np.save(path, arr)


def file_row(written: Written, query_id: str) -> int:
    return json.loads((written.root / "query_ids.json").read_text()).index(query_id)


def set_query(written: Written, query_id: str, value: float, column: slice | int = 0) -> None:
    row = file_row(written, query_id)
    edit_npy(written.root / "queries.npy", lambda q: q.__setitem__((row, column), value))


class Unpickled:
    """Creating the marker directory when unpickled shows that a file was unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


def save_pickled(path: Path, marker: Path) -> None:
    arr = np.empty((2, 2), dtype=object)
    arr[:] = Unpickled(marker)
    np.save(path, arr, allow_pickle=True)


# -- fit: bad arrays ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("row", "answering", "options"),
    [
        (3, True, ()),  # a record a training query points to
        (500, False, ()),  # a record no query points to: found by the validation scan
        (500, False, ("--gamma", "0.1")),  # ... with γ fixed: found writing the embeddings
    ],
    ids=["answering-row", "other-row", "other-row-fixed-gamma"],
)
def test_nan_in_corpus_names_the_row(written, tmp_path, row, answering, options):
    assert (row in {i for rows in written.problem.train_rel for i in rows}) == answering
    edit_npy(written.root / "corpus.npy", lambda c: c.__setitem__((row, 1), np.nan))
    fit_fails(written.root, tmp_path / "out", "corpus", f"row {row}", "NaN", options=options)


def test_inf_in_corpus_names_the_row(written, tmp_path):
    edit_npy(written.root / "corpus.npy", lambda c: c.__setitem__((42, 0), np.inf))
    fit_fails(written.root, tmp_path / "out", "corpus: row 42", "infinite")


def test_all_zero_corpus_row_names_the_row(written, tmp_path):
    edit_npy(written.root / "corpus.npy", lambda c: c.__setitem__(7, 0.0))
    fit_fails(written.root, tmp_path / "out", "corpus: row 7 is all zeros")


def test_inf_in_train_queries_is_refused(written, tmp_path):
    set_query(written, written.splits["train"][5], np.inf)
    fit_fails(written.root, tmp_path / "out", "queries.npy", "split 'train'", "NaN or infinite")


def test_nan_in_validation_queries_is_refused(written, tmp_path):
    set_query(written, written.splits["val"][0], np.nan)
    fit_fails(written.root, tmp_path / "out", "queries.npy", "split 'val'", "NaN or infinite")


def test_all_zero_query_is_refused(written, tmp_path):
    set_query(written, written.splits["val"][3], 0.0, column=slice(None))
    fit_fails(written.root, tmp_path / "out", "queries.npy", "split 'val'", "all zeros")


@pytest.mark.parametrize("split", ["train", "val"])
def test_bad_query_error_names_the_query_id(written, tmp_path, split):
    query_id = written.splits[split][-1]
    set_query(written, query_id, np.inf)
    message = fit_fails(written.root, tmp_path / "out", "NaN or infinite")
    assert repr(query_id) in message or f"row {file_row(written, query_id)} " in message


def test_dimension_mismatch_between_corpus_and_queries(written, tmp_path):
    queries = np.load(written.root / "queries.npy")
    np.save(written.root / "queries.npy", queries[:, :-1])
    fit_fails(written.root, tmp_path / "out", "dimension mismatch", "15", "16")


def test_integer_corpus_is_refused(written, tmp_path):
    np.save(written.root / "corpus.npy", np.ones((600, 16), dtype=np.int32))
    fit_fails(written.root, tmp_path / "out", "corpus.npy", "float", "int32")


def test_one_dimensional_corpus_is_refused(written, tmp_path):
    np.save(written.root / "corpus.npy", np.ones(600, dtype=np.float32))
    fit_fails(written.root, tmp_path / "out", "corpus.npy", "2-D")


def test_empty_corpus_is_refused(written, tmp_path):
    np.save(written.root / "corpus.npy", np.ones((0, 16), dtype=np.float32))
    fit_fails(written.root, tmp_path / "out", "corpus.npy", "empty")


def test_truncated_npy_is_refused(written, tmp_path):
    path = written.root / "corpus.npy"
    path.write_bytes(path.read_bytes()[:2000])
    fit_fails(written.root, tmp_path / "out", "corpus.npy", "not a readable .npy")


@pytest.mark.parametrize("name", ["corpus.npy", "queries.npy"])
def test_pickled_array_is_refused_and_never_unpickled(written, tmp_path, name):
    marker = tmp_path / "unpickled"
    save_pickled(written.root / name, marker)
    fit_fails(written.root, tmp_path / "out", name, "pickle")
    assert not marker.exists()


def test_text_file_named_npy_is_reported_as_not_npy(written, tmp_path):
    (written.root / "corpus.npy").write_text("0.1,0.2\n0.3,0.4\n")
    message = fit_fails(written.root, tmp_path / "out", "corpus.npy")
    assert "pickle" not in message
    assert "not a readable .npy" in message


# -- fit: bad ids, qrels and splits ------------------------------------------------------


def test_relevant_doc_id_not_in_the_corpus(written, tmp_path):
    query_id = written.splits["train"][4]
    rewrite_json(written.root / "qrels.json", lambda q: q[query_id].update({"d-gone": 1}))
    fit_fails(written.root, tmp_path / "out", "'d-gone'", repr(query_id), "not in the corpus")


@pytest.mark.parametrize("split", ["train", "val"])
def test_empty_split(written, tmp_path, split):
    rewrite_json(written.root / "splits.json", lambda s: s.update({split: []}))
    fit_fails(written.root, tmp_path / "out", f"split {split!r} is empty")


@pytest.mark.parametrize("split", ["train", "val"])
def test_missing_split(written, tmp_path, split):
    rewrite_json(written.root / "splits.json", lambda s: s.pop(split))
    fit_fails(written.root, tmp_path / "out", f"no split named {split!r}")


def test_query_id_in_two_splits(written, tmp_path):
    query_id = written.splits["train"][0]
    rewrite_json(written.root / "splits.json", lambda s: s["test"].append(query_id))
    fit_fails(written.root, tmp_path / "out", repr(query_id), "two splits", "'train'", "'test'")


def test_query_id_twice_in_one_split(written, tmp_path):
    query_id = written.splits["val"][0]
    rewrite_json(written.root / "splits.json", lambda s: s["val"].append(query_id))
    fit_fails(written.root, tmp_path / "out", repr(query_id), "twice in split 'val'")


def test_split_query_id_not_in_query_ids(written, tmp_path):
    rewrite_json(written.root / "splits.json", lambda s: s["train"].append("q-nowhere"))
    fit_fails(written.root, tmp_path / "out", "'q-nowhere'", "not in query_ids.json")


@pytest.mark.parametrize("name", ["corpus_ids.json", "query_ids.json"])
def test_duplicate_ids(written, tmp_path, name):
    rewrite_json(written.root / name, lambda ids: ids.__setitem__(2, ids[1]))
    fit_fails(written.root, tmp_path / "out", name, "duplicate id")


@pytest.mark.parametrize(
    ("name", "array"), [("corpus_ids.json", "corpus.npy"), ("query_ids.json", "queries.npy")]
)
def test_id_list_of_the_wrong_length(written, tmp_path, name, array):
    rewrite_json(written.root / name, lambda ids: ids.pop())
    fit_fails(written.root, tmp_path / "out", name, "ids but", f"{array} has")


@pytest.mark.parametrize("name", REQUIRED_FILES)
def test_missing_required_file_is_named(written, tmp_path, name):
    (written.root / name).unlink()
    fit_fails(written.root, tmp_path / "out", "missing", name)


def test_missing_dataset_directory(tmp_path):
    fit_fails(tmp_path / "nowhere", tmp_path / "out", "nowhere", "does not exist")


@pytest.mark.parametrize("name", ["qrels.json", "splits.json", "corpus_ids.json"])
def test_invalid_json_names_the_file(written, tmp_path, name):
    (written.root / name).write_text("{not json")
    fit_fails(written.root, tmp_path / "out", name, "invalid JSON")


def test_non_numeric_relevance_is_refused(written, tmp_path):
    query_id = written.splits["train"][0]
    rewrite_json(written.root / "qrels.json", lambda q: q[query_id].update({"d1": "2"}))
    fit_fails(
        written.root, tmp_path / "out", "qrels.json", repr(query_id), "must be a finite number"
    )


def test_nan_relevance_is_refused(written, tmp_path):
    query_id = written.splits["train"][0]
    doc = next(iter(written.qrels[query_id]))
    rewrite_json(written.root / "qrels.json", lambda q: q[query_id].update({doc: float("nan")}))
    assert "NaN" in (written.root / "qrels.json").read_text()
    fit_fails(written.root, tmp_path / "out", "qrels.json", repr(query_id))


def test_train_split_without_any_relevant_record(written, tmp_path):
    train = set(written.splits["train"])
    rewrite_json(
        written.root / "qrels.json",
        lambda q: [q.pop(qid) for qid in list(q) if qid in train],
    )
    fit_fails(written.root, tmp_path / "out", "no training query has a relevant record")


def test_validation_query_without_relevant_record(written, tmp_path):
    rewrite_json(written.root / "qrels.json", lambda q: q.pop(written.splits["val"][2]))
    fit_fails(written.root, tmp_path / "out", "split 'val'", "has no relevant record")


# -- fit: bad options --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "phrases"),
    [
        (("--method", "nudge-x"), ("unknown method 'nudge-x'", "nudge-n", "nudge-m")),
        (("--method", "nudge-m", "--val-k", "3"), ("--val-k does not apply to nudge-m",)),
        (("--gamma", "-0.5"), ("gamma must be a finite number >= 0",)),
        (("--gamma", "nan"), ("gamma must be a finite number >= 0",)),
        (("--method", "nudge-n", "--gamma", "4.5"), ("[0, 4]", "NUDGE-N")),
        (("--method", "nudge-n", "--val-k", "0"), ("val_k must be a positive integer",)),
    ],
    ids=[
        "unknown-method",
        "val-k-with-nudge-m",
        "negative-gamma",
        "nan-gamma",
        "gamma-above-4",
        "val-k-0",
    ],
)
def test_bad_fit_option(shared, tmp_path, options, phrases):
    fit_fails(shared.root, tmp_path / "out", *phrases, options=options)


def test_unknown_device_is_a_clean_error(shared, tmp_path):
    pytest.importorskip("torch")
    fit_fails(shared.root, tmp_path / "out", "bogus", options=("--device", "bogus"))


def test_out_that_is_a_file_is_a_clean_error(shared, tmp_path):
    out = tmp_path / "taken"
    out.write_text("keep me")
    result = invoke("fit", shared.root, "--out", out)
    assert out.read_text() == "keep me"
    assert_clean_failure(result, str(out))


@pytest.mark.parametrize("case", ["message", "path"])
def test_error_text_is_printed_verbatim(tmp_path, case):
    if case == "message":
        written = write_dataset(tmp_path / "data")
        (written.root / "splits.json").write_text(json.dumps(["q0", "q1"]))
        expected = '{"train": [query ids], "val": [...], ...}'
    else:
        written = write_dataset(tmp_path / "data[v2]")
        (written.root / "qrels.json").unlink()
        expected = str(written.root)
    fit_fails(written.root, tmp_path / "out", expected)


def test_pipeline_raises_value_error_and_writes_nothing(written, tmp_path):
    rewrite_json(written.root / "splits.json", lambda s: s.update(val=[]))
    with pytest.raises(ValueError, match="split 'val' is empty"):
        fit_dataset(written.root, tmp_path / "out")
    assert_no_output(tmp_path / "out")


def test_load_dataset_raises_file_not_found_for_missing_file(written):
    (written.root / "splits.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"missing splits\.json"):
        load_dataset(written.root)


# -- eval --------------------------------------------------------------------------------


def eval_fails(root: Path, *args: str | Path, phrases: tuple[str, ...]) -> str:
    return assert_clean_failure(invoke("eval", root, "--json", *args), *phrases)


def test_eval_embeddings_of_the_wrong_shape(shared, tmp_path):
    np.save(tmp_path / "e.npy", np.ones((599, 16), dtype=np.float32))
    eval_fails(
        shared.root,
        "--embeddings",
        tmp_path / "e.npy",
        phrases=("shape (599, 16)", "does not match the corpus (600, 16)"),
    )


def test_eval_embeddings_of_the_wrong_dimension(shared, tmp_path):
    np.save(tmp_path / "e.npy", np.ones((600, 8), dtype=np.float32))
    eval_fails(shared.root, "--embeddings", tmp_path / "e.npy", phrases=("does not match",))


def test_eval_missing_embeddings_file(shared, tmp_path):
    eval_fails(
        shared.root, "--embeddings", tmp_path / "none.npy", phrases=("none.npy", "does not exist")
    )


def test_eval_pickled_embeddings_are_refused_and_never_unpickled(shared, tmp_path):
    marker = tmp_path / "unpickled"
    save_pickled(tmp_path / "e.npy", marker)
    eval_fails(shared.root, "--embeddings", tmp_path / "e.npy", phrases=("e.npy", "pickle"))
    assert not marker.exists()


def test_eval_nan_in_embeddings_names_the_row(shared, tmp_path):
    emb = np.load(shared.root / "corpus.npy")
    emb[11, 0] = np.nan
    np.save(tmp_path / "e.npy", emb)
    eval_fails(shared.root, "--embeddings", tmp_path / "e.npy", phrases=("row 11", "NaN"))


def test_eval_nan_in_embeddings_names_the_embeddings_file(shared, tmp_path):
    emb = np.load(shared.root / "corpus.npy")
    emb[11, 0] = np.nan
    np.save(tmp_path / "e.npy", emb)
    eval_fails(shared.root, "--embeddings", tmp_path / "e.npy", phrases=("e.npy", "row 11"))


def test_eval_unknown_split(shared):
    eval_fails(shared.root, "--split", "dev", phrases=("no split named 'dev'", "test, train, val"))


def test_eval_k_below_one(shared):
    eval_fails(shared.root, "--k", "0", phrases=("k must be >= 1",))


def test_eval_inf_in_test_queries(written):
    set_query(written, written.splits["test"][2], -np.inf)
    eval_fails(written.root, phrases=("queries.npy", "split 'test'", "NaN or infinite"))


# -- Python API: NudgeN / NudgeM.fit -----------------------------------------------------


@pytest.fixture(scope="module")
def p():
    return make_problem(n=300, d=8, n_answering=100, n_train=50, n_val=20, n_test=5)


@pytest.fixture(params=list(METHODS))
def model(request):
    return METHODS[request.param]()


def test_api_row_index_out_of_range_in_list_labels(p, model):
    labels = [*p.train_rel[:-1], [5000]]
    with pytest.raises(ValueError, match=r"train labels: .*index 5000 .*outside the corpus of 300"):
        model.fit(p.corpus, p.train_q, labels, p.val_q, p.val_rel)


def test_api_negative_row_index_in_list_labels(p, model):
    labels = [*p.train_rel[:-1], [-1]]
    with pytest.raises(ValueError, match=r"index -1 .*outside the corpus"):
        model.fit(p.corpus, p.train_q, labels, p.val_q, p.val_rel)


def test_api_non_integer_row_index_in_list_labels(p, model):
    labels = [*p.train_rel[:-1], [1.5]]
    with pytest.raises(ValueError, match=r"1\.5"):
        model.fit(p.corpus, p.train_q, labels, p.val_q, p.val_rel)


def test_api_one_label_list_per_query(p, model):
    with pytest.raises(ValueError, match="3 label lists for 50 queries"):
        model.fit(p.corpus, p.train_q, p.train_rel[:3], p.val_q, p.val_rel)


@pytest.mark.parametrize("which", ["train", "validation"])
def test_api_dimension_mismatch(p, model, which):
    train_q, val_q = p.train_q, p.val_q
    if which == "train":
        train_q = train_q[:, :7]
    else:
        val_q = val_q[:, :7]
    with pytest.raises(ValueError, match=f"{which} queries: dimension mismatch.*7.*8"):
        model.fit(p.corpus, train_q, p.train_rel, val_q, p.val_rel)


def test_api_nan_in_corpus_names_the_row(p, model):
    corpus = p.corpus.copy()
    corpus[3, 2] = np.nan
    with pytest.raises(ValueError, match="corpus: row 3 contains NaN"):
        model.fit(corpus, p.train_q, p.train_rel, p.val_q, p.val_rel)


def test_api_nan_in_queries_names_the_row(p, model):
    train_q = p.train_q.copy()
    train_q[2, 0] = np.nan
    with pytest.raises(ValueError, match="train queries: row 2 contains NaN"):
        model.fit(p.corpus, train_q, p.train_rel, p.val_q, p.val_rel)


def test_api_zero_corpus_row_names_the_row(p, model):
    corpus = p.corpus.copy()
    corpus[299] = 0
    with pytest.raises(ValueError, match="corpus: row 299 is all zeros"):
        model.fit(corpus, p.train_q, p.train_rel, p.val_q, p.val_rel)


def test_api_zero_query_names_the_row(p, model):
    val_q = p.val_q.copy()
    val_q[4] = 0
    with pytest.raises(ValueError, match="validation queries: row 4 is all zeros"):
        model.fit(p.corpus, p.train_q, p.train_rel, val_q, p.val_rel)


def test_api_object_corpus_is_refused(p, model):
    with pytest.raises(ValueError, match="object arrays"):
        model.fit(p.corpus.astype(object), p.train_q, p.train_rel, p.val_q, p.val_rel)


def test_api_validation_query_without_relevant_record(p, model):
    val_rel = [*p.val_rel[:1], [], *p.val_rel[2:]]
    with pytest.raises(ValueError, match="validation labels: query 1 has no relevant record"):
        model.fit(p.corpus, p.train_q, p.train_rel, p.val_q, val_rel)


def test_api_no_training_labels(p, model):
    with pytest.raises(ValueError, match="no training query has a relevant record"):
        model.fit(p.corpus, p.train_q, [[] for _ in p.train_rel], p.val_q, p.val_rel)


def test_api_validation_needed_when_gamma_is_searched(p, model):
    with pytest.raises(ValueError, match="validation queries and labels are needed"):
        model.fit(p.corpus, p.train_q, p.train_rel)


@pytest.mark.parametrize("gamma", [-0.1, float("nan"), float("inf")])
@pytest.mark.parametrize("cls", list(METHODS.values()), ids=list(METHODS))
def test_api_gamma_must_be_finite_and_non_negative(p, cls, gamma):
    with pytest.raises(ValueError, match="gamma must be a finite number >= 0"):
        cls(gamma=gamma).fit(p.corpus, p.train_q, p.train_rel)


def test_api_nudge_n_gamma_above_4(p):
    with pytest.raises(ValueError, match=r"gamma must be in \[0, 4\] for NUDGE-N, got 4.5"):
        NudgeN(gamma=4.5).fit(p.corpus, p.train_q, p.train_rel)


@pytest.mark.parametrize("val_k", [0, -1, 1.5])
def test_api_val_k_must_be_a_positive_integer(p, val_k):
    with pytest.raises(ValueError, match="val_k must be a positive integer"):
        NudgeN(val_k=val_k).fit(p.corpus, p.train_q, p.train_rel, p.val_q, p.val_rel)


def qrels_of(rel_lists: list[list[int]]) -> dict[str, dict[str, int]]:
    return {str(j): {f"d{i}": 1 for i in rows} for j, rows in enumerate(rel_lists)}


def test_api_qrels_dict_needs_corpus_ids(p, model):
    with pytest.raises(ValueError, match="train labels: a qrels dict needs corpus_ids"):
        model.fit(p.corpus, p.train_q, qrels_of(p.train_rel), p.val_q, p.val_rel)


def test_api_qrels_dict_with_unknown_doc_id(p, model):
    qrels = qrels_of(p.train_rel)
    qrels["0"]["d-gone"] = 1
    corpus_ids = [f"d{i}" for i in range(len(p.corpus))]
    with pytest.raises(
        ValueError, match=r"relevant id 'd-gone' \(query '0'\) is not in the corpus"
    ):
        model.fit(p.corpus, p.train_q, qrels, p.val_q, p.val_rel, corpus_ids=corpus_ids)


def test_api_qrels_of_other_queries_are_ignored(p, model):
    # the qrels of a whole dataset, passed with one split's queries: the others' entries
    # belong to other splits, not to this fit
    qrels = qrels_of(p.train_rel)
    corpus_ids = [f"d{i}" for i in range(len(p.corpus))]
    alone = model.fit(p.corpus, p.train_q, qrels, p.val_q, p.val_rel, corpus_ids=corpus_ids)
    expected = (alone.gamma_, alone.changed_rows_.tolist())
    qrels["zz"] = {"d1": 1}
    got = model.fit(p.corpus, p.train_q, qrels, p.val_q, p.val_rel, corpus_ids=corpus_ids)
    assert (got.gamma_, got.changed_rows_.tolist()) == expected
