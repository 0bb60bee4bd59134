"""LanceDB (embedded): ``lancedb:PATH`` with ``--table T``.

Bookkeeping lives in three nullable columns of the table itself, written in the same
``merge_insert`` commit as the new vectors, so one Lance commit (one new manifest) carries
both or neither:

- ``nudgekit_original`` — fixed-size list like the vector: the pre-trained vector, filled the
  first time nudgekit rewrites the row;
- ``nudgekit_digest`` — int64: digest of the vector nudgekit last wrote there;
- ``nudgekit_apply`` — string: id of the apply that last wrote the row. It makes a commit
  recognisable, which is how recovery tells a committed apply from one that never was.

Applies and rollbacks are recorded in a small ``nudgekit_applies`` table of the same
database (one row per event, the full record as JSON). A record is written as ``pending``
*before* the data commit and completed after it; each apply tags the version before it
(``nudgekit-<seq>-before``, which also keeps it safe from ``cleanup_old_versions``) and the
version it made (``nudgekit-<seq>``).
"""

from __future__ import annotations

import json
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
    new_id,
    next_seq,
    now,
    rollback_target,
)

ORIGINAL = "nudgekit_original"
DIGEST = "nudgekit_digest"
APPLY = "nudgekit_apply"
APPLIES_TABLE = "nudgekit_applies"


