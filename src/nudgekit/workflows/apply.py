"""The ``apply``, ``rollback`` and ``history`` jobs: NUDGE on a live vector store.

:func:`apply_to_store` reads the store's vectors once as a block source of **pre-trained**
vectors (the kept original of a row nudgekit rewrote, while the row still holds what
nudgekit wrote; the store's vector otherwise), fits NUDGE with one by-id corpus pass over
it, and writes back only the rows whose vector changes — rows a new fit moves, and rows
that go back to their original because no training query points to them any more — with
the store's write protocol (:meth:`nudgekit.stores.VectorStore.write`). Memory holds the
labelled and changed rows, never the store. With a test split, one more read measures
retrieval quality before and after. :func:`rollback_store` undoes the last apply row by
row; :func:`store_history` lists them.

Every input is checked before anything is written. The store adapters are in
:mod:`nudgekit.stores`; docs/stores.md describes what a user sees.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from nudgekit.core import (
    Block,
    CorpusError,
    FitProblem,
    ProgressCallback,
    Relevance,
    contains,
    id_bytes_of,
)
from nudgekit.engines import PASSES
from nudgekit.engines.ann import store_search_runner
from nudgekit.evaluation import TopK, retrieval_metrics
from nudgekit.io.dataset import EmbeddedDataset
from nudgekit.io.embedding import same_model
from nudgekit.io.labels import Labels, load_labels
from nudgekit.methods import DEFAULT_METHOD, MethodSpec, method_spec
from nudgekit.stores import METRICS, Changes, StoreError, VectorStore, digest, open_store
from nudgekit.stores.base import new_id, next_seq, now_utc, same_rows
from nudgekit.stores.ledger import Rows
from nudgekit.workflows.provenance import versions

TEST_KS = (1, 10, 100)
#: The test metrics kept in a record (the names ``nudgekit eval`` prints first).
TEST_METRICS = ("ndcg@10", "recall@10", "r_cap@10", "mrr@10", "map@100", "accuracy@1", "n_queries")


# -- reading the store ---------------------------------------------------------------------
class StoreSource:
    """A store read as its **pre-trained** vectors, block by block (a block source).

    A row's vector is its kept original where the row still holds what nudgekit last
    wrote, else what it holds now. While reading, it keeps what planning needs and nothing
    corpus-sized but the ids: every id (bytes, for the uniqueness and label checks), which
    ids are integers, the rows that hold a nudge now (with what they hold), and counts.
    """

    def __init__(self, store: VectorStore, batch_size: int) -> None:
        self.store = store
        self.batch_size = batch_size
        self.n_records = store.count()
        self.dim = store.dim
        self.bookkeeping = store.bookkeeping()
        self.ids: np.ndarray = np.empty(0, dtype="S1")
        self.nudged = Rows.empty(store.dim)  # ids, what they hold now (originals column)
        self.n_stale = self.n_not_unit = 0
        self.example_norm: tuple[str, float] | None = None

    def blocks(self, block_rows: int) -> Iterator[Block]:
        ids, ints, start = [], [], 0
        nudged: list[tuple[np.ndarray, np.ndarray]] = []
        for batch in self.store.read(self.batch_size):
            vectors = batch.vectors
            if vectors.shape[1] != self.dim:
                raise StoreError(
                    f"{self.store.spec}: a vector has {vectors.shape[1]} values, not {self.dim}"
                )
            names = np.asarray(batch.ids, dtype=str)
            at, has = self.bookkeeping.find(names)
            trusted = has.copy()
            if has.any():
                # a kept original counts only while the row holds what nudgekit last wrote
                trusted[has] = digest(vectors[has]) == self.bookkeeping.digests[at[has]]
            self.n_stale += int((has & ~trusted).sum())
            base = np.array(vectors, dtype=np.float32)
            base[trusted] = self.bookkeeping.originals[at[trusted]]
            moved = trusted & ~same_rows(vectors, base)
            if moved.any():
                nudged.append((names[moved], np.asarray(vectors[moved], np.float32)))
            norms = np.sqrt(np.einsum("ij,ij->i", base, base, dtype=np.float64))
            off_unit = np.flatnonzero(np.isfinite(norms) & (np.abs(norms - 1) > 1e-3))
            if len(off_unit) and self.example_norm is None:
                self.example_norm = (batch.ids[int(off_unit[0])], float(norms[off_unit[0]]))
            self.n_not_unit += len(off_unit)
            keys = id_bytes_of(batch.ids)
            ids.append(keys)
            ints.append(np.array([isinstance(k, int) for k in batch.keys], dtype=bool))
            yield Block(start, base, keys)
            start += len(base)
        if start != self.n_records:
            raise StoreError(
                f"{self.store.spec} changed while nudgekit read it ({self.n_records:,} rows "
                f"counted, {start:,} read); nothing was written — run apply again"
            )
        self.ids = np.concatenate(ids) if ids else np.empty(0, dtype="S1")
        self.int_keys = np.concatenate(ints) if ints else np.empty(0, dtype=bool)
        if nudged:
            self.nudged = Rows.of(
                np.concatenate([n for n, _ in nudged]),
                np.concatenate([v for _, v in nudged]),
                np.zeros(sum(len(n) for n, _ in nudged), np.int64),
            )
        self._check_unique()

    def _check_unique(self) -> None:
        order = np.argsort(self.ids, kind="stable")
        same = np.flatnonzero(self.ids[order][1:] == self.ids[order][:-1])
        if len(same):
            first, second = int(order[same[0]]), int(order[same[0] + 1])
            dup = self.ids[first].decode("utf-8", "replace")
            raise StoreError(
                f"{self.store.spec} holds id {dup!r} twice (rows {first} and {second}); ids "
                "must be unique for nudgekit to write rows back by id"
            )

    def keys_of(self, names: np.ndarray) -> list[Any]:
        """The store-native ids of rows named by ``names`` (text ids read by the pass)."""
        order = np.argsort(self.ids, kind="stable")
        wanted = id_bytes_of(names.tolist())
        at = order[np.minimum(np.searchsorted(self.ids[order], wanted), len(order) - 1)]
        return [
            self.store.key_of(n, bool(b))
            for n, b in zip(names.tolist(), self.int_keys[at].tolist(), strict=True)
        ]

    def describe(self, block: Block, i: int, problem: str) -> str:
        name = block.ids[i].decode("utf-8", "replace") if block.ids is not None else i
        return f"{self.store.spec}: the vector of id {name!r} {problem}"

    def where(self, row: int) -> str:
        return f"{self.store.spec} row {row}"


@dataclass
class _Plan:
    """What an apply writes, and how it counts."""

    changes: Changes
    counts: dict[str, int] = field(default_factory=dict)


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
        if other and not same_model(other, str(model)):
            raise ValueError(
                f"model mismatch: {labels.path / 'embed_meta.json'} says the queries were "
                f"embedded with {model!r}, but {store.spec} is recorded as {other!r} ({where}); "
                "queries and records must come from the same model. Pass --force-model if the "
                "store was re-embedded with the new model."
            )


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


def _check_label_ids(labels: Labels, store: VectorStore, ids: np.ndarray, used: list[str]) -> None:
    """Every relevant doc id of the used splits is among the store's ``ids`` (bytes)."""
    named: dict[str, str] = {}
    for split in used:
        for qid in labels.splits.get(split, []):
            for doc in labels.qrels.get(qid, {}):
                named.setdefault(doc, f"query {qid!r}, split {split!r}")
    wanted = id_bytes_of(list(named))
    present = contains(np.sort(ids), wanted) if len(wanted) else np.zeros(0, bool)
    missing = {doc: named[doc] for doc, ok in zip(named, present.tolist(), strict=True) if not ok}
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
def _plan(store: VectorStore, source: StoreSource, model: Any) -> _Plan:
    """Rows to rewrite: moved rows whose vector changes, and nudged rows going back."""
    changed = np.asarray([i.decode("utf-8") for i in model.changed_ids_.tolist()], dtype=str)
    back = np.setdiff1d(source.nudged.ids, changed)
    names = np.concatenate([changed, back])
    keys = source.keys_of(names)
    current = store.current(keys)
    missing = [i for i in names.tolist() if i not in current]
    if missing:
        raise StoreError(
            f"{store.spec} changed while nudgekit was computing (id {missing[0]!r} is gone); "
            "nothing was written — run apply again"
        )
    now = (
        np.stack([current[i] for i in names.tolist()])
        if len(names)
        else np.empty((0, store.dim), np.float32)
    )
    # the pre-trained vector of each row, as stored (not normalised)
    at, has = source.bookkeeping.find(names)
    trusted = has.copy()
    if has.any():
        trusted[has] = digest(now[has]) == source.bookkeeping.digests[at[has]]
    originals = now.copy()
    originals[trusted] = source.bookkeeping.originals[at[trusted]]
    # round to the store's precision first, so "unchanged" means unchanged in the store
    moved = np.asarray(model.changed_embeddings_, dtype=store.dtype).astype(np.float32)
    vectors = np.concatenate([moved, originals[len(changed) :]])
    differs = ~same_rows(vectors, now)
    differs[len(changed) :] = True
    changes = Changes(
        keys=[k for k, d in zip(keys, differs.tolist(), strict=True) if d],
        ids=names[differs].tolist(),
        vectors=np.ascontiguousarray(vectors[differs], dtype=np.float32),
        originals=np.ascontiguousarray(originals[differs], dtype=np.float32),
        before=np.ascontiguousarray(now[differs], dtype=np.float32),
    )
    counts = {
        "n_written": int(differs.sum()),
        "n_nudged": int(differs[: len(changed)].sum()),
        "n_reverted": len(back),
        "n_new_originals": int((~trusted[differs]).sum()),
    }
    return _Plan(changes, counts)


