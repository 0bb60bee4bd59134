"""The ``eval`` job: exact inner-product k-NN retrieval quality of one split.

The corpus — ``corpus.npy``, a fit's ``embeddings.npy``, or Parquet shards with a fit's
``changed.parquet`` laid over them — is read once, as a block source, through
:func:`nudgekit.evaluation.search_source`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from nudgekit.core import ArraySource, Block, ProgressCallback, Relevance, normalised_rows
from nudgekit.evaluation import retrieval_metrics, search_source
from nudgekit.io.dataset import EmbeddedDataset, load_dataset, load_matrix


def evaluate_dataset(
    dataset_dir: str | os.PathLike[str],
    *,
    embeddings: str | os.PathLike[str] | None = None,
    split: str = "test",
    k: int = 10,
    progress: ProgressCallback | None = None,
) -> dict[str, Any]:
    """Exact inner-product k-NN retrieval quality of a split's queries.

    Scores ``embeddings`` (an N × d ``.npy`` in corpus row order) or, without it, the raw
    corpus. Returns ``ndcg@k``, ``recall@k``, ``r_cap@k``, ``mrr@k``, ``map@100``,
    ``accuracy@1`` and friends.

    On a Parquet dataset (a ``corpus/`` folder of shards) ``embeddings`` is the
    ``changed.parquet`` of a fit: the corpus is scored as that fit's output, i.e. rows
    L2-normalised and the changed records replaced, exactly what ``embeddings.npy`` holds
    on the ``.npy`` layout.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    from nudgekit.io.parquet import is_parquet_dataset

    if is_parquet_dataset(dataset_dir):
        return _evaluate_parquet(
            dataset_dir, changed=embeddings, split=split, k=k, progress=progress
        )
    data = load_dataset(dataset_dir)
    ks = sorted({1, k, 100})
    indices, relevance = rank_split(
        data, split, embeddings=embeddings, depth=max(ks), progress=progress
    )
    return {
        "split": split,
        "embeddings": str(embeddings) if embeddings is not None else None,
        **retrieval_metrics(indices, relevance, ks=ks),
    }


def rank_split(
    data: EmbeddedDataset,
    split: str = "test",
    *,
    embeddings: str | os.PathLike[str] | None = None,
    depth: int = 100,
    progress: ProgressCallback | None = None,
) -> tuple[np.ndarray, Relevance]:
    """Each query of ``split``'s ranked corpus rows (exact inner product, ``depth`` deep),
    over the raw corpus or ``embeddings`` (an N × d ``.npy``), with the split's labels:
    what :func:`evaluate_dataset` scores, for callers that need more than the means."""
    chosen = data.split(split)
    corpus, name = data.corpus, "corpus.npy"
    if embeddings is not None:
        corpus, name = load_matrix(Path(embeddings)), str(embeddings)
        if corpus.shape != data.corpus.shape:
            raise ValueError(
                f"{embeddings}: shape {corpus.shape} does not match the corpus {data.corpus.shape}"
            )
    source = ArraySource(corpus, name)
    _, indices = search_source(
        chosen.queries,
        source,
        depth,
        progress=None
        if progress is None
        else lambda done: progress("search", done, source.n_records),
    )
    return indices, chosen.relevance


def _metrics(
    queries: np.ndarray,
    source: Any,
    relevance: Relevance | Any,
    k: int,
    progress: ProgressCallback | None,
) -> dict[str, float]:
    """Search ``source`` once; ``relevance`` may be a callable giving it after the pass."""
    ks = sorted({1, k, 100})
    _, indices = search_source(
        queries,
        source,
        max(ks),
        progress=None
        if progress is None
        else lambda done: progress("search", done, source.n_records),
    )
    rel = relevance() if callable(relevance) else relevance
    return retrieval_metrics(indices, rel, ks=ks)


class FitOutput:
    """Parquet shards read as a fit's output: rows normalised, changed records replaced.

    Also finds, as it reads, the corpus row of each labelled id (``rows_of_label``).
    """

    def __init__(self, corpus: Any, labels: np.ndarray, changed: Any = None) -> None:
        from nudgekit.io.parquet import read_changed_rows

        self.corpus = corpus
        self.n_records, self.dim = corpus.n_records, corpus.dim
        self.labels = labels
        self.rows_of_label = np.full(len(labels), -1, dtype=np.int64)
        self.changed = changed
        self.new_ids, self.new_vectors = (
            read_changed_rows(changed, corpus.dim) if changed is not None else (None, None)
        )
        self.applied = np.zeros(0 if self.new_ids is None else len(self.new_ids), dtype=bool)

    def blocks(self, block_rows: int) -> Iterator[Block]:
        for block in self.corpus.blocks(block_rows):
            at, found = _positions(self.labels, block.ids)
            self.rows_of_label[at[found]] = block.start + np.flatnonzero(found)
            if self.new_ids is None:
                yield block
                continue
            # a fit's output: normalised rows (as the fit's writer), changed ones replaced
            vectors = normalised_rows(block, self.corpus)
            at, found = _positions(self.new_ids, block.ids)
            vectors[found] = self.new_vectors[at[found]]  # type: ignore[index]
            self.applied[at[found]] = True
            yield Block(block.start, vectors, block.ids)

    def describe(self, block: Block, i: int, problem: str) -> str:
        return self.corpus.describe(block, i, problem)

    def where(self, row: int) -> str:
        return self.corpus.where(row)

    def check_complete(self) -> None:
        """After the pass: every id of ``changed.parquet`` was in the corpus."""
        if self.new_ids is not None and not self.applied.all():
            missing = self.new_ids[np.flatnonzero(~self.applied)[0]].decode("utf-8")
            raise ValueError(f"{self.changed}: id {missing!r} is not in the corpus")


def _evaluate_parquet(
    dataset_dir: str | os.PathLike[str],
    *,
    changed: str | os.PathLike[str] | None,
    split: str,
    k: int,
    progress: ProgressCallback | None,
) -> dict[str, Any]:
    """:func:`evaluate_dataset` on Parquet shards: one pass, ``changed.parquet`` overlaid."""
    from nudgekit.io.parquet import load_parquet_dataset

    data = load_parquet_dataset(dataset_dir)
    labels, splits = data.labelled_splits((split,))
    chosen = splits[split]
    source = FitOutput(data.corpus, labels, changed)

    def relevance() -> Relevance:
        missing = np.flatnonzero(source.rows_of_label < 0)
        if len(missing):
            raise ValueError(
                f"qrels.json: relevant id {labels[missing[0]].decode('utf-8')!r} (split "
                f"{split!r}) is not in the corpus"
            )
        source.check_complete()
        rel = chosen.relevance
        return Relevance.from_coo(
            rel.query_of_entry(),
            source.rows_of_label[rel.indices],
            rel.n_queries,
            data.n_records,
            rel.grades,
        )

    return {
        "split": split,
        "embeddings": str(changed) if changed is not None else None,
        **_metrics(chosen.queries, source, relevance, k, progress),
    }


def _positions(sorted_keys: np.ndarray, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Where each of ``keys`` stands in ``sorted_keys``, and whether it is there at all."""
    at = np.searchsorted(sorted_keys, keys)
    found = at < len(sorted_keys)
    found[found] = sorted_keys[at[found]] == keys[found]
    return at, found
