"""A FAISS index file: ``faiss:PATH``, an ``IndexIDMap`` over a flat index.

FAISS ids are int64, so the documents' ids in qrels must be those integers written in
decimal (``"42"``); map string ids to integers before building the index. Positions inside
a plain index are not stable ids (they shift on removal), which is why an ``IndexIDMap``
is required.

The index file has no room for anything else, so nudgekit keeps its files in a sidecar
directory ``PATH.nudgekit/`` (see :mod:`nudgekit.stores.sidecar`): per-row originals and
digests, each apply's undo rows, the history. An apply rewrites the changed ids in memory
(``remove_ids`` then ``add_with_ids``), writes the whole index to a temporary file and
``os.replace``-s it over ``PATH`` — the commit point. The sidecar state that goes with the
new index is written *before* that rename as ``pending.json`` (with the new file's SHA-256)
and promoted after it; recovery promotes it if ``PATH`` has that hash, else drops it.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from typing import Any

import numpy as np

from nudgekit.io.atomic import fsync_dir
from nudgekit.stores.base import (
    Changes,
    MetricInfo,
    ProgressCallback,
    RowBatch,
    StoreError,
    VectorStore,
    checkpoint,
    digest,
    new_id,
    next_seq,
    now,
    rollback_target,
)
from nudgekit.stores.sidecar import Rows, Sidecar

_TMP = "index.partial"


class FaissStore(VectorStore):
    """A FAISS ``IndexIDMap`` (or ``IndexIDMap2``) over ``IndexFlatIP`` / ``IndexFlatL2``.

    Parameters
    ----------
    location : path
        The index file (``faiss.write_index``).
    table : None
        FAISS files hold one index; tables and columns do not apply.
    """

    kind = "faiss"

    def __init__(
        self,
        location: str | os.PathLike[str],
        table: str | None = None,
        *,
        id_column: str | None = None,
        vector_column: str | None = None,
    ) -> None:
        super().__init__(location, None)
        try:
            import faiss
        except ImportError as err:
            raise ImportError(
                f"faiss stores need the faiss package ({err}); "
                "install it with: pip install 'nudgekit[faiss]'"
            ) from None
        self._faiss = faiss
        if table or id_column or vector_column:
            raise StoreError(
                "a faiss index file has no tables or columns: drop --table, --id-column and "
                "--vector-column (ids are the index's int64 ids)"
            )
        if not self.location.is_file():
            raise StoreError(f"no FAISS index file at {self.location}")
        self.sidecar = Sidecar(self.location.with_name(self.location.name + ".nudgekit"))
        self._load()

    def _load(self) -> None:
        faiss = self._faiss
        try:
            index = faiss.read_index(str(self.location))
        except RuntimeError as err:
            raise StoreError(f"{self.location}: not a readable FAISS index ({err})") from None
        if not isinstance(index, faiss.IndexIDMap):
            raise StoreError(
                f"{self.location}: a {type(index).__name__}; nudgekit needs an IndexIDMap over "
                "a flat index (faiss.IndexIDMap(faiss.IndexFlatIP(d))), whose ids stay put "
                "when rows are rewritten"
            )
        inner = faiss.downcast_index(index.index)
        if not isinstance(inner, faiss.IndexFlat):
            raise StoreError(
                f"{self.location}: the IndexIDMap wraps a {type(inner).__name__}; only flat "
                "indexes (IndexFlatIP, IndexFlatL2) keep the exact vectors nudgekit reads"
            )
        self.index, self.inner = index, inner
        self._ids = faiss.vector_to_array(index.id_map).astype(np.int64)

    @property
    def dim(self) -> int:
        return int(self.index.d)

    # -- reading ---------------------------------------------------------------------------
    def count(self) -> int:
        return int(self.index.ntotal)

    def read(self, batch_size: int = 65536) -> Iterator[RowBatch]:
        rows = self.sidecar.load_rows(self.sidecar.state()["rows"], self.dim)
        where = rows.index()
        n, d = self.count(), self.dim
        for start in range(0, n, batch_size):
            stop = min(start + batch_size, n)
            keys = self._ids[start:stop].tolist()
            ids = [str(k) for k in keys]
            vectors = np.asarray(self.inner.reconstruct_n(start, stop - start), dtype=np.float32)
            pos = np.array([where.get(i, -1) for i in ids], dtype=np.int64)
            has = pos >= 0
            originals = np.zeros((len(ids), d), dtype=np.float32)
            digests = np.zeros(len(ids), dtype=np.int64)
            if has.any() and rows.originals is not None:
                originals[has] = rows.originals[pos[has]]
                digests[has] = rows.digests[pos[has]]
            yield RowBatch(ids, keys, vectors, originals, has, digests)

    def metric(self) -> MetricInfo:
        faiss = self._faiss
        names = {faiss.METRIC_INNER_PRODUCT: "dot", faiss.METRIC_L2: "l2"}
        metric = int(self.index.metric_type)
        return MetricInfo(names.get(metric, f"faiss metric {metric}"), "the index's metric_type")

    def history(self) -> list[dict[str, Any]]:
        history = list(self.sidecar.state()["history"])
        pending = self.sidecar.pending()
        if pending is not None and pending["generation"] > self.sidecar.state()["generation"]:
            history.append(dict(pending["record"], status="pending"))
        return history

    # -- writing ---------------------------------------------------------------------------
    def write(
        self, changes: Changes, record: dict[str, Any], progress: ProgressCallback | None = None
    ) -> dict[str, Any]:
        state = self.sidecar.state()
        g = state["generation"] + 1
        record = dict(record, seq=next_seq(state["history"]), status="done")
        if not len(changes):
            g -= 1  # nothing written: same generation, one more record
            record.update(version_before=g, version_after=g)
            self.sidecar.finish(dict(state, history=[*state["history"], record]))
            return record
        present = {str(i) for i in self._ids.tolist()}
        rows = (
            self.sidecar.load_rows(state["rows"], self.dim)
            .restricted(present)
            .updated(changes.ids, changes.digests, changes.originals)
        )
        undo = self.sidecar.save(
            f"undo-{g}.npz", ids=np.asarray(changes.ids, dtype=str), before=changes.before
        )
        record.update(
            version_before=g - 1,
            version_after=g,
            rows=f"rows-{g}.npz",
            rows_before=state["rows"],
            undo=undo,
        )
        self._commit(
            g, np.asarray(changes.keys, dtype=np.int64), changes.vectors, rows, record, state
        )
        if progress is not None:
            progress("write", len(changes), len(changes))
        return record

    def rollback(self, *, force: bool = False) -> dict[str, Any]:
        state = self.sidecar.state()
        target = rollback_target(state["history"])
        if target is None:
            raise ValueError(f"nothing to roll back: {self.spec} has no apply left to undo")
        position = {str(k): p for p, k in enumerate(self._ids.tolist())}
        ids, before, n_skipped = self._undo_rows(target, position)
        g = state["generation"] + 1
        record = {
            "id": new_id(),
            "seq": next_seq(state["history"]),
            "kind": "rollback",
            "status": "done",
            "created": now(),
            "rolled_back": target["id"],
            "rolled_back_seq": target["seq"],
            "n_restored": len(ids),
            "n_skipped": n_skipped,
            "version_before": g - 1,
            "version_after": g,
            "rows": f"rows-{g}.npz",
        }
        history = [
            dict(r, status="rolled back") if r["id"] == target["id"] else r
            for r in state["history"]
        ]
        if not target.get("undo"):  # the apply wrote nothing: nothing to write back
            record.update(version_after=g - 1, rows=state["rows"])
            self.sidecar.finish(dict(state, history=[*history, record]))
            return record
        rows = self.sidecar.load_rows(target["rows_before"], self.dim).restricted(set(position))
        self._commit(
            g,
            np.asarray([int(i) for i in ids], dtype=np.int64),
            before,
            rows,
            record,
            dict(state, history=history),
        )
        return record

    def _undo_rows(
        self, target: dict[str, Any], position: dict[str, int]
    ) -> tuple[list[str], np.ndarray, int]:
        """The rows an apply wrote that still hold what it wrote, and what they held before."""
        if not target.get("undo"):
            return [], np.empty((0, self.dim), dtype=np.float32), 0
        undo = self.sidecar.load(target["undo"])
        written = self.sidecar.load_rows(target["rows"], self.dim)
        wrote = dict(zip(written.ids, written.digests.tolist(), strict=True))
        keep: list[int] = []
        for k, i in enumerate(undo["ids"].tolist()):
            p = position.get(i)
            # rows edited (or deleted) since the apply are left alone
            if p is not None and int(digest(self.inner.reconstruct(p)[None])[0]) == wrote.get(i):
                keep.append(k)
        ids = [str(undo["ids"][k]) for k in keep]
        return ids, undo["before"][keep], len(undo["ids"]) - len(keep)

    def _commit(
        self,
        g: int,
        keys: np.ndarray,
        vectors: np.ndarray,
        rows: Rows,
        record: dict[str, Any],
        state: dict[str, Any],
    ) -> None:
        self.sidecar.save_rows(f"rows-{g}.npz", rows)
        checkpoint("faiss.sidecar-files")
        try:
            if len(keys):
                self.index.remove_ids(keys)
                self.index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), keys)
            data = self._faiss.serialize_index(self.index).tobytes()
        except BaseException:
            self._load()  # the in-memory index is half-changed: back to the file
            raise
        tmp = self.sidecar.root / _TMP
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        checkpoint("faiss.tmp-written")
        new_state = dict(
            state, generation=g, rows=f"rows-{g}.npz", history=[*state["history"], record]
        )
        self.sidecar.begin(
            {
                "generation": g,
                "index_sha256": hashlib.sha256(data).hexdigest(),
                "record": record,
                "state": new_state,
            }
        )
        checkpoint("faiss.pending")
        os.replace(tmp, self.location)  # THE commit
        fsync_dir(self.location.parent)
        checkpoint("faiss.replaced")
        self.sidecar.finish(new_state)
        self._ids = self._faiss.vector_to_array(self.index.id_map).astype(np.int64)

    def recover(self) -> list[dict[str, Any]]:
        (self.sidecar.root / _TMP).unlink(missing_ok=True)
        pending = self.sidecar.pending()
        if pending is None:
            return []
        state = self.sidecar.state()
        if pending["generation"] <= state["generation"]:
            self.sidecar.discard()  # committed already; only the clean-up was missed
            return []
        if _sha256(self.location) == pending["index_sha256"]:
            record = dict(pending["record"], recovered=True)
            new_state = pending["state"]
            new_state["history"][-1] = record
            self.sidecar.finish(new_state)  # the rename happened: the new state is in force
        else:
            record = dict(pending["record"], status="abandoned")
            history = [*state["history"], record]
            self.sidecar.finish(dict(state, history=history))
        self._load()
        return [record]


def _sha256(path: os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