def _test_metrics(
    store: VectorStore, labels: Labels, changes: Changes, batch_size: int
) -> tuple[dict[str, float], dict[str, float]]:
    """Test retrieval quality over the store's vectors before and after the write: one
    read of the store feeding both searches."""
    data = _labels_dataset(labels)
    test = data.split("test")
    new = Rows.of(changes.ids, changes.vectors, np.zeros(len(changes), np.int64))
    k = min(max(TEST_KS), store.count())
    before, after = TopK(test.queries, k), TopK(test.queries, k)
    label_ids = id_bytes_of(data.corpus_ids)
    order = np.argsort(label_ids, kind="stable")
    rows_of_label = np.full(len(label_ids), -1, dtype=np.int64)
    start = 0
    for batch in store.read(batch_size):
        vectors = np.asarray(batch.vectors, dtype=np.float32)
        keys = id_bytes_of(batch.ids)
        sorted_labels = label_ids[order]
        at = np.minimum(np.searchsorted(sorted_labels, keys), max(len(label_ids) - 1, 0))
        hit = (sorted_labels[at] == keys) if len(label_ids) else np.zeros(len(keys), bool)
        rows_of_label[order[at[hit]]] = start + np.flatnonzero(hit)
        before.add(vectors, start)
        at, found = new.find(np.asarray(batch.ids, dtype=str))
        if found.any():
            vectors = vectors.copy()
            vectors[found] = new.originals[at[found]]
        after.add(vectors, start)
        start += len(vectors)
    rel = test.relevance
    relevance = Relevance.from_coo(
        rel.query_of_entry(), rows_of_label[rel.indices], rel.n_queries, start, rel.grades
    )
    out = []
    for top in (before, after):
        metrics = retrieval_metrics(top.result()[1], relevance, ks=TEST_KS)
        out.append({name: metrics[name] for name in TEST_METRICS})
    return out[0], out[1]


