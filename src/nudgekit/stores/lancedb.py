"""LanceDB (embedded): ``lancedb:PATH`` with ``--table T``.

Only the values of the vector column of changed rows change: one
``merge_insert(id).when_matched_update_all()`` of ``(id, vector)`` — one Lance commit, so
readers see all the new vectors or none; other columns, the schema and the table's index
stay as they were. Rows a write rewrites leave the vector index until it is updated;
LanceDB's default search still finds them (it searches unindexed rows exactly), and
:meth:`LanceDBStore.after_write` runs ``table.optimize()`` to fold them back in.

The ledger (originals, digests, history) is the directory ``PATH/.nudgekit/<table>/``:
LanceDB lists only ``*.lance`` directories as tables, so no search, listing or schema
ever sees it. Every write is a table version: ``rollback --to-version`` restores one
exactly, as an explicit option.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import numpy as np

from nudgekit.stores.base import (
    MetricInfo,
    ProgressCallback,
    RowBatch,
    StoreError,
    VectorStore,
    client_module,
)
from nudgekit.stores.ledger import DirectoryFiles, Ledger

#: ``apply --pass ann``: partitions probed, and PQ candidates re-ranked per result
SEARCH_NPROBES = 32
SEARCH_REFINE = 4
#: Columns and table of nudgekit 0.1, which kept its bookkeeping inside the user's table.
LEGACY_COLUMNS = ("nudgekit_original", "nudgekit_digest", "nudgekit_apply")
LEGACY_TABLE = "nudgekit_applies"


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
        lancedb = client_module("lancedb", "lancedb")
        self._pa = client_module("pyarrow", "lancedb")
        if not table:
            raise StoreError("lancedb stores need --table (the table name)")
        if not self.location.is_dir():
            raise StoreError(f"no LanceDB database at {self.location} (not a directory)")
        self.db = lancedb.connect(str(self.location))
        names = self._table_names()
        if table not in names:
            listed = ", ".join(sorted(n for n in names if n != LEGACY_TABLE)) or "none"
            raise StoreError(
                f"table {table!r} not found in lancedb:{self.location} (tables: {listed})"
            )
        self.tbl = self.db.open_table(table)
        files = DirectoryFiles(self.location / ".nudgekit" / table)
        recorded = Ledger(files, 0).settings()
        self.id_column = id_column or recorded.get("id_column") or "id"
        self.vector_column = vector_column or recorded.get("vector_column") or "vector"
        self._check_schema()
        self.ledger = Ledger(files, self._dim)

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
        legacy = [c for c in LEGACY_COLUMNS if c in schema.names]
        if legacy:
            raise StoreError(
                f"table {self.table!r} holds the bookkeeping columns of nudgekit 0.1 "
                f"({', '.join(legacy)}); this version keeps originals outside your table. "
                "Roll back with nudgekit 0.1, or drop them: "
                f"table.drop_columns({legacy!r})"
            )

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
        columns = [self.id_column, self.vector_column]
        reader = self.tbl.search().select(columns).limit(None).to_batches(batch_size)
        for batch in reader:
            yield self._batch(batch)

    def _batch(self, batch: Any) -> RowBatch:
        ids_arr = batch.column(self.id_column)
        if ids_arr.null_count:
            raise StoreError(f"table {self.table!r}: a row has a null id")
        keys = ids_arr.to_pylist()
        ids = [str(k) for k in keys]
        vec = batch.column(self.vector_column)
        if vec.null_count:
            row = int(np.flatnonzero(~np.asarray(vec.is_valid()))[0])
            raise StoreError(f"table {self.table!r}: row id {ids[row]!r} has no vector (null)")
        return RowBatch(ids, keys, _fsl_to_numpy(vec, self._dim))

    def current(self, keys: list[Any]) -> dict[str, np.ndarray]:
        found: dict[str, np.ndarray] = {}
        self.tbl.checkout_latest()
        for start in range(0, len(keys), 4096):
            chunk = keys[start : start + 4096]
            where = f"{_sql_name(self.id_column)} IN ({', '.join(_sql(k) for k in chunk)})"
            table = (
                self.tbl.search()
                .where(where)
                .select([self.id_column, self.vector_column])
                .limit(None)
                .to_arrow()
            )
            for batch in table.to_batches():
                rows = self._batch(batch)
                found.update(zip(rows.ids, rows.vectors, strict=True))
        return found

    def columns(self) -> dict[str, Any]:
        return {"id_column": self.id_column, "vector_column": self.vector_column}

    def search(self, queries: np.ndarray, n: int) -> list[list[Any]]:
        # the table's own search (its vector index where it has one, with that index's
        # metric); many queries per call, answered with their query_index
        metric = self.metric().name or "cosine"
        indexed = self._index() is not None
        found: list[list[Any]] = [[] for _ in range(len(queries))]
        for q0 in range(0, len(queries), 512):
            part = [row for row in np.asarray(queries[q0 : q0 + 512], dtype=np.float32)]
            query = self.tbl.search(part, vector_column_name=self.vector_column)
            query = query.distance_type(metric)
            if indexed:
                # candidates, not answers: a wider probe, and PQ's guesses re-ranked on the
                # full vectors, cost little next to the read and find far more of the best
                query = query.nprobes(SEARCH_NPROBES).refine_factor(SEARCH_REFINE)
            table = query.limit(n).select([self.id_column, "_distance"]).to_arrow()
            which = (
                table.column("query_index").to_numpy()
                if "query_index" in table.schema.names
                else np.zeros(table.num_rows, dtype=np.int64)
            )
            order = np.lexsort((table.column("_distance").to_numpy(), which))
            keys = np.asarray(table.column(self.id_column).to_pylist(), dtype=object)[order]
            counts = np.bincount(which, minlength=len(part))
            for i, answer in enumerate(np.split(keys, np.cumsum(counts)[:-1])):
                found[q0 + i] = answer.tolist()
        return found

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

    def version(self) -> int:
        """The table's current version."""
        self.tbl.checkout_latest()
        return int(self.tbl.version)

    def _index(self) -> Any:
        for index in self.tbl.list_indices():
            if list(index.columns) == [self.vector_column]:
                return index
        return None

    # -- writing ---------------------------------------------------------------------------
    def write_vectors(
        self, keys: list[Any], vectors: np.ndarray, progress: ProgressCallback | None = None
    ) -> None:
        pa = self._pa
        schema = self.tbl.schema
        rows = pa.table(
            {
                self.id_column: pa.array(keys, type=schema.field(self.id_column).type),
                self.vector_column: _numpy_to_fsl(
                    pa, vectors, schema.field(self.vector_column).type
                ),
            }
        )
        # one commit; only matched rows: a record deleted meanwhile is not brought back,
        # and columns other than the vector keep their values
        self.tbl.merge_insert(self.id_column).when_matched_update_all().execute(rows)
        if progress is not None:
            progress("write", len(keys), len(keys))

    def after_write(self, reindex: bool) -> str | None:
        index = self._index()
        if index is None:
            return None
        stats = self.tbl.index_stats(index.name)
        outside = int(getattr(stats, "num_unindexed_rows", 0) or 0)
        if not outside:
            return None
        if not reindex:
            return (
                f"{outside:,} rewritten rows are outside the vector index {index.name!r} "
                "(LanceDB still finds them, by exact search); fold them in with "
                f"lancedb.connect({str(self.location)!r}).open_table({self.table!r}).optimize()"
            )
        self.tbl.optimize()
        return f"vector index {index.name!r} updated (table.optimize())"

    def restore_version(self, version: int) -> int:
        """Restore the table to ``version`` exactly, as a new version; returns it.

        Discards every change made since, the user's included: the explicit, whole-table
        alternative to the row-wise rollback.
        """
        versions = sorted(int(v["version"]) for v in self.tbl.list_versions())
        if version not in versions:
            raise ValueError(
                f"table {self.table!r} has no version {version} (versions "
                f"{versions[0]}–{versions[-1]}, older ones cleaned up)"
            )
        self.tbl.restore(version)
        return self.version()


def _sql(value: Any) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return "'" + str(value).replace("'", "''") + "'"


def _sql_name(column: str) -> str:
    return "`" + column.replace("`", "``") + "`"


def _fsl_to_numpy(arr: Any, dim: int) -> np.ndarray:
    """A fixed-size-list column as float32 (n, dim); null entries come out as NaN rows."""
    values = arr.values.slice(arr.offset * dim, len(arr) * dim)
    flat = np.asarray(values.to_numpy(zero_copy_only=False), dtype=np.float32)
    return flat.reshape(len(arr), dim)


def _numpy_to_fsl(pa: Any, matrix: np.ndarray, fsl_type: Any) -> Any:
    dtype = np.dtype(fsl_type.value_type.to_pandas_dtype())
    values = pa.array(np.ascontiguousarray(matrix, dtype=dtype).ravel())
    return pa.FixedSizeListArray.from_arrays(values, fsl_type.list_size).cast(fsl_type)
