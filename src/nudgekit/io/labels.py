"""A labels directory: the queries of a dataset and what they point to, without the corpus.

What ``apply --labels`` reads, for a corpus that lives elsewhere (a vector store)::

    queries.npy       float [Q, d]      (embedded with the store's model)
    query_ids.json    [Q string ids]
    qrels.json        {query_id: {doc_id: relevance}}   doc ids = the store's ids
    splits.json       {"train": [...], "val": [...], "test": [...]}   (test optional)
    embed_meta.json   optional: model and settings
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from nudgekit.io.dataset import load_matrix, read_id_list, read_json, read_qrels, read_splits

LABEL_FILES = ("queries.npy", "query_ids.json", "qrels.json", "splits.json")


@dataclass
class Labels:
    """A labels directory: the embedded dataset layout without the corpus files."""

    path: Path
    queries: np.ndarray
    query_ids: list[str]
    qrels: dict[str, dict[str, int]]
    splits: dict[str, list[str]]
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def dim(self) -> int:
        return int(self.queries.shape[1])


def load_labels(path: str | os.PathLike[str]) -> Labels:
    """Open a labels directory (``queries.npy``, ``query_ids.json``, ``qrels.json``,
    ``splits.json``, optional ``embed_meta.json``) and check that its parts agree."""
    root = Path(path)
    if root.exists() and not root.is_dir():
        raise ValueError(f"labels directory {root} is a file, not a directory")
    if not root.is_dir():
        raise FileNotFoundError(f"labels directory {root} does not exist")
    wrong = [f for f in LABEL_FILES if (root / f).exists() and not (root / f).is_file()]
    if wrong:
        raise ValueError(f"{root / wrong[0]} is a directory, expected a file")
    missing = [f for f in LABEL_FILES if not (root / f).is_file()]
    if missing:
        raise FileNotFoundError(f"{root}: missing {', '.join(missing)}")
    queries = load_matrix(root / "queries.npy")
    query_ids = read_id_list(root / "query_ids.json", queries.shape[0], "queries.npy")
    meta_path = root / "embed_meta.json"
    meta = read_json(meta_path) if meta_path.is_file() else {}
    if not isinstance(meta, dict):
        raise ValueError(f"{meta_path}: expected a JSON object")
    dims = meta.get("dims")
    if isinstance(dims, int) and dims != queries.shape[1]:
        raise ValueError(
            f"{meta_path}: says dims {dims} but queries.npy has {queries.shape[1]} values per row"
        )
    return Labels(
        root,
        queries,
        query_ids,
        read_qrels(root / "qrels.json"),
        read_splits(root / "splits.json"),
        meta,
    )
