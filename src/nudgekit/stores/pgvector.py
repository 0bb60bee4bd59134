"""PostgreSQL with pgvector: ``--store postgresql://USER@HOST:PORT/DB --table T`` (or
``pgvector:DSN``, any libpq connection string).

Only the values of the vector column of changed rows change: the new vectors are
``COPY``'d into a temporary table and set with one ``UPDATE … FROM`` per batch. The table's
other columns, its types, constraints and indexes are untouched; PostgreSQL maintains
every index on ``UPDATE``, pgvector's HNSW and IVFFlat indexes included, so the table's
own search (``ORDER BY embedding <=> %s LIMIT k``) finds the rewritten rows at once.
Triggers on the table fire as for any ``UPDATE``.

nudgekit's bookkeeping (originals, digests, history) is rows of one side table in the
table's schema, ``nudgekit_ledger(target, name, part, data)`` (``target`` is the table's
name), created on the first write; the user's table never holds any of it.

Every write — ledger and vectors — goes through the one connection the adapter holds. The
intent (journal and ``pending.json``) is committed first, then the vectors and the new
bookkeeping are committed together in one transaction: readers see all the new vectors
or none, and a crash leaves either the old state (nothing to do) or the committed intent,
which the next nudgekit command rolls forward (:meth:`VectorStore.recover`, itself one
transaction). The writer lock is a session-level ``pg_try_advisory_lock`` on a key derived
from the table, so it lives exactly as long as the writer's connection.
"""

from __future__ import annotations

import contextlib
import getpass
import hashlib
import itertools
import os
import re
import urllib.parse
import uuid
from collections.abc import Iterator
from typing import Any, ClassVar

import numpy as np

from nudgekit.stores.base import (
    MetricInfo,
    ProgressCallback,
    RowBatch,
    StoreError,
    VectorStore,
    checkpoint,
)
from nudgekit.stores.ledger import Ledger, LedgerError, LedgerFiles

#: The side table holding nudgekit's ledger, one per schema.
LEDGER_TABLE = "nudgekit_ledger"
#: Ledger files are split into rows of at most this many bytes (bytea holds up to 1 GB).
PART_BYTES = 64 << 20
#: the distance operator of each metric (pgvector's <#> is the negative inner product)
_OPERATORS = {"dot": "<#>", "cosine": "<=>", "l2": "<->"}
#: pgvector operator classes → metric names.
OPCLASSES = {
    "vector_ip_ops": "dot",
    "vector_cosine_ops": "cosine",
    "vector_l2_ops": "l2",
    "vector_l1_ops": "l1",
}
#: id column types nudgekit writes rows back by (pg_type.typname).
ID_TYPES = {"int2", "int4", "int8", "text", "varchar", "uuid"}
_INT_TYPES = {"int2", "int4", "int8"}
#: the key of the transaction-level advisory lock serialising the ledger table's creation
_CREATE_KEY = int.from_bytes(
    hashlib.blake2b(b"nudgekit", digest_size=8).digest(), "big", signed=True
)
_counter = itertools.count()


