"""Raw looks into either store, for tests that check what lies underneath the engine.

Each helper answers the same question for SQLite (a plain ``sqlite3`` connection on the
file) and PostgreSQL (a pooled connection of the store); table names differ where the
schemas do (SQLite keeps vectors in ``embeddings`` + ``index_log``, PostgreSQL in
``item_vectors``).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

import numpy as np

from memos_integrations import MemOS

BACKENDS = ("sqlite", "postgres")
SQLITE_TABLES = (
    "users",
    "cubes",
    "grants",
    "items",
    "item_versions",
    "transitions",
    "embeddings",
    "index_log",
    "audit",
    "artifacts",
    "meta",
)
PG_TABLES = (
    "users",
    "cubes",
    "grants",
    "items",
    "item_versions",
    "transitions",
    "item_vectors",
    "item_terms",
    "audit",
    "artifacts",
    "meta",
    "memos_migrations",
)


def is_pg(m: MemOS) -> bool:
    return m.store.url.startswith(("postgres://", "postgresql://"))


def rows(m: MemOS, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    """Run one query (``?`` placeholders, made ``%s`` for PostgreSQL) as tuples."""
    if is_pg(m):
        from psycopg.rows import tuple_row

        with m.store.connection() as conn:  # type: ignore[attr-defined]
            query = sql.replace("?", "%s") if params else sql
            return conn.cursor(row_factory=tuple_row).execute(query, params).fetchall()
    conn = sqlite3.connect(m.store.path)  # type: ignore[attr-defined]
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def table_names(m: MemOS) -> set[str]:
    if is_pg(m):
        return {
            r[0]
            for r in rows(m, "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")
        }
    return {r[0] for r in rows(m, "SELECT name FROM sqlite_master")}


def table_counts(m: MemOS) -> dict[str, int]:
    tables = PG_TABLES if is_pg(m) else SQLITE_TABLES
    return {t: rows(m, f"SELECT count(*) FROM {t}")[0][0] for t in tables}


def vector_table(m: MemOS) -> str:
    return "item_vectors" if is_pg(m) else "embeddings"


def vectors(m: MemOS, cube_id: str) -> dict[str, bytes]:
    """Stored vectors of a cube as float32 bytes, by item id."""
    if is_pg(m):
        got = rows(m, "SELECT item_id, embedding FROM item_vectors WHERE cube_id = %s", (cube_id,))
        return {i: np.asarray(v.to_numpy(), np.float32).tobytes() for i, v in got}
    return dict(rows(m, "SELECT item_id, vector FROM embeddings WHERE cube_id = ?", (cube_id,)))


def assert_intact(m: MemOS) -> None:
    """The store's own consistency checks: page structure on SQLite; on both, no
    item without its first version and creation transition, no vector without its item."""
    if is_pg(m):
        orphans = rows(
            m,
            "SELECT count(*) FROM item_vectors v LEFT JOIN items i "
            "ON i.cube_id = v.cube_id AND i.id = v.item_id WHERE i.id IS NULL",
        )
        assert orphans == [(0,)]
        live_without_vector = rows(
            m,
            "SELECT count(*) FROM items i WHERE i.state <> 'deleted' AND NOT EXISTS "
            "(SELECT 1 FROM item_vectors v WHERE v.cube_id = i.cube_id AND v.item_id = i.id)",
        )
        assert live_without_vector == [(0,)]
    else:
        assert rows(m, "PRAGMA integrity_check") == [("ok",)]
        assert rows(m, "PRAGMA foreign_key_check") == []
        assert rows(
            m,
            "SELECT count(*) FROM items WHERE state != 'deleted' AND id NOT IN "
            "(SELECT item_id FROM embeddings)",
        ) == [(0,)]
    for table in ("item_versions", "transitions"):
        missing = rows(
            m, f"SELECT count(*) FROM items WHERE id NOT IN (SELECT item_id FROM {table})"
        )
        assert missing == [(0,)], f"{missing[0][0]} items without a row in {table}"
