"""The approximate corpus pass: exact scores of the index's candidates, honest recall.

Each test builds the index's answers by hand (a brute-force search, one that misses on
purpose, one that offers tracked rows first), so what the pass must return is known: the
exact pass's fixed scores wherever the candidates hold them, the measured share where not.
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
from nudgekit.core import ArraySource, PassPlan, corpus_pass
from nudgekit.core.ann_pass import ann_pass
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
    assert built["pass"]["index_type"] == "IndexIVFFlat"
    reference = json.loads((tmp_path / "exact" / "fit.json").read_text())
    assert reference["pass"] == {"kind": "exact"}
    # every list probed: the candidates hold every fixed record, so the fit is the exact one
    assert built["gamma"] == reused["gamma"] == reference["gamma"]
    np.testing.assert_allclose(
        np.load(tmp_path / "built" / "embeddings.npy"),
        np.load(tmp_path / "exact" / "embeddings.npy"),
        atol=1e-6,
    )


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
