"""The embedded dataset layout: reading it (memory-mapped) and writing embeddings safely.

A dataset directory holds::

    corpus.npy        float [N, d]      row i = record corpus_ids[i]
    corpus_ids.json   [N string ids]
    queries.npy       float [Q, d]
    query_ids.json    [Q string ids]
    qrels.json        {query_id: {doc_id: relevance}}   (relevance > 0 = relevant)
    splits.json       {"train": [query ids], "val": [...], "test": [...]}
    embed_meta.json   optional: model and settings

Arrays are opened as read-only memory maps and never unpickled.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from nudgekit.core import FitProblem, LabelledQueries, Relevance, relevance_from_qrels
from nudgekit.io.atomic import atomic_file

REQUIRED_FILES = (
    "corpus.npy",
    "corpus_ids.json",
    "queries.npy",
    "query_ids.json",
    "qrels.json",
    "splits.json",
)


@dataclass
class Split:
    """The queries of one split with their relevant records."""

    name: str
    query_ids: list[str]
    queries: np.ndarray  # float32 [n, d]
    relevance: Relevance

    def labelled(self) -> LabelledQueries:
        """The split as the estimators take it."""
        return LabelledQueries(self.queries, self.relevance, self.name, self.query_ids)

    def check_labelled(self) -> Split:
        """Raise if a query has no relevant record (γ is chosen on such a split); self."""
        unlabelled = np.flatnonzero(self.relevance.counts() == 0)
        if len(unlabelled):
            qid = self.query_ids[int(unlabelled[0])]
            raise ValueError(
                f"split {self.name!r}: query {qid!r} has no relevant record in qrels.json"
            )
        return self


@dataclass
class EmbeddedDataset:
    """An embedded dataset directory, opened lazily (arrays are memory maps)."""

    path: Path
    corpus: np.ndarray
    corpus_ids: list[str]
    queries: np.ndarray
    query_ids: list[str]
    qrels: dict[str, dict[str, int]]
    splits: dict[str, list[str]]
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def n_records(self) -> int:
        return int(self.corpus.shape[0])

    @property
    def dim(self) -> int:
        return int(self.corpus.shape[1])

    def split(self, name: str) -> Split:
        """Queries and relevance of split ``name``; raises if it is missing or empty."""
        if name not in self.splits:
            raise ValueError(
                f"{self.path / 'splits.json'}: no split named {name!r} "
                f"(has: {', '.join(sorted(self.splits)) or 'none'})"
            )
        ids = self.splits[name]
        if len(ids) == 0:
            raise ValueError(f"{self.path / 'splits.json'}: split {name!r} is empty")
        row_of_query = {q: i for i, q in enumerate(self.query_ids)}
        rows = np.empty(len(ids), dtype=np.int64)
        for j, qid in enumerate(ids):
            row = row_of_query.get(qid)
            if row is None:
                raise ValueError(f"split {name!r}: query id {qid!r} is not in query_ids.json")
            rows[j] = row
        queries = np.asarray(self.queries[rows], dtype=np.float32)
        finite, nonzero = np.isfinite(queries).all(axis=1), queries.any(axis=1)
        bad = np.flatnonzero(~finite | ~nonzero)
        if len(bad):
            i = int(bad[0])
            problem = "is all zeros" if finite[i] else "contains NaN or infinite values"
            raise ValueError(
                f"{self.path / 'queries.npy'}: query {ids[i]!r} (row {rows[i]}, split "
                f"{name!r}) {problem}"
            )
        return Split(name, list(ids), queries, self._relevance(name, ids))

    def fit_problem(self, uses_val: bool = True) -> FitProblem:
        """The train (and, when γ is searched, val) split as a NUDGE fit's labels."""
        train = self.split("train").labelled()
        val = self.split("val").check_labelled().labelled() if uses_val else None
        return FitProblem(self.n_records, self.dim, train, val)

    def _relevance(self, name: str, ids: list[str]) -> Relevance:
        return relevance_from_qrels(
            self.qrels,
            ids,
            self._row_of_doc(),
            self.n_records,
            lambda doc, qid: (
                f"qrels.json: relevant id {doc!r} (query {qid!r}, split {name!r}) "
                "is not in the corpus"
            ),
        )

    def _row_of_doc(self) -> dict[str, int]:
        if not hasattr(self, "_doc_rows"):
            self._doc_rows = {d: i for i, d in enumerate(self.corpus_ids)}
        return self._doc_rows


