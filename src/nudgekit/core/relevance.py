"""Sparse query → record relevance, stored as CSR arrays (numpy only, no scipy needed).

Labels are sparse: a query has a handful of relevant records out of millions, so the
core never builds a dense queries × corpus matrix. Row ``j`` of a :class:`Relevance`
lists the corpus rows relevant to query ``j`` with their graded relevance (> 0).
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Relevance:
    """Graded relevance of ``n_queries`` queries over ``n_records`` corpus rows (CSR).

    Attributes
    ----------
    indptr : int64 array, shape (n_queries + 1,)
        Query ``j``'s entries are ``indices[indptr[j]:indptr[j + 1]]``.
    indices : int64 array, shape (nnz,)
        Corpus row of each entry; unique and sorted within a query.
    grades : float64 array, shape (nnz,)
        Relevance grade of each entry, always > 0 (ungraded labels use 1).
    n_records : int
        Number of corpus rows the indices point into.
    """

    indptr: np.ndarray
    indices: np.ndarray
    grades: np.ndarray
    n_records: int

    @property
    def n_queries(self) -> int:
        return len(self.indptr) - 1

    @property
    def nnz(self) -> int:
        return len(self.indices)

    def counts(self) -> np.ndarray:
        """Number of relevant records of each query."""
        return np.diff(self.indptr)

    def query_of_entry(self) -> np.ndarray:
        """Query index of each stored entry (the COO row array)."""
        return np.repeat(np.arange(self.n_queries, dtype=np.int64), self.counts())

    def ideal_dcg(self, k: int) -> np.ndarray:
        """Each query's ideal DCG@k from all its judged grades (as ``nudgekit eval``)."""
        query = self.query_of_entry()
        order = np.lexsort((-self.grades, query))
        rank = np.arange(len(order)) - self.indptr[query[order]]
        take = rank < k
        gains = self.grades[order][take] / np.log2(rank[take] + 2.0)
        return np.bincount(query[order][take], weights=gains, minlength=self.n_queries)

    def take(self, queries: np.ndarray) -> Relevance:
        """The relevance of a subset of queries, in the given order."""
        queries = np.asarray(queries, dtype=np.int64)
        starts, stops = self.indptr[queries], self.indptr[queries + 1]
        lengths = stops - starts
        indptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        # entry positions of every selected query, without a Python loop
        pos = np.repeat(starts - indptr[:-1], lengths) + np.arange(indptr[-1])
        return Relevance(indptr, self.indices[pos], self.grades[pos], self.n_records)

    @classmethod
    def from_coo(
        cls,
        query: np.ndarray,
        record: np.ndarray,
        n_queries: int,
        n_records: int,
        grades: np.ndarray | None = None,
    ) -> Relevance:
        """Build from (query, record, grade) triplets; entries with grade <= 0 are dropped.

        Duplicate (query, record) pairs keep their largest grade.
        """
        query = np.asarray(query, dtype=np.int64).reshape(-1)
        record = np.asarray(record, dtype=np.int64).reshape(-1)
        if grades is None:
            grades = np.ones(len(query), dtype=np.float64)
        grades = np.asarray(grades, dtype=np.float64).reshape(-1)
        if not (len(query) == len(record) == len(grades)):
            raise ValueError("relevance triplets have different lengths")
        if len(query) and (query.min() < 0 or query.max() >= n_queries):
            raise ValueError(f"relevance: a query index is out of range [0, {n_queries})")
        if len(record) and (record.min() < 0 or record.max() >= n_records):
            bad = int(record[(record < 0) | (record >= n_records)][0])
            raise ValueError(
                f"relevance: record index {bad} points outside the corpus of {n_records} rows"
            )
        if not np.all(np.isfinite(grades)):
            raise ValueError("relevance: grades must be finite numbers")
        keep = grades > 0
        query, record, grades = query[keep], record[keep], grades[keep]
        # sort by (query, record, grade) so the last of each duplicate run has the max grade
        order = np.lexsort((grades, record, query))
        query, record, grades = query[order], record[order], grades[order]
        last = np.ones(len(query), dtype=bool)
        last[:-1] = (query[1:] != query[:-1]) | (record[1:] != record[:-1])
        query, record, grades = query[last], record[last], grades[last]
        indptr = np.zeros(n_queries + 1, dtype=np.int64)
        np.cumsum(np.bincount(query, minlength=n_queries), out=indptr[1:])
        return cls(indptr, record, grades, int(n_records))

    @classmethod
    def from_lists(cls, rows: Sequence[Sequence[int]], n_records: int) -> Relevance:
        """From nudge-ft style nested lists: ``rows[j]`` holds query ``j``'s relevant rows."""
        lengths = np.fromiter((len(r) for r in rows), dtype=np.int64, count=len(rows))
        try:
            # operator.index refuses 1.5 (and 1.0): a row number must be an integer
            flat = np.fromiter(
                (operator.index(i) for r in rows for i in r),
                dtype=np.int64,
                count=int(lengths.sum()),
            )
        except TypeError:
            bad = next(i for r in rows for i in r if not _is_integer(i))
            raise ValueError(f"relevance: row index {bad!r} is not an integer") from None
        query = np.repeat(np.arange(len(rows), dtype=np.int64), lengths)
        return cls.from_coo(query, flat, len(rows), n_records)

    @classmethod
    def from_sparse(cls, matrix: object) -> Relevance:
        """From any scipy.sparse matrix or array of shape (n_queries, n_records)."""
        coo = matrix.tocoo()  # type: ignore[attr-defined]
        n_queries, n_records = coo.shape
        return cls.from_coo(coo.row, coo.col, n_queries, n_records, coo.data)


def relevance_from_qrels(
    qrels: Mapping[Any, Any],
    query_ids: Sequence[str],
    row_of_doc: Mapping[str, int],
    n_records: int,
    missing: Callable[[str, str], str],
) -> Relevance:
    """The relevance of queries ``query_ids`` (in order) from a qrels mapping.

    ``qrels`` is ``{query_id: {doc_id: grade}}`` or ``{query_id: [doc_id, ...]}`` (grade
    1); entries for queries not in ``query_ids`` are ignored, a query without an entry has
    no relevant record. ``row_of_doc`` maps doc ids to the rows the result indexes;
    ``missing(doc_id, query_id)`` is the message raised for a doc id it does not hold.
    Works on labels, never on the corpus: its cost is the number of labels.
    """
    q_rows: list[int] = []
    d_rows: list[int] = []
    grades: list[float] = []
    for j, qid in enumerate(query_ids):
        docs = qrels.get(qid)
        if not docs:
            continue
        items = docs.items() if isinstance(docs, Mapping) else ((d, 1) for d in docs)
        for doc, grade in items:
            i = row_of_doc.get(str(doc))
            if i is None:
                raise ValueError(missing(str(doc), str(qid)))
            q_rows.append(j)
            d_rows.append(i)
            grades.append(float(grade))
    return Relevance.from_coo(
        np.asarray(q_rows, dtype=np.int64),
        np.asarray(d_rows, dtype=np.int64),
        len(query_ids),
        n_records,
        np.asarray(grades, dtype=np.float64),
    )


def _is_integer(value: object) -> bool:
    try:
        operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        return False
    return True
