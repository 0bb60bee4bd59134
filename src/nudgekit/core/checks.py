"""Input validation shared by every public entry point (one place, one wording).

Every check raises ``ValueError`` with a message that names the input and the problem,
so the CLI can print it as is.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from nudgekit.core.relevance import Relevance, relevance_from_qrels

RelevanceLike = Relevance | Sequence[Sequence[int]] | Mapping[Any, Any] | Any


def check_matrix(x: Any, name: str, *, dim: int | None = None) -> np.ndarray:
    """A finite 2-D float matrix with no all-zero row, as float32.

    ``x`` may be float16/32/64 or a memory map (it is read whole: use this for queries and
    other small inputs; the corpus is checked block by block with :func:`check_rows`).
    """
    if isinstance(x, np.ndarray) and x.dtype == object:
        raise ValueError(f"{name}: object arrays are not accepted (need a float matrix)")
    arr = np.asarray(x)
    if arr.dtype.kind not in "fiu":
        raise ValueError(f"{name}: expected a float matrix, got dtype {arr.dtype}")
    if arr.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D matrix, got shape {arr.shape}")
    if arr.shape[0] == 0:
        raise ValueError(f"{name}: is empty (0 rows)")
    if dim is not None and arr.shape[1] != dim:
        raise ValueError(
            f"{name}: dimension mismatch, rows have {arr.shape[1]} values but the corpus has {dim}"
        )
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    check_rows(arr, name)
    return arr


def check_rows(
    block: np.ndarray, name: str, offset: int = 0, rows: np.ndarray | None = None
) -> np.ndarray:
    """Raise on NaN/inf values or all-zero rows in ``block``; return its row norms.

    Messages name the real row: ``offset + i``, or ``rows[i]`` when the block was gathered.
    """
    norms = row_norms(block)
    bad = first_bad_row(norms)
    if bad is not None:
        i, problem = bad
        row = int(rows[i]) if rows is not None else offset + i
        raise ValueError(f"{name}: row {row} {problem}")
    return norms


def first_bad_row(norms: np.ndarray) -> tuple[int, str] | None:
    """The first row whose norm says NaN/inf values or all zeros, and what is wrong with it."""
    bad = np.flatnonzero(~np.isfinite(norms) | (norms == 0))
    if not len(bad):
        return None
    i = int(bad[0])
    return i, "is all zeros" if norms[i] == 0 else "contains NaN or infinite values"


def row_norms(block: np.ndarray) -> np.ndarray:
    """The L2 norm of each row (float64): NaN/inf for rows holding NaN/inf, 0 for zero rows.

    float32 rows are summed in float32, an order of magnitude faster than casting every
    value to float64 (this runs on every corpus row, twice); rows whose squared norm is
    outside float32's comfortable range (tiny, huge, zero, NaN/inf) are summed again in
    float64, so the result only differs from an all-float64 sum by float32 rounding.
    """
    if block.dtype != np.float32:
        return np.sqrt(np.einsum("ij,ij->i", block, block, dtype=np.float64))
    squares = np.einsum("ij,ij->i", block, block)
    odd = np.flatnonzero(~((squares > 1e-30) & (squares < 1e30)))
    squares = squares.astype(np.float64)
    if len(odd):
        rows = block[odd]
        squares[odd] = np.einsum("ij,ij->i", rows, rows, dtype=np.float64)
    return np.sqrt(squares)


def check_relevance(
    labels: RelevanceLike,
    name: str,
    *,
    n_queries: int,
    n_records: int,
    corpus_ids: Sequence[str] | None = None,
    query_ids: Sequence[str] | None = None,
) -> Relevance:
    """Turn any accepted label format into :class:`Relevance`, validated.

    Accepted: a :class:`Relevance`; nested lists of corpus row indices (``labels[j]`` for
    query ``j``, the format of nudge-ft); a scipy sparse matrix (queries × corpus, grades
    as values); or a qrels mapping ``{query_id: {doc_id: grade}}`` or
    ``{query_id: [doc_id, ...]}``, which needs ``corpus_ids`` (and ``query_ids``, the id of
    each query row; without it the keys must be row numbers).
    """
    if isinstance(labels, Relevance):
        rel = labels
    elif hasattr(labels, "tocoo"):
        rel = Relevance.from_sparse(labels)
    elif isinstance(labels, Mapping):
        rel = _relevance_from_qrels(labels, name, n_queries, n_records, corpus_ids, query_ids)
    elif isinstance(labels, Sequence) and not isinstance(labels, str | bytes):
        if len(labels) != n_queries:
            raise ValueError(
                f"{name}: {len(labels)} label lists for {n_queries} queries (need one per query)"
            )
        try:
            rel = Relevance.from_lists(labels, n_records)
        except (TypeError, ValueError) as err:
            raise ValueError(f"{name}: {err}") from None
    else:
        raise ValueError(
            f"{name}: unsupported label format {type(labels).__name__}; pass lists of row "
            "indices, a qrels dict with corpus_ids, a scipy sparse matrix or a Relevance"
        )
    if rel.n_queries != n_queries:
        raise ValueError(f"{name}: labels cover {rel.n_queries} queries but there are {n_queries}")
    if rel.n_records != n_records:
        raise ValueError(
            f"{name}: labels index a corpus of {rel.n_records} rows but the corpus has {n_records}"
        )
    if rel.nnz and (rel.indices.min() < 0 or rel.indices.max() >= n_records):
        raise ValueError(f"{name}: a relevant row index is outside the corpus of {n_records} rows")
    return rel


def _relevance_from_qrels(
    qrels: Mapping[Any, Any],
    name: str,
    n_queries: int,
    n_records: int,
    corpus_ids: Sequence[str] | None,
    query_ids: Sequence[str] | None,
) -> Relevance:
    if corpus_ids is None:
        raise ValueError(f"{name}: a qrels dict needs corpus_ids to map document ids to rows")
    if len(corpus_ids) != n_records:
        raise ValueError(f"{name}: {len(corpus_ids)} corpus_ids for a corpus of {n_records} rows")
    if query_ids is None:
        query_ids = [str(j) for j in range(n_queries)]
    elif len(query_ids) != n_queries:
        raise ValueError(f"{name}: {len(query_ids)} query_ids for {n_queries} queries")
    keyed = {str(q): docs for q, docs in qrels.items()}
    return relevance_from_qrels(
        keyed,
        [str(q) for q in query_ids],
        {str(d): i for i, d in enumerate(corpus_ids)},
        n_records,
        lambda doc, qid: f"{name}: relevant id {doc!r} (query {qid!r}) is not in the corpus",
    )


def check_gamma(gamma: float | None, name: str = "gamma") -> float | None:
    if gamma is None:
        return None
    g = float(gamma)
    if not np.isfinite(g) or g < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {gamma!r}")
    return g