def load_dataset(
    path: str | os.PathLike[str], labels: str | os.PathLike[str] | None = None
) -> EmbeddedDataset:
    """Open an embedded dataset directory and check that its parts agree.

    With ``labels`` (a labels folder: queries, qrels, splits, see :mod:`.labels`), the
    corpus comes from ``path`` and everything about the queries from ``labels``.

    Raises ``FileNotFoundError`` for missing files and ``ValueError`` for anything
    malformed (pickled or non-float arrays, dimension or length mismatches, duplicate ids,
    a query in two splits).
    """
    root = Path(path)
    if root.exists() and not root.is_dir():
        raise ValueError(f"dataset directory {root} is a file, not a directory")
    if not root.is_dir():
        raise FileNotFoundError(f"dataset directory {root} does not exist")
    source = Path(labels) if labels is not None else root
    if labels is not None and not source.is_dir():
        raise FileNotFoundError(f"labels directory {source} does not exist")
    needed = [(root, f) for f in REQUIRED_FILES[:2]] + [(source, f) for f in REQUIRED_FILES[2:]]
    wrong = [d / f for d, f in needed if (d / f).exists() and not (d / f).is_file()]
    if wrong:
        raise ValueError(f"{wrong[0]} is a directory, expected a file")
    missing = [str(d / f) if labels is not None else f for d, f in needed if not (d / f).is_file()]
    if missing:
        raise FileNotFoundError(f"{root}: missing {', '.join(missing)}")
    corpus = load_matrix(root / "corpus.npy")
    queries = load_matrix(source / "queries.npy")
    if queries.shape[1] != corpus.shape[1]:
        raise ValueError(
            f"{source}: dimension mismatch, queries.npy has {queries.shape[1]} values per row "
            f"but corpus.npy has {corpus.shape[1]}"
        )
    corpus_ids = read_id_list(root / "corpus_ids.json", corpus.shape[0], "corpus.npy")
    query_ids = read_id_list(source / "query_ids.json", queries.shape[0], "queries.npy")
    qrels = read_qrels(source / "qrels.json")
    splits = read_splits(source / "splits.json")
    meta_path = source / "embed_meta.json"
    meta = read_json(meta_path) if meta_path.is_file() else {}
    if not isinstance(meta, dict):
        raise ValueError(f"{meta_path}: expected a JSON object")
    return EmbeddedDataset(root, corpus, corpus_ids, queries, query_ids, qrels, splits, meta)


def load_matrix(path: Path) -> np.ndarray:
    """A 2-D float ``.npy`` file as a read-only memory map; refuses pickled arrays."""
    if path.is_dir():
        raise ValueError(f"{path} is a directory, expected a .npy file")
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    with open(path, "rb") as f:
        if f.read(6) != b"\x93NUMPY":
            raise ValueError(f"{path}: not a readable .npy array (no .npy header)")
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError as err:
        if "pickle" in str(err).lower() or "object" in str(err).lower():
            raise ValueError(
                f"{path}: holds Python objects (a pickled array); refusing to load it — "
                "save a float32 or float16 matrix instead"
            ) from None
        raise ValueError(f"{path}: not a readable .npy array ({err})") from None
    except OSError as err:
        raise ValueError(f"{path}: not a readable .npy array ({err})") from None
    if not isinstance(arr, np.ndarray):
        raise ValueError(f"{path}: expected a single .npy array")
    if arr.dtype.kind != "f":
        raise ValueError(f"{path}: expected float16/32/64 values, got dtype {arr.dtype}")
    if arr.ndim != 2:
        raise ValueError(f"{path}: expected a 2-D matrix, got shape {arr.shape}")
    if arr.shape[0] == 0:
        raise ValueError(f"{path}: is empty (0 rows)")
    return arr


