"""Pins the metric definitions to published figures: SciFact, all-MiniLM-L6-v2, no fine-tuning.

The reference (shared/README.md, produced with nudge-ft 0.1.2) is exact inner-product k-NN on
the test split: NDCG@10 = 0.6637, recall@10 = 0.8029. Skipped when the shared data is absent.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from nudgekit.core import Relevance
from nudgekit.evaluation.metrics import evaluate

DATA = Path(__file__).resolve().parents[1].parent / "shared/data/scifact/minilm"

pytestmark = pytest.mark.skipif(not DATA.is_dir(), reason=f"SciFact embeddings not at {DATA}")


def load_test_split() -> tuple[np.ndarray, np.ndarray, Relevance]:
    """Test-split queries, the corpus and their relevance, from the embedded dataset layout."""

    def read(name: str):
        return json.loads((DATA / name).read_text())

    corpus = np.load(DATA / "corpus.npy", mmap_mode="r")
    queries = np.load(DATA / "queries.npy", mmap_mode="r")
    record_row = {doc: i for i, doc in enumerate(read("corpus_ids.json"))}
    query_row = {qid: i for i, qid in enumerate(read("query_ids.json"))}
    qrels, test = read("qrels.json"), read("splits.json")["test"]
    triplets = [
        (j, record_row[doc], grade)
        for j, qid in enumerate(test)
        for doc, grade in qrels.get(qid, {}).items()
    ]
    query, record, grade = np.array(triplets).T
    relevance = Relevance.from_coo(query, record, len(test), len(record_row), grade)
    return queries[[query_row[qid] for qid in test]], corpus, relevance


def test_raw_minilm_embeddings_reproduce_the_published_scifact_figures():
    queries, corpus, relevance = load_test_split()
    m = evaluate(queries, corpus, relevance, k=10)
    assert m["n_queries"] == 221
    assert m["ndcg@10"] == pytest.approx(0.6637, abs=5e-4)
    assert m["recall@10"] == pytest.approx(0.8029, abs=5e-4)
