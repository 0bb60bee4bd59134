"""Reading a dataset in the BEIR layout, streaming, with errors that name file and line.

A BEIR directory holds::

    corpus.jsonl      one {"_id", "title", "text"} object per line
    queries.jsonl     one {"_id", "text"} object per line
    qrels/*.tsv       header "query-id<TAB>corpus-id<TAB>score", then one pair per line

The text of a record is ``(title + " " + text).strip()`` (no title: the text, stripped).
All qrels files (``train.tsv``, ``dev.tsv``, ``test.tsv``, ...) are merged into one
``{query_id: {doc_id: score}}``: the BEIR split names are not used, nudgekit makes its own
splits (:mod:`nudgekit.splits`).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: How a record's text is built from its JSON object (recorded in ``embed_meta.json``).
TEXT_RULE = "(title + ' ' + text).strip()"
QRELS_HEADER = ("query-id", "corpus-id", "score")


class BeirFormatError(ValueError):
    """Malformed BEIR input; the message names the file and line."""


@dataclass
class BeirDataset:
    """A checked BEIR directory: ids in file order and merged qrels; texts stay on disk.

    Attributes
    ----------
    path : Path
        The BEIR directory.
    corpus_ids, query_ids : list of str
        Record ids in the order of ``corpus.jsonl`` / ``queries.jsonl``.
    qrels : dict
        ``{query_id: {doc_id: score}}`` merged over all ``qrels/*.tsv`` (all scores, also
        those ≤ 0; relevance > 0 means relevant).
    corpus_sha256, queries_sha256 : str
        Digests of the two JSONL files (to tell whether a restart sees the same input).
    """

    path: Path
    corpus_ids: list[str]
    query_ids: list[str]
    qrels: dict[str, dict[str, int]]
    corpus_sha256: str
    queries_sha256: str

    @property
    def corpus_path(self) -> Path:
        return self.path / "corpus.jsonl"

    @property
    def queries_path(self) -> Path:
        return self.path / "queries.jsonl"

    def iter_corpus(self) -> Iterator[tuple[str, str]]:
        """``(doc_id, text)`` in file order, read line by line."""
        return iter_records(self.corpus_path)

    def iter_queries(self) -> Iterator[tuple[str, str]]:
        """``(query_id, text)`` in file order, read line by line."""
        return iter_records(self.queries_path)

    @property
    def n_qrels(self) -> int:
        return sum(len(docs) for docs in self.qrels.values())


def read_beir(beir_dir: str | os.PathLike[str]) -> BeirDataset:
    """Check a BEIR directory and read its ids and qrels (not its texts).

    One streaming pass over each JSONL file validates every line (JSON, ``_id``, ``title``,
    ``text``) and collects the ids, so a malformed line is reported before any work on the
    texts starts.

    Parameters
    ----------
    beir_dir : path
        Directory with ``corpus.jsonl``, ``queries.jsonl`` and ``qrels/*.tsv``.

    Returns
    -------
    BeirDataset

    Raises
    ------
    FileNotFoundError
        The directory or one of its files is missing.
    BeirFormatError
        Malformed input: invalid JSON, a missing or duplicate ``_id``, a non-string field,
        a bad qrels header or row, qrels pointing to unknown ids, conflicting scores.
    """
    root = Path(beir_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"BEIR directory {root} does not exist")
    corpus_ids, corpus_sha = _scan_ids(root / "corpus.jsonl")
    query_ids, queries_sha = _scan_ids(root / "queries.jsonl")
    qrels = read_qrels(root / "qrels", corpus_ids=set(corpus_ids), query_ids=set(query_ids))
    return BeirDataset(root, corpus_ids, query_ids, qrels, corpus_sha, queries_sha)


def iter_records(path: str | os.PathLike[str]) -> Iterator[tuple[str, str]]:
    """Stream ``(id, text)`` from a BEIR JSONL file, text = ``(title + " " + text).strip()``.

    Blank lines are skipped. Raises :class:`BeirFormatError` (file and line) for a line
    that is not a JSON object with a string ``_id`` and string ``text`` (``title``
    optional).
    """
    for _, record_id, text in _iter_lines(Path(path)):
        yield record_id, text


def read_qrels(
    qrels_dir: str | os.PathLike[str],
    *,
    corpus_ids: set[str] | None = None,
    query_ids: set[str] | None = None,
) -> dict[str, dict[str, int]]:
    """Merge every ``*.tsv`` in ``qrels_dir`` (name order) into ``{query_id: {doc_id: score}}``.

    ``qrels_dir`` may also be one qrels file. A pair listed twice with the same score is
    kept once; with different scores it is an error. With ``corpus_ids`` / ``query_ids``
    given, a pair naming an id outside them is an error too.
    """
    root = Path(qrels_dir)
    if root.is_file():
        files = [root]
    elif not root.is_dir():
        raise FileNotFoundError(f"qrels directory {root} does not exist")
    else:
        files = sorted(root.glob("*.tsv"))
    if not files:
        raise FileNotFoundError(f"{root}: no qrels files (*.tsv)")
    qrels: dict[str, dict[str, int]] = {}
    origin: dict[tuple[str, str], str] = {}  # where each pair was first seen, for conflicts
    for path in files:
        with open(path, "rb") as f:
            for line_no, raw in enumerate(f, 1):
                where = f"{path}:{line_no}"
                try:
                    line = raw.decode("utf-8-sig" if line_no == 1 else "utf-8")
                except UnicodeDecodeError as err:
                    raise BeirFormatError(f"{where}: not UTF-8 text ({err.reason})") from None
                fields = [x.strip() for x in line.rstrip("\r\n").split("\t")]
                if line_no == 1:
                    if tuple(fields) != QRELS_HEADER:
                        raise BeirFormatError(
                            f"{where}: expected the header 'query-id<TAB>corpus-id<TAB>score', "
                            f"got {line.rstrip()!r}"
                        )
                    continue
                if not line.strip():
                    continue
                if len(fields) != 3 or not fields[0] or not fields[1]:
                    raise BeirFormatError(
                        f"{where}: expected 3 tab-separated fields "
                        f"(query-id, corpus-id, score), got {line.rstrip()!r}"
                    )
                qid, did, raw_score = fields
                try:
                    score = int(raw_score)
                except ValueError:
                    raise BeirFormatError(
                        f"{where}: score must be an integer, got {raw_score!r}"
                    ) from None
                if query_ids is not None and qid not in query_ids:
                    raise BeirFormatError(f"{where}: query id {qid!r} is not in queries.jsonl")
                if corpus_ids is not None and did not in corpus_ids:
                    raise BeirFormatError(f"{where}: corpus id {did!r} is not in corpus.jsonl")
                docs = qrels.setdefault(qid, {})
                if did in docs and docs[did] != score:
                    raise BeirFormatError(
                        f"{where}: query {qid!r}, document {did!r} has score {score}, but "
                        f"{origin[(qid, did)]} gave it score {docs[did]}"
                    )
                if did not in docs:
                    docs[did] = score
                    origin[(qid, did)] = where
    return qrels


def _scan_ids(path: Path) -> tuple[list[str], str]:
    """All ids of a JSONL file in order (every line validated) and the file's sha256."""
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    digest = hashlib.sha256()
    ids: list[str] = []
    seen: set[str] = set()
    for line_no, record_id, _ in _iter_lines(path, digest):
        if record_id in seen:
            # only on error: find where the id first appeared rather than keep every line
            first = next(n for n, i, _ in _iter_lines(path) if i == record_id)
            raise BeirFormatError(
                f"{path}:{line_no}: duplicate _id {record_id!r} (first at line {first})"
            )
        seen.add(record_id)
        ids.append(record_id)
    return ids, digest.hexdigest()


def _iter_lines(path: Path, digest: Any = None) -> Iterator[tuple[int, str, str]]:
    """``(line number, id, text)`` per non-blank line; feeds ``digest`` if given."""
    with open(path, "rb") as f:
        for line_no, raw in enumerate(f, 1):
            if digest is not None:
                digest.update(raw)
            if line_no == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]  # a UTF-8 byte-order mark, as some Windows tools write
            if not raw.strip():
                continue
            yield line_no, *_parse(raw, path, line_no)


def _parse(raw: bytes, path: Path, line_no: int) -> tuple[str, str]:
    where = f"{path}:{line_no}"
    try:
        obj = json.loads(raw)
    except UnicodeDecodeError as err:
        raise BeirFormatError(f"{where}: not UTF-8 text ({err.reason})") from None
    except json.JSONDecodeError as err:
        raise BeirFormatError(f"{where}: invalid JSON ({err.msg}, column {err.colno})") from None
    if not isinstance(obj, dict):
        raise BeirFormatError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    if "_id" not in obj:
        raise BeirFormatError(f"{where}: no '_id' field")
    record_id = obj["_id"]
    # some exporters write numeric ids; they are ids all the same
    if isinstance(record_id, int) and not isinstance(record_id, bool):
        record_id = str(record_id)
    if not isinstance(record_id, str) or not record_id:
        raise BeirFormatError(f"{where}: '_id' must be a non-empty string, got {obj['_id']!r}")
    if "text" not in obj:
        raise BeirFormatError(f"{where}: record {record_id!r} has no 'text' field")
    text, title = obj["text"], obj.get("title")
    if title is None:
        title = ""
    for name, value in (("text", text), ("title", title)):
        if not isinstance(value, str):
            raise BeirFormatError(
                f"{where}: '{name}' of record {record_id!r} must be a string, "
                f"got {type(value).__name__}"
            )
    return record_id, (title + " " + text).strip()
