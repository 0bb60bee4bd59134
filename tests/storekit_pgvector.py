"""PostgreSQL + pgvector as a store kind for the store tests, against a real server.

The server is started once per test session, on first use (:mod:`tests.pg_server`). Each
:class:`~tests.storekit.Target` is a database of its own, cloned from the one built for
its corpus with ``CREATE DATABASE … TEMPLATE …``; its name (and the metric it was built
for) is written to ``ROOT/pgvector.json``. The table is what a pgvector user creates::

    CREATE TABLE docs (id bigint PRIMARY KEY, title text NOT NULL,
                       metadata jsonb NOT NULL, embedding vector(16) NOT NULL);
    CREATE INDEX docs_embedding_idx ON docs USING hnsw (embedding vector_ip_ops);

and every operation is written with psycopg, as the user would.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from . import pg_server
from .storekit import Kind, Target

#: pgvector's distance operators and HNSW operator classes, per metric
OPERATORS = {"dot": "<#>", "cosine": "<=>", "l2": "<->"}
OPCLASSES = {"dot": "vector_ip_ops", "cosine": "vector_cosine_ops", "l2": "vector_l2_ops"}
STATE = "pgvector.json"
INDEX = "docs_embedding_idx"


def _database(root: Path) -> str:
    return "nk_" + hashlib.sha1(str(root.resolve()).encode()).hexdigest()[:20]


class Pgvector(Kind):
    name = "pgvector"
    module = pg_server.missing_module() or "psycopg"  # the one the skip reason names
    int_ids = True
    metrics = ("dot", "cosine", "l2")

    def __init__(self) -> None:
        self._roots: dict[str, Path] = {}  # database → the Target root it belongs to

    def available(self) -> bool:
        return pg_server.missing_module() is None

    # -- databases ---------------------------------------------------------------------------
    def _state(self, root: Path) -> dict[str, Any]:
        path = root / STATE
        if path.is_file():
            return json.loads(path.read_text())
        return {"database": _database(root), "metric": None}

    def spec(self, root: Path) -> str:
        return pg_server.server().dsn(self._state(root)["database"])

    def _connect(self, target: Target) -> Any:
        import psycopg
        from pgvector.psycopg import register_vector

        conn = psycopg.connect(target.spec, autocommit=True)
        register_vector(conn)
        return conn

    def _new_database(self, root: Path, template: str | None, metric: str | None) -> str:
        """A fresh database for ``root`` (from ``template``), and the ones of Targets whose
        roots are gone dropped."""
        name = _database(root)
        with pg_server.server().connect() as conn:
            for old, where in list(self._roots.items()):
                if not where.exists() or old == name:
                    conn.execute(f'DROP DATABASE IF EXISTS "{old}" WITH (FORCE)')
                    del self._roots[old]
            copy = f' TEMPLATE "{template}"' if template else ""
            conn.execute(f'CREATE DATABASE "{name}"{copy}')
        self._roots[name] = root
        root.mkdir(parents=True, exist_ok=True)
        (root / STATE).write_text(json.dumps({"database": name, "metric": metric}))
        return name

    def build(self, root: Path, keys: list[Any], corpus: np.ndarray, metric: str | None) -> None:
        import psycopg
        from pgvector.psycopg import register_vector

        name = self._new_database(root, None, metric)
        with psycopg.connect(pg_server.server().dsn(name), autocommit=True) as conn:
            conn.execute("CREATE EXTENSION vector")
            register_vector(conn)
            conn.execute(
                "CREATE TABLE docs (id bigint PRIMARY KEY, title text NOT NULL, "
                f"metadata jsonb NOT NULL, embedding vector({corpus.shape[1]}) NOT NULL)"
            )
            self._insert(conn, keys, corpus)
            if metric is not None:
                conn.execute(
                    f"CREATE INDEX {INDEX} ON docs USING hnsw (embedding {OPCLASSES[metric]})"
                )
            conn.execute("ANALYZE docs")

    def clone(self, source: Path, root: Path) -> None:
        state = self._state(source)
        self._new_database(root, state["database"], state["metric"])

    # -- the user's operations ---------------------------------------------------------------
    def _insert(self, conn: Any, keys: list[Any], vectors: np.ndarray) -> None:
        from psycopg.types.json import Jsonb

        with conn.cursor() as cursor:
            cursor.executemany(
                "INSERT INTO docs (id, title, metadata, embedding) VALUES (%s, %s, %s, %s)",
                [
                    (k, f"title of {k}", Jsonb({"source": "tests", "key": k}), np.asarray(v))
                    for k, v in zip(keys, np.asarray(vectors, np.float32), strict=True)
                ],
            )

    def raw(self, target: Target) -> dict[str, np.ndarray]:
        with self._connect(target) as conn:
            rows = conn.execute("SELECT id, embedding FROM docs").fetchall()
        return {str(k): np.array(v.to_numpy(), np.float32) for k, v in rows}

    def insert(self, target: Target, keys: list[Any], vectors: np.ndarray) -> None:
        with self._connect(target) as conn:
            self._insert(conn, keys, vectors)

    def delete(self, target: Target, keys: list[Any]) -> None:
        with self._connect(target) as conn:
            conn.execute("DELETE FROM docs WHERE id = ANY(%s)", [list(keys)])

    def overwrite(self, target: Target, key: Any, vector: np.ndarray) -> None:
        with self._connect(target) as conn:
            conn.execute(
                "UPDATE docs SET embedding = %s WHERE id = %s",
                [np.asarray(vector, np.float32), key],
            )

    def maintain(self, target: Target) -> None:
        with self._connect(target) as conn:
            conn.execute("VACUUM (ANALYZE) docs")

    def schema(self, target: Target) -> Any:
        with self._connect(target) as conn:
            columns = conn.execute(
                "SELECT a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull "
                "FROM pg_attribute a WHERE a.attrelid = 'docs'::regclass AND a.attnum > 0 "
                "AND NOT a.attisdropped ORDER BY a.attnum"
            ).fetchall()
            indexes = conn.execute(
                "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'docs' ORDER BY 1"
            ).fetchall()
            constraints = conn.execute(
                "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
                "WHERE conrelid = 'docs'::regclass ORDER BY 1"
            ).fetchall()
        return columns, indexes, constraints

    def traces(self, target: Target) -> list[str]:
        """nudgekit's side tables in the database, and their rows."""
        found = []
        with self._connect(target) as conn:
            tables = conn.execute(
                "SELECT n.nspname, c.relname FROM pg_class c "
                "JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE c.relname ILIKE '%nudgekit%' AND n.nspname NOT LIKE 'pg_temp%' "
                "AND n.nspname NOT LIKE 'pg_toast%' ORDER BY 1, 2"
            ).fetchall()
            for schema, table in tables:
                found.append(f"{schema}.{table}")
                if table == "nudgekit_ledger":
                    rows = conn.execute(
                        f'SELECT target, name FROM "{schema}".{table} ORDER BY 1, 2'
                    ).fetchall()
                    found += [f"{schema}.{table}: {t}/{n}" for t, n in rows]
        return found

    def search(self, target: Target, query: np.ndarray, k: int) -> list[str]:
        """pgvector's README: ``SELECT * FROM items ORDER BY embedding <-> %s LIMIT 5``, with
        the operator of the index's metric — through the HNSW index (a 300-row table would
        be scanned instead), whose search is exact on so few rows with ``ef_search`` high."""
        metric = self._state(target.root)["metric"]
        sql = f"SELECT id FROM docs ORDER BY embedding {OPERATORS[metric or 'l2']} %s LIMIT %s"
        vector = np.asarray(query, np.float32)
        with self._connect(target) as conn, conn.transaction():
            if metric is not None:
                conn.execute("SET LOCAL enable_seqscan = off")
                conn.execute("SET LOCAL hnsw.ef_search = 1000")
                plan = conn.execute("EXPLAIN " + sql, [vector, k]).fetchall()
                assert any(f"Index Scan using {INDEX}" in r[0] for r in plan), plan
            rows = conn.execute(sql, [vector, k]).fetchall()
        return [str(r[0]) for r in rows]


KIND = Pgvector()
