"""The small embedded sample dataset that ships with nudgekit (docs/sample.md)."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any


def sample_dir() -> Path:
    """The bundled sample: an embedded dataset directory with its texts under ``texts/``."""
    return Path(str(resources.files("nudgekit") / "_sample"))


def sample_qa_dataset(split: str) -> dict[str, Any]:
    """One split of the sample as a LlamaIndex ``EmbeddingQAFinetuneDataset`` (a plain
    dict: ``queries``, ``corpus``, ``relevant_docs``), the texts as they were embedded
    (a document is ``title + ". " + text``, as ``embed_meta.json`` says)."""
    root = sample_dir()
    splits = json.loads((root / "splits.json").read_text(encoding="utf-8"))
    if split not in splits:
        raise ValueError(f"the sample has no split {split!r}; it has {', '.join(splits)}")
    qrels = json.loads((root / "qrels.json").read_text(encoding="utf-8"))
    docs, questions = (
        _jsonl(root / "texts" / "corpus.jsonl"),
        _jsonl(root / "texts" / "queries.jsonl"),
    )
    ids = splits[split]
    return {
        "queries": {q: questions[q]["text"] for q in ids},
        "corpus": {d: row["title"] + ". " + row["text"] for d, row in docs.items()},
        "relevant_docs": {q: list(qrels[q]) for q in ids},
        "mode": "text",
    }


def _jsonl(path: Path) -> dict[str, dict[str, Any]]:
    rows = (json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line)
    return {row["_id"]: row for row in rows}
