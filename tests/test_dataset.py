"""The embedded dataset layout: what ``load_dataset`` reads and what ``split`` returns.

``write_dataset`` (used by the CLI and bad-input tests too) lays out a synthetic problem
from ``make_problem`` as a dataset directory.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from nudgekit.core import Relevance
from nudgekit.io.dataset import load_dataset, write_embeddings

from .conftest import Problem, make_problem

#: A small problem on which both methods move records (NUDGE-N picks γ > 0) and help.
SMALL = {
    "seed": 0,
    "n": 600,
    "d": 16,
    "n_answering": 200,
    "n_train": 300,
    "n_val": 60,
    "n_test": 60,
    "noise": 0.5,
}


@dataclass
class Written:
    """A dataset directory and the problem it holds (queries in problem order)."""

    root: Path
    problem: Problem
    corpus_ids: list[str]
    query_ids: list[str]  # problem order: train, val, test
    splits: dict[str, list[str]]
    qrels: dict[str, dict[str, int]]

    def grade(self, query_id: str, doc_id: str) -> int:
        return self.qrels[query_id][doc_id]


def graded_qrels(rel_lists: list[list[int]], query_ids: list[str]) -> dict[str, dict[str, int]]:
    """Relevance 1, and 2 for the first relevant record of every third query."""
    return {
        qid: {f"d{i}": 2 if (j % 3 == 0 and pos == 0) else 1 for pos, i in enumerate(rows)}
        for j, (qid, rows) in enumerate(zip(query_ids, rel_lists, strict=True))
    }


def write_dataset(
    root: Path, *, corpus_dtype: type = np.float32, shuffle_queries: bool = True, **problem: int
) -> Written:
    """Write ``make_problem(**SMALL | problem)`` in the embedded dataset layout.

    Corpus ids are ``d0, d1, ...`` in row order; query ids ``q0, q1, ...`` number the
    train, then val, then test queries, but ``queries.npy`` stores them in a shuffled
    order (``query_ids.json`` follows it), so reading a split has to gather rows.
    """
    p = make_problem(**(SMALL | problem))
    root.mkdir(parents=True, exist_ok=True)
    corpus_ids = [f"d{i}" for i in range(len(p.corpus))]
    queries = np.concatenate([p.train_q, p.val_q, p.test_q])
    query_ids = [f"q{j}" for j in range(len(queries))]
    order = (
        np.random.default_rng(1).permutation(len(queries))
        if shuffle_queries
        else np.arange(len(queries))
    )
    a, b = len(p.train_q), len(p.train_q) + len(p.val_q)
    splits = {"train": query_ids[:a], "val": query_ids[a:b], "test": query_ids[b:]}
    qrels = graded_qrels(p.train_rel + p.val_rel + p.test_rel, query_ids)

    np.save(root / "corpus.npy", p.corpus.astype(corpus_dtype))
    np.save(root / "queries.npy", queries[order])
    (root / "corpus_ids.json").write_text(json.dumps(corpus_ids))
    (root / "query_ids.json").write_text(json.dumps([query_ids[j] for j in order]))
    (root / "qrels.json").write_text(json.dumps(qrels))
    (root / "splits.json").write_text(json.dumps(splits))
    return Written(root, p, corpus_ids, query_ids, splits, qrels)


def rewrite_json(path: Path, edit) -> None:
    """Load a JSON file, let ``edit`` change the object in place, write it back."""
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def relevant_lists(rel: Relevance) -> list[list[int]]:
    return [rel.indices[rel.indptr[j] : rel.indptr[j + 1]].tolist() for j in range(rel.n_queries)]


@pytest.fixture
def written(tmp_path: Path) -> Written:
    return write_dataset(tmp_path / "data")


# -- load_dataset ------------------------------------------------------------------------


def test_arrays_are_opened_as_read_only_memory_maps(written):
    data = load_dataset(written.root)
    for arr in (data.corpus, data.queries):
        assert isinstance(arr, np.memmap)
        assert not arr.flags.writeable


def test_load_reads_ids_and_shapes_as_written(written):
    data = load_dataset(written.root)
    assert (data.n_records, data.dim) == written.problem.corpus.shape
    assert data.corpus_ids == written.corpus_ids
    assert sorted(data.query_ids) == sorted(written.query_ids)
    assert data.splits == written.splits
    np.testing.assert_array_equal(data.corpus, written.problem.corpus)


def test_float16_corpus_is_accepted_and_kept_as_float16(tmp_path):
    written = write_dataset(tmp_path / "data", corpus_dtype=np.float16)
    data = load_dataset(written.root)
    assert data.corpus.dtype == np.float16
    np.testing.assert_array_equal(data.corpus, written.problem.corpus.astype(np.float16))


def test_numeric_ids_in_json_are_read_as_strings(written):
    n = len(written.corpus_ids)
    (written.root / "corpus_ids.json").write_text(json.dumps(list(range(n))))
    assert load_dataset(written.root).corpus_ids == [str(i) for i in range(n)]


def test_embed_meta_is_optional_and_read_when_present(written):
    assert load_dataset(written.root).meta == {}
    (written.root / "embed_meta.json").write_text(json.dumps({"model": "tiny"}))
    assert load_dataset(written.root).meta == {"model": "tiny"}


# -- split -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["train", "val", "test"])
def test_split_gathers_float32_queries_in_splits_json_order(written, name):
    expected = {
        "train": written.problem.train_q,
        "val": written.problem.val_q,
        "test": written.problem.test_q,
    }[name]
    split = load_dataset(written.root).split(name)
    assert split.name == name
    assert split.query_ids == written.splits[name]
    assert split.queries.dtype == np.float32
    np.testing.assert_array_equal(split.queries, expected)


def test_split_order_follows_splits_json_not_query_ids_json(written):
    rewrite_json(written.root / "splits.json", lambda s: s["test"].reverse())
    split = load_dataset(written.root).split("test")
    assert split.query_ids == written.splits["test"][::-1]
    np.testing.assert_array_equal(split.queries, written.problem.test_q[::-1])
    assert relevant_lists(split.relevance) == [sorted(r) for r in written.problem.test_rel[::-1]]


def test_split_relevance_maps_doc_ids_to_corpus_rows(written):
    rel = load_dataset(written.root).split("train").relevance
    assert rel.n_queries == len(written.splits["train"])
    assert rel.n_records == len(written.corpus_ids)
    assert relevant_lists(rel) == written.problem.train_rel


def test_graded_relevance_is_kept(written):
    rel = load_dataset(written.root).split("val").relevance
    expected = [
        written.grade(qid, f"d{i}")
        for qid, rows in zip(written.splits["val"], relevant_lists(rel), strict=True)
        for i in rows
    ]
    assert rel.grades.tolist() == expected
    assert 2 in expected and 1 in expected


def test_relevance_zero_or_negative_is_dropped(written):
    first = written.splits["train"][0]

    def add_non_relevant(qrels):
        qrels[first]["d599"] = 0
        qrels[first]["d598"] = -1

    rewrite_json(written.root / "qrels.json", add_non_relevant)
    data = load_dataset(written.root)
    assert set(data.qrels[first]) == set(written.qrels[first])
    rel = data.split("train").relevance
    assert relevant_lists(rel)[0] == written.problem.train_rel[0]


def test_query_without_qrels_has_no_relevant_record(written):
    first = written.splits["test"][0]
    rewrite_json(written.root / "qrels.json", lambda q: q.pop(first))
    rel = load_dataset(written.root).split("test").relevance
    assert rel.counts()[0] == 0
    assert rel.counts()[1:].min() >= 1


def test_split_unknown_name_lists_the_splits_there_are(written):
    data = load_dataset(written.root)
    with pytest.raises(ValueError, match=r"no split named 'dev' \(has: test, train, val\)"):
        data.split("dev")


def test_split_empty_raises(written):
    rewrite_json(written.root / "splits.json", lambda s: s.update(val=[]))
    with pytest.raises(ValueError, match="split 'val' is empty"):
        load_dataset(written.root).split("val")


def test_split_with_query_id_missing_from_query_ids_raises(written):
    rewrite_json(written.root / "splits.json", lambda s: s["test"].append("q-unknown"))
    with pytest.raises(ValueError, match=r"'q-unknown' is not in query_ids\.json"):
        load_dataset(written.root).split("test")


def test_split_with_relevant_id_missing_from_corpus_raises_naming_it(written):
    first = written.splits["test"][0]
    rewrite_json(written.root / "qrels.json", lambda q: q[first].update({"d-gone": 1}))
    data = load_dataset(written.root)
    data.split("train")  # other splits are unaffected
    with pytest.raises(ValueError, match=rf"'d-gone' \(query '{first}'.*not in the corpus"):
        data.split("test")


def test_missing_directory_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_dataset(tmp_path / "nowhere")


# -- write_embeddings --------------------------------------------------------------------


def test_write_embeddings_streams_blocks_into_float32(tmp_path):
    blocks = [np.ones((2, 3), dtype=np.float64), 2 * np.ones((1, 3), dtype=np.float16)]
    write_embeddings(tmp_path / "e.npy", blocks, (3, 3))
    out = np.load(tmp_path / "e.npy")
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, [[1, 1, 1], [1, 1, 1], [2, 2, 2]])


def test_write_embeddings_leaves_no_file_when_rows_are_missing(tmp_path):
    with pytest.raises(ValueError, match="wrote 2 rows, expected 3"):
        write_embeddings(tmp_path / "e.npy", [np.ones((2, 3))], (3, 3))
    assert list(tmp_path.iterdir()) == []