class PgvectorStore(VectorStore):
    """One table of a PostgreSQL database with a pgvector ``vector(d)`` column.

    Parameters
    ----------
    location : str
        A libpq connection string: ``postgresql://USER[:PASSWORD]@HOST:PORT/DB`` or
        ``host=… dbname=…`` (``PG*`` environment variables and ``~/.pgpass`` apply).
    table : str
        The table, ``schema.table`` where it is not on the search path.
    id_column : str, optional
        Default ``"id"``: text, varchar, smallint, integer, bigint or uuid.
    vector_column : str, optional
        Default: the table's only ``vector`` column.
    write_batch : int
        Rows per ``COPY`` + ``UPDATE``.
    """

    kind = "pgvector"
    #: Commit the journal before the vectors (see the module docstring). Without it one
    #: transaction holds the whole write and a crash always leaves the old state.
    commit_journal_first: ClassVar[bool] = True

    def __init__(
        self,
        location: str | os.PathLike[str],
        table: str | None = None,
        *,
        id_column: str | None = None,
        vector_column: str | None = None,
        write_batch: int = 10_000,
    ) -> None:
        try:
            import psycopg
            from pgvector.psycopg.vector import register_vector_info
            from psycopg import sql
            from psycopg.types import TypeInfo
        except ImportError as err:
            raise ImportError(
                f"pgvector stores need the psycopg and pgvector packages ({err}); "
                "install them with: pip install 'nudgekit[pgvector]'"
            ) from None
        self._psycopg, self._sql = psycopg, sql
        self.table = table
        self.write_batch = write_batch
        self._tx = False
        self.dsn = os.fspath(location)
        self.conn = _connect(psycopg, self.dsn)
        self.location = self._where = _display(self.conn)
        try:
            self._vector_oid = self._extension(TypeInfo, register_vector_info)
            if not table:
                raise StoreError(
                    f"pgvector stores need --table (the table name); tables with a vector "
                    f"column in {self._where}: {self._vector_tables()}"
                )
            self._open_table(table)
            self.files = TableFiles(self, self.schema, self.name)
            recorded = Ledger(self.files, 0).settings()
            self._resolve_columns(
                id_column or recorded.get("id_column") or "id",
                vector_column or recorded.get("vector_column"),
            )
            self.ledger = Ledger(self.files, self._dim)
        except BaseException:
            self.conn.close()
            raise

    @property
    def spec(self) -> str:
        """The connection (without its password) and the table, for messages."""
        return self._where + (f" (table {self.table!r})" if self.table else "")

    # -- opening ---------------------------------------------------------------------------
    def _extension(self, type_info: Any, register: Any) -> int:
        row = self.conn.execute(
            "SELECT n.nspname FROM pg_extension e "
            "JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'vector'"
        ).fetchone()
        if row is None:
            raise StoreError(
                f"{self._where}: the pgvector extension is not installed in database "
                f"{self.conn.info.dbname!r} (CREATE EXTENSION vector), so it has no vector columns"
            )
        info = type_info.fetch(self.conn, self._sql.Identifier(row[0], "vector"))
        register(self.conn, info)
        return int(info.oid)

    def _vector_tables(self) -> str:
        rows = self.conn.execute(
            "SELECT DISTINCT CASE WHEN pg_table_is_visible(c.oid) THEN c.relname::text "
            "ELSE n.nspname || '.' || c.relname END FROM pg_attribute a "
            "JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE a.atttypid = %s AND a.attnum > 0 AND NOT a.attisdropped "
            "AND c.relkind IN ('r', 'p') ORDER BY 1",
            [self._vector_oid],
        ).fetchall()
        return ", ".join(r[0] for r in rows) or "none"

    def _open_table(self, table: str) -> None:
        """Find ``table`` (``name`` on the search path, or ``schema.name``)."""
        schema, _, name = table.rpartition(".")
        row = self.conn.execute(
            "SELECT c.oid, n.nspname, c.relname FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE c.relname = %(name)s AND c.relkind IN ('r', 'p') AND "
            "(n.nspname = %(schema)s OR (%(schema)s = '' AND pg_table_is_visible(c.oid)))",
            {"name": name, "schema": schema},
        ).fetchone()
        if row is None:  # as SQL writes it: "Docs" quoted, Docs folded to docs
            try:
                row = self.conn.execute(
                    "SELECT c.oid, n.nspname, c.relname FROM pg_class c "
                    "JOIN pg_namespace n ON n.oid = c.relnamespace "
                    "WHERE c.oid = to_regclass(%s) AND c.relkind IN ('r', 'p')",
                    [table],
                ).fetchone()
            except self._psycopg.Error:
                row = None
        if row is None:
            raise StoreError(
                f"table {table!r} not found in {self._where} "
                f"(tables with a vector column: {self._vector_tables()})"
            )
        self._oid, self.schema, self.name = int(row[0]), str(row[1]), str(row[2])
        self._t = self._sql.Identifier(self.schema, self.name)

    def _resolve_columns(self, id_column: str, vector_column: str | None) -> None:
        rows = self.conn.execute(
            "SELECT a.attname, a.attnum, a.atttypid, t.typname, a.atttypmod, "
            "format_type(a.atttypid, a.atttypmod), format_type(a.atttypid, NULL) "
            "FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid "
            "WHERE a.attrelid = %s AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
            [self._oid],
        ).fetchall()
        columns = {r[0]: r for r in rows}
        listed = ", ".join(f"{r[0]} {r[5]}" for r in rows)
        for name, option in ((id_column, "--id-column"), (vector_column, "--vector-column")):
            if name is not None and name not in columns:
                raise StoreError(
                    f"table {self.table!r} has no column {name!r} ({option}); columns: {listed}"
                )
        if vector_column is None:
            vectors = [r[0] for r in rows if r[2] == self._vector_oid]
            if not vectors:
                raise StoreError(
                    f"table {self.table!r} has no vector column (pgvector's vector(d)); "
                    f"columns: {listed}"
                )
            if len(vectors) > 1:
                raise StoreError(
                    f"table {self.table!r} has several vector columns ({', '.join(vectors)}): "
                    "say which one to nudge with --vector-column"
                )
            vector_column = vectors[0]
        _, _, id_oid, id_type, _, id_shown, id_cast = columns[id_column]
        if id_type not in ID_TYPES:
            raise StoreError(
                f"id column {id_column!r} has type {id_shown}; expected text, varchar, "
                "smallint, integer, bigint or uuid"
            )
        _, vec_attnum, vec_oid, _, typmod, vec_shown, _ = columns[vector_column]
        if vec_oid != self._vector_oid:
            raise StoreError(
                f"column {vector_column!r} has type {vec_shown}; nudgekit needs a pgvector "
                "vector(d) column (halfvec, sparsevec and bit are not supported)"
            )
        if typmod < 1:
            raise StoreError(
                f"column {vector_column!r} is a vector without a dimension; nudgekit needs "
                f"vector(d): ALTER TABLE {self.table} ALTER COLUMN {vector_column} TYPE "
                "vector(d) (d: your model's dimension)"
            )
        self.id_column, self.vector_column = id_column, vector_column
        self._id_oid, self._id_type, self._id_cast = int(id_oid), str(id_type), str(id_cast)
        self._vec_attnum, self._dim = int(vec_attnum), int(typmod)
        self._id = self._sql.Identifier(id_column)
        self._vec = self._sql.Identifier(vector_column)

    @property
    def dim(self) -> int:
        return self._dim

    # -- reading ---------------------------------------------------------------------------
    def count(self) -> int:
        query = self._sql.SQL("SELECT count(*) FROM {}").format(self._t)
        return int(self.conn.execute(query).fetchone()[0])  # type: ignore[index]

    def read(self, batch_size: int = 65536) -> Iterator[RowBatch]:
        query = self._sql.SQL("SELECT {id}, {vec} FROM {t} ORDER BY {id}").format(
            id=self._id, vec=self._vec, t=self._t
        )
        # a server-side cursor: one snapshot, batch_size rows in memory at a time
        with (
            self.conn.transaction(),
            self.conn.cursor(name=f"nudgekit_read_{next(_counter)}", binary=True) as cursor,
        ):
            cursor.itersize = batch_size
            cursor.execute(query)
            while rows := cursor.fetchmany(batch_size):
                yield self._batch(rows)

    def _batch(self, rows: list[tuple[Any, Any]]) -> RowBatch:
        keys = [r[0] for r in rows]
        if any(k is None for k in keys):
            raise StoreError(f"table {self.table!r}: a row has a null id")
        ids = [str(k) for k in keys]
        for i, (_, vector) in zip(ids, rows, strict=True):
            if vector is None:
                raise StoreError(f"table {self.table!r}: row id {i!r} has no vector (null)")
        vectors = (
            np.stack([_array(r[1]) for r in rows]).astype(np.float32, copy=False)
            if rows
            else np.empty((0, self._dim), np.float32)
        )
        return RowBatch(ids, keys, vectors)

    def current(self, keys: list[Any]) -> dict[str, np.ndarray]:
        found: dict[str, np.ndarray] = {}
        if not keys:
            return found
        query = self._sql.SQL("SELECT {id}, {vec} FROM {t} WHERE {id} = ANY(%s::{cast}[])").format(
            id=self._id, vec=self._vec, t=self._t, cast=self._sql.SQL(self._id_cast)
        )
        with self.conn.cursor(binary=True) as cursor:
            for start in range(0, len(keys), 10_000):
                cursor.execute(query, [list(keys[start : start + 10_000])])
                for key, vector in cursor.fetchall():
                    if vector is not None:
                        found[str(key)] = _array(vector).astype(np.float32)
        return found

    def search(self, queries: np.ndarray, n: int) -> list[list[Any]]:
        # the table's own ORDER BY vector <op> query LIMIT n, which its HNSW / IVFFlat
        # index serves, for many queries in one statement
        operator = _OPERATORS.get(self.metric().name or "cosine", "<=>")
        sql = self._sql
        query = sql.SQL(
            "SELECT q.ord, c.k FROM unnest(%s::text[]) WITH ORDINALITY AS q(v, ord) "
            "CROSS JOIN LATERAL (SELECT {id} AS k FROM {t} ORDER BY {vec} {op} q.v::vector "
            "LIMIT %s) c ORDER BY q.ord"
        ).format(id=self._id, t=self._t, vec=self._vec, op=sql.SQL(operator))
        found: list[list[Any]] = [[] for _ in range(len(queries))]
        with self._errors("searching the table"), self.conn.transaction():
            # an HNSW scan returns at most ef_search rows: let it return n
            self.conn.execute(sql.SQL("SET LOCAL hnsw.ef_search = {}").format(
                sql.Literal(max(40, min(int(n), 1000)))
            ))  # fmt: skip
            for q0 in range(0, len(queries), 1024):
                texts = [
                    "[" + ",".join(map(repr, row.tolist())) + "]"
                    for row in np.asarray(queries[q0 : q0 + 1024], dtype=np.float32)
                ]
                for ordinal, key in self.conn.execute(query, [texts, int(n)]).fetchall():
                    found[q0 + int(ordinal) - 1].append(key)
        return found

    def key_of(self, text: str, is_int: bool) -> Any:
        if self._id_type in _INT_TYPES:
            return int(text)
        return uuid.UUID(text) if self._id_type == "uuid" else text

    def columns(self) -> dict[str, Any]:
        return {"id_column": self.id_column, "vector_column": self.vector_column}

    def metric(self) -> MetricInfo:
        """The operator class of the table's HNSW or IVFFlat index on the vector column."""
        rows = self.conn.execute(
            "SELECT i.relname, am.amname, opc.opcname FROM pg_index x "
            "JOIN pg_class i ON i.oid = x.indexrelid JOIN pg_am am ON am.oid = i.relam "
            "JOIN pg_opclass opc ON opc.oid = x.indclass[0] "
            "WHERE x.indrelid = %s AND x.indnatts = 1 AND x.indkey[0] = %s AND x.indisvalid "
            "AND am.amname IN ('hnsw', 'ivfflat') ORDER BY i.relname",
            [self._oid, self._vec_attnum],
        ).fetchall()
        found = [(name, am, opc, OPCLASSES.get(opc, opc)) for name, am, opc in rows]
        if not found:
            return MetricInfo(
                None, f"table {self.table!r} has no vector index on {self.vector_column!r}", True
            )
        if len({metric for *_, metric in found}) > 1:
            listed = ", ".join(f"{name!r} ({metric})" for name, _, _, metric in found)
            return MetricInfo(
                None, f"the vector indexes of table {self.table!r} disagree: {listed}", True
            )
        name, am, opc, metric = found[0]
        return MetricInfo(metric, f"index {name!r} ({am}, {opc})")

    # -- writing ---------------------------------------------------------------------------
    def write_vectors(
        self, keys: list[Any], vectors: np.ndarray, progress: ProgressCallback | None = None
    ) -> None:
        sql = self._sql
        temp = sql.Identifier(f"nudgekit_write_{next(_counter)}")
        create = sql.SQL(
            "CREATE TEMP TABLE {temp} ON COMMIT DROP AS SELECT {id} AS k, {vec} AS v "
            "FROM {t} WITH NO DATA"
        ).format(temp=temp, id=self._id, vec=self._vec, t=self._t)
        copy = sql.SQL("COPY {} (k, v) FROM STDIN (FORMAT BINARY)").format(temp)
        update = sql.SQL("UPDATE {t} AS t SET {vec} = w.v FROM {temp} AS w WHERE t.{id} = w.k")
        update = update.format(t=self._t, vec=self._vec, temp=temp, id=self._id)
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        with self._errors("writing the vectors"), self.conn.transaction():
            cursor = self.conn.cursor()
            cursor.execute(create)
            for start in range(0, len(keys), self.write_batch):
                stop = min(start + self.write_batch, len(keys))
                with cursor.copy(copy) as rows:
                    rows.set_types([self._id_oid, self._vector_oid])
                    for k in range(start, stop):
                        rows.write_row((keys[k], vectors[k]))
                cursor.execute(update)
                cursor.execute(sql.SQL("TRUNCATE {}").format(temp))
                checkpoint("pgvector.batch")
                if progress is not None:
                    progress("write", stop, len(keys))
            cursor.execute(sql.SQL("DROP TABLE {}").format(temp))

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """One write of the base class: the intent commits first (see the module
        docstring), everything after it in one transaction; an error rolls it back."""
        if self._tx:
            yield
            return
        self.conn.execute("BEGIN")
        self._tx = True
        try:
            yield
        except BaseException:
            self._tx = False
            self.files.forget()
            with contextlib.suppress(self._psycopg.Error):
                self.conn.execute("ROLLBACK")
            raise
        self._tx = False
        self.conn.execute("COMMIT")

    def intent_recorded(self) -> None:
        """Called by the ledger once ``pending.json`` is written: commit the intent."""
        if self._tx and self.commit_journal_first:
            self.conn.execute("COMMIT")
            self.conn.execute("BEGIN")

    def recover(self) -> list[dict[str, Any]]:
        with self.transaction():
            return super().recover()

    @contextlib.contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        """A database refusal (permissions, constraints) as one clear line."""
        psycopg = self._psycopg
        try:
            yield
        except (psycopg.errors.InsufficientPrivilege, psycopg.errors.IntegrityError) as err:
            message = err.diag.message_primary or str(err)
            raise StoreError(
                f"{self.spec}: {what} was refused ({message}); nothing was written"
            ) from None

    def close(self) -> None:
        self.conn.close()


