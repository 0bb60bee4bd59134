"""The approximate corpus pass: exact scores of the index's candidates, honest recall.

Each test builds the index's answers by hand (a brute-force search, one that misses on
purpose, one that offers tracked rows first; IVF lists laid out so that a known share of
the queries' best records sit in lists they do not probe), so what the pass must return
is known: the exact pass's fixed scores wherever the candidates hold them, the measured
share where not.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from nudgekit.cli import app
from nudgekit.core import ArraySource, Block, PassPlan, corpus_pass, id_bytes_of
from nudgekit.core.ann_pass import InvertedLists, ann_pass, ivf_pass, streamed_candidate_pass
from nudgekit.io.sample import sample_dir

pytest.importorskip("faiss")
runner = CliRunner()


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def problem(seed: int, n: int = 400, d: int = 16, v: int = 60, n_tracked: int = 40, k: int = 3):
    rng = np.random.default_rng(seed)
    corpus = unit(rng.standard_normal((n, d)))
    queries = unit(rng.standard_normal((v, d)))
    tracked = np.sort(rng.choice(n, n_tracked, replace=False))
    return corpus, queries, PassPlan(queries, k, tracked_rows=tracked)


def brute(corpus: np.ndarray):
    """The exact search an ideal index would answer with (tracked rows included)."""

    def search(q: np.ndarray, n: int) -> np.ndarray:
        return np.argsort(-(q @ corpus.T), axis=1, kind="stable")[:, :n]

    return search


def exact_fixed(corpus: np.ndarray, plan: PassPlan) -> np.ndarray:
    return corpus_pass(ArraySource(corpus), plan).fixed


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 10_000), st.integers(1, 12), st.integers(0, 120))
def test_an_exact_index_gives_the_exact_pass(seed, k, n_tracked):
    corpus, _, plan = problem(seed, n_tracked=n_tracked, k=k)
    result = ann_pass(ArraySource(corpus), plan, brute(corpus), sample=10, over_fetch=2)
    np.testing.assert_allclose(result.fixed, exact_fixed(corpus, plan), atol=1e-6)
    exact = corpus_pass(ArraySource(corpus), plan)
    np.testing.assert_array_equal(result.rows, exact.rows)
    np.testing.assert_array_equal(result.vectors, exact.vectors)
    assert result.stats["pass"]["kind"] == "ann"
    assert result.stats["pass"]["recall_top1"] == 1.0


def test_tracked_records_offered_first_never_appear():
    corpus, queries, plan = problem(1, k=5)
    # make every tracked record the best answer to some query: the index offers them first
    corpus[plan.tracked_rows[: len(queries)]] = queries[: len(plan.tracked_rows)]
    tracked = plan.tracked_rows

    def search(q: np.ndarray, n: int) -> np.ndarray:
        scores = q @ corpus.T
        scores[:, tracked] += 10.0  # tracked rows rank above everything
        return np.argsort(-scores, axis=1)[:, :n]

    result = ann_pass(ArraySource(corpus), plan, search, sample=5, over_fetch=1)
    fixed = exact_fixed(corpus, plan)
    np.testing.assert_allclose(result.fixed, fixed, atol=1e-6)
    # a tracked row would score 1.0 (it is the query itself); none does
    assert result.fixed.max() < 1.0 - 1e-4
    assert result.stats["pass"]["recall_top1"] == 1.0


def test_recall_is_the_share_of_queries_whose_best_was_found():
    corpus, queries, plan = problem(2, v=80, k=4)
    keep = np.setdiff1d(np.arange(len(corpus)), plan.tracked_rows)
    miss = np.zeros(len(queries), dtype=bool)
    miss[::4] = True  # a quarter of the queries lose their best fixed record
    lookup = {q.tobytes(): j for j, q in enumerate(queries)}

    def search(q: np.ndarray, n: int) -> np.ndarray:
        scores = q @ corpus.T
        for i, row in enumerate(q):
            if miss[lookup[row.tobytes()]]:
                scores[i, keep[np.argmax(scores[i, keep])]] = -np.inf
        return np.argsort(-scores, axis=1)[:, :n]

    result = ann_pass(ArraySource(corpus), plan, search, sample=len(queries), min_recall=0.0)
    info = result.stats["pass"]
    assert info["recall_top1"] == pytest.approx(0.75)
    assert info["recall_at_k"] == pytest.approx(1 - 0.25 / plan.k)
    assert info["n_sample"] == len(queries) and not info["fell_back"]
    # the sampled queries keep their exact scores
    np.testing.assert_allclose(result.fixed, exact_fixed(corpus, plan), atol=1e-6)

    fewer = ann_pass(ArraySource(corpus), plan, search, sample=20, min_recall=0.0)
    assert fewer.stats["pass"]["n_sample"] == 20
    wrong = np.flatnonzero(~np.isclose(fewer.fixed[:, 0], exact_fixed(corpus, plan)[:, 0]))
    assert len(wrong) and miss[wrong].all()  # only the missing queries are off


def test_low_recall_falls_back_to_the_exact_pass():
    corpus, _, plan = problem(3, k=2)

    def search(q: np.ndarray, n: int) -> np.ndarray:  # an index that finds nothing useful
        rows = np.argsort(q @ corpus.T, axis=1)  # the worst rows first
        return rows[:, :n]

    result = ann_pass(ArraySource(corpus), plan, search, sample=30)
    info = result.stats["pass"]
    assert info["kind"] == "exact" and info["fell_back"]
    assert info["recall_top1"] < 0.9 and "exact pass was used" in info["warning"]
    np.testing.assert_array_equal(result.fixed, exact_fixed(corpus, plan))

    kept = ann_pass(ArraySource(corpus), plan, search, sample=30, fallback=False)
    assert kept.stats["pass"]["kind"] == "ann"
    assert "γ may be off" in kept.stats["pass"]["warning"]


def test_queries_the_index_cannot_serve_are_scored_exactly():
    corpus, _, plan = problem(4, k=6)

    def search(q: np.ndarray, n: int) -> np.ndarray:  # an empty probe: -1 everywhere
        return np.full((len(q), n), -1, dtype=np.int64)

    result = ann_pass(ArraySource(corpus), plan, search, sample=3, min_recall=0.0)
    np.testing.assert_allclose(result.fixed, exact_fixed(corpus, plan), atol=1e-6)
    assert result.stats["pass"]["n_exact_queries"] == len(plan.queries)


def random_lists(corpus: np.ndarray, nlist: int, seed: int) -> InvertedLists:
    """Lists around random corpus rows, each row in its nearest one (an IVF partition)."""
    rng = np.random.default_rng(seed)
    centroids = corpus[rng.choice(len(corpus), nlist, replace=False)]
    return InvertedLists.from_assignment(centroids, np.argmax(corpus @ centroids.T, axis=1))


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 10_000), st.integers(1, 12), st.integers(0, 120), st.integers(1, 9))
def test_ivf_probing_every_list_is_the_exact_pass(seed, k, n_tracked, nlist):
    corpus, _, plan = problem(seed, n_tracked=n_tracked, k=k)
    lists = random_lists(corpus, nlist, seed)
    result = ivf_pass(ArraySource(corpus), plan, lists, nprobe=nlist, sample=7, block_rows=50)
    exact = corpus_pass(ArraySource(corpus), plan)
    np.testing.assert_allclose(result.fixed, exact.fixed, atol=1e-6)
    np.testing.assert_array_equal(result.rows, exact.rows)
    np.testing.assert_array_equal(result.vectors, exact.vectors)
    info = result.stats["pass"]
    assert info["kind"] == "ann" and info["recall_top1"] == 1.0
    assert info["nlist"] == nlist and info["nprobe"] == nlist


def test_ivf_tracked_records_in_the_probed_list_never_appear():
    corpus, queries, plan = problem(5, k=3)
    tracked = plan.tracked_rows
    corpus[tracked[: len(queries)]] = queries[: len(tracked)]  # each the best, score 1.0
    lists = random_lists(corpus, 4, 5)
    result = ivf_pass(ArraySource(corpus), plan, lists, nprobe=4, sample=5)
    np.testing.assert_allclose(result.fixed, exact_fixed(corpus, plan), atol=1e-6)
    assert result.fixed.max() < 1.0 - 1e-4


def test_ivf_recall_is_the_share_of_queries_whose_best_is_in_their_lists():
    # list 0 (centroid e0) is every query's one probe; query j's best row b_j sits in
    # list 0 for j = 0, 1, 2 and in list 1 for j = 3: the recall of the top-1 is 3/4
    e = np.eye(6, dtype=np.float32)
    queries = unit(np.stack([2 * e[0] + e[2 + j] for j in range(4)]))
    best = unit(np.stack([2 * e[0] + e[2 + j] for j in range(4)]))
    tracked_best = best[3:4]  # query 3's best again, in list 0, but tracked
    corpus = np.concatenate([best, e[:1], e[1:2], tracked_best]).astype(np.float32)
    assignment = np.array([0, 0, 0, 1, 0, 1, 0])
    lists = InvertedLists.from_assignment(e[:2], assignment)
    plan = PassPlan(queries, 1, tracked_rows=np.array([6]))
    source = ArraySource(corpus)
    kept = ivf_pass(source, plan, lists, nprobe=1, sample=4, min_recall=0.5)
    info = kept.stats["pass"]
    assert info["recall_top1"] == 0.75 and info["kind"] == "ann" and info["n_sample"] == 4
    # every query was sampled, so every score is the exact one
    np.testing.assert_allclose(kept.fixed, exact_fixed(corpus, plan), atol=1e-6)
    np.testing.assert_allclose(kept.fixed[:, 0], 1.0, atol=1e-6)

    fallen = ivf_pass(source, plan, lists, nprobe=1, sample=4)
    assert fallen.stats["pass"]["kind"] == "exact" and fallen.stats["pass"]["fell_back"]
    np.testing.assert_array_equal(fallen.fixed, exact_fixed(corpus, plan))

    unsampled = ivf_pass(source, plan, lists, nprobe=1, sample=3, min_recall=0.0, seed=1)
    chosen = np.sort(np.random.default_rng(1).choice(4, size=3, replace=False))
    missing = np.setdiff1d(np.arange(4), chosen)[0]
    recall = 1.0 if missing == 3 else 2 / 3
    assert unsampled.stats["pass"]["recall_top1"] == pytest.approx(recall)
    # the query left out of the sample keeps its probed lists' best: for query 3 that
    # is the filler e0 (2/√5), not its best record in list 1
    expected = 2 / np.sqrt(5) if missing == 3 else 1.0
    assert unsampled.fixed[missing, 0] == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize(
    ("members", "message"),
    [
        ([[0, 1, 2], [3, 4, 5, 9]], "list 1 holds id 9, not a corpus row"),
        ([[0, 1, 2, 3], [3, 4, 5]], "holds a corpus row twice"),
    ],
)
def test_ivf_lists_that_are_not_a_partition_are_refused(members, message):
    corpus, _, plan = problem(6, n=7, v=3, n_tracked=1, k=1)
    sizes = np.array([len(m) for m in members])
    lists = InvertedLists(corpus[:2], sizes, lambda i: np.array(members[i]))
    with pytest.raises(ValueError, match=message):
        ivf_pass(ArraySource(corpus), plan, lists, nprobe=2)


def test_ivf_lists_that_leave_out_rows_are_refused():
    corpus, _, plan = problem(6, n=7, v=3, n_tracked=1, k=1)
    members = [[0, 1, 2], [3, 4, 5]]  # row 6 in no list, though the sizes add up
    lists = InvertedLists(corpus[:2], np.array([3, 4]), lambda i: np.array(members[i]))
    with pytest.raises(ValueError, match=r"leave out 1 corpus rows \(e.g. row 6\)"):
        ivf_pass(ArraySource(corpus), plan, lists, nprobe=2)


def test_ivf_lists_of_another_size_are_refused():
    corpus, _, plan = problem(7, n=10, v=3, n_tracked=1, k=1)
    lists = InvertedLists.from_assignment(corpus[:2], np.zeros(9, dtype=np.int64))
    with pytest.raises(ValueError, match="lists hold 9 rows; the corpus has 10"):
        ivf_pass(ArraySource(corpus), plan, lists)


class IdSource:
    """A corpus read in blocks that carry string ids, as a store is read (by id)."""

    def __init__(self, corpus: np.ndarray, names: np.ndarray) -> None:
        self.corpus, self.names = corpus, names
        self.n_records, self.dim = corpus.shape

    def blocks(self, block_rows: int):
        for start in range(0, self.n_records, block_rows):
            stop = start + block_rows
            yield Block(start, self.corpus[start:stop], self.names[start:stop])

    def describe(self, block: Block, i: int, problem: str) -> str:
        return f"id {block.ids[i]!r} {problem}"

    def where(self, row: int) -> str:
        return f"row {row}"


def by_id(corpus: np.ndarray, plan: PassPlan, seed: int):
    """The same corpus under shuffled string ids, and the plan naming tracked ids."""
    names = id_bytes_of([f"doc-{i}" for i in np.random.default_rng(seed).permutation(len(corpus))])
    tracked = np.sort(names[plan.tracked_rows])
    return IdSource(corpus, names), PassPlan(plan.queries, plan.k, tracked_ids=tracked), names


@settings(max_examples=30, deadline=None)
@given(
    st.integers(0, 10_000),
    st.integers(1, 8),
    st.integers(0, 120),
    st.sampled_from(["rows", "ids", "rows of an id source"]),
)
def test_streamed_candidates_from_an_exact_search_give_the_exact_pass(seed, k, n_tracked, named):
    corpus, _, plan = problem(seed, n_tracked=n_tracked, k=k)
    # an exact search that offers the tracked rows too, and asks for a few more than k
    rows = brute(corpus)(plan.queries, k + n_tracked)
    exact = corpus_pass(ArraySource(corpus), plan)
    by_row = None
    if named == "rows":
        source, candidates = ArraySource(corpus), rows
    else:
        source, plan, names = by_id(corpus, plan, seed)
        candidates = names[rows] if named == "ids" else rows
        by_row = named != "ids"
    result = streamed_candidate_pass(
        source, plan, candidates, by_row=by_row, sample=9, block_rows=37
    )
    np.testing.assert_allclose(result.fixed, exact.fixed, atol=1e-6)
    np.testing.assert_array_equal(result.vectors, exact.vectors)
    assert result.stats["pass"]["kind"] == "ann" and result.stats["pass"]["recall_top1"] == 1.0
    if plan.by_id:  # the tracked records found, in corpus order, as the exact pass by id
        np.testing.assert_array_equal(result.ids, corpus_pass(source, plan).ids)


def test_streamed_candidates_tracked_repeated_or_missing_never_count():
    corpus, queries, plan = problem(8, k=2)
    tracked = plan.tracked_rows
    corpus[tracked[: len(queries)]] = queries[: len(tracked)]  # tracked rows score 1.0
    source, plan, names = by_id(corpus, plan, 8)
    rows = brute(corpus)(plan.queries, 6)
    candidates = names[rows]
    candidates[:, 1] = candidates[:, 2]  # offered twice: counts once
    candidates[:, 5] = b""  # none
    result = streamed_candidate_pass(source, plan, candidates, sample=0, min_recall=0.0)
    assert result.fixed.max() < 1.0 - 1e-4
    # a query's second best is never its best offered twice
    assert (result.fixed[:, 0] > result.fixed[:, 1]).all()


def test_streamed_candidates_recall_and_fallback():
    corpus, _, plan = problem(9, v=40, k=1)
    rows = brute(corpus)(plan.queries, len(corpus))
    keep = ~np.isin(rows, plan.tracked_rows)
    fixed_order = np.stack([r[m] for r, m in zip(rows, keep, strict=True)])
    candidates = fixed_order[:, :5].copy()
    candidates[::4, 0] = -1  # a quarter lose their best fixed record
    kept = streamed_candidate_pass(ArraySource(corpus), plan, candidates, sample=40, min_recall=0.5)
    assert kept.stats["pass"]["recall_top1"] == pytest.approx(0.75)
    np.testing.assert_allclose(kept.fixed, exact_fixed(corpus, plan), atol=1e-6)
    fallen = streamed_candidate_pass(ArraySource(corpus), plan, candidates, sample=40)
    assert fallen.stats["pass"]["fell_back"] and fallen.stats["pass"]["kind"] == "exact"


def test_fit_through_a_faiss_index(tmp_path: Path):
    data = sample_dir()
    index = tmp_path / "corpus.faiss"
    exact = runner.invoke(app, ["fit", str(data), "--out", str(tmp_path / "exact"), "--quiet"])
    assert exact.exit_code == 0, exact.output
    records = []
    for name in ("built", "reused"):
        out = tmp_path / name
        result = runner.invoke(
            app, ["fit", str(data), "--out", str(out), "--pass", "ann", "--index", str(index),
                  "--nprobe", "1000", "--quiet"],
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        records.append(json.loads((out / "fit.json").read_text()))
    built, reused = records
    assert built["pass"]["kind"] == "ann" and built["pass"]["index_built"]
    assert not reused["pass"]["index_built"] and index.exists()
    assert built["pass"]["index_type"] == "IndexIVFScalarQuantizer"
    assert built["pass"]["scan"] == "by list"
    reference = json.loads((tmp_path / "exact" / "fit.json").read_text())
    assert reference["pass"] == {"kind": "exact"}
    # every list probed: the candidates hold every fixed record, so the fit is the exact one
    assert built["gamma"] == reused["gamma"] == reference["gamma"]
    np.testing.assert_allclose(
        np.load(tmp_path / "built" / "embeddings.npy"),
        np.load(tmp_path / "exact" / "embeddings.npy"),
        atol=1e-6,
    )


def test_fit_through_a_faiss_index_that_is_not_ivf(tmp_path: Path):
    import faiss

    data = sample_dir()
    corpus = unit(np.load(data / "corpus.npy"))
    flat = faiss.IndexHNSWFlat(corpus.shape[1], 32, faiss.METRIC_INNER_PRODUCT)
    flat.hnsw.efSearch = 2000  # wide enough to be exact on the sample
    flat.add(corpus)
    path = tmp_path / "corpus.hnsw"
    faiss.write_index(flat, str(path))
    for name, extra in (("exact", []), ("ann", ["--pass", "ann", "--index", str(path)])):
        result = runner.invoke(
            app, ["fit", str(data), "--out", str(tmp_path / name), "--quiet", *extra]
        )
        assert result.exit_code == 0, result.output
    ann = json.loads((tmp_path / "ann" / "fit.json").read_text())
    exact = json.loads((tmp_path / "exact" / "fit.json").read_text())
    assert ann["pass"]["kind"] == "ann" and ann["pass"]["scan"] == "candidates"
    assert ann["pass"]["index_type"] == "IndexHNSWFlat" and ann["pass"]["nlist"] is None
    assert ann["gamma"] == exact["gamma"]


def test_fit_a_parquet_corpus_through_a_faiss_index(tmp_path: Path):
    import pyarrow.parquet as pq

    from nudgekit.io.parquet import convert_to_parquet

    data = tmp_path / "pq"
    convert_to_parquet(sample_dir(), data, shards=3, row_group_rows=300)
    index = tmp_path / "corpus.faiss"
    exact = runner.invoke(app, ["fit", str(data), "--out", str(tmp_path / "exact"), "--quiet"])
    assert exact.exit_code == 0, exact.output
    records = []
    for name in ("built", "reused"):
        result = runner.invoke(
            app, ["fit", str(data), "--out", str(tmp_path / name), "--pass", "ann", "--index",
                  str(index), "--nprobe", "1000", "--quiet"],
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        records.append(json.loads((tmp_path / name / "fit.json").read_text()))
    built, reused = records
    assert built["pass"]["index_built"] and not reused["pass"]["index_built"]
    assert built["pass"]["kind"] == "ann" and built["pass"]["scan"] == "candidates"
    assert built["pass"]["recall_top1"] == 1.0  # every list probed: the exact candidates
    reference = json.loads((tmp_path / "exact" / "fit.json").read_text())
    assert built["gamma"] == reused["gamma"] == reference["gamma"]
    want = pq.read_table(tmp_path / "exact" / "changed.parquet").to_pydict()
    got = pq.read_table(tmp_path / "built" / "changed.parquet").to_pydict()
    assert got.keys() == want.keys()
    for column in want:
        if column == "vector":
            np.testing.assert_allclose(np.array(got[column]), np.array(want[column]), atol=1e-6)
        else:
            assert got[column] == want[column]


def test_a_fixed_gamma_needs_no_index(tmp_path: Path):
    index = tmp_path / "corpus.faiss"
    args = ["fit", str(sample_dir()), "--gamma", "0.1", "--pass", "ann", "--index", str(index)]
    result = runner.invoke(app, [*args, "--out", str(tmp_path / "o"), "--quiet"])
    assert result.exit_code == 0, result.output
    assert not index.exists()  # nothing searched, so nothing built
    assert json.loads((tmp_path / "o" / "fit.json").read_text())["pass"] == {"kind": "exact"}


def test_an_index_of_another_corpus_is_refused(tmp_path: Path):
    import faiss

    index = faiss.IndexFlatIP(7)
    index.add(np.ones((3, 7), dtype=np.float32))
    path = tmp_path / "other.faiss"
    faiss.write_index(index, str(path))
    out = tmp_path / "out"
    result = runner.invoke(
        app, ["fit", str(sample_dir()), "--out", str(out), "--pass", "ann", "--index", str(path)]
    )
    assert result.exit_code == 2
    assert result.stderr.startswith("error: --index") and "dimension 7" in result.stderr
    assert not out.exists() or not any(out.iterdir())


def test_an_unknown_pass_is_refused(tmp_path: Path):
    result = runner.invoke(
        app, ["fit", str(sample_dir()), "--out", str(tmp_path / "o"), "--pass", "fast"]
    )
    assert result.exit_code == 2 and "unknown pass 'fast'" in result.stderr
