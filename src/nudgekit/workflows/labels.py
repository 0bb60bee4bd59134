"""The ``labels`` job: from query texts and what answers them to a labels folder.

:func:`build_labels` reads what a user has (:mod:`nudgekit.io.label_inputs`: BEIR files,
pair tables, click logs, LlamaIndex datasets), checks the documents against the store when
one is given, splits the queries, embeds their texts with the store's model and writes the
labels folder that ``apply --labels`` and ``fit --labels`` read (:mod:`nudgekit.io.labels`)
— all of it into a temporary folder published in one step, so a failure leaves nothing.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from nudgekit.core import ProgressCallback
from nudgekit.io.atomic import atomic_dir, write_json
from nudgekit.io.label_inputs import EventRule, LabelInputError, LabelTexts, read_label_input
from nudgekit.io.splits import pooled_splits, time_splits, with_val
from nudgekit.workflows.provenance import now, versions

SPLIT_RULES = ("auto", "random", "time", "file")


def build_labels(
    out_dir: str | os.PathLike[str],
    queries: str | os.PathLike[str],
    qrels: str | os.PathLike[str] | None = None,
    *,
    model: str,
    store: str | None = None,
    table: str | None = None,
    id_column: str | None = None,
    vector_column: str | None = None,
    corpus_ids: list[str] | None = None,
    drop_unknown: bool = False,
    split_by: str = "auto",
    seed: int = 0,
    events: EventRule | None = None,
    batch_size: int = 64,
    device: str = "cpu",
    progress: ProgressCallback | None = None,
) -> dict[str, Any]:
    """Write a labels folder from a user's label input; return its ``embed_meta.json``.

    Parameters
    ----------
    out_dir : path
        The labels folder to write (replaced whole if it exists).
    queries, qrels : path
        The input (see :func:`nudgekit.io.label_inputs.read_label_input`).
    model : str
        The sentence-transformers model the store's documents were embedded with (a local
        path, a Hub name, or the offline alias ``all-MiniLM-L6-v2``).
    store, table, id_column, vector_column : optional
        A store to check the documents, the dimension and the model against.
    corpus_ids : list of str, optional
        The document ids to check against when there is no store (a dataset's corpus).
    drop_unknown : bool
        Drop labels naming documents the store lacks (counted) instead of refusing them.
    split_by : {"auto", "random", "time", "file"}
        ``file``: the input's own splits (BEIR ``train``/``dev``/``test`` qrels files; no
        ``dev`` file: a tenth of train becomes ``val``). ``random``: the seeded pooled split
        (:func:`nudgekit.io.splits.pooled_splits`). ``time``: oldest queries train, newest
        test (click logs with timestamps). ``auto``: ``file`` when the input names splits,
        else ``random``.
    events : EventRule, optional
        How a click log's events become grades (default: :class:`EventRule`).
    """
    started = time.perf_counter()
    if split_by not in SPLIT_RULES:
        raise ValueError(f"--split-by must be one of {', '.join(SPLIT_RULES)}, got {split_by!r}")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out} exists and is not a directory")
    texts = read_label_input(queries, qrels, events=events)
    labelled = {q: d for q, d in texts.qrels.items() if d}
    if not labelled:
        raise LabelInputError(f"{queries}: no query has a relevant document")

    known: set[str] | None = set(corpus_ids) if corpus_ids is not None else None
    store_model: str | None = None
    store_dim: int | None = None
    spec = None
    if store is not None:
        from nudgekit.stores import open_store

        with open_store(store, table, id_column=id_column, vector_column=vector_column) as s:
            spec, store_dim, store_model = s.spec, s.dim, s.model() or _recorded_model(s)
            known = {i for batch in s.read() for i in batch.ids}
    dropped = _check_documents(labelled, known, spec or "the corpus", drop_unknown)
    labelled = {q: d for q, d in labelled.items() if d}
    splits = _splits(texts, labelled, split_by, seed)
    ids = [q for name in ("train", "val", "test") for q in splits.get(name, [])]
    if not splits.get("train"):
        raise LabelInputError(f"{queries}: no training queries left to fit on")

    from nudgekit.io.embedding import load_model, resolve_model, same_model

    resolved = resolve_model(model)
    if store_model and not same_model(store_model, resolved.name):
        raise ValueError(
            f"model mismatch: {spec} is recorded as {store_model!r} but --model is "
            f"{resolved.name!r}; queries and documents must come from the same model"
        )
    st = load_model(resolved, device=device)
    dimension = getattr(st, "get_embedding_dimension", None) or st.get_sentence_embedding_dimension
    dim = int(dimension())
    if store_dim is not None and dim != store_dim:
        raise ValueError(
            f"dimension mismatch: {resolved.name} embeds in {dim} dimensions but {spec} holds "
            f"vectors of {store_dim} (another model?)"
        )
    vectors = np.empty((len(ids), dim), dtype=np.float32)
    for start in range(0, len(ids), max(batch_size, 1) * 8):
        chunk = ids[start : start + batch_size * 8]
        vectors[start : start + len(chunk)] = st.encode(
            [texts.queries[q] for q in chunk],
            batch_size=batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        if progress is not None:
            progress("embed queries", start + len(chunk), len(ids))

    meta = {
        "model": resolved.name,
        "model_source": resolved.source,
        "dims": dim,
        "normalized": True,
        "query_text": "as given",
        "source": texts.source,
        "split_by": split_by if split_by != "auto" else ("file" if texts.splits else "random"),
        "split_seed": seed,
        "splits": {name: len(v) for name, v in splits.items()},
        "n_queries": len(ids),
        "n_qrels": sum(len(labelled[q]) for q in ids),
        "n_dropped_labels": dropped,
        "checked_against": spec,
        "created": now(),
        "seconds": round(time.perf_counter() - started, 3),
        "versions": versions(),
    }
    with atomic_dir(out) as work:
        np.save(work / "queries.npy", vectors, allow_pickle=False)
        write_json(work / "query_ids.json", ids)
        write_json(work / "qrels.json", {q: labelled[q] for q in ids})
        write_json(work / "splits.json", splits)
        write_json(work / "embed_meta.json", meta)
    return meta


def _check_documents(
    labelled: dict[str, dict[str, float]], known: set[str] | None, where: str, drop: bool
) -> int:
    """Refuse (or drop, counted) labels naming documents ``known`` lacks."""
    if known is None:
        return 0
    missing = [(q, d) for q, docs in labelled.items() for d in docs if d not in known]
    if missing and not drop:
        shown = "; ".join(f"{d!r} (query {q!r})" for q, d in missing[:5])
        raise LabelInputError(
            f"{len(missing)} label(s) name documents that are not in {where}: {shown}. Pass "
            "--drop-unknown to drop them."
        )
    for q, d in missing:
        del labelled[q][d]
    return len(missing)


def _splits(
    texts: LabelTexts, labelled: dict[str, dict[str, float]], rule: str, seed: int
) -> dict[str, list[str]]:
    if rule == "auto":
        rule = "file" if texts.splits else "random"
    if rule == "random":
        return pooled_splits(labelled, seed=seed)
    if rule == "time":
        if not texts.first_seen:
            raise LabelInputError("--split-by time needs timestamps (a click log's time column)")
        return time_splits({q: texts.first_seen[q] for q in labelled if q in texts.first_seen})
    if not texts.splits:
        raise LabelInputError("--split-by file needs qrels files named train, dev or test")
    named = {name: [q for q in ids if q in labelled] for name, ids in texts.splits.items()}
    return with_val(named, seed=seed)


def _recorded_model(store: Any) -> str | None:
    for record in reversed(store.history()):
        if record.get("kind") == "apply" and record.get("model"):
            return str(record["model"])
    return None


@contextmanager
def temporary_labels(queries: str | os.PathLike[str], **options: Any) -> Iterator[Path]:
    """:func:`build_labels` into a temporary folder, for one ``apply`` or ``fit`` call
    (``fit --queries ...``): yields the folder, removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="nudgekit-labels-") as tmp:
        folder = Path(tmp) / "labels"
        build_labels(folder, queries, options.pop("qrels", None), **options)
        yield folder