def _labels_dataset(labels: Labels) -> EmbeddedDataset:
    """The labels as a dataset whose "corpus" is the labelled doc ids (no vectors)."""
    docs = sorted({d for docs in labels.qrels.values() for d in docs})
    return EmbeddedDataset(
        labels.path,
        np.broadcast_to(np.float32(0), (len(docs), labels.dim)),
        docs,
        labels.queries,
        labels.query_ids,
        labels.qrels,
        labels.splits,
        labels.meta,
    )


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
    labels_dir: str | os.PathLike[str] | None = None,
    *,
    queries: str | os.PathLike[str] | None = None,
    qrels: str | os.PathLike[str] | None = None,
    model: str | None = None,
    table: str | None = None,
    id_column: str | None = None,
    vector_column: str | None = None,
    method: str = DEFAULT_METHOD,
    gamma: float | None = None,
    val_k: int = 1,
    params: Mapping[str, Any] | None = None,
    metric: str | None = None,
    force_metric: bool = False,
    force_model: bool = False,
    device: str | None = None,
    dry_run: bool = False,
    reindex: bool = True,
    batch_size: int = 65536,
    corpus_pass: str = "exact",
    min_recall: float = 0.9,
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
    queries, qrels, model : optional
        Instead of ``labels_dir``: query texts and what answers them, checked against the
        store and embedded with ``model`` (:func:`nudgekit.workflows.labels.build_labels`).
    table, id_column, vector_column : str, optional
        Table or collection, and columns (per-store defaults; see :func:`open_store`).
    method, gamma, val_k, params, device :
        As for :func:`nudgekit.workflows.fit.fit_dataset`.
    metric : {"dot", "cosine", "l2"}, optional
        How you search the store, where the store cannot tell (a LanceDB table without a
        vector index). Recorded and reused by later applies.
    force_metric : bool
        Write NUDGE-M output even into a store searched by cosine or l2.
    force_model : bool
        Skip the check that the labels' embedding model is the store's recorded one.
    dry_run : bool
        Compute and report, write nothing.
    reindex : bool
        Bring the store's vector index up to date after the write (LanceDB:
        ``table.optimize()``); without it, the record's ``index`` says what is left to do.
    batch_size : int
        Rows per read batch.
    corpus_pass : {"exact", "ann"}
        ``ann``: each validation query's competitors from the store's own search (its
        index), scored exactly in the one read; recall measured on a sample, the exact
        pass below ``min_recall`` (docs/scale.md).
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
    if queries is not None or labels_dir is None:
        if queries is None or model is None or labels_dir is not None:
            raise ValueError("give the labels: a labels folder, or queries with their model")
        if isinstance(store, VectorStore):
            raise ValueError("labels from texts need the store's spec, not an opened store")
        from nudgekit.workflows.labels import temporary_labels

        options = {"table": table, "id_column": id_column, "vector_column": vector_column}
        with temporary_labels(
            queries, qrels=qrels, model=model, store=str(store), **options
        ) as built:
            return apply_to_store(
                store, built, method=method, gamma=gamma, val_k=val_k, params=params,
                metric=metric,
                force_metric=force_metric, force_model=force_model, device=device,
                dry_run=dry_run, reindex=reindex, batch_size=batch_size,
                corpus_pass=corpus_pass, min_recall=min_recall, progress=progress,
                **options,
            )  # fmt: skip
    started = time.perf_counter()
    timings: dict[str, float] = {}
    spec = method_spec(method, nudge=True)
    estimator = spec.make_estimator(gamma=gamma, val_k=val_k, device=device, params=params)
    if metric is not None and metric not in METRICS:
        raise ValueError(f"--metric must be one of {', '.join(METRICS)}, got {metric!r}")
    if corpus_pass not in PASSES:
        raise ValueError(f"unknown pass {corpus_pass!r} (choose from {', '.join(PASSES)})")
    if not 0.0 <= min_recall <= 1.0:
        raise ValueError(f"--min-recall must be in [0, 1], got {min_recall!r}")
    labels = load_labels(labels_dir)
    with _opened(store, table, id_column, vector_column) as opened:
        if labels.dim != opened.dim:
            raise ValueError(
                f"dimension mismatch: {labels.path / 'queries.npy'} has {labels.dim} values "
                f"per query but {opened.spec} holds vectors of {opened.dim} (another embedding "
                "model?)"
            )
        with opened.lock() if not dry_run else _no_lock():
            recovered = [] if dry_run else opened.recover()
            history = opened.history()
            _check_model(labels, opened, history, force_model)
            metric_name, metric_source, warnings = _check_metric(
                opened, spec, metric, force_metric, history
            )
            used = ["train"] + (["val"] if estimator.uses_val else [])
            has_test = bool(labels.splits.get("test"))
            if has_test:
                used.append("test")
            data = _labels_dataset(labels)
            if has_test:
                data.split("test")  # checked now, before the store is read: ids, queries

            tick = time.perf_counter()
            source = StoreSource(opened, batch_size)
            problem = _problem(data, estimator.uses_val, source.n_records)
            run_pass = None
            if corpus_pass == "ann":
                run_pass = store_search_runner(
                    opened.search, min_recall=min_recall, device=device,
                    block_rows=int(getattr(estimator, "block_rows", 8192)),
                )  # fmt: skip
            try:
                estimator.fit_source(source, problem, run_pass=run_pass, progress=progress)
            except CorpusError as err:
                if "is not in the corpus" in str(err):
                    _check_label_ids(labels, opened, source.ids, used)  # names them all
                raise
            _check_label_ids(labels, opened, source.ids, used)
            timings["read_and_fit"] = time.perf_counter() - tick
            pass_info = getattr(estimator, "pass_stats_", {}).get("pass", {"kind": "exact"})
            if pass_info.get("warning"):
                warnings.append(pass_info["warning"])
            plan = _plan(opened, source, estimator)
            changes = plan.changes

            test_before = test_after = None
            if has_test:
                tick = time.perf_counter()
                test_before, test_after = _test_metrics(opened, labels, changes, batch_size)
                timings["test"] = time.perf_counter() - tick
            if spec.unit_norm and source.n_not_unit and metric_name != "cosine":
                i, norm = source.example_norm  # type: ignore[misc]
                warnings.append(
                    f"{source.n_not_unit} pre-trained vectors are not unit-norm (e.g. id {i!r}: "
                    f"{norm:.4g}); {spec.label} writes unit-norm vectors, whose "
                    f"{metric_name or 'dot'} scores do not compare with the others' — "
                    "normalise the store or search by cosine"
                )
            if source.n_stale:
                warnings.append(
                    f"{source.n_stale} rows changed outside nudgekit since it wrote them; their "
                    "current vectors are taken as the new originals"
                )
            # what else the method chose (family, cluster γs ...); its curve stays in fit.json
            learned = {
                key: value
                for key, value in estimator.summary().items()
                if key not in ("gamma", "gamma_searched", "val_k", "validation_accuracy",
                               "validation_curve", "n_changed")
            }  # fmt: skip
            record: dict[str, Any] = {
                "id": new_id(),
                "kind": "apply",
                "created": now_utc(),
                "method": spec.name,
                "gamma": float(estimator.gamma_),
                "gamma_searched": estimator.searches_gamma,
                "val_k": int(getattr(estimator, "val_k", 1)),
                "validation_accuracy": estimator.validation_accuracy_,
                "params": dict(params or {}),
                **learned,
                "n_records": source.n_records,
                "dim": opened.dim,
                "model": labels.meta.get("model"),
                "n_changed": int(estimator.n_changed_),
                **plan.counts,
                "n_stale_originals": source.n_stale,
                "n_train_queries": len(labels.splits.get("train", [])),
                "n_val_queries": len(labels.splits.get("val", [])) if estimator.uses_val else 0,
                "n_test_queries": len(labels.splits.get("test", [])) if has_test else 0,
                "metric": metric_name,
                "metric_source": metric_source,
                "metric_forced": bool(force_metric and not spec.unit_norm and metric_name != "dot"),
                "pass": pass_info,
                "labels": str(labels.path.resolve()),
                "test_before": test_before,
                "test_after": test_after,
                "versions": versions(),
            }
            tick = time.perf_counter()
            recorded = False
            index_note = None
            if not dry_run and len(changes):
                record = opened.write(changes, record, progress)
                recorded = True
                index_note = opened.after_write(reindex)
            elif not dry_run:
                record["version_before"] = record["version_after"] = opened.ledger.state()[
                    "generation"
                ]
            timings["write"] = time.perf_counter() - tick
            spec_text = opened.spec
    timings["total"] = time.perf_counter() - started
    return {
        **record,
        "store": spec_text,
        "dry_run": dry_run,
        "recorded": recorded,
        "index": index_note,
        "warnings": warnings,
        "recovered": recovered,
        "timings_s": timings,
    }