def write_embeddings(
    path: str | os.PathLike[str], blocks: Iterable[np.ndarray], shape: tuple[int, int]
) -> None:
    """Stream blocks of rows into a float32 ``.npy`` file, atomically.

    The rows go to a temporary file beside ``path`` that replaces it only once complete,
    so a failure (or a kill) never leaves a truncated file under the final name.
    """
    # plain writes, not a memory map: written pages then don't count in our RSS
    with atomic_file(path) as f:
        header = {"descr": "<f4", "fortran_order": False, "shape": tuple(shape)}
        np.lib.format.write_array_header_1_0(f, header)
        rows = 0
        for block in blocks:
            block = np.ascontiguousarray(block, dtype="<f4")
            if block.ndim != 2 or block.shape[1] != shape[1]:
                raise ValueError(f"block of shape {block.shape} does not fit {shape}")
            f.write(memoryview(block).cast("B"))  # no bytes copy
            rows += len(block)
        if rows != shape[0]:
            raise ValueError(f"wrote {rows} rows, expected {shape[0]}")


def read_json(path: Path) -> Any:
    """A JSON file's content; anything unreadable is a ValueError naming the file."""
    if path.is_dir():
        raise ValueError(f"{path} is a directory, expected a JSON file")
    try:
        return json.loads(path.read_bytes().decode("utf-8-sig"))
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: invalid JSON ({err})") from None
    except RecursionError:
        raise ValueError(f"{path}: invalid JSON (nested too deeply)") from None


def read_id_list(path: Path, expected: int, array_name: str) -> list[str]:
    """A JSON list of ``expected`` unique string ids (one per row of ``array_name``)."""
    ids = read_json(path)
    if not isinstance(ids, list):
        raise ValueError(f"{path}: expected a JSON list of ids")
    if len(ids) != expected:
        raise ValueError(f"{path}: {len(ids)} ids but {array_name} has {expected} rows")
    for i in ids:
        if isinstance(i, bool) or not isinstance(i, str | int) or i == "":
            raise ValueError(f"{path}: ids must be non-empty strings or integers, got {i!r}")
    ids = [str(i) for i in ids]
    if len(set(ids)) != len(ids):
        seen: set[str] = set()
        dup = next(i for i in ids if i in seen or seen.add(i))  # type: ignore[func-returns-value]
        raise ValueError(f"{path}: duplicate id {dup!r}")
    return ids


def read_qrels(path: Path) -> dict[str, dict[str, int]]:
    """``qrels.json`` as ``{query_id: {doc_id: grade}}``, keeping grades > 0 only."""
    raw = read_json(path)
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected {{query_id: {{doc_id: relevance}}}}")
    qrels: dict[str, dict[str, int]] = {}
    for qid, docs in raw.items():
        if not isinstance(docs, dict):
            raise ValueError(f"{path}: entry for query {qid!r} is not a {{doc_id: relevance}} map")
        qrels[str(qid)] = {str(d): r for d, r in docs.items() if _is_positive(r, path, qid)}
    return qrels


def _is_positive(grade: Any, path: Path, qid: str) -> bool:
    try:
        finite = not isinstance(grade, bool) and math.isfinite(float(grade))
    except (TypeError, ValueError, OverflowError):  # 10**400 does not fit a float
        finite = False
    if not finite or not isinstance(grade, int | float):
        shown = repr(grade) if len(repr(grade)) < 40 else repr(grade)[:37] + "..."
        raise ValueError(f"{path}: relevance of query {qid!r} must be a finite number, got {shown}")
    return grade > 0


def read_splits(path: Path) -> dict[str, list[str]]:
    """``splits.json``; a query in two splits (or twice in one) is an error."""
    raw = read_json(path)
    if not isinstance(raw, dict) or not all(isinstance(v, list) for v in raw.values()):
        raise ValueError(f'{path}: expected {{"train": [query ids], "val": [...], ...}}')
    splits = {str(k): [str(q) for q in v] for k, v in raw.items()}
    owner: dict[str, str] = {}
    for name, ids in splits.items():
        for qid in ids:
            if qid in owner:
                where = (
                    "twice in split " + repr(name)
                    if owner[qid] == name
                    else (f"in two splits ({owner[qid]!r} and {name!r})")
                )
                raise ValueError(f"{path}: query id {qid!r} appears {where}")
            owner[qid] = name
    return splits
