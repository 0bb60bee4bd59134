"""The LlamaIndex drop-in against the real llama-index-core: the bundled sample embedded by
the offline all-MiniLM-L6-v2 behind a LlamaIndex ``BaseEmbedding``, the same γ and vectors
as nudgekit's estimators, inserts, nodes, and LlamaIndex's own LanceDB table improved in
place by ``nudgekit apply`` and searched back through LlamaIndex."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from nudgekit import NudgeM, NudgeN
from nudgekit.core import Relevance
from nudgekit.evaluation import retrieval_metrics
from nudgekit.integrations.llama_index import Nudge
from nudgekit.io.dataset import load_dataset
from nudgekit.io.sample import sample_dir, sample_qa_dataset

pytest.importorskip("llama_index.core")
from llama_index.core.base.embeddings.base import BaseEmbedding
from pydantic import PrivateAttr


class MiniLM(BaseEmbedding):
    """all-MiniLM-L6-v2 from the offline package as a LlamaIndex embedding; counts calls."""

    _model: Any = PrivateAttr()
    _calls: Counter = PrivateAttr(default_factory=Counter)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(model_name="sentence-transformers/all-MiniLM-L6-v2", **kwargs)
        from nudgekit.io.embedding import load_model

        self._model = load_model("all-MiniLM-L6-v2")

    @property
    def calls(self) -> Counter:
        return self._calls

    def _encode(self, texts: list[str]) -> list[list[float]]:
        return self._model.encode(texts, normalize_embeddings=True, batch_size=64).tolist()

    def _get_query_embedding(self, query: str) -> list[float]:
        self._calls["query"] += 1
        return self._encode([query])[0]

    def _get_text_embedding(self, text: str) -> list[float]:
        self._calls["text"] += 1
        return self._encode([text])[0]

    def _get_text_embeddings(self, texts: list[str]) -> list[list[float]]:
        self._calls["text_batch"] += 1
        return self._encode(texts)

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return self._get_query_embedding(query)


class Refusing(BaseEmbedding):
    """Any embedding call fails the test."""

    def _get_query_embedding(self, query: str) -> list[float]:
        raise AssertionError("query embedded")

    def _get_text_embedding(self, text: str) -> list[float]:
        raise AssertionError("text embedded")

    async def _aget_query_embedding(self, query: str) -> list[float]:
        raise AssertionError("query embedded")


@dataclass
class QADataset:
    """Shaped like LlamaIndex's EmbeddingQAFinetuneDataset (llama-index-finetuning is not
    installed: the drop-in reads the three attributes)."""

    queries: dict[str, str]
    corpus: dict[str, str]
    relevant_docs: dict[str, list[str]]


@dataclass
class Sample:
    corpus: dict[str, str]
    vectors: np.ndarray  # the shipped all-MiniLM-L6-v2 vectors, corpus order
    queries: dict[str, str]
    query_vectors: dict[str, np.ndarray]
    splits: dict[str, list[str]]
    qrels: dict[str, dict[str, int]]

    def dataset(self, split: str, corpus: bool = True, ids: list[str] | None = None) -> dict:
        ids = self.splits[split] if ids is None else ids
        return {
            "queries": {q: self.queries[q] for q in ids},
            "corpus": dict(self.corpus) if corpus else {},
            "relevant_docs": {q: list(self.qrels[q]) for q in ids},
        }


@pytest.fixture(scope="module")
def sample() -> Sample:
    data = load_dataset(sample_dir())
    train, val = sample_qa_dataset("train"), sample_qa_dataset("val")
    test = sample_qa_dataset("test")
    query_vectors = dict(zip(data.query_ids, np.asarray(data.queries, np.float32), strict=True))
    return Sample(
        train["corpus"],
        np.asarray(data.corpus, np.float32),
        {**train["queries"], **val["queries"], **test["queries"]},
        query_vectors,
        data.splits,
        json.loads((sample_dir() / "qrels.json").read_text()),
    )


@pytest.fixture(scope="module")
def minilm() -> MiniLM:
    pytest.importorskip("sentence_transformers")
    return MiniLM()


@pytest.fixture(scope="module")
def embedded(sample, minilm) -> Nudge:
    """The sample embedded through LlamaIndex's interface and fitted with NUDGE-N."""
    minilm.calls.clear()
    nudge = Nudge(minilm, sample.dataset("train"), sample.dataset("val"))
    nudge.finetune()
    return nudge