class TableFiles(LedgerFiles):
    """A ledger's named files as rows of ``<schema>.nudgekit_ledger``, through the store's
    connection (so they commit with its vectors); the lock is a session advisory lock."""

    def __init__(self, store: PgvectorStore, schema: str, target: str) -> None:
        self.store = store
        self.target = target
        self.table = store._sql.Identifier(schema, LEDGER_TABLE)
        self.regclass = self.table.as_string(store.conn)
        self.location = f"{store._where} table {schema}.{LEDGER_TABLE} (target {target!r})"
        name = f"nudgekit\0{schema}\0{target}".encode()
        self.key = int.from_bytes(hashlib.blake2b(name, digest_size=8).digest(), "big", signed=True)
        self._exists = False

    @property
    def conn(self) -> Any:
        return self.store.conn

    def exists(self) -> bool:
        if not self._exists:
            row = self.conn.execute("SELECT to_regclass(%s) IS NOT NULL", [self.regclass])
            self._exists = bool(row.fetchone()[0])
        return self._exists

    def forget(self) -> None:
        """After a rollback: the table may have been created by it."""
        self._exists = False

    def read(self, name: str) -> bytes | None:
        if not self.exists():
            return None
        query = self.store._sql.SQL(
            "SELECT data FROM {} WHERE target = %s AND name = %s ORDER BY part"
        ).format(self.table)
        parts = self.conn.execute(query, [self.target, name]).fetchall()
        return b"".join(bytes(p[0]) for p in parts) if parts else None

    def write(self, name: str, data: bytes) -> None:
        sql = self.store._sql
        with self.store._errors("writing nudgekit's ledger"), self.conn.transaction():
            self._create()
            self.conn.execute(
                sql.SQL("DELETE FROM {} WHERE target = %s AND name = %s").format(self.table),
                [self.target, name],
            )
            insert = sql.SQL("INSERT INTO {} (target, name, part, data) VALUES (%s, %s, %s, %s)")
            with self.conn.cursor() as cursor:
                cursor.executemany(
                    insert.format(self.table),
                    [
                        (self.target, name, k, data[start : start + PART_BYTES])
                        for k, start in enumerate(range(0, max(len(data), 1), PART_BYTES))
                    ],
                )
        if name == "pending.json":
            self.store.intent_recorded()

    def _create(self) -> None:
        if self.exists():
            return
        sql = self.store._sql
        # two targets' first writes must not create the table at once
        self.conn.execute("SELECT pg_advisory_xact_lock(%s)", [_CREATE_KEY])
        self.conn.execute(
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} (target text NOT NULL, name text NOT NULL, "
                "part integer NOT NULL, data bytea NOT NULL, PRIMARY KEY (target, name, part))"
            ).format(self.table)
        )
        self.conn.execute(
            sql.SQL("COMMENT ON TABLE {} IS {}").format(
                self.table,
                sql.Literal(
                    "nudgekit's bookkeeping (originals, digests, history) of the vector "
                    "columns it fine-tuned in place; see `nudgekit history`"
                ),
            )
        )
        self._exists = True

    def delete(self, name: str) -> None:
        if not self.exists():
            return
        query = self.store._sql.SQL("DELETE FROM {} WHERE target = %s AND name = %s")
        self.conn.execute(query.format(self.table), [self.target, name])

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        got = self.conn.execute("SELECT pg_try_advisory_lock(%s)", [self.key]).fetchone()[0]
        if not got:
            raise LedgerError(
                "another nudgekit process is changing this store (it holds advisory lock "
                f"{self.key} on {self.store.spec}); nothing was written — run again when it "
                "has finished"
            )
        try:
            yield
        finally:
            with contextlib.suppress(self.store._psycopg.Error):
                self.conn.execute("SELECT pg_advisory_unlock(%s)", [self.key])


