"""NUDGE on a live vector store: apply, roll back, list what was done.

:func:`apply_to_store` reads every ``(id, vector)`` of a store, fits NUDGE from the
**pre-trained** vectors (the originals nudgekit kept for rows it rewrote before, the store's
vectors for the others), and writes back only the rows whose vector changes — rows a new fit
moves, and rows that go back to their original because no training query points to them
any more — with their originals, in one atomic step, recorded in the store's history.
:func:`rollback_store` undoes the last apply; :func:`store_history` lists them.

Every input is checked before anything is written. The store adapters are in
:mod:`nudgekit.stores`; docs/stores.md describes the design per store.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

from nudgekit.core import ProgressCallback
from nudgekit.evaluation import retrieval_metrics, search
from nudgekit.io.dataset import EmbeddedDataset, Split
from nudgekit.io.labels import Labels, load_labels
from nudgekit.methods import MethodSpec, method_spec
from nudgekit.stores import METRICS, Changes, StoreError, VectorStore, digest, open_store
from nudgekit.stores.base import new_id, now, same_rows
from nudgekit.workflows.provenance import versions

TEST_KS = (1, 10, 100)
#: The test metrics kept in a record (the names ``nudgekit eval`` prints first).
TEST_METRICS = ("ndcg@10", "recall@10", "r_cap@10", "mrr@10", "map@100", "accuracy@1", "n_queries")


# -- reading the store ---------------------------------------------------------------------
@dataclass
class _Snapshot:
    """The store as read, reduced to what planning needs."""

    ids: list[str]
    keys: list[Any]
    base: np.ndarray  # float32 (n, d): the pre-trained vector of every row
    trusted: np.ndarray  # bool (n,): base comes from a kept original
    nudged: np.ndarray  # int64, sorted: rows that hold a nudge now (≠ their original)
    nudged_now: np.ndarray  # float32: what those rows hold
    n_stale: int  # kept originals set aside: the row was re-written by someone else
    n_not_unit: int  # rows whose pre-trained vector is not unit-norm
    example_norm: tuple[str, float] | None

    def current(self, rows: np.ndarray) -> np.ndarray:
        """What ``rows`` hold in the store now."""
        out = self.base[rows].copy()
        if len(self.nudged):
            pos = np.minimum(np.searchsorted(self.nudged, rows), len(self.nudged) - 1)
            hit = self.nudged[pos] == rows
            out[hit] = self.nudged_now[pos[hit]]
        return out

    def current_matrix(self) -> np.ndarray:
        matrix = self.base.copy()
        matrix[self.nudged] = self.nudged_now
        return matrix


def _read_store(
    store: VectorStore, batch_size: int, progress: ProgressCallback | None
) -> _Snapshot:
    total = store.count()
    ids: list[str] = []
    keys: list[Any] = []
    # filled in place (one N × d copy in memory, not two); grown if rows arrive meanwhile
    base_all = np.empty((total, store.dim), dtype=np.float32)
    trusted_all = np.zeros(total, dtype=bool)
    nudged, nudged_now = [], []
    n_stale = n_not_unit = 0
    example: tuple[str, float] | None = None
    for batch in store.read(batch_size):
        offset = len(ids)
        vectors = batch.vectors
        if vectors.shape[1] != store.dim:
            raise StoreError(
                f"{store.spec}: a vector has {vectors.shape[1]} values, not {store.dim}"
            )
        norms = np.sqrt(np.einsum("ij,ij->i", vectors, vectors, dtype=np.float64))
        bad = np.flatnonzero(~np.isfinite(norms) | (norms == 0))
        if len(bad):
            i = int(bad[0])
            problem = "is all zeros" if norms[i] == 0 else "contains NaN or infinite values"
            raise StoreError(f"{store.spec}: the vector of id {batch.ids[i]!r} {problem}")
        has = batch.has_original & (batch.digests != 0)
        trusted = np.zeros(len(batch.ids), dtype=bool)
        if has.any():
            # a kept original counts only while the row holds what nudgekit last wrote
            trusted[has] = digest(vectors[has]) == batch.digests[has]
        n_stale += int((batch.has_original & ~trusted).sum())
        base = vectors.copy()
        base[trusted] = batch.originals[trusted]
        moved = trusted & ~same_rows(vectors, batch.originals)
        nudged.append(np.flatnonzero(moved) + offset)
        nudged_now.append(vectors[moved])
        base_norms = np.where(trusted, np.linalg.norm(base, axis=1), norms)
        off_unit = np.flatnonzero(np.abs(base_norms - 1) > 1e-3)
        if len(off_unit) and example is None:
            example = (batch.ids[int(off_unit[0])], float(base_norms[off_unit[0]]))
        n_not_unit += len(off_unit)
        ids.extend(batch.ids)
        keys.extend(batch.keys)
        if len(ids) > len(base_all):
            grow = len(ids) - len(base_all)
            base_all = np.concatenate([base_all, np.empty((grow, store.dim), np.float32)])
            trusted_all = np.concatenate([trusted_all, np.zeros(grow, dtype=bool)])
        base_all[offset : len(ids)] = base
        trusted_all[offset : len(ids)] = trusted
        if progress is not None:
            progress("read store", len(ids), max(total, len(ids)))
    if not ids:
        raise StoreError(f"{store.spec} is empty: no rows to fine-tune")
    row_of: dict[str, int] = {}
    for row, i in enumerate(ids):
        first = row_of.setdefault(i, row)
        if first != row:
            raise StoreError(
                f"{store.spec} holds id {i!r} twice (rows {first} and {row}); ids must be "
                "unique for nudgekit to write rows back by id"
            )
    return _Snapshot(
        ids,
        keys,
        base_all[: len(ids)],
        trusted_all[: len(ids)],
        np.concatenate(nudged).astype(np.int64),
        np.concatenate(nudged_now).astype(np.float32),
        n_stale,
        n_not_unit,
        example,
    )


# -- checks --------------------------------------------------------------------------------
def _check_model(
    labels: Labels, store: VectorStore, history: list[dict[str, Any]], force_model: bool
) -> None:
    model = labels.meta.get("model")
    if not model or force_model:
        return
    found = [(store.model(), "the table's embedding function")]
    for record in reversed(history):
        if record["kind"] == "apply" and record["status"] in ("done", "rolled back"):
            if record.get("model"):
                found.append((record["model"], f"apply #{record['seq']} of {record['created']}"))
                break
    for other, where in found:
        if other and _model_key(other) != _model_key(str(model)):
            raise ValueError(
                f"model mismatch: {labels.path / 'embed_meta.json'} says the queries were "
                f"embedded with {model!r}, but {store.spec} is recorded as {other!r} ({where}); "
                "queries and records must come from the same model. Pass --force-model if the "
                "store was re-embedded with the new model."
            )


def _model_key(name: str) -> str:
    return name.rstrip("/").rsplit("/", 1)[-1].lower()


_DECLARED = "--metric (declared)"
_REUSED = "--metric of an earlier apply"


def _check_metric(
    store: VectorStore,
    spec: MethodSpec,
    metric: str | None,
    force_metric: bool,
    history: list[dict[str, Any]],
) -> tuple[str | None, str, list[str]]:
    """The metric the store searches with; refuse NUDGE-M output where it would be wrong."""
    info = store.metric()
    warnings: list[str] = []
    if info.name is not None:
        if metric is not None and metric != info.name:
            raise ValueError(
                f"--metric {metric} contradicts {store.spec}: its {info.source} is {info.name}"
            )
        name, source = info.name, info.source
    elif metric is not None:
        name, source = metric, _DECLARED
    else:
        declared = next(
            (
                r["metric"]
                for r in reversed(history)
                if r["kind"] == "apply" and r.get("metric_source") in (_DECLARED, _REUSED)
            ),
            None,
        )
        name, source = declared, (_REUSED if declared else info.source)
    if not spec.unit_norm and name != "dot":
        if name is None:
            why = (
                f"{info.source}, so nudgekit cannot see the metric you search it with "
                f"(LanceDB's default is l2). {spec.label} output is not unit-norm and must be "
                "searched by dot product: pass --metric dot if you search it with "
                ".distance_type('dot') (recorded for later applies), use --method nudge-n "
                "(unit-norm output), or pass --force-metric to write anyway"
            )
        else:
            why = (
                f"{store.spec} is configured for {name} ({source}). {spec.label} changes "
                "the length of the records it moves: the gain shows only under "
                "dot-product search — cosine search discards the length change (Qdrant even "
                "normalises what it stores) and l2 search penalises it. Search by dot "
                "product, use --method nudge-n (unit-norm output), or pass --force-metric to "
                "write anyway"
            )
        if not force_metric:
            raise ValueError(f"refusing to write {spec.label} output: {why}")
        warnings.append(
            f"--force-metric: {spec.label} output written although {why.split('. ')[0]}"
        )
    return name, source, warnings


def _check_label_ids(labels: Labels, store: VectorStore, ids: list[str], used: list[str]) -> None:
    known = set(ids)
    missing: dict[str, str] = {}
    for split in used:
        for qid in labels.splits.get(split, []):
            for doc in labels.qrels.get(qid, {}):
                if doc not in known and doc not in missing:
                    missing[doc] = f"query {qid!r}, split {split!r}"
    if missing:
        shown = "; ".join(f"{d!r} ({where})" for d, where in list(missing.items())[:5])
        hint = (
            " FAISS ids are the index's int64 ids: qrels must name them in decimal."
            if store.kind == "faiss"
            else ""
        )
        raise ValueError(
            f"{labels.path / 'qrels.json'}: {len(missing)} relevant document id(s) are not in "
            f"{store.spec}: {shown}.{hint} Nothing was written."
        )


# -- planning ------------------------------------------------------------------------------
def _plan(
    snap: _Snapshot, model: Any, dtype: np.dtype
) -> tuple[np.ndarray, Changes, dict[str, int]]:
    """Rows to rewrite: moved rows whose vector changes, and nudged rows going back."""
    changed = np.asarray(model.changed_rows_, dtype=np.int64)
    # round to the store's precision first, so "unchanged" means unchanged in the store
    new = np.asarray(model.changed_embeddings_, dtype=dtype).astype(np.float32)
    now_changed = snap.current(changed)
    differs = ~same_rows(new, now_changed)
    back = np.setdiff1d(snap.nudged, changed)
    rows = np.concatenate([changed[differs], back])
    vectors = np.concatenate([new[differs], snap.base[back]])
    before = np.concatenate([now_changed[differs], snap.current(back)])
    order = np.argsort(rows, kind="stable")
    rows, vectors, before = rows[order], vectors[order], before[order]
    changes = Changes(
        keys=[snap.keys[r] for r in rows],
        ids=[snap.ids[r] for r in rows],
        vectors=np.ascontiguousarray(vectors, dtype=np.float32),
        originals=np.ascontiguousarray(snap.base[rows], dtype=np.float32),
        digests=digest(vectors),
        before=np.ascontiguousarray(before, dtype=np.float32),
    )
    counts = {
        "n_written": len(rows),
        "n_nudged": int(differs.sum()),
        "n_reverted": len(back),
        "n_new_originals": int((~snap.trusted[rows]).sum()),
    }
    return rows, changes, counts


def _test_metrics(matrix: np.ndarray, test: Split) -> dict[str, float]:
    _, indices = search(test.queries, matrix, max(TEST_KS))
    metrics = retrieval_metrics(indices, test.relevance, ks=TEST_KS)
    return {k: metrics[k] for k in TEST_METRICS}


# -- public API ----------------------------------------------------------------------------
@contextmanager
def _opened(
    store: str | os.PathLike[str] | VectorStore,
    table: str | None,
    id_column: str | None,
    vector_column: str | None,
) -> Iterator[VectorStore]:
    if isinstance(store, VectorStore):
        yield store
        return
    with open_store(store, table, id_column=id_column, vector_column=vector_column) as opened:
        yield opened


def apply_to_store(
    store: str | os.PathLike[str] | VectorStore,
    labels_dir: str | os.PathLike[str],
    *,
    table: str | None = None,
    id_column: str | None = None,
    vector_column: str | None = None,
    method: str = "nudge-n",
    gamma: float | None = None,
    val_k: int = 1,
    metric: str | None = None,
    force_metric: bool = False,
    force_model: bool = False,
    device: str | None = None,
    dry_run: bool = False,
    batch_size: int = 65536,
    progress: ProgressCallback | None = None,
) -> dict[str, Any]:
    """Fine-tune a store's vectors with NUDGE and write back only the rows that change.

    Parameters
    ----------
    store : str or VectorStore
        ``lancedb:PATH``, ``qdrant:PATH``, ``faiss:PATH``, or an opened adapter.
    labels_dir : path
        ``queries.npy``, ``query_ids.json``, ``qrels.json`` (doc ids = the store's ids),
        ``splits.json`` with ``train`` and ``val`` (``test`` optional: retrieval quality is
        then reported before and after), optional ``embed_meta.json``.
    table, id_column, vector_column : str, optional
        Table or collection, and columns (per-store defaults; see :func:`open_store`).
    method, gamma, val_k, device :
        As for ``nudgekit fit``.
    metric : {"dot", "cosine", "l2"}, optional
        How you search the store, where the store cannot tell (a LanceDB table without a
        vector index). Recorded and reused by later applies.
    force_metric : bool
        Write NUDGE-M output even into a store searched by cosine or l2.
    force_model : bool
        Skip the check that the labels' embedding model is the store's recorded one.
    dry_run : bool
        Compute and report, write nothing.
    batch_size : int
        Rows per read batch.
    progress : callable, optional
        ``progress(phase, done, total)``.

    Returns
    -------
    dict
        The apply record (method, γ, counts, model, metric, versions before/after, test
        metrics before/after) plus ``store``, ``dry_run``, ``warnings``, ``recovered`` and
        ``timings_s``.

    Raises
    ------
    ValueError, FileNotFoundError
        For any bad input, before anything is written: unknown table, column or ids, a
        dimension or model mismatch, duplicate ids, NaN or zero vectors, a metric that
        does not suit the method.
    """
    started = time.perf_counter()
    timings: dict[str, float] = {}
    spec = method_spec(method, nudge=True)
    model = spec.make_estimator(gamma=gamma, val_k=val_k, device=device)
    if metric is not None and metric not in METRICS:
        raise ValueError(f"--metric must be one of {', '.join(METRICS)}, got {metric!r}")
    labels = load_labels(labels_dir)
    with _opened(store, table, id_column, vector_column) as opened:
        recovered = [] if dry_run else opened.recover()
        history = opened.history()
        if labels.dim != opened.dim:
            raise ValueError(
                f"dimension mismatch: {labels.path / 'queries.npy'} has {labels.dim} values "
                f"per query but {opened.spec} holds vectors of {opened.dim} (another embedding "
                "model?)"
            )
        _check_model(labels, opened, history, force_model)
        metric_name, metric_source, warnings = _check_metric(
            opened, spec, metric, force_metric, history
        )

        tick = time.perf_counter()
        snap = _read_store(opened, batch_size, progress)
        timings["read"] = time.perf_counter() - tick
        used = ["train"] + (["val"] if model.searches_gamma else [])
        test_ids = labels.splits.get("test") or []
        if test_ids:
            used.append("test")
        _check_label_ids(labels, opened, snap.ids, used)
        data = EmbeddedDataset(
            labels.path,
            snap.base,
            snap.ids,
            labels.queries,
            labels.query_ids,
            labels.qrels,
            labels.splits,
            labels.meta,
        )
        train = data.split("train")
        val = data.split("val").check_labelled() if model.searches_gamma else None
        test = data.split("test") if test_ids else None

        tick = time.perf_counter()
        model.fit(
            snap.base,
            train.queries,
            train.relevance,
            val.queries if val else None,
            val.relevance if val else None,
            progress=progress,
        )
        timings["fit"] = time.perf_counter() - tick
        rows, changes, counts = _plan(snap, model, opened.dtype)

        test_before = test_after = None
        if test is not None:
            tick = time.perf_counter()
            matrix = snap.current_matrix()
            test_before = _test_metrics(matrix, test)
            matrix[rows] = changes.vectors
            test_after = _test_metrics(matrix, test)
            timings["test"] = time.perf_counter() - tick
        if spec.unit_norm and snap.n_not_unit and metric_name != "cosine":
            i, norm = snap.example_norm  # type: ignore[misc]
            warnings.append(
                f"{snap.n_not_unit} pre-trained vectors are not unit-norm (e.g. id {i!r}: "
                f"{norm:.4g}); {spec.label} writes unit-norm vectors, whose {metric_name or 'dot'} "
                "scores do not compare with the others' — normalise the store or search by cosine"
            )
        if snap.n_stale:
            warnings.append(
                f"{snap.n_stale} rows changed outside nudgekit since it wrote them; their "
                "current vectors are taken as the new originals"
            )

        record: dict[str, Any] = {
            "id": new_id(),
            "kind": "apply",
            "created": now(),
            "method": spec.name,
            "gamma": float(model.gamma_),
            "gamma_searched": model.searches_gamma,
            "val_k": int(getattr(model, "val_k", 1)),
            "validation_accuracy": model.validation_accuracy_,
            "n_records": len(snap.ids),
            "dim": opened.dim,
            "model": labels.meta.get("model"),
            "n_changed": int(model.n_changed_),
            **counts,
            "n_stale_originals": snap.n_stale,
            "n_train_queries": len(train.query_ids),
            "n_val_queries": len(val.query_ids) if val else 0,
            "n_test_queries": len(test.query_ids) if test else 0,
            "metric": metric_name,
            "metric_source": metric_source,
            "metric_forced": bool(force_metric and not spec.unit_norm and metric_name != "dot"),
            "labels": str(labels.path.resolve()),
            "test_before": test_before,
            "test_after": test_after,
            "versions": versions(),
        }
        tick = time.perf_counter()
        if not dry_run:
            record = opened.write(changes, record, progress)
        timings["write"] = time.perf_counter() - tick
        spec = opened.spec
    timings["total"] = time.perf_counter() - started
    return {
        **record,
        "store": spec,
        "dry_run": dry_run,
        "warnings": warnings,
        "recovered": recovered,
        "timings_s": timings,
    }


def rollback_store(
    store: str | os.PathLike[str] | VectorStore,
    *,
    table: str | None = None,
    id_column: str | None = None,
    vector_column: str | None = None,
    force: bool = False,
) -> dict[str, Any]:
    """Undo the last apply that changed rows: the store goes back to its state before it.

    LanceDB restores the version before the apply as a new version (refusing, unless
    ``force``, when the table was changed by others since: restoring would discard that).
    Qdrant and FAISS write back what the apply's rows held before, for the rows that still
    hold what the apply wrote (rows changed since are left alone and counted as skipped).

    Returns
    -------
    dict
        The rollback record (``rolled_back``: the apply's id; versions before/after), plus
        ``store`` and ``recovered``.
    """
    with _opened(store, table, id_column, vector_column) as opened:
        recovered = opened.recover()
        record = opened.rollback(force=force)
        return {**record, "store": opened.spec, "recovered": recovered}


def store_history(
    store: str | os.PathLike[str] | VectorStore,
    *,
    table: str | None = None,
    id_column: str | None = None,
    vector_column: str | None = None,
) -> list[dict[str, Any]]:
    """Every apply and rollback recorded for the store, oldest first.

    ``status`` is ``done``, ``rolled back``, ``pending`` (interrupted: the next apply or
    rollback completes or discards it) or ``abandoned`` (interrupted before it changed
    anything).
    """
    with _opened(store, table, id_column, vector_column) as opened:
        return opened.history()
