"""The quickstart: the whole product loop on the bundled sample, in a local folder.

1. write the sample's documents (ids, texts, all-MiniLM-L6-v2 vectors) into a LanceDB
   table — an embedded store, no server;
2. write the labelled queries as a labels directory;
3. ``apply`` NUDGE to the store (only the changed rows are rewritten, originals kept),
   which measures retrieval quality on the held-out test queries before and after;
4. pick a few test queries whose top result changed, to show what moved;
5. fit the same method on the sample as a run directory and write its HTML report,
   which also says what happened to the store and how to roll it back;
6. write the labelled questions as a plain CSV too (``questions.csv``), the form users
   have them in, for ``nudgekit labels`` and ``apply --queries``.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from nudgekit.core import ProgressCallback
from nudgekit.evaluation import search
from nudgekit.io.atomic import atomic_file
from nudgekit.io.dataset import load_dataset
from nudgekit.io.sample import sample_dir
from nudgekit.methods import DEFAULT_METHOD, method_spec
from nudgekit.workflows.apply import apply_to_store
from nudgekit.workflows.fit import fit_dataset

TABLE = "docs"
LABEL_FILES = ("queries.npy", "query_ids.json", "qrels.json", "splits.json", "embed_meta.json")


def run_quickstart(
    directory: str | os.PathLike[str] = "nudgekit-quickstart",
    *,
    method: str = DEFAULT_METHOD,
    n_examples: int = 3,
    progress: ProgressCallback | None = None,
) -> dict[str, Any]:
    """Run the quickstart in ``directory`` (created; an earlier quickstart there is replaced).

    Returns
    -------
    dict
        ``store`` (the ``lancedb:PATH`` spec), ``table``, ``labels`` (directory), ``apply``
        (the apply record: γ, counts, test metrics before/after), ``examples`` (test
        queries whose top result changed: text, relevant titles, top-3 titles before and
        after), ``report`` (path of the HTML report, or None when matplotlib is missing).
    """
    spec = method_spec(method, nudge=True)  # before anything is created
    root = Path(directory)
    sample = sample_dir()
    store_path = root / "store.lancedb"
    labels = root / "labels"
    run = root / "run"
    for stale in (store_path, labels, run):
        if stale.exists():
            shutil.rmtree(stale)
    labels.mkdir(parents=True)
    for name in LABEL_FILES:
        shutil.copyfile(sample / name, labels / name)
    _write_questions(root / "questions.csv", sample)
    _write_store(store_path, sample)

    record = apply_to_store(
        f"lancedb:{store_path}",
        labels,
        table=TABLE,
        method=method,
        metric="cosine" if spec.unit_norm else "dot",
        progress=progress,
    )
    examples = _changed_examples(store_path, sample, n_examples)

    fit_dataset(sample, run, method=method, progress=progress)
    try:
        from nudgekit.workflows.report import write_report
    except ImportError:  # matplotlib is an optional extra
        report = None
    else:
        store = {**record, "store": f"lancedb:{store_path}", "table": TABLE}
        report = str(write_report(run, applied=store))
    return {
        "store": f"lancedb:{store_path}",
        "table": TABLE,
        "labels": str(labels),
        "apply": record,
        "examples": examples,
        "report": report,
    }


def _write_questions(path: Path, sample: Path) -> None:
    """The sample's labelled questions as a user would have them: a CSV of (question, the
    document that answers it) — what ``apply --queries`` and ``nudgekit labels`` read."""
    import csv

    queries = _read_jsonl(sample / "texts" / "queries.jsonl")
    qrels = json.loads((sample / "qrels.json").read_text())
    with atomic_file(path, "w") as f:
        writer = csv.writer(f)
        writer.writerow(["question", "doc_id"])
        for qid, docs in qrels.items():
            writer.writerows((queries[qid]["text"], doc) for doc in docs)


def _write_store(path: Path, sample: Path) -> None:
    """The sample's documents as a LanceDB table: id, title, text, vector (float32)."""
    import lancedb
    import pyarrow as pa

    data = load_dataset(sample)
    texts = _read_jsonl(sample / "texts" / "corpus.jsonl")
    vectors = np.asarray(data.corpus, dtype=np.float32)
    flat = pa.array(vectors.reshape(-1))
    vector_type = pa.list_(pa.float32(), vectors.shape[1])
    table = pa.table(
        {
            "id": pa.array(data.corpus_ids, pa.string()),
            "title": pa.array([texts[i]["title"] for i in data.corpus_ids], pa.string()),
            "text": pa.array([texts[i]["text"] for i in data.corpus_ids], pa.string()),
            "vector": pa.FixedSizeListArray.from_arrays(flat, type=vector_type),
        }
    )
    lancedb.connect(path).create_table(TABLE, table)


def _changed_examples(store_path: Path, sample: Path, n: int) -> list[dict[str, Any]]:
    """Test queries whose top result changed, the ones that became right first."""
    import lancedb

    data = load_dataset(sample)
    test = data.split("test")
    docs = _read_jsonl(sample / "texts" / "corpus.jsonl")
    queries = _read_jsonl(sample / "texts" / "queries.jsonl")
    rows = lancedb.connect(store_path).open_table(TABLE).to_arrow()
    row_of = {doc: i for i, doc in enumerate(rows["id"].to_pylist())}
    after = np.asarray(rows["vector"].to_pylist(), dtype=np.float32)
    order = np.fromiter((row_of[d] for d in data.corpus_ids), dtype=np.int64)
    after = after[order]  # back to the sample's row order
    before = np.asarray(data.corpus, dtype=np.float32)
    before = before / np.linalg.norm(before, axis=1, keepdims=True)
    _, top_before = search(test.queries, before, 3)
    _, top_after = search(test.queries, after, 3)
    changed = np.flatnonzero(top_before[:, 0] != top_after[:, 0])
    relevant = test.relevance

    def is_relevant(j: int, row: int) -> bool:
        return row in relevant.indices[relevant.indptr[j] : relevant.indptr[j + 1]]

    # fixed first (wrong → right), then the rest of the changes
    changed = sorted(
        changed.tolist(),
        key=lambda j: (not is_relevant(j, top_after[j, 0]), is_relevant(j, top_before[j, 0])),
    )

    def titles(rows_: np.ndarray, j: int) -> list[dict[str, Any]]:
        return [
            {"title": docs[data.corpus_ids[r]]["title"], "relevant": is_relevant(j, int(r))}
            for r in rows_
        ]

    return [
        {
            "query": queries[test.query_ids[j]]["text"],
            "before": titles(top_before[j], j),
            "after": titles(top_after[j], j),
        }
        for j in changed[:n]
    ]


def _read_jsonl(path: Path) -> dict[str, dict[str, Any]]:
    with open(path, encoding="utf-8") as f:
        return {rec["_id"]: rec for rec in (json.loads(line) for line in f if line.strip())}