def given(sample: Sample, **options: Any) -> Nudge:
    """A drop-in on the shipped vectors: nothing embedded."""
    return Nudge(
        Refusing(),
        options.pop("train", sample.dataset("train")),
        options.pop("val", sample.dataset("val")),
        corpus_embeddings=options.pop("corpus_embeddings", sample.vectors),
        query_embeddings=sample.query_vectors,
        **options,
    )


def queries_of(sample: Sample, split: str) -> np.ndarray:
    return np.stack([sample.query_vectors[q] for q in sample.splits[split]])


def test_module_imports_no_llama_index_code():
    code = (
        "import sys, nudgekit.integrations.llama_index; "
        "assert not [m for m in sys.modules if m.startswith('llama_index')]"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# -- the same numbers as nudgekit's estimators --------------------------------------------------


@pytest.mark.parametrize(("use_nudge_n", "estimator"), [(True, NudgeN), (False, NudgeM)])
def test_same_gamma_and_vectors_as_the_estimator_on_the_same_vectors(
    sample, use_nudge_n, estimator
):
    nudge = given(sample, use_nudge_n=use_nudge_n)
    nudge.finetune()
    ids = list(sample.corpus)
    ref = estimator().fit(
        sample.vectors,
        queries_of(sample, "train"),
        sample.qrels,
        queries_of(sample, "val"),
        sample.qrels,
        corpus_ids=ids,
        train_query_ids=sample.splits["train"],
        val_query_ids=sample.splits["val"],
    )
    assert nudge.gamma_ == ref.gamma_ > 0
    assert nudge.validation_curve_ == ref.validation_curve_
    out = nudge.get_finetuned_corpus_embeddings()
    assert out.shape == sample.vectors.shape and out.dtype == np.float32
    np.testing.assert_array_equal(out, ref.transform(sample.vectors))
    assert nudge.changed_ids_ == [ids[i] for i in ref.changed_rows_]


def test_the_default_method_is_available_and_beats_raw_retrieval(sample):
    nudge = given(sample, method="nudge-cv")
    nudge.finetune()
    test = sample.splits["test"]
    rel = Relevance.from_lists(
        [[list(sample.corpus).index(d) for d in sample.qrels[q]] for q in test], len(sample.corpus)
    )

    def ndcg(vectors):
        order = np.argsort(-(queries_of(sample, "test") @ vectors.T), axis=1)[:, :10]
        return retrieval_metrics(order, rel, ks=[10])["ndcg@10"]

    assert ndcg(nudge.get_finetuned_corpus_embeddings()) > ndcg(sample.vectors) + 0.05


def test_dataset_object_json_file_and_dict_give_the_same_fit(sample, tmp_path):
    train, val = sample.dataset("train"), sample.dataset("val")
    (tmp_path / "train.json").write_text(json.dumps(train))
    results = []
    for train_form in (
        train,
        QADataset(**train),
        tmp_path / "train.json",
        str(tmp_path / "train.json"),
    ):
        nudge = given(sample, train=train_form, val=QADataset(**val))
        nudge.finetune()
        results.append(nudge.get_finetuned_corpus_embeddings())
    for other in results[1:]:
        np.testing.assert_array_equal(other, results[0])


# -- embedding through LlamaIndex ---------------------------------------------------------------


def test_the_corpus_is_embedded_in_batches_and_each_query_once(sample, minilm, embedded):
    calls = minilm.calls
    batches = -(-len(sample.corpus) // minilm.embed_batch_size)
    assert calls["text_batch"] == batches and calls["text"] == 0
    assert calls["query"] == len(sample.splits["train"]) + len(sample.splits["val"])


def test_model_embeddings_give_the_fit_of_the_same_vectors_given(sample, minilm, embedded):
    originals = embedded.original_embeddings
    assert originals.shape == sample.vectors.shape
    # the same model as the shipped vectors, on the same text: equal up to float rounding
    np.testing.assert_allclose(originals, sample.vectors, atol=2e-3)
    queries = embedded.query_embeddings_  # what the model produced
    assert set(queries) == set(sample.splits["train"]) | set(sample.splits["val"])
    again = Nudge(Refusing(), sample.dataset("train"), sample.dataset("val"),
                  corpus_embeddings=originals, query_embeddings=queries)  # fmt: skip
    again.finetune()
    np.testing.assert_array_equal(
        again.get_finetuned_corpus_embeddings(), embedded.get_finetuned_corpus_embeddings()
    )
    assert embedded.gamma_ > 0 and embedded.n_changed_ > 0


# -- insert_data_and_finetune -------------------------------------------------------------------


def test_insert_without_a_validation_batch_refits_from_the_originals(sample):
    train = sample.splits["train"]
    first, second = train[: len(train) // 2], train[len(train) // 2 :]
    nudge = given(sample, train=sample.dataset("train", ids=first))
    nudge.finetune()
    once = nudge.get_finetuned_corpus_embeddings()
    # new labelled queries for documents already in the corpus, no new documents, no val
    nudge.insert_data_and_finetune(sample.dataset("train", corpus=False, ids=second))
    fresh = given(sample)
    fresh.finetune()
    np.testing.assert_allclose(
        nudge.get_finetuned_corpus_embeddings(), fresh.get_finetuned_corpus_embeddings(), atol=1e-6
    )
    assert not np.array_equal(once, nudge.get_finetuned_corpus_embeddings())
    np.testing.assert_array_equal(nudge.original_embeddings, sample.vectors)


def test_insert_appends_new_documents_in_order(sample):
    ids = list(sample.corpus)
    head, tail = set(ids[:1500]), ids[1500:]
    inside = [q for q in sample.splits["train"] if set(sample.qrels[q]) <= head]
    val = [q for q in sample.splits["val"] if set(sample.qrels[q]) <= head]
    rest = [q for q in sample.splits["train"] if q not in set(inside)]
    start = {
        "queries": {q: sample.queries[q] for q in inside},
        "corpus": {d: sample.corpus[d] for d in ids[:1500]},
        "relevant_docs": {q: list(sample.qrels[q]) for q in inside},
    }
    nudge = given(sample, train=start, val=sample.dataset("val", ids=val),
                  corpus_embeddings=sample.vectors[:1500])  # fmt: skip
    nudge.finetune()
    batch = {
        "queries": {q: sample.queries[q] for q in rest},
        "corpus": {d: sample.corpus[d] for d in tail},
        "relevant_docs": {q: list(sample.qrels[q]) for q in rest},
    }
    nudge.insert_data_and_finetune(batch, corpus_embeddings=sample.vectors[1500:])
    assert list(nudge.corpus) == ids
    whole = given(sample, val=sample.dataset("val", ids=val))
    whole.finetune()
    assert nudge.gamma_ == whole.gamma_
    np.testing.assert_allclose(
        nudge.get_finetuned_corpus_embeddings(), whole.get_finetuned_corpus_embeddings(), atol=1e-6
    )


def test_a_failed_insert_changes_nothing(sample):
    nudge = given(sample)
    nudge.finetune()
    before = (dict(nudge.corpus), nudge.get_finetuned_corpus_embeddings().copy(), nudge.gamma_)
    bad = {"queries": {"new": "q"}, "corpus": {"extra": "text"}, "relevant_docs": {"new": ["nope"]}}
    with pytest.raises(ValueError, match="'nope', which is not in the corpus"):
        nudge.insert_data_and_finetune(bad, corpus_embeddings=sample.vectors[:1])
    clash = {"queries": {}, "corpus": {"doc00000": "another text"}, "relevant_docs": {}}
    with pytest.raises(ValueError, match=r"doc00000.*another text"):
        nudge.insert_data_and_finetune(clash)
    assert nudge.corpus == before[0] and nudge.gamma_ == before[2]
    np.testing.assert_array_equal(nudge.get_finetuned_corpus_embeddings(), before[1])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"val": None}, "chooses γ on validation queries"),
        ({"params": {"nope": 1}}, "no parameter 'nope'"),
        ({"method": "adaptor"}, "unknown method .adaptor.; choose from nudge-cv"),
    ],
)
def test_bad_use_is_one_clear_error(sample, change, message):
    with pytest.raises(ValueError, match=message):
        nudge = given(sample, **change)
        nudge.finetune()


