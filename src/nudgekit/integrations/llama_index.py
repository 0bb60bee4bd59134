"""LlamaIndex drop-in: ``from nudgekit.integrations.llama_index import Nudge``.

:class:`Nudge` has the constructor and methods of ``llama_index.experimental.Nudge`` —
``Nudge(embed_model, train_dataset, val_dataset, use_nudge_n=True, device=None)``,
``finetune()``, ``insert_data_and_finetune(new_train_dataset_batch,
new_val_dataset_batch=None)``, ``get_finetuned_corpus_embeddings()`` — and gives the same
γ and embeddings (it is nudgekit's NUDGE-N / NUDGE-M, which match nudge-ft exactly). What
it adds:

- the corpus is embedded with ``get_text_embedding_batch`` (the model's own batches), and
  queries ``query_workers`` at a time (LlamaIndex has no batched query call; for an API
  model these are concurrent requests); or pass ``corpus_embeddings=`` /
  ``query_embeddings=`` you already have, and nothing is embedded;
- datasets as LlamaIndex's ``EmbeddingQAFinetuneDataset``, its ``save_json`` file, or a
  plain dict — ``llama-index-finetuning`` is never imported;
- ``insert_data_and_finetune`` works without a validation batch and takes new labelled
  queries for documents already in the corpus: every fit starts from the original
  embeddings with all labels so far (as ``nudgekit apply`` does), so inserting never
  nudges a nudged vector again;
- ``method="nudge-cv"`` (nudgekit's default, more accurate than NUDGE-N; docs/results.md)
  and any other nudgekit method, with ``params``;
- the chosen γ and validation curve (``gamma_``, ``validation_curve_``), the changed
  documents (``changed_ids_``);
- :meth:`Nudge.nodes`: ``TextNode`` objects carrying the nudged vectors, so
  ``VectorStoreIndex(nodes=...)`` makes no embedding call; :meth:`Nudge.apply_to_store`:
  the same fit written into a LanceDB, pgvector, Chroma, Qdrant or FAISS store that a
  LlamaIndex vector store reads, through ``nudgekit apply`` (only changed rows, originals
  kept, row-wise rollback); :meth:`Nudge.save_labels` for ``nudgekit apply --labels``.

Only ``llama-index-core`` is needed, and only for :meth:`Nudge.nodes` and for the
``embed_model`` you pass: this module imports no LlamaIndex code at import time.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from nudgekit.core import NudgeEstimator
from nudgekit.io.atomic import atomic_dir, write_json
from nudgekit.io.label_inputs import QADataset, read_qa_dataset
from nudgekit.methods import method_spec

__all__ = ["Nudge"]

SPLITS = ("train", "val")


class Nudge:
    """NUDGE for a LlamaIndex corpus: ``llama_index.experimental.Nudge``'s interface.

    Parameters
    ----------
    embed_model : llama_index BaseEmbedding, optional
        Embeds the corpus (``get_text_embedding_batch``) and the queries
        (``get_query_embedding``). Not needed when every vector is given.
    train_dataset : EmbeddingQAFinetuneDataset, its JSON path, or a dict
        ``queries`` {id: text}, ``corpus`` {doc id: text} (the corpus to fine-tune, in
        this order) and ``relevant_docs`` {query id: [doc ids]}.
    val_dataset : same, optional
        Validation queries (their ``corpus`` is ignored, as LlamaIndex's does): γ is chosen
        on them. Needed by ``nudge-n`` / ``nudge-m`` unless ``gamma`` is given.
    use_nudge_n : bool
        NUDGE-N (True, as LlamaIndex's default) or NUDGE-M; ``method`` overrides it.
    device : str, optional
        ``None`` / ``"cpu"`` (numpy), ``"torch"``, ``"cuda"``, ``"cuda:N"``.
    method : str, optional
        Any nudgekit method for ``fit`` (``nudge-cv``, ``nudge-n``, ``nudge-m``, ...).
    params : mapping, optional
        The method's further parameters (``{"cv": "val"}``), as ``--param`` on the CLI.
    gamma : float, optional
        A fixed step: no validation search.
    corpus_embeddings : array (N, d), optional
        The corpus's vectors, rows in ``train_dataset.corpus`` order: the corpus is not
        embedded.
    query_embeddings : mapping, optional
        ``{query id: vector}`` for queries already embedded (any split, later batches too).
    query_workers : int
        Queries embedded at a time.
    show_progress : bool
        Passed to ``get_text_embedding_batch``.

    Attributes
    ----------
    corpus : dict
        ``{doc id: text}``, the corpus in row order (inserted documents at the end).
    corpus_embeddings : float32 array (N, d)
        The original vectors until :meth:`finetune`, then the fine-tuned ones.
    estimator_ : NudgeEstimator
        The fitted estimator (after :meth:`finetune`).
    """

    def __init__(
        self,
        embed_model: Any = None,
        train_dataset: Any = None,
        val_dataset: Any = None,
        use_nudge_n: bool = True,
        device: str | None = None,
        *,
        method: str | None = None,
        params: Mapping[str, Any] | None = None,
        gamma: float | None = None,
        corpus_embeddings: Any = None,
        query_embeddings: Mapping[str, Any] | None = None,
        query_workers: int = 4,
        show_progress: bool = False,
    ) -> None:
        if train_dataset is None:
            raise ValueError("train_dataset is required: the labelled queries and their corpus")
        self.method = method or ("nudge-n" if use_nudge_n else "nudge-m")
        self._spec = method_spec(self.method, nudge=True)
        self.params = dict(params or {})
        self.gamma = gamma
        self.device = None if device == "cpu" else device
        # the estimator's own checks (unknown params, bad γ), before anything is embedded
        self._spec.make_estimator(gamma=gamma, device=self.device, params=self.params)
        if query_workers < 1:
            raise ValueError(f"query_workers must be >= 1, got {query_workers}")
        self.embed_model = embed_model
        self.query_workers = query_workers
        self.show_progress = show_progress

        train = read_qa_dataset(train_dataset, "train_dataset")
        val = read_qa_dataset(val_dataset, "val_dataset") if val_dataset is not None else None
        if not train.corpus:
            raise ValueError("train_dataset: its corpus is empty; it is the corpus NUDGE tunes")
        self.corpus: dict[str, str] = {}
        self._queries: dict[str, dict[str, str]] = {name: {} for name in SPLITS}
        self._relevant: dict[str, dict[str, list[str]]] = {name: {} for name in SPLITS}
        self._query_vectors: dict[str, np.ndarray] = {}
        self._given_queries = _vector_map(query_embeddings, "query_embeddings")
        plan = self._plan(train, val, "train_dataset", "val_dataset")
        self._originals = self._embed_corpus(plan["corpus"], corpus_embeddings)
        self._embed_queries_of(plan)  # everything embedded up front, as LlamaIndex's does
        self._commit(plan)
        self.corpus_embeddings: np.ndarray = self._originals.copy()
        self.estimator_: NudgeEstimator | None = None

    # -- LlamaIndex's interface ----------------------------------------------------------

    def finetune(self) -> None:
        """Fit on every labelled query so far, from the original embeddings."""
        if not self._relevant["train"]:
            raise ValueError("no training query names a document of the corpus")
        estimator = self._spec.make_estimator(
            gamma=self.gamma, device=self.device, params=self.params
        )
        ids = list(self.corpus)
        train_ids, val_ids = list(self._relevant["train"]), list(self._relevant["val"])
        if not val_ids and estimator.uses_val and estimator.searches_gamma:
            raise ValueError(
                f"{self.method} chooses γ on validation queries: pass val_dataset (or "
                "new_val_dataset_batch), or a fixed gamma"
            )
        queries = self._embed_queries(train_ids + val_ids)
        estimator.fit(
            self._originals,
            queries[: len(train_ids)],
            _qrels(self._relevant["train"]),
            queries[len(train_ids) :] if val_ids else None,
            _qrels(self._relevant["val"]) if val_ids else None,
            corpus_ids=ids,
            train_query_ids=train_ids,
            val_query_ids=val_ids or None,
        )
        self.corpus_embeddings = np.asarray(estimator.transform(self._originals), np.float32)
        self.estimator_ = estimator

    def insert_data_and_finetune(
        self,
        new_train_dataset_batch: Any,
        new_val_dataset_batch: Any = None,
        *,
        corpus_embeddings: Any = None,
    ) -> None:
        """Add documents and labelled queries, then fit again from the originals.

        New documents (``new_train_dataset_batch.corpus``) are appended to the corpus; an
        id already there must carry the same text. Its queries may name new documents and
        documents already in the corpus. ``new_val_dataset_batch`` adds validation queries;
        without it the validation queries so far choose γ. ``corpus_embeddings`` are the
        new documents' vectors (rows in the batch corpus's order). Nothing changes if any
        check fails.
        """
        train = read_qa_dataset(new_train_dataset_batch, "new_train_dataset_batch")
        val = (
            read_qa_dataset(new_val_dataset_batch, "new_val_dataset_batch")
            if new_val_dataset_batch is not None
            else None
        )
        plan = self._plan(train, val, "new_train_dataset_batch", "new_val_dataset_batch")
        added = self._embed_corpus(plan["corpus"], corpus_embeddings, allow_empty=True)
        if added.shape[1] != self._originals.shape[1]:
            raise ValueError(
                f"new documents have {added.shape[1]} dimensions, the corpus "
                f"{self._originals.shape[1]}"
            )
        self._embed_queries_of(plan)
        before = self._state()
        self._commit(plan)
        self._originals = np.concatenate([self._originals, added])
        try:
            self.finetune()
        except BaseException:
            self._restore(before)
            raise

    def get_finetuned_corpus_embeddings(self) -> np.ndarray:
        """The corpus's vectors (N × d float32), rows in :attr:`corpus` order."""
        return self.corpus_embeddings

    # -- what nudgekit adds --------------------------------------------------------------

    @property
    def gamma_(self) -> float:
        return float(self._fitted().gamma_)

    @property
    def validation_curve_(self) -> dict[str, Any] | None:
        return self._fitted().validation_curve_

    @property
    def n_changed_(self) -> int:
        return int(self._fitted().n_changed_)

    @property
    def changed_ids_(self) -> list[str]:
        """Ids of the documents whose vector the fit changed."""
        ids = list(self.corpus)
        return [ids[i] for i in self._fitted().changed_rows_]

    @property
    def query_embeddings_(self) -> dict[str, np.ndarray]:
        """``{query id: vector}`` of every labelled query embedded or given so far (pass it
        as ``query_embeddings=`` to a later drop-in to embed nothing again)."""
        ids = [*self._relevant["train"], *self._relevant["val"]]
        return {
            q: v
            for q in ids
            if (v := self._given_queries.get(q, self._query_vectors.get(q))) is not None
        }

    @property
    def original_embeddings(self) -> np.ndarray:
        """The corpus's vectors before any fit (as embedded or given)."""
        return self._originals

    def nodes(
        self, metadata: Mapping[str, Mapping[str, Any]] | None = None, *, original: bool = False
    ) -> list[Any]:
        """The corpus as LlamaIndex ``TextNode`` objects carrying the current vectors
        (``original``: those before any fit), ``id_`` = doc id, optionally with
        ``metadata[doc_id]``: ``VectorStoreIndex(nodes=..., embed_model=...)`` then embeds
        nothing."""
        from llama_index.core.schema import TextNode

        metadata = metadata or {}
        vectors = self._originals if original else self.corpus_embeddings
        return [
            TextNode(
                id_=doc,
                text=text,
                embedding=vectors[i].tolist(),
                metadata=dict(metadata.get(doc, {})),
            )
            for i, (doc, text) in enumerate(self.corpus.items())
        ]

    def save_labels(self, directory: str | os.PathLike[str]) -> Path:
        """Write the labelled queries as a labels folder (``nudgekit apply --labels``,
        ``nudgekit fit --labels``): query vectors, ids, qrels and splits. Published whole."""
        ids = {name: list(self._relevant[name]) for name in SPLITS}
        every = ids["train"] + ids["val"]
        vectors = self._embed_queries(every)
        model = _model_name(self.embed_model)
        out = Path(directory)
        with atomic_dir(out) as work:
            np.save(work / "queries.npy", vectors, allow_pickle=False)
            write_json(work / "query_ids.json", every)
            write_json(
                work / "qrels.json", _qrels({**self._relevant["train"], **self._relevant["val"]})
            )
            write_json(work / "splits.json", {name: ids[name] for name in SPLITS if ids[name]})
            write_json(
                work / "embed_meta.json",
                {
                    "model": model,
                    "dims": int(vectors.shape[1]),
                    "source": {"format": "llama_index"},
                },
            )
        return out

    def apply_to_store(
        self,
        store: str | os.PathLike[str] | Any,
        *,
        table: str | None = None,
        id_column: str | None = None,
        vector_column: str | None = None,
        metric: str | None = None,
        dry_run: bool = False,
    ) -> dict[str, Any]:
        """Fit the same method on the store's vectors with these labels and write back
        only the rows that change (``nudgekit apply``: originals kept, all-or-nothing,
        ``nudgekit rollback`` undoes it row by row). The store's ids are the corpus's doc
        ids. Returns the apply record (γ, rows written, versions, warnings)."""
        from nudgekit.workflows.apply import apply_to_store

        with tempfile.TemporaryDirectory(prefix="nudgekit-labels-") as tmp:
            labels = self.save_labels(Path(tmp) / "labels")
            return apply_to_store(
                store,
                labels,
                table=table,
                id_column=id_column,
                vector_column=vector_column,
                method=self.method,
                gamma=self.gamma,
                params=self.params,
                metric=metric,
                device=self.device,
                dry_run=dry_run,
                force_model=_model_name(self.embed_model) is None,
            )

    # -- internals -----------------------------------------------------------------------

    def _fitted(self) -> NudgeEstimator:
        if self.estimator_ is None:
            raise ValueError("not fitted yet: call finetune() first")
        return self.estimator_

    def _plan(
        self, train: QADataset, val: QADataset | None, train_name: str, val_name: str
    ) -> dict[str, Any]:
        """Check a batch against what is held, without changing anything."""
        corpus: dict[str, str] = {}
        for doc, text in train.corpus.items():
            if doc in self.corpus:
                if self.corpus[doc] != text:
                    raise ValueError(
                        f"{train_name}: document {doc!r} is already in the corpus with another "
                        "text; an id names one document"
                    )
            else:
                corpus[doc] = text
        known = self.corpus.keys() | corpus.keys()
        queries: dict[str, dict[str, str]] = {name: {} for name in SPLITS}
        relevant: dict[str, dict[str, list[str]]] = {name: {} for name in SPLITS}
        for split, dataset, name in (("train", train, train_name), ("val", val, val_name)):
            if dataset is None:
                continue
            other = "val" if split == "train" else "train"
            for qid, docs in dataset.relevant_docs.items():
                text = dataset.queries[qid]
                if qid in self._queries[other] or qid in queries[other]:
                    raise ValueError(f"{name}: query {qid!r} is already a {other} query")
                held = self._queries[split].get(qid)
                if held is not None and held != text:
                    raise ValueError(f"{name}: query {qid!r} is already held with another text")
                missing = [d for d in docs if d not in known]
                if missing:
                    raise ValueError(
                        f"{name}: relevant_docs[{qid!r}] names {missing[0]!r}, which is not in "
                        "the corpus (the training corpus and the documents inserted so far)"
                    )
                if docs:
                    queries[split][qid] = text
                    merged = self._relevant[split].get(qid, []) + list(docs)
                    relevant[split][qid] = list(dict.fromkeys(merged))
        return {"corpus": corpus, "queries": queries, "relevant": relevant}

    def _commit(self, plan: Mapping[str, Any]) -> None:
        self.corpus.update(plan["corpus"])
        for split in SPLITS:
            self._queries[split].update(plan["queries"][split])
            self._relevant[split].update(plan["relevant"][split])

    def _state(self) -> dict[str, Any]:
        return {
            "corpus": dict(self.corpus),
            "queries": {k: dict(v) for k, v in self._queries.items()},
            "relevant": {k: dict(v) for k, v in self._relevant.items()},
            "originals": self._originals,
            "embeddings": self.corpus_embeddings,
            "estimator": self.estimator_,
        }

    def _restore(self, state: Mapping[str, Any]) -> None:
        self.corpus, self._queries, self._relevant = (
            state["corpus"],
            state["queries"],
            state["relevant"],
        )
        self._originals, self.corpus_embeddings = state["originals"], state["embeddings"]
        self.estimator_ = state["estimator"]

    def _embed_corpus(
        self, corpus: Mapping[str, str], given: Any, *, allow_empty: bool = False
    ) -> np.ndarray:
        if given is not None:
            vectors = _matrix(given, "corpus_embeddings")
            if len(vectors) != len(corpus):
                raise ValueError(
                    f"corpus_embeddings has {len(vectors)} rows for {len(corpus)} new documents"
                )
            return vectors
        if not corpus:
            if allow_empty:
                return np.empty((0, self._originals.shape[1]), np.float32)
            raise ValueError("no documents to embed")
        model = self._model("the corpus")
        texts = list(corpus.values())
        return _matrix(
            model.get_text_embedding_batch(texts, show_progress=self.show_progress),
            "embed_model.get_text_embedding_batch",
        )

    def _embed_queries_of(self, plan: Mapping[str, Any]) -> None:
        """Embed (and check) a plan's queries before it is committed."""
        texts = {**plan["queries"]["train"], **plan["queries"]["val"]}
        self._embed_queries(list(texts), texts)

    def _embed_queries(
        self, ids: Sequence[str], texts: Mapping[str, str] | None = None
    ) -> np.ndarray:
        """Vectors of the given query ids: given ones, cached ones, the rest embedded."""
        if texts is None:
            texts = {**self._queries["train"], **self._queries["val"]}
        todo = [
            q
            for q in dict.fromkeys(ids)
            if q not in self._query_vectors and q not in self._given_queries
        ]
        if todo:
            model = self._model("queries")
            with ThreadPoolExecutor(max_workers=min(self.query_workers, len(todo))) as pool:
                done = list(pool.map(model.get_query_embedding, [texts[q] for q in todo]))
            vectors = _matrix(done, "embed_model.get_query_embedding")
            self._query_vectors.update(zip(todo, vectors, strict=True))
        if not ids:
            return np.empty((0, self._originals.shape[1]), np.float32)
        out = np.stack([self._given_queries.get(q, self._query_vectors.get(q)) for q in ids])
        if out.shape[1] != self._originals.shape[1]:
            raise ValueError(
                f"queries have {out.shape[1]} dimensions but the corpus has "
                f"{self._originals.shape[1]} (another embedding model?)"
            )
        return out

    def _model(self, what: str) -> Any:
        if self.embed_model is None:
            raise ValueError(
                f"no embed_model to embed {what} with: pass one, or pass their vectors "
                "(corpus_embeddings=, query_embeddings=)"
            )
        return self.embed_model


def _model_name(model: Any) -> str | None:
    """The embedding model's name as LlamaIndex records it (``"unknown"`` is none)."""
    name = getattr(model, "model_name", None)
    return name if isinstance(name, str) and name and name != "unknown" else None


def _qrels(relevant: Mapping[str, Sequence[str]]) -> dict[str, dict[str, float]]:
    return {q: dict.fromkeys(docs, 1.0) for q, docs in relevant.items()}


def _matrix(values: Any, name: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float32)
    if array.ndim != 2 or array.shape[1] == 0:
        raise ValueError(f"{name}: expected an N × d matrix of vectors, got shape {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError(f"{name}: contains NaN or infinite values")
    return array


def _vector_map(vectors: Mapping[str, Any] | None, name: str) -> dict[str, np.ndarray]:
    if not vectors:
        return {}
    if not isinstance(vectors, Mapping):
        raise ValueError(f"{name}: expected a mapping {{query id: vector}}")
    ids = list(vectors)
    matrix = _matrix([vectors[q] for q in ids], name)
    return dict(zip(ids, matrix, strict=True))