def _problem(data: EmbeddedDataset, uses_val: bool, n_records: int) -> FitProblem:
    """The labels as a by-id fit problem over a store of ``n_records`` rows: relevance
    over the labelled doc ids (sorted; str order is their UTF-8 bytes' order)."""
    problem = data.fit_problem(uses_val)
    return FitProblem(
        n_records,
        problem.dim,
        problem.train,
        problem.val,
        label_ids=id_bytes_of(data.corpus_ids),
        labels_name=str(data.path / "qrels.json"),
    )


@contextmanager
def _no_lock() -> Iterator[None]:
    yield


def rollback_store(
    store: str | os.PathLike[str] | VectorStore,
    *,
    table: str | None = None,
    id_column: str | None = None,
    vector_column: str | None = None,
    to_version: int | None = None,
) -> dict[str, Any]:
    """Undo the last apply not undone yet, row by row.

    Every row the apply wrote gets back what it held before the apply, where the row still
    holds what the apply wrote; rows added, deleted or re-embedded since are left as they
    are and counted (``n_changed_since``, ``n_deleted_since``). ``to_version`` (LanceDB)
    instead restores that table version exactly — every later change, yours included, is
    discarded — and records it.

    Returns
    -------
    dict
        The rollback record (``rolled_back``: the apply's id; counts; versions), plus
        ``store`` and ``recovered``.
    """
    with _opened(store, table, id_column, vector_column) as opened, opened.lock():
        recovered = opened.recover()
        finished = [r for r in recovered if r["kind"] == "rollback"]
        if finished and to_version is None:
            # an interrupted rollback was this request's: finishing it is the rollback
            return {**finished[-1], "store": opened.spec, "recovered": recovered}
        if to_version is not None:
            restore = getattr(opened, "restore_version", None)
            if restore is None:
                raise ValueError(
                    f"--to-version applies to stores with versions (LanceDB), not {opened.kind}"
                )
            before = opened.version()  # type: ignore[attr-defined]
            record = {
                "id": new_id(),
                "seq": next_seq(opened.history()),
                "kind": "restore",
                "status": "done",
                "created": now_utc(),
                "restored_version": int(to_version),
                "version_before": before,
                "version_after": restore(int(to_version)),
            }
            opened.ledger.append(record)
        else:
            record = opened.rollback()
        return {**record, "store": opened.spec, "recovered": recovered}


def store_history(
    store: str | os.PathLike[str] | VectorStore,
    *,
    table: str | None = None,
    id_column: str | None = None,
    vector_column: str | None = None,
) -> list[dict[str, Any]]:
    """Every apply and rollback recorded for the store, oldest first.

    ``kind`` is ``apply``, ``rollback`` or ``restore`` (LanceDB ``--to-version``);
    ``status`` is ``done``, ``rolled back`` or ``pending`` (interrupted: the next apply or
    rollback finishes it).
    """
    with _opened(store, table, id_column, vector_column) as opened:
        return opened.history()