def test_without_an_embed_model_it_asks_for_vectors(sample):
    with pytest.raises(ValueError, match="no embed_model to embed the corpus"):
        Nudge(None, sample.dataset("train"), sample.dataset("val"))


# -- into LlamaIndex: nodes and a LlamaIndex LanceDB table ----------------------------------


def test_nodes_build_an_index_without_embedding_and_search_the_nudged_vectors(sample):
    from llama_index.core import VectorStoreIndex
    from llama_index.core.schema import QueryBundle

    nudge = given(sample)
    nudge.finetune()
    index = VectorStoreIndex(nodes=nudge.nodes(), embed_model=Refusing())
    retriever = index.as_retriever(similarity_top_k=5)
    vectors, ids = nudge.get_finetuned_corpus_embeddings(), list(nudge.corpus)
    for q in sample.splits["test"][:20]:
        query = sample.query_vectors[q]
        hits = retriever.retrieve(
            QueryBundle(query_str=sample.queries[q], embedding=query.tolist())
        )
        scores = vectors @ query / np.linalg.norm(query)
        expected = [ids[i] for i in np.argsort(-scores, kind="stable")[:5]]
        assert [h.node.node_id for h in hits] == expected
        assert hits[0].node.get_content() == sample.corpus[expected[0]]


def test_a_llama_index_lancedb_table_improved_in_place_and_searched_back(sample, tmp_path):
    pytest.importorskip("llama_index.vector_stores.lancedb")
    from llama_index.core import StorageContext, VectorStoreIndex
    from llama_index.core.schema import QueryBundle
    from llama_index.vector_stores.lancedb import LanceDBVectorStore

    uri = str(tmp_path / "lancedb")
    nudge = given(sample)  # not fitted yet: nodes() carry the original vectors
    VectorStoreIndex(
        nodes=nudge.nodes(metadata={d: {"source": "sample"} for d in sample.corpus}),
        storage_context=StorageContext.from_defaults(
            vector_store=LanceDBVectorStore(uri=uri, table_name="docs")
        ),
        embed_model=Refusing(),
    )
    test = sample.splits["test"]

    def ndcg_through_llama_index() -> float:
        store = LanceDBVectorStore(uri=uri, table_name="docs")
        retriever = VectorStoreIndex.from_vector_store(store, embed_model=Refusing()).as_retriever(
            similarity_top_k=10
        )
        ranked = []
        for q in test:
            hits = retriever.retrieve(
                QueryBundle(query_str="", embedding=sample.query_vectors[q].tolist())
            )
            ranked.append([list(sample.corpus).index(h.node.node_id) for h in hits])
        rel = Relevance.from_lists(
            [[list(sample.corpus).index(d) for d in sample.qrels[q]] for q in test],
            len(sample.corpus),
        )
        return retrieval_metrics(np.array(ranked), rel, ks=[10])["ndcg@10"]

    before = ndcg_through_llama_index()
    record = nudge.apply_to_store(f"lancedb:{uri}", table="docs", metric="l2")
    nudge.finetune()
    assert record["n_written"] == nudge.n_changed_ > 0
    assert record["gamma"] == nudge.gamma_
    after = ndcg_through_llama_index()
    assert after > before + 0.05

    import lancedb

    rows = lancedb.connect(uri).open_table("docs").to_arrow().to_pylist()
    by_id = {row["id"]: row for row in rows}
    stored = np.array([by_id[d]["vector"] for d in nudge.corpus], dtype=np.float32)
    np.testing.assert_allclose(stored, nudge.get_finetuned_corpus_embeddings(), atol=1e-6)
    # LlamaIndex's own columns are untouched: text, metadata, the node JSON
    first = by_id["doc00000"]
    assert first["text"] == sample.corpus["doc00000"]
    assert first["metadata"]["source"] == "sample"

    from nudgekit.workflows.apply import rollback_store

    rollback_store(f"lancedb:{uri}", table="docs")
    assert ndcg_through_llama_index() == pytest.approx(before)


def test_save_labels_feeds_nudgekit_fit(sample, tmp_path):
    from nudgekit.workflows.fit import fit_dataset

    nudge = given(sample)
    nudge.finetune()
    labels = nudge.save_labels(tmp_path / "labels")
    splits = json.loads((labels / "splits.json").read_text())
    assert splits == {"train": sample.splits["train"], "val": sample.splits["val"]}
    record = fit_dataset(sample_dir(), tmp_path / "run", method="nudge-n", labels_dir=labels)
    assert record["gamma"] == nudge.gamma_
    np.testing.assert_allclose(
        np.load(tmp_path / "run" / "embeddings.npy"),
        nudge.get_finetuned_corpus_embeddings(),
        atol=1e-6,
    )
