"""A store written by an older schema opens, migrates in place and keeps every memory."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from memos_integrations import MemOS
from memos_integrations.storage.sqlite import MIGRATIONS, _split_sql


def test_a_version_1_file_is_migrated_and_keeps_its_memories(tmp_path: Path, embedder) -> None:
    path = tmp_path / "old.db"
    with MemOS.open(path, embedder=embedder) as mos:
        mos.create_user("alice")
        mos.create_cube("alice-personal", owner="alice")
        [item] = mos.add(["Alice keeps bees on the roof"], user="alice")
    # Rebuild the file as schema 1 wrote it: same rows, version-1 tables only.
    old = tmp_path / "v1.db"
    with sqlite3.connect(old) as c:
        for statement in _split_sql(MIGRATIONS[0]):
            c.execute(statement)
        c.execute("PRAGMA user_version = 1")
        c.execute("ATTACH DATABASE ? AS new", (str(path),))
        for table in ("meta", "users", "cubes", "item_versions", "transitions", "embeddings"):
            c.execute(f"INSERT INTO {table} SELECT * FROM new.{table}")
        columns = [r[1] for r in c.execute("PRAGMA main.table_info(items)")]
        c.execute(f"INSERT INTO items SELECT {', '.join(columns)} FROM new.items")
        c.execute(
            "INSERT INTO index_log(item_id, cube_id, op) SELECT id, cube_id, 'add' FROM items"
        )
    with MemOS.open(old, embedder=embedder) as mos:
        [hit] = mos.search("who keeps bees", user="alice", k=1, mode="text")
        assert hit.item.id == item.id and hit.item.key is None
        [again] = mos.add({"text": "Alice keeps bees on the roof", "key": "bees"}, user="alice")
        assert again.id != item.id  # a keyed memory, told apart from the unkeyed one
    with sqlite3.connect(old) as c:
        assert c.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
        names = {r[0] for r in c.execute("SELECT name FROM sqlite_master")}
        assert "items_fts" not in names and "items_key" in names
        assert c.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