class LanceDBStore(VectorStore):
    """One LanceDB table.

    Parameters
    ----------
    location : path
        The database directory (what ``lancedb.connect`` takes).
    table : str
        Table name.
    id_column, vector_column : str, optional
        Default ``"id"`` and ``"vector"``; the vector column must be a fixed-size list of
        floats, the id column strings or integers.
    """

    kind = "lancedb"

    def __init__(
        self,
        location: str | os.PathLike[str],
        table: str | None = None,
        *,
        id_column: str | None = None,
        vector_column: str | None = None,
    ) -> None:
        super().__init__(location, table)
        try:
            import lancedb
            import pyarrow as pa
        except ImportError as err:
            raise ImportError(
                f"lancedb stores need the lancedb package ({err}); "
                "install it with: pip install 'nudgekit[lancedb]'"
            ) from None
        self._pa = pa
        if not table:
            raise StoreError("lancedb stores need --table (the table name)")
        if table == APPLIES_TABLE:
            raise StoreError(f"{APPLIES_TABLE!r} is nudgekit's own record table, not a data table")
        if not self.location.is_dir():
            raise StoreError(f"no LanceDB database at {self.location} (not a directory)")
        self.db = lancedb.connect(str(self.location))
        names = self._table_names()
        if table not in names:
            listed = ", ".join(sorted(n for n in names if n != APPLIES_TABLE)) or "none"
            raise StoreError(
                f"table {table!r} not found in lancedb:{self.location} (tables: {listed})"
            )
        self.tbl = self.db.open_table(table)
        self.id_column = id_column or "id"
        self.vector_column = vector_column or "vector"
        self._check_schema()
        self._read_version: int | None = None

    # -- schema ----------------------------------------------------------------------------
    def _table_names(self) -> list[str]:
        names: list[str] = []
        token = None
        while True:
            page = self.db.list_tables(page_token=token)
            names.extend(page.tables)
            token = page.page_token
            if not token:
                return names

    def _check_schema(self) -> None:
        pa = self._pa
        schema = self.tbl.schema
        columns = ", ".join(schema.names)
        for name, what in (
            (self.id_column, "--id-column"),
            (self.vector_column, "--vector-column"),
        ):
            if name not in schema.names:
                raise StoreError(
                    f"table {self.table!r} has no column {name!r} ({what}); columns: {columns}"
                )
        id_type = schema.field(self.id_column).type
        if not (pa.types.is_string(id_type) or pa.types.is_large_string(id_type)) and not (
            pa.types.is_integer(id_type)
        ):
            raise StoreError(
                f"id column {self.id_column!r} has type {id_type}; expected strings or integers"
            )
        vtype = schema.field(self.vector_column).type
        if not pa.types.is_fixed_size_list(vtype) or not pa.types.is_floating(vtype.value_type):
            raise StoreError(
                f"vector column {self.vector_column!r} has type {vtype}; expected a fixed-size "
                "list of floats (pa.list_(pa.float32(), dim))"
            )
        self._dim = int(vtype.list_size)
        self._dtype = np.dtype(vtype.value_type.to_pandas_dtype())
        if ORIGINAL in schema.names:
            otype = schema.field(ORIGINAL).type
            if not pa.types.is_fixed_size_list(otype) or otype.list_size != self._dim:
                raise StoreError(
                    f"column {ORIGINAL!r} has type {otype}, which does not fit vectors of "
                    f"{self._dim} values (was the table re-embedded with another model? "
                    f"drop the nudgekit_* columns to start afresh)"
                )

    def _has(self, column: str) -> bool:
        return column in self.tbl.schema.names

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def dtype(self) -> np.dtype:
        return self._dtype

    # -- reading ---------------------------------------------------------------------------
    def count(self) -> int:
        return int(self.tbl.count_rows())

    def read(self, batch_size: int = 65536) -> Iterator[RowBatch]:
        self._read_version = int(self.tbl.version)
        kept = self._has(ORIGINAL) and self._has(DIGEST)
        columns = [self.id_column, self.vector_column] + ([ORIGINAL, DIGEST] if kept else [])
        reader = self.tbl.search().select(columns).limit(None).to_batches(batch_size)
        for batch in reader:
            ids_arr = batch.column(self.id_column)
            if ids_arr.null_count:
                raise StoreError(f"table {self.table!r}: a row has a null id")
            keys = ids_arr.to_pylist()
            ids = [str(k) for k in keys]
            vec = batch.column(self.vector_column)
            if vec.null_count:
                row = int(np.flatnonzero(~np.asarray(vec.is_valid()))[0])
                raise StoreError(f"table {self.table!r}: row id {ids[row]!r} has no vector (null)")
            vectors = _fsl_to_numpy(vec, self._dim)
            n = len(ids)
            if kept:
                orig = batch.column(ORIGINAL)
                has = np.asarray(orig.is_valid()).astype(bool)
                originals = _fsl_to_numpy(orig, self._dim)
                digests = np.asarray(batch.column(DIGEST).fill_null(0), dtype=np.int64)
            else:
                has = np.zeros(n, dtype=bool)
                originals = np.zeros((n, self._dim), dtype=np.float32)
                digests = np.zeros(n, dtype=np.int64)
            yield RowBatch(ids, keys, vectors, originals, has, digests)

    def metric(self) -> MetricInfo:
        for index in self.tbl.list_indices():
            if list(index.columns) == [self.vector_column]:
                stats = self.tbl.index_stats(index.name)
                name = getattr(stats, "distance_type", None)
                if name:
                    return MetricInfo(str(name).lower(), f"vector index {index.name!r}")
        return MetricInfo(
            None, f"table {self.table!r} has no vector index on {self.vector_column!r}", True
        )

    def model(self) -> str | None:
        # tables created with a LanceDB embedding function name the model in the schema
        raw = (self.tbl.schema.metadata or {}).get(b"embedding_functions")
        if not raw:
            return None
        try:
            entries = json.loads(raw)
        except ValueError:
            return None
        for entry in entries if isinstance(entries, list) else []:
            if isinstance(entry, dict) and entry.get("vector_column") == self.vector_column:
                model = entry.get("model")
                if isinstance(model, dict):
                    found = model.get("name") or model.get("model_name") or model.get("model")
                    return str(found) if found else None
        return None

    # -- records ---------------------------------------------------------------------------
    def history(self) -> list[dict[str, Any]]:
        if APPLIES_TABLE not in self._table_names():
            return []
        applies = self.db.open_table(APPLIES_TABLE)
        rows = applies.search().where(f"target_table = {_sql(self.table)}").limit(None).to_list()
        records = []
        for row in rows:
            record = json.loads(row["record"])
            record["status"] = row["status"]
            records.append(record)
        return sorted(records, key=lambda r: r["seq"])

    def _save(self, *records: dict[str, Any]) -> None:
        pa = self._pa
        data = pa.table(
            {
                "target_table": [self.table] * len(records),
                "id": [r["id"] for r in records],
                "seq": pa.array([r["seq"] for r in records], pa.int64()),
                "kind": [r["kind"] for r in records],
                "status": [r["status"] for r in records],
                "record": [json.dumps(r) for r in records],
            }
        )
        if APPLIES_TABLE not in self._table_names():
            try:
                self.db.create_table(APPLIES_TABLE, data)
                return
            except (ValueError, OSError, RuntimeError):
                pass  # another process created it meanwhile: fall through to the merge
        applies = self.db.open_table(APPLIES_TABLE)
        applies.merge_insert("id").when_matched_update_all().when_not_matched_insert_all().execute(
            data
        )

    def _tag(self, name: str, version: int) -> None:
        if name in self.tbl.tags.list():
            self.tbl.tags.update(name, version)
        else:
            self.tbl.tags.create(name, version)

    def _untag(self, name: str) -> None:
        if name in self.tbl.tags.list():
            self.tbl.tags.delete(name)

    def _rows_of(self, apply_id: str) -> int:
        """Rows of the table at the current version last written by apply ``apply_id``."""
        if not self._has(APPLY):
            return 0
        return int(self.tbl.count_rows(f"{APPLY} = {_sql(apply_id)}"))

    def _latest(self) -> int:
        self.tbl.checkout_latest()
        return int(self.tbl.version)

    # -- writing ---------------------------------------------------------------------------
    def write(
        self, changes: Changes, record: dict[str, Any], progress: ProgressCallback | None = None
    ) -> dict[str, Any]:
        pa = self._pa
        history = self.history()
        record = dict(record, seq=next_seq(history), table=self.table)
        version = self._read_version if self._read_version is not None else int(self.tbl.version)
        if self._latest() != version:
            raise StoreError(
                f"table {self.table!r} changed while nudgekit was computing (version {version} → "
                f"{self.tbl.version}); nothing was written — run apply again"
            )
        if not len(changes):
            record.update(status="done", version_before=version, version_after=version)
            self._save(record)
            return record

        missing = [
            f
            for f in (
                pa.field(ORIGINAL, pa.list_(pa.float32(), self._dim), nullable=True),
                pa.field(DIGEST, pa.int64(), nullable=True),
                pa.field(APPLY, pa.string(), nullable=True),
            )
            if not self._has(f.name)
        ]
        if missing:
            # a commit of its own, but a harmless one: all-null columns mean "nothing kept"
            self.tbl.add_columns(missing)
            checkpoint("lancedb.columns")
        tags = {"before": f"nudgekit-{record['seq']}-before", "after": f"nudgekit-{record['seq']}"}
        record.update(status="pending", version_before=version, tags=tags)
        self._save(record)
        checkpoint("lancedb.pending")
        self._tag(tags["before"], version)
        checkpoint("lancedb.tagged-before")

        schema = self.tbl.schema
        vtype, otype = schema.field(self.vector_column).type, schema.field(ORIGINAL).type
        rows = pa.table(
            {
                self.id_column: pa.array(changes.keys, type=schema.field(self.id_column).type),
                self.vector_column: _numpy_to_fsl(pa, changes.vectors, vtype),
                ORIGINAL: _numpy_to_fsl(pa, changes.originals, otype),
                DIGEST: pa.array(changes.digests, type=pa.int64()),
                APPLY: pa.array([record["id"]] * len(changes), type=pa.string()),
            }
        )
        # THE commit: new vectors, originals, digests and the apply id, in one manifest.
        # Only matched rows are updated: a record deleted meanwhile is not brought back.
        result = self.tbl.merge_insert(self.id_column).when_matched_update_all().execute(rows)
        checkpoint("lancedb.committed")
        after = int(getattr(result, "version", 0) or self.tbl.version)
        if progress is not None:
            progress("write", len(changes), len(changes))
        self._tag(tags["after"], after)
        checkpoint("lancedb.tagged-after")
        record.update(status="done", version_after=after)
        self._save(record)
        return record

    def rollback(self, *, force: bool = False) -> dict[str, Any]:
        history = self.history()
        target = rollback_target(history)
        if target is None:
            raise ValueError(f"nothing to roll back: {self.spec} has no apply left to undo")
        latest = self._latest()
        settled = [r for r in history if r["status"] in ("done", "rolled back")]
        last = settled[-1]
        content = last.get("restored_version", last.get("version_after"))
        if not force and (
            last.get("version_after") != latest or content != target["version_after"]
        ):
            raise ValueError(
                f"table {self.table!r} changed since apply #{target['seq']} (its version "
                f"{target['version_after']}, now {latest}); rolling back restores version "
                f"{target['version_before']} and would discard those changes too — pass "
                "--force to do it anyway"
            )
        record = {
            "id": new_id(),
            "seq": next_seq(history),
            "table": self.table,
            "kind": "rollback",
            "status": "pending",
            "created": now(),
            "rolled_back": target["id"],
            "rolled_back_seq": target["seq"],
            "version_before": latest,
            "restored_version": target["version_before"],
            "forced": bool(force),
        }
        self._save(record)
        checkpoint("lancedb.rollback-pending")
        # restore = a new version whose content is the old one; history stays intact
        self.tbl.restore(target["version_before"])
        checkpoint("lancedb.restored")
        record.update(status="done", version_after=int(self.tbl.version))
        self._save(record, dict(target, status="rolled back"))
        return record

    def recover(self) -> list[dict[str, Any]]:
        touched = []
        history = self.history()
        by_id = {r["id"]: r for r in history}
        for record in history:
            if record["status"] != "pending":
                continue
            latest = self._latest()
            if record["kind"] == "apply":
                if self._rows_of(record["id"]) > 0:
                    after = self._first_version_with(record["id"], record["version_before"] + 1)
                    self._tag(record["tags"]["after"], after)
                    record.update(status="done", version_after=after, recovered=True)
                else:
                    self._untag(record["tags"]["before"])
                    record.update(status="abandoned")
                self._save(record)
            else:
                target = by_id.get(record["rolled_back"])
                done = (
                    target is not None
                    and latest > record["version_before"]
                    and self._rows_of(target["id"]) == 0
                )
                if done:
                    record.update(status="done", version_after=latest, recovered=True)
                    self._save(record, dict(target, status="rolled back"))  # type: ignore[arg-type]
                else:
                    record.update(status="abandoned")
                    self._save(record)
            touched.append(record)
        return touched

    def _first_version_with(self, apply_id: str, start: int) -> int:
        """The version a committed apply made: the first one holding its rows."""
        versions = sorted(int(v["version"]) for v in self.tbl.list_versions())
        try:
            for v in versions:
                if v < start:
                    continue
                self.tbl.checkout(v)
                if self._rows_of(apply_id) > 0:
                    return v
        finally:
            self.tbl.checkout_latest()
        return int(self.tbl.version)


def _sql(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _fsl_to_numpy(arr: Any, dim: int) -> np.ndarray:
    """A fixed-size-list column as float32 (n, dim); null entries come out as NaN rows."""
    values = arr.values.slice(arr.offset * dim, len(arr) * dim)
    flat = np.asarray(values.to_numpy(zero_copy_only=False), dtype=np.float32)
    return flat.reshape(len(arr), dim)


def _numpy_to_fsl(pa: Any, matrix: np.ndarray, fsl_type: Any) -> Any:
    dtype = np.dtype(fsl_type.value_type.to_pandas_dtype())
    values = pa.array(np.ascontiguousarray(matrix, dtype=dtype).ravel())
    return pa.FixedSizeListArray.from_arrays(values, fsl_type.list_size).cast(fsl_type)
