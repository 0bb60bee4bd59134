"""Labels from what users have: BEIR files, pair tables, click logs, LlamaIndex datasets.

:func:`read_label_input` reads one of these, detected by content and extension, into
:class:`LabelTexts` — query texts and their relevant documents — with one clear error
(file and line) for anything malformed:

- **BEIR**: ``queries.jsonl`` (``_id``, ``text``) with ``qrels/*.tsv`` (``query-id``,
  ``corpus-id``, ``score``); a BEIR directory works too. Qrels files named ``train``,
  ``dev`` or ``test`` give their split.
- **pairs**: CSV, TSV or JSONL rows of (query text or query id, doc id, optional grade);
  with query ids, the texts come from a BEIR ``queries.jsonl`` given as well.
- **click and feedback logs**: rows of (query text, doc id, event, optional timestamp),
  aggregated into graded relevance by :class:`EventRule`.
- **LlamaIndex** ``EmbeddingQAFinetuneDataset`` JSON (``queries``, ``corpus``,
  ``relevant_docs``), read as plain JSON: no LlamaIndex needed.

Column names are matched case-insensitively against the usual spellings (:data:`COLUMNS`).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from nudgekit.io.beir import read_qrels as read_beir_qrels

#: accepted column names per role (lower case)
COLUMNS = {
    "query": ("query", "query_text", "question", "search", "search_query", "q"),
    "query_id": ("query_id", "query-id", "qid", "queryid"),
    "doc": ("doc_id", "corpus-id", "corpus_id", "doc", "document_id", "docid", "pid", "document"),
    "grade": ("grade", "score", "relevance", "label", "rel"),
    "event": ("event", "action", "feedback", "signal"),
    "time": ("timestamp", "time", "ts", "date", "created_at", "datetime"),
}
#: qrels file names that name a split
SPLIT_FILES = {"train": "train", "dev": "val", "val": "val", "validation": "val", "test": "test"}


class LabelInputError(ValueError):
    """A label input that cannot be read as any of the accepted formats."""


@dataclass(frozen=True)
class EventRule:
    """How a click/feedback log becomes graded relevance.

    Each (query, document) pair gets the sum of the weights of its events; a pair with a
    **veto** event (default: ``thumbs_down``) is never relevant, nor is one whose sum is
    not positive. Defaults: ``click`` 1, ``thumbs_up`` 2, ``thumbs_down`` veto. An event
    the rule does not name is an error (say what it is worth with ``--event NAME=W``).
    """

    weights: Mapping[str, float] = field(default_factory=lambda: {"click": 1.0, "thumbs_up": 2.0})
    vetoes: frozenset[str] = frozenset({"thumbs_down"})

    @classmethod
    def parse(cls, items: list[str]) -> EventRule:
        """``["click=1", "thumbs_up=3", "thumbs_down=never", "view=0"]`` over the defaults."""
        rule = cls()
        weights, vetoes = dict(rule.weights), set(rule.vetoes)
        for item in items:
            name, sep, value = item.partition("=")
            name = name.strip().lower()
            if not sep or not name:
                raise LabelInputError(f"--event {item!r}: expected NAME=WEIGHT or NAME=never")
            weights.pop(name, None)
            vetoes.discard(name)
            if value.strip().lower() == "never":
                vetoes.add(name)
                continue
            try:
                weight = float(value)
            except ValueError:
                raise LabelInputError(
                    f"--event {item!r}: the weight must be a number or 'never'"
                ) from None
            if not math.isfinite(weight):
                raise LabelInputError(f"--event {item!r}: the weight must be finite")
            weights[name] = weight
        return cls(weights, frozenset(vetoes))

    def describe(self) -> str:
        parts = [f"{k} {v:g}" for k, v in sorted(self.weights.items())]
        parts += [f"{k} never relevant" for k in sorted(self.vetoes)]
        return "sum of event weights per (query, document): " + ", ".join(parts)


@dataclass
class LabelTexts:
    """Query texts and what they point to, as read from a user's files.

    Attributes
    ----------
    queries : dict
        ``{query_id: text}``.
    qrels : dict
        ``{query_id: {doc_id: grade}}``, grades > 0.
    splits : dict
        ``{split: [query ids]}`` when the input names splits (BEIR qrels file names).
    first_seen : dict
        ``{query_id: timestamp}`` (seconds) when the input has times (click logs).
    source : dict
        What was read, for ``embed_meta.json``.
    """

    queries: dict[str, str]
    qrels: dict[str, dict[str, float]]
    splits: dict[str, list[str]] = field(default_factory=dict)
    first_seen: dict[str, float] = field(default_factory=dict)
    source: dict[str, Any] = field(default_factory=dict)


def read_label_input(
    queries: str | os.PathLike[str],
    qrels: str | os.PathLike[str] | None = None,
    *,
    events: EventRule | None = None,
) -> LabelTexts:
    """Read a label input (see the module docstring); ``qrels`` where the format has them
    apart (BEIR). Raises :class:`LabelInputError` or ``FileNotFoundError``."""
    path = Path(queries)
    if not path.exists():
        raise FileNotFoundError(f"--queries {path} does not exist")
    if path.is_dir():
        if not (path / "queries.jsonl").is_file():
            raise LabelInputError(f"--queries {path}: a directory without queries.jsonl")
        qrels = qrels if qrels is not None else path / "qrels"
        path = path / "queries.jsonl"
    suffix = path.suffix.lower()
    if suffix == ".json":
        if qrels is not None:
            raise LabelInputError(f"{path}: a LlamaIndex dataset holds its labels: drop --qrels")
        return _llama_index(path)
    rows = list(_rows(path))
    if not rows:
        raise LabelInputError(f"{path}: holds no rows")
    columns = _roles(rows[0][1].keys())
    if "doc" not in columns:
        if qrels is None:
            raise LabelInputError(
                f"{path}: no document column ({', '.join(COLUMNS['doc'][:3])} ...) and no "
                "--qrels: say which documents answer each query"
            )
        return _queries_with_qrels(path, rows, Path(qrels))
    if qrels is not None:
        raise LabelInputError(f"{path}: its rows name their documents already: drop --qrels")
    if "event" in columns:
        return _events(path, rows, columns, events or EventRule())
    return _pairs(path, rows, columns)


# -- formats ---------------------------------------------------------------------------------
def _queries_with_qrels(
    path: Path, rows: list[tuple[int, dict[str, Any]]], qrels: Path
) -> LabelTexts:
    """A BEIR queries file (``_id``, ``text``) and qrels TSV files."""
    queries: dict[str, str] = {}
    for line, row in rows:
        qid, text = row.get("_id"), row.get("text")
        if not isinstance(qid, str) or not qid or not isinstance(text, str):
            raise LabelInputError(
                f'{path}:{line}: expected a BEIR query {{"_id": string, "text": string}}'
            )
        title = row.get("title")
        text = (f"{title} {text}" if isinstance(title, str) else text).strip()
        if qid in queries:
            raise LabelInputError(f"{path}:{line}: query id {qid!r} appears twice")
        queries[qid] = text
    files = [qrels] if qrels.is_file() else sorted(qrels.glob("*.tsv")) if qrels.is_dir() else []
    if not files:
        raise FileNotFoundError(f"--qrels {qrels}: no qrels file (*.tsv)")
    merged: dict[str, dict[str, float]] = {}
    splits: dict[str, list[str]] = {}
    for tsv in files:
        one = _read_tsv_qrels(tsv)
        for qid, docs in one.items():
            if qid not in queries:
                raise LabelInputError(f"{tsv}: query id {qid!r} is not in {path.name}")
            for doc, grade in docs.items():
                if grade > 0:
                    merged.setdefault(qid, {})[doc] = float(grade)
        split = SPLIT_FILES.get(tsv.stem.lower())
        if split is not None:
            splits.setdefault(split, []).extend(q for q in one if q in merged)
    return LabelTexts(
        queries,
        merged,
        splits,
        source={"format": "beir", "queries": str(path), "qrels": [str(f) for f in files]},
    )


def _read_tsv_qrels(path: Path) -> dict[str, dict[str, int]]:
    try:
        return read_beir_qrels(path)
    except ValueError as err:
        raise LabelInputError(str(err)) from None


def _pairs(
    path: Path, rows: list[tuple[int, dict[str, Any]]], columns: dict[str, str]
) -> LabelTexts:
    """(query text or id, doc id, grade?) rows."""
    if "query" not in columns:
        raise LabelInputError(
            f"{path}: no query text column ({', '.join(COLUMNS['query'][:3])} ...); query ids "
            "alone need their texts: give a BEIR queries.jsonl with --queries and these "
            "pairs with --qrels"
        )
    queries: dict[str, str] = {}
    qrels: dict[str, dict[str, float]] = {}
    for line, row in rows:
        text = _text(row, columns["query"], path, line, "query")
        doc = _text(row, columns["doc"], path, line, "document id")
        grade = _grade(row.get(columns["grade"]), path, line) if "grade" in columns else 1.0
        qid = _query_id(row, columns, text, path, line)
        if queries.setdefault(qid, text) != text:
            raise LabelInputError(f"{path}:{line}: query id {qid!r} has two different texts")
        if grade > 0:
            docs = qrels.setdefault(qid, {})
            docs[doc] = max(docs.get(doc, 0.0), grade)
    return LabelTexts(queries, qrels, source={"format": "pairs", "file": str(path)})


def _events(
    path: Path, rows: list[tuple[int, dict[str, Any]]], columns: dict[str, str], rule: EventRule
) -> LabelTexts:
    """(query text, doc id, event, time?) rows, aggregated by ``rule``."""
    if "query" not in columns:
        raise LabelInputError(f"{path}: a click log needs a query text column")
    queries: dict[str, str] = {}
    totals: dict[tuple[str, str], float] = {}
    vetoed: set[tuple[str, str]] = set()
    first_seen: dict[str, float] = {}
    for line, row in rows:
        text = _text(row, columns["query"], path, line, "query")
        doc = _text(row, columns["doc"], path, line, "document id")
        event = _text(row, columns["event"], path, line, "event").lower()
        qid = _query_id(row, columns, text, path, line)
        queries.setdefault(qid, text)
        if event in rule.vetoes:
            vetoed.add((qid, doc))
        elif event in rule.weights:
            totals[(qid, doc)] = totals.get((qid, doc), 0.0) + rule.weights[event]
        else:
            known = ", ".join(sorted([*rule.weights, *rule.vetoes]))
            raise LabelInputError(
                f"{path}:{line}: event {event!r} is not in the rule ({known}); say what it is "
                f"worth with --event {event}=WEIGHT (or ={'never'})"
            )
        if "time" in columns:
            when = _timestamp(row.get(columns["time"]), path, line)
            first_seen[qid] = min(first_seen.get(qid, when), when)
    qrels: dict[str, dict[str, float]] = {}
    for (qid, doc), total in sorted(totals.items()):
        if total > 0 and (qid, doc) not in vetoed:
            qrels.setdefault(qid, {})[doc] = total
    return LabelTexts(
        queries,
        qrels,
        first_seen=first_seen,
        source={"format": "events", "file": str(path), "rule": rule.describe()},
    )


@dataclass
class QADataset:
    """A LlamaIndex ``EmbeddingQAFinetuneDataset``'s content, checked.

    Attributes
    ----------
    queries : dict
        ``{query_id: text}``.
    corpus : dict
        ``{doc_id: text}`` (may be empty: a dataset of labels for documents held elsewhere).
    relevant_docs : dict
        ``{query_id: [doc ids]}``; every key is a query id.
    """

    queries: dict[str, str]
    corpus: dict[str, str]
    relevant_docs: dict[str, list[str]]

    def qrels(self) -> dict[str, dict[str, float]]:
        """``{query_id: {doc_id: 1.0}}`` for the queries that name a document."""
        return {q: dict.fromkeys(docs, 1.0) for q, docs in self.relevant_docs.items() if docs}


def read_qa_dataset(data: Any, where: str = "dataset") -> QADataset:
    """Check an ``EmbeddingQAFinetuneDataset`` given as its JSON path (``save_json``'s
    output), as a mapping with its three keys, or as an object with the three attributes
    (LlamaIndex's own class, which is not imported here). ``where`` names it in errors."""
    if isinstance(data, str | os.PathLike):
        where = str(data)
        data = _json(Path(data))
    elif not isinstance(data, Mapping) and hasattr(data, "relevant_docs"):
        data = {key: getattr(data, key, None) for key in ("queries", "corpus", "relevant_docs")}
    if not isinstance(data, Mapping) or not {"queries", "relevant_docs"} <= set(data):
        raise LabelInputError(
            f"{where}: expected a LlamaIndex EmbeddingQAFinetuneDataset JSON "
            '({"queries": {id: text}, "corpus": {id: text}, "relevant_docs": {id: [doc ids]}})'
        )
    queries, relevant = data["queries"], data["relevant_docs"]
    corpus = data.get("corpus") or {}
    for name, texts in (("queries", queries), ("corpus", corpus)):
        if not isinstance(texts, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in texts.items()
        ):
            raise LabelInputError(f"{where}: {name!r} must map ids to texts")
    if not isinstance(relevant, Mapping):
        raise LabelInputError(f"{where}: 'relevant_docs' must map query ids to lists of doc ids")
    for qid, docs in relevant.items():
        if qid not in queries:
            raise LabelInputError(f"{where}: relevant_docs names query {qid!r}, not in 'queries'")
        if not isinstance(docs, list | tuple) or not all(isinstance(d, str) and d for d in docs):
            raise LabelInputError(f"{where}: relevant_docs[{qid!r}] must be a list of doc ids")
    return QADataset(dict(queries), dict(corpus), {q: list(docs) for q, docs in relevant.items()})


def _llama_index(path: Path) -> LabelTexts:
    """LlamaIndex's ``EmbeddingQAFinetuneDataset.save_json`` output, as plain JSON."""
    dataset = read_qa_dataset(path)
    return LabelTexts(
        dataset.queries, dataset.qrels(), source={"format": "llama_index", "file": str(path)}
    )


# -- reading rows --------------------------------------------------------------------------------
def _rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, row) of a JSONL, CSV or TSV file (delimiter by extension or content)."""
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise LabelInputError(f"{path}: cannot be read ({err.strerror})") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise LabelInputError(
            f"{path}: not UTF-8 text ({err.reason} at byte {err.start})"
        ) from None
    suffix = path.suffix.lower()
    first = text.lstrip()[:1]
    if suffix == ".jsonl" or (suffix not in (".csv", ".tsv") and first == "{"):
        for line, body in enumerate(text.splitlines(), 1):
            if not body.strip():
                continue
            try:
                row = json.loads(body)
            except (json.JSONDecodeError, RecursionError) as err:
                raise LabelInputError(f"{path}:{line}: not a JSON object ({err})") from None
            if not isinstance(row, dict):
                raise LabelInputError(f"{path}:{line}: not a JSON object")
            yield line, row
        return
    delimiter = "\t" if suffix == ".tsv" or "\t" in text.split("\n", 1)[0] else ","
    reader = csv.DictReader(io.StringIO(text), delimiter=delimiter)
    if not reader.fieldnames or any(not (n or "").strip() for n in reader.fieldnames):
        raise LabelInputError(f"{path}: the first line must name the columns")
    for row in reader:
        if None in row or any(v is None for v in row.values()):
            raise LabelInputError(f"{path}:{reader.line_num}: not as many fields as columns")
        if any((v or "").strip() for v in row.values()):
            yield reader.line_num, row


def _roles(names: Any) -> dict[str, str]:
    """Which column plays which role (first accepted spelling wins)."""
    lowered = {str(n).strip().lower(): str(n) for n in names}
    found = {}
    for role, spellings in COLUMNS.items():
        for spelling in spellings:
            if spelling in lowered:
                found[role] = lowered[spelling]
                break
    return found


def _text(row: dict[str, Any], column: str, path: Path, line: int, what: str) -> str:
    value = row.get(column)
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise LabelInputError(f"{path}:{line}: the {what} ({column!r}) must be text, got {value!r}")
    text = str(value).strip()
    if not text:
        raise LabelInputError(f"{path}:{line}: no {what} ({column!r} is empty)")
    return text


def _grade(value: Any, path: Path, line: int) -> float:
    try:
        grade = float(value) if not isinstance(value, bool) else math.nan
    except (TypeError, ValueError, OverflowError):
        grade = math.nan
    if not math.isfinite(grade):
        raise LabelInputError(f"{path}:{line}: the grade must be a finite number, got {value!r}")
    return grade


def _timestamp(value: Any, path: Path, line: int) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    if isinstance(value, str):
        text = value.strip()
        try:
            return float(text)
        except ValueError:
            pass
        try:
            return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
        except ValueError:
            pass
    raise LabelInputError(
        f"{path}:{line}: the timestamp must be ISO 8601 or seconds since 1970, got {value!r}"
    )


def _query_id(
    row: dict[str, Any], columns: dict[str, str], text: str, path: Path, line: int
) -> str:
    """The row's query id, or a stable one derived from its text (same text, same query)."""
    if "query_id" in columns:
        return _text(row, columns["query_id"], path, line, "query id")
    return "q" + hashlib.sha1(" ".join(text.lower().split()).encode()).hexdigest()[:16]


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_bytes().decode("utf-8-sig"))
    except UnicodeDecodeError as err:
        raise LabelInputError(f"{path}: not UTF-8 text ({err.reason})") from None
    except (json.JSONDecodeError, RecursionError) as err:
        raise LabelInputError(f"{path}: invalid JSON ({err})") from None
