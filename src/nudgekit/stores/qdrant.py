"""Qdrant local mode: ``qdrant:PATH`` (``QdrantClient(path=PATH)``), collection = ``--table``.

The nudged vector is written in place, into the vector the collection is searched by
(``--vector-column``: the unnamed vector or one named vector), with ``update_vectors``, so
searches keep working unchanged. The originals are kept in the sidecar (below), and — in a
collection that already uses named vectors — also in the same ``update_vectors`` call as a
named vector ``nudgekit_original`` (added with ``create_vector_name``, distance Dot so Qdrant
stores it unchanged; ``using="nudgekit_original"`` then searches the pre-trained vectors).
A collection with a single unnamed vector gets no such vector: once a collection has a named
vector, Qdrant refuses upserts of unnamed vectors, which would break your ingestion.

Local mode persists each point on its own, so a write of many points is not atomic by
itself. nudgekit therefore writes a redo journal first (the new and original vector of
every point, ``PATH/.nudgekit/<collection>/journal-<g>.npz``, then ``pending.json`` naming
it): once ``pending.json`` exists the apply is decided, and the next nudgekit command
re-applies the journal (idempotent) before anything else if the process died midway.
Digests, originals and history live in the same sidecar directory.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import numpy as np

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
from nudgekit.stores.sidecar import Sidecar

ORIGINAL = "nudgekit_original"
_DISTANCES = {"Dot": "dot", "Cosine": "cosine", "Euclid": "l2", "Manhattan": "l1"}


class QdrantStore(VectorStore):
    """One collection of a Qdrant local-mode directory.

    Parameters
    ----------
    location : path
        The directory given to ``QdrantClient(path=...)``.
    table : str
        The collection.
    vector_column : str, optional
        The vector to nudge: by default the collection's only vector (unnamed or named).
    id_column : None
        Qdrant point ids are the ids (unsigned integers or UUIDs); qrels name them as text.
    write_batch : int
        Points per ``update_vectors`` call.
    """

    kind = "qdrant"

    def __init__(
        self,
        location: str | os.PathLike[str],
        table: str | None = None,
        *,
        id_column: str | None = None,
        vector_column: str | None = None,
        write_batch: int = 256,
    ) -> None:
        super().__init__(location, table)
        try:
            from qdrant_client import QdrantClient, models
        except ImportError as err:
            raise ImportError(
                f"qdrant stores need the qdrant-client package ({err}); "
                "install it with: pip install 'nudgekit[qdrant]'"
            ) from None
        self._models = models
        self.write_batch = write_batch
        if not table:
            raise StoreError("qdrant stores need --table (the collection name)")
        if id_column:
            raise StoreError("qdrant points are identified by their point id: drop --id-column")
        if not (self.location / "meta.json").is_file():
            raise StoreError(f"no Qdrant local-mode storage at {self.location} (no meta.json)")
        try:
            self.client = QdrantClient(path=str(self.location))
        except RuntimeError as err:  # the directory is locked by another client
            raise StoreError(f"qdrant:{self.location}: {err}") from None
        try:
            if not self.client.collection_exists(table):
                names = ", ".join(c.name for c in self.client.get_collections().collections)
                raise StoreError(
                    f"collection {table!r} not found in qdrant:{self.location} "
                    f"(collections: {names or 'none'})"
                )
            self._resolve_vector(vector_column)
        except BaseException:
            self.client.close()
            raise
        self.sidecar = Sidecar(self.location / ".nudgekit" / table)
        self._seen: set[str] | None = None

    def close(self) -> None:
        self.client.close()

    def _vectors_config(self) -> dict[str, Any]:
        config = self.client.get_collection(self.table).config.params.vectors
        if isinstance(config, self._models.VectorParams):
            return {"": config}
        return dict(config or {})

    @property
    def named(self) -> bool:
        """Whether the collection uses named vectors (then originals also go into it)."""
        config = self.client.get_collection(self.table).config.params.vectors
        return not isinstance(config, self._models.VectorParams)

    def _resolve_vector(self, name: str | None) -> None:
        config = self._vectors_config()
        own = {k: v for k, v in config.items() if k != ORIGINAL}
        if name is None:
            if len(own) != 1:
                listed = ", ".join(repr(k) for k in own) or "none"
                raise StoreError(
                    f"collection {self.table!r} has several vectors ({listed}): say which one "
                    "to nudge with --vector-column"
                )
            name = next(iter(own))
        if name not in own:
            listed = ", ".join(repr(k) for k in own) or "none"
            raise StoreError(
                f"collection {self.table!r} has no vector {name!r} (--vector-column); "
                f"vectors: {listed}"
            )
        params = own[name]
        if getattr(params, "multivector_config", None) is not None:
            raise StoreError(
                f"vector {name!r} is a multivector; nudgekit needs one vector per point"
            )
        self.vector_name = name
        self._params = params

    @property
    def dim(self) -> int:
        return int(self._params.size)

    # -- reading ---------------------------------------------------------------------------
    def count(self) -> int:
        return int(self.client.count(self.table, exact=True).count)

    def read(self, batch_size: int = 65536) -> Iterator[RowBatch]:
        rows = self.sidecar.load_rows(self.sidecar.state()["rows"], self.dim)
        where = rows.index()
        seen: set[str] = set()
        offset = None
        while True:
            points, offset = self.client.scroll(
                self.table,
                limit=batch_size,
                offset=offset,
                with_payload=False,
                with_vectors=[self.vector_name],
            )
            if not points:
                break
            keys = [p.id for p in points]
            ids = [str(k) for k in keys]
            vectors = np.asarray([self._vector_of(p, self.vector_name) for p in points])
            pos = np.array([where.get(i, -1) for i in ids], dtype=np.int64)
            has = pos >= 0
            originals = np.zeros((len(ids), self.dim), dtype=np.float32)
            digests = np.zeros(len(ids), dtype=np.int64)
            if has.any() and rows.originals is not None:
                originals[has] = rows.originals[pos[has]]
                digests[has] = rows.digests[pos[has]]
            seen.update(ids)
            yield RowBatch(ids, keys, vectors.astype(np.float32), originals, has, digests)
            if offset is None:
                break
        self._seen = seen

    def _vector_of(self, point: Any, name: str) -> list[float]:
        vector = _named(point.vector, name)
        if vector is None:
            raise StoreError(
                f"collection {self.table!r}: point {point.id!r} has no vector {name!r}"
            )
        return vector

    def metric(self) -> MetricInfo:
        distance = getattr(self._params.distance, "value", str(self._params.distance))
        where = "" if self.vector_name == "" else f" of vector {self.vector_name!r}"
        return MetricInfo(_DISTANCES.get(distance, distance.lower()), f"collection distance{where}")

    def history(self) -> list[dict[str, Any]]:
        state = self.sidecar.state()
        history = list(state["history"])
        pending = self.sidecar.pending()
        if pending is not None and pending["generation"] > state["generation"]:
            history = [r for r in pending["history"] if r["id"] != pending["record"]["id"]]
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
            record.update(version_before=g - 1, version_after=g - 1)
            self.sidecar.finish(dict(state, history=[*state["history"], record]))
            return record
        ids = np.asarray(changes.ids, dtype=str)
        is_int = np.array([isinstance(k, int) for k in changes.keys], dtype=bool)
        journal = self.sidecar.save(
            f"journal-{g}.npz",
            ids=ids,
            is_int=is_int,
            vectors=changes.vectors,
            originals=changes.originals,
        )
        undo = self.sidecar.save(f"undo-{g}.npz", ids=ids, is_int=is_int, before=changes.before)
        record.update(
            version_before=g - 1,
            version_after=g,
            rows=f"rows-{g}.npz",
            rows_before=state["rows"],
            undo=undo,
        )
        self._begin(g, journal, state["rows"], "all", record, [*state["history"], record])
        return self._redo(self.sidecar.pending(), progress)  # type: ignore[arg-type]

    def rollback(self, *, force: bool = False) -> dict[str, Any]:
        state = self.sidecar.state()
        target = rollback_target(state["history"])
        if target is None:
            raise ValueError(f"nothing to roll back: {self.spec} has no apply left to undo")
        g = state["generation"] + 1
        record = {
            "id": new_id(),
            "seq": next_seq(state["history"]),
            "kind": "rollback",
            "status": "done",
            "created": now(),
            "rolled_back": target["id"],
            "rolled_back_seq": target["seq"],
            "n_restored": 0,
            "n_skipped": 0,
            "version_before": g - 1,
            "version_after": g,
        }
        history = [
            dict(r, status="rolled back") if r["id"] == target["id"] else r
            for r in state["history"]
        ]
        if not target.get("undo"):  # the apply wrote nothing: nothing to write back
            record.update(version_after=g - 1, rows=state["rows"])
            self.sidecar.finish(dict(state, history=[*history, record]))
            return record
        undo = self.sidecar.load(target["undo"])
        written = self.sidecar.load_rows(target["rows"], self.dim)
        wrote = dict(zip(written.ids, written.digests.tolist(), strict=True))
        keys = [
            _key(i, b) for i, b in zip(undo["ids"].tolist(), undo["is_int"].tolist(), strict=True)
        ]
        current = self._current(keys)
        restore = [
            k
            for k, key in enumerate(keys)
            # only points that still hold what the apply wrote: later edits are not undone
            if key in current and int(digest(current[key][None])[0]) == wrote.get(str(key))
        ]
        record.update(
            n_restored=len(restore), n_skipped=len(keys) - len(restore), rows=f"rows-{g}.npz"
        )
        journal = self.sidecar.save(
            f"journal-{g}.npz",
            ids=undo["ids"][restore],
            is_int=undo["is_int"][restore],
            vectors=undo["before"][restore],
        )
        # bookkeeping goes back to what it was before the apply; digests of restored points
        # are re-read (Qdrant may round what it stores, e.g. normalising for Cosine)
        self._begin(g, journal, target["rows_before"], "known", record, [*history, record])
        return self._redo(self.sidecar.pending())  # type: ignore[arg-type]

    def _begin(
        self,
        g: int,
        journal: str,
        rows_base: str | None,
        digest_ids: str,
        record: dict[str, Any],
        history: list[dict[str, Any]],
    ) -> None:
        self.sidecar.begin(
            {
                "generation": g,
                "journal": journal,
                "rows_base": rows_base,
                "digest_ids": digest_ids,
                "record": record,
                "history": history,
            }
        )
        checkpoint("qdrant.pending")

    def _redo(
        self, pending: dict[str, Any], progress: ProgressCallback | None = None
    ) -> dict[str, Any]:
        """Apply a journal (again): every step is idempotent, so a crash anywhere is fine."""
        models = self._models
        data = self.sidecar.load(pending["journal"])
        keys = [
            _key(i, b) for i, b in zip(data["ids"].tolist(), data["is_int"].tolist(), strict=True)
        ]
        originals = data.get("originals")
        in_collection = originals is not None and self.named
        if in_collection and ORIGINAL not in self._vectors_config():
            self.client.create_vector_name(
                self.table,
                ORIGINAL,
                models.DenseVectorNameConfig(
                    dense=models.DenseVectorConfig(size=self.dim, distance=models.Distance.DOT)
                ),
            )
        for start in range(0, len(keys), self.write_batch):
            stop = min(start + self.write_batch, len(keys))
            points = []
            for k in range(start, stop):
                vector = {self.vector_name: data["vectors"][k].tolist()}
                if in_collection:
                    vector[ORIGINAL] = originals[k].tolist()
                points.append(models.PointVectors(id=keys[k], vector=vector))
            self.client.update_vectors(self.table, points=points)
            checkpoint("qdrant.batch")
            if progress is not None:
                progress("write", stop, len(keys))

        rows = self.sidecar.load_rows(pending["rows_base"], self.dim)
        if self._seen is not None:
            rows = rows.restricted(self._seen)  # deleted points need no bookkeeping
        known = set(rows.ids)
        current = self._current(keys)
        update = [
            k
            for k, key in enumerate(keys)
            if key in current and (pending["digest_ids"] == "all" or str(key) in known)
        ]
        if update:
            # digests of what Qdrant stores (it may round, e.g. normalise for Cosine)
            vectors = np.stack([current[keys[k]] for k in update])
            rows = rows.updated(
                [str(keys[k]) for k in update],
                digest(vectors),
                None if originals is None else originals[update],
            )
        g = pending["generation"]
        self.sidecar.save_rows(f"rows-{g}.npz", rows)
        checkpoint("qdrant.rows")
        state = self.sidecar.state()
        self.sidecar.finish(
            dict(state, generation=g, rows=f"rows-{g}.npz", history=pending["history"])
        )
        (self.sidecar.root / pending["journal"]).unlink(missing_ok=True)  # served its purpose
        return pending["record"]

    def _current(self, keys: list[Any]) -> dict[Any, np.ndarray]:
        """What the points hold now (read back: the digest must match what Qdrant stores)."""
        found: dict[Any, np.ndarray] = {}
        for start in range(0, len(keys), 1024):
            points = self.client.retrieve(
                self.table,
                keys[start : start + 1024],
                with_payload=False,
                with_vectors=[self.vector_name],
            )
            for point in points:
                vector = _named(point.vector, self.vector_name)
                if vector is not None:
                    found[point.id] = np.asarray(vector, dtype=np.float32)
        return found

    def recover(self) -> list[dict[str, Any]]:
        pending = self.sidecar.pending()
        if pending is None:
            return []
        if pending["generation"] <= self.sidecar.state()["generation"]:
            self.sidecar.discard()  # committed already; only the clean-up was missed
            return []
        # the intent was complete when pending.json appeared: roll forward
        pending["record"]["recovered"] = True
        pending["history"] = [
            pending["record"] if r["id"] == pending["record"]["id"] else r
            for r in pending["history"]
        ]
        return [self._redo(pending)]


def _named(vector: Any, name: str) -> list[float] | None:
    """One vector of a point: ``vector`` is a list (the unnamed vector alone) or a dict."""
    if isinstance(vector, dict):
        return vector.get(name)
    return vector if name == "" else None


def _key(text: str, is_int: bool) -> int | str:
    return int(text) if is_int else text