def _array(vector: Any) -> np.ndarray:
    """A loaded vector as numpy (pgvector's loaders return ``Vector`` objects since 0.4)."""
    return vector.to_numpy() if hasattr(vector, "to_numpy") else np.asarray(vector)


# -- connecting ------------------------------------------------------------------------------
def _connect(psycopg: Any, dsn: str) -> Any:
    """An autocommit connection, or a :class:`StoreError` of one line naming host and db."""
    try:
        params = psycopg.conninfo.conninfo_to_dict(dsn)
    except psycopg.ProgrammingError as err:
        raise StoreError(f"--store: not a PostgreSQL connection string ({err})") from None
    user = params.get("user") or os.environ.get("PGUSER") or getpass.getuser()
    host = params.get("host") or os.environ.get("PGHOST") or "localhost"
    port = params.get("port") or os.environ.get("PGPORT") or "5432"
    db = params.get("dbname") or os.environ.get("PGDATABASE") or user
    where = f"postgresql://{user}@{_host(str(host))}:{port}/{db}"
    extra = {"application_name": "nudgekit", "connect_timeout": 10}
    try:
        return psycopg.connect(
            dsn, autocommit=True, **{k: v for k, v in extra.items() if k not in params}
        )
    except psycopg.Error as err:
        text = str(err)
        if re.search(r'database ".*" does not exist', text):
            raise StoreError(f"no PostgreSQL database {db!r} at {where}") from None
        raise StoreError(f"cannot connect to PostgreSQL at {where}: {_reason(text)}") from None


def _reason(text: str) -> str:
    """The gist of a libpq connection error, on one line."""
    first = next((line for line in text.splitlines() if "failed:" in line), text)
    return " ".join(first.rpartition("failed:")[2].split()) or " ".join(text.split())


def _host(host: str) -> str:
    return urllib.parse.quote(host, safe="") if host.startswith("/") else host


def _display(conn: Any) -> str:
    """The connection as a DSN without its password."""
    info = conn.info
    return f"postgresql://{info.user}@{_host(str(info.host))}:{info.port}/{info.dbname}"
