"""The embedded default store: one SQLite file, zero servers.

WAL mode (readers never block the writer); vectors as float32 blobs. Both search legs run
on in-memory mirrors, a :class:`VectorIndex` and a BM25 :class:`TextIndex`. The mirrors are
never written to directly: every change to a memory's vector or text is appended to
``index_log`` in the writing transaction, and each search first replays the log entries it
has not seen. That keeps the indexes exact for this process *and* for other processes
writing to the same file.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from ..core.cube import Artifact, MemCube
from ..core.errors import Conflict, NotFound
from ..core.items import (
    AuditRecord,
    Grant,
    ItemVersion,
    MemoryItem,
    SearchHit,
    Transition,
    User,
)
from ..core.lifecycle import SERVED_STATES
from .base import (
    READDED_BY_KEY,
    AuditQuery,
    CubeDump,
    Scope,
    SearchRequest,
    Served,
    add_audit_detail,
    content_clash,
    keyed_readd,
    stale_version,
)
from .rows import (
    ITEM_COLUMNS,
    REWRITTEN_COLUMNS,
    artifact_from_row,
    audit_from_row,
    cube_from_row,
    dump_json,
    epoch,
    grant_from_row,
    item_from_row,
    item_values,
    transition_from_row,
    user_from_row,
    version_from_row,
    version_snapshot,
)
from .search import And, Cond, Node, rrf_fuse
from .sqlfilter import SQL_OPS, TIME_COLUMNS, compile_audit, compile_scope, equalities
from .text_index import TextIndex
from .vector_index import VectorIndex

# Ordered migrations; PRAGMA user_version records how many have run.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE users (
        id TEXT PRIMARY KEY, role TEXT NOT NULL, name TEXT, created_at REAL NOT NULL);
    CREATE TABLE cubes (
        id TEXT PRIMARY KEY, name TEXT NOT NULL, owner TEXT NOT NULL REFERENCES users(id),
        description TEXT NOT NULL DEFAULT '', metadata TEXT NOT NULL DEFAULT '{}',
        created_at REAL NOT NULL);
    CREATE INDEX cubes_owner ON cubes(owner);
    CREATE TABLE grants (
        cube_id TEXT NOT NULL REFERENCES cubes(id), user_id TEXT NOT NULL REFERENCES users(id),
        access TEXT NOT NULL CHECK (access IN ('read', 'write')), granted_by TEXT,
        granted_at REAL NOT NULL, PRIMARY KEY (cube_id, user_id));
    CREATE INDEX grants_user ON grants(user_id);
    CREATE TABLE items (
        rid INTEGER PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        cube_id TEXT NOT NULL REFERENCES cubes(id),
        owner TEXT NOT NULL,
        text TEXT NOT NULL,
        kind TEXT NOT NULL,
        tags TEXT NOT NULL DEFAULT '[]',
        metadata TEXT NOT NULL DEFAULT '{}',
        provenance TEXT NOT NULL DEFAULT '{}',
        context TEXT NOT NULL DEFAULT '',
        session_id TEXT,
        event_time TEXT,
        event_ts REAL,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        state TEXT NOT NULL,
        version INTEGER NOT NULL,
        content_hash TEXT NOT NULL,
        embedding_model TEXT NOT NULL,
        priority INTEGER NOT NULL DEFAULT 0,
        confidence REAL NOT NULL DEFAULT 1.0,
        expires_at REAL,
        access_count INTEGER NOT NULL DEFAULT 0,
        last_accessed_at REAL,
        visibility TEXT NOT NULL);
    -- the same content is stored once per cube (deleted tombstones do not count)
    CREATE UNIQUE INDEX items_content ON items(cube_id, content_hash) WHERE state != 'deleted';
    -- named, so candidate checks can insist on it (INDEXED BY)
    CREATE UNIQUE INDEX items_id ON items(id);
    CREATE INDEX items_cube_state ON items(cube_id, state);
    CREATE INDEX items_owner ON items(owner);
    CREATE INDEX items_event ON items(cube_id, event_ts);
    CREATE TABLE item_versions (
        item_id TEXT NOT NULL, version INTEGER NOT NULL, change TEXT NOT NULL,
        changed_by TEXT, changed_at REAL NOT NULL, snapshot TEXT NOT NULL,
        PRIMARY KEY (item_id, version));
    CREATE TABLE transitions (
        id INTEGER PRIMARY KEY, item_id TEXT NOT NULL, from_state TEXT, to_state TEXT NOT NULL,
        by TEXT, reason TEXT, at REAL NOT NULL);
    CREATE INDEX transitions_item ON transitions(item_id);
    CREATE TABLE embeddings (
        item_id TEXT PRIMARY KEY, cube_id TEXT NOT NULL, vector BLOB NOT NULL);
    CREATE TABLE index_log (
        seq INTEGER PRIMARY KEY AUTOINCREMENT, item_id TEXT NOT NULL, cube_id TEXT NOT NULL,
        op TEXT NOT NULL CHECK (op IN ('add', 'del')));
    CREATE VIRTUAL TABLE items_fts USING fts5(
        text, context, content='items', content_rowid='rid',
        tokenize='porter unicode61 remove_diacritics 2');
    CREATE TRIGGER items_fts_ins AFTER INSERT ON items BEGIN
        INSERT INTO items_fts(rowid, text, context) VALUES (new.rid, new.text, new.context);
    END;
    CREATE TRIGGER items_fts_del AFTER DELETE ON items BEGIN
        INSERT INTO items_fts(items_fts, rowid, text, context)
        VALUES ('delete', old.rid, old.text, old.context);
    END;
    CREATE TRIGGER items_fts_upd AFTER UPDATE OF text, context ON items BEGIN
        INSERT INTO items_fts(items_fts, rowid, text, context)
        VALUES ('delete', old.rid, old.text, old.context);
        INSERT INTO items_fts(rowid, text, context) VALUES (new.rid, new.text, new.context);
    END;
    CREATE TABLE artifacts (
        id TEXT PRIMARY KEY, cube_id TEXT NOT NULL REFERENCES cubes(id), kind TEXT NOT NULL,
        name TEXT NOT NULL, payload BLOB NOT NULL, fingerprint TEXT NOT NULL DEFAULT '{}',
        sources TEXT NOT NULL DEFAULT '{}', metadata TEXT NOT NULL DEFAULT '{}',
        stale INTEGER NOT NULL DEFAULT 0, created_at REAL NOT NULL);
    CREATE INDEX artifacts_cube ON artifacts(cube_id, kind);
    CREATE TABLE audit (
        id INTEGER PRIMARY KEY, at REAL NOT NULL, actor TEXT, action TEXT NOT NULL,
        target TEXT, cube_id TEXT, detail TEXT NOT NULL DEFAULT '{}');
    CREATE INDEX audit_actor ON audit(actor, at);
    CREATE INDEX audit_cube ON audit(cube_id, at);
    """,
    # 2: caller-chosen item keys; a keyed item is identified by its key, not its content
    """
    ALTER TABLE items ADD COLUMN key TEXT;
    DROP INDEX items_content;
    CREATE UNIQUE INDEX items_content ON items(cube_id, content_hash)
        WHERE key IS NULL AND state != 'deleted';
    CREATE UNIQUE INDEX items_key ON items(cube_id, key)
        WHERE key IS NOT NULL AND state != 'deleted';
    """,
    # 3: the full-text leg moved to an in-memory BM25 index (storage/text_index.py)
    """
    DROP TRIGGER items_fts_ins;
    DROP TRIGGER items_fts_del;
    DROP TRIGGER items_fts_upd;
    DROP TABLE items_fts;
    """,
    # 4: search admits candidates from this covering index without reading their rows
    """
    CREATE INDEX items_admit ON items(id, cube_id, state, expires_at);
    """,
)

_ITEM_COLUMNS = ", ".join(ITEM_COLUMNS)
_ITEM_MARKS = ",".join("?" * len(ITEM_COLUMNS))

_CHUNK = 500  # ids per IN (...) list
# What the in-memory indexes hold: every live memory has a vector row (tombstones do not).
_INDEXED_ROWS = (
    "SELECT e.item_id, e.cube_id, e.vector, i.text, i.context "
    "FROM embeddings e JOIN items i ON i.id = e.item_id"
)


def _chunks(seq: Sequence[str], size: int = _CHUNK) -> Iterator[Sequence[str]]:
    for start in range(0, len(seq), size):
        yield seq[start : start + size]


def _marks(n: int) -> str:
    return ",".join("?" * n)


@dataclass(frozen=True)
class _Leg:
    """One search leg: its index, query, cube partitions and first ranking."""

    index: VectorIndex | TextIndex
    query: Any
    cubes: Sequence[str] | None
    exhaustive: bool  # a ranking shorter than asked for means every match was seen
    first: list[tuple[str, float]]


class SQLiteStore:
    """A :class:`~memos_integrations.storage.base.Store` on one SQLite file."""

    def __init__(self, path: str | Path, *, ivf_min_rows: int = 20_000) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.url = f"sqlite:///{self.path}"
        self._ivf_min_rows = ivf_min_rows
        self._local = threading.local()
        self._conns: list[sqlite3.Connection] = []
        self._conns_lock = threading.Lock()
        self._write_lock = threading.Lock()  # one writer per process; BEGIN IMMEDIATE across
        self._vectors: VectorIndex | None = None
        self._text: TextIndex | None = None
        self._index_seq = 0
        self._index_lock = threading.Lock()
        self._closed = False
        self._migrate()

    # ------------------------------------------------------------------ connections

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            if self._closed:
                raise sqlite3.ProgrammingError("the store is closed")
            conn = sqlite3.connect(
                self.path, isolation_level=None, timeout=60.0, check_same_thread=False
            )
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode=WAL")
            # NORMAL in WAL mode: a commit survives a process crash (SIGKILL); only an OS
            # crash or power loss can lose the last transactions.
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute("PRAGMA busy_timeout=60000")
            conn.execute("PRAGMA temp_store=MEMORY")
            self._local.conn = conn
            with self._conns_lock:
                self._conns.append(conn)
        return conn

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One write transaction: all or nothing."""
        conn = self._conn()
        with self._write_lock:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        """A read transaction: one consistent snapshot for several statements."""
        conn = self._conn()
        conn.execute("BEGIN")
        try:
            yield conn
        finally:
            conn.execute("COMMIT")

    def close(self) -> None:
        self._closed = True
        with self._conns_lock:
            for conn in self._conns:
                with contextlib.suppress(sqlite3.ProgrammingError):  # closed already
                    conn.close()
            self._conns.clear()
        self._local = threading.local()

    def _migrate(self) -> None:
        with self._tx() as c:
            done = c.execute("PRAGMA user_version").fetchone()[0]
            if done > len(MIGRATIONS):
                raise Conflict(
                    f"{self.path} has schema version {done}, newer than this version of "
                    f"memos-integrations supports ({len(MIGRATIONS)}); upgrade the package"
                )
            for number, script in enumerate(MIGRATIONS[done:], start=done + 1):
                for statement in _split_sql(script):
                    c.execute(statement)
                c.execute(f"PRAGMA user_version = {number}")

    # ------------------------------------------------------------------ meta

    def get_meta(self, key: str) -> str | None:
        row = self._conn().execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def set_meta(self, key: str, value: str) -> None:
        with self._tx() as c:
            c.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, value))

    # ------------------------------------------------------------------ audit

    @staticmethod
    def _audit(c: sqlite3.Connection, r: AuditRecord) -> None:
        c.execute(
            "INSERT INTO audit(at, actor, action, target, cube_id, detail) VALUES (?,?,?,?,?,?)",
            (epoch(r.at), r.actor, r.action, r.target, r.cube_id, dump_json(r.detail)),
        )

    def add_audit(self, record: AuditRecord) -> None:
        with self._tx() as c:
            self._audit(c, record)

    def query_audit(self, query: AuditQuery) -> list[AuditRecord]:
        sql, params = compile_audit(
            query,
            mark="?",
            time=epoch,
            one_of=lambda column, values: (f"{column} IN ({_marks(len(values))})", list(values)),
        )
        rows = self._conn().execute(
            f"SELECT * FROM audit WHERE {sql} ORDER BY id DESC LIMIT ?", (*params, query.limit)
        )
        return [audit_from_row(r) for r in rows]

    # ------------------------------------------------------------------ users, cubes, grants

    def put_user(self, user: User, audit: AuditRecord) -> None:
        with self._tx() as c:
            try:
                c.execute(
                    "INSERT INTO users(id, role, name, created_at) VALUES (?,?,?,?)",
                    (user.id, user.role, user.name, epoch(user.created_at)),
                )
            except sqlite3.IntegrityError:
                raise Conflict(f"user {user.id!r} already exists") from None
            self._audit(c, audit)

    def get_user(self, user_id: str) -> User | None:
        r = self._conn().execute("SELECT * FROM users WHERE id = ?", (user_id,)).fetchone()
        return user_from_row(r) if r else None

    def list_users(self) -> list[User]:
        rows = self._conn().execute("SELECT * FROM users ORDER BY id")
        return [user_from_row(r) for r in rows]

    def put_cube(self, cube: MemCube, audit: AuditRecord) -> None:
        with self._tx() as c:
            self._insert_cube(c, cube)
            self._audit(c, audit)

    @staticmethod
    def _insert_cube(c: sqlite3.Connection, cube: MemCube) -> None:
        try:
            c.execute(
                "INSERT INTO cubes(id, name, owner, description, metadata, created_at) "
                "VALUES (?,?,?,?,?,?)",
                (
                    cube.id,
                    cube.name,
                    cube.owner,
                    cube.description,
                    dump_json(cube.metadata),
                    epoch(cube.created_at),
                ),
            )
        except sqlite3.IntegrityError:
            raise Conflict(f"cube {cube.id!r} already exists") from None

    def get_cube(self, cube_id: str) -> MemCube | None:
        r = self._conn().execute("SELECT * FROM cubes WHERE id = ?", (cube_id,)).fetchone()
        return cube_from_row(r) if r else None

    def list_cubes(self, owner: str | None = None) -> list[MemCube]:
        if owner is None:
            rows = self._conn().execute("SELECT * FROM cubes ORDER BY created_at, id")
        else:
            rows = self._conn().execute(
                "SELECT * FROM cubes WHERE owner = ? ORDER BY created_at, id", (owner,)
            )
        return [cube_from_row(r) for r in rows]

    def set_grant(self, grant: Grant, audit: AuditRecord) -> None:
        with self._tx() as c:
            c.execute(
                "INSERT OR REPLACE INTO grants(cube_id, user_id, access, granted_by, granted_at) "
                "VALUES (?,?,?,?,?)",
                (
                    grant.cube_id,
                    grant.user_id,
                    grant.access,
                    grant.granted_by,
                    epoch(grant.granted_at),
                ),
            )
            self._audit(c, audit)

    def remove_grant(self, cube_id: str, user_id: str, audit: AuditRecord) -> bool:
        with self._tx() as c:
            cur = c.execute(
                "DELETE FROM grants WHERE cube_id = ? AND user_id = ?", (cube_id, user_id)
            )
            self._audit(c, audit)
            return cur.rowcount > 0

    def list_grants(self, cube_id: str | None = None, user_id: str | None = None) -> list[Grant]:
        sql, params = equalities((("cube_id", cube_id), ("user_id", user_id)), "?")
        rows = self._conn().execute(
            f"SELECT * FROM grants WHERE {sql} ORDER BY cube_id, user_id", params
        )
        return [grant_from_row(r) for r in rows]

    # ------------------------------------------------------------------ items: writes

    @staticmethod
    def _put_vector(c: sqlite3.Connection, item_id: str, cube_id: str, vector: np.ndarray) -> None:
        c.execute(
            "INSERT OR REPLACE INTO embeddings(item_id, cube_id, vector) VALUES (?,?,?)",
            (item_id, cube_id, np.asarray(vector, np.float32).tobytes()),
        )
        c.execute(
            "INSERT INTO index_log(item_id, cube_id, op) VALUES (?,?,'add')", (item_id, cube_id)
        )

    @staticmethod
    def _drop_vectors(c: sqlite3.Connection, ids: Sequence[str]) -> None:
        for chunk in _chunks(list(ids)):
            rows = c.execute(
                f"DELETE FROM embeddings WHERE item_id IN ({_marks(len(chunk))}) "
                "RETURNING item_id, cube_id",
                tuple(chunk),
            ).fetchall()
            c.executemany(
                "INSERT INTO index_log(item_id, cube_id, op) VALUES (?,?,'del')",
                [(r[0], r[1]) for r in rows],
            )

    @staticmethod
    def _insert_version(c: sqlite3.Connection, v: ItemVersion) -> None:
        c.execute(
            "INSERT INTO item_versions(item_id, version, change, changed_by, changed_at, snapshot)"
            " VALUES (?,?,?,?,?,?)",
            (
                v.item_id,
                v.version,
                v.change,
                v.changed_by,
                epoch(v.changed_at),
                version_snapshot(v),
            ),
        )

    @staticmethod
    def _insert_transition(c: sqlite3.Connection, t: Transition) -> None:
        c.execute(
            "INSERT INTO transitions(item_id, from_state, to_state, by, reason, at) "
            "VALUES (?,?,?,?,?,?)",
            (t.item_id, t.from_state, t.to_state, t.by, t.reason, epoch(t.at)),
        )

    def add_items(
        self, items: Sequence[MemoryItem], vectors: np.ndarray, audit: AuditRecord
    ) -> list[tuple[str, bool]]:
        out: list[tuple[str, bool]] = []
        updated: list[str] = []
        with self._tx() as c:
            for item, vector in zip(items, vectors, strict=True):
                if item.key is not None:
                    row = c.execute(
                        f"SELECT {_ITEM_COLUMNS} FROM items WHERE cube_id = ? AND key = ? "
                        "AND state != 'deleted'",
                        (item.cube_id, item.key),
                    ).fetchone()
                    if row is not None:  # a keyed re-add: the same item, maybe a new version
                        current = item_from_row(row)
                        if self._readd_keyed(c, current, item, vector):
                            updated.append(current.id)
                        out.append((current.id, False))
                        continue
                else:
                    row = c.execute(
                        "SELECT id FROM items WHERE cube_id = ? AND content_hash = ? "
                        "AND key IS NULL AND state != 'deleted'",
                        (item.cube_id, item.content_hash),
                    ).fetchone()
                    if row is not None:  # idempotent: the same content is already here
                        out.append((row[0], False))
                        continue
                try:
                    c.execute(
                        f"INSERT INTO items({_ITEM_COLUMNS}) VALUES ({_ITEM_MARKS})",
                        tuple(item_values(item).values()),
                    )
                except sqlite3.IntegrityError:
                    raise Conflict(f"an item with id {item.id!r} already exists") from None
                self._insert_version(c, ItemVersion.of(item, "create", item.owner))
                self._insert_transition(
                    c, Transition(item.id, None, item.state, item.owner, "created", item.created_at)
                )
                self._put_vector(c, item.id, item.cube_id, vector)
                out.append((item.id, True))
            created = [i for i, new in out if new]
            self._audit(c, add_audit_detail(audit, len(out), created, updated))
        return out

    def _readd_keyed(
        self, c: sqlite3.Connection, current: MemoryItem, draft: MemoryItem, vector: np.ndarray
    ) -> bool:
        """Write ``draft`` as the next version of the live item with its key; False if unchanged."""
        new = keyed_readd(current, draft)
        if new is None:
            return False
        self._write_row(c, new, current.version)
        self._insert_version(c, ItemVersion.of(new, "update", draft.owner, READDED_BY_KEY))
        self._put_vector(c, new.id, new.cube_id, vector)
        if current.state not in SERVED_STATES:
            self._move(c, [(new.id, current.state)], "activated", draft.owner, READDED_BY_KEY)
        return True

    def bulk_load(self, expected: int) -> contextlib.nullcontext[None]:
        """Nothing to defer: the vector index catches up from ``index_log`` on the next search."""
        return contextlib.nullcontext()

    def update_item(
        self,
        item: MemoryItem,
        *,
        expected_version: int,
        change: str,
        by: str | None,
        vector: np.ndarray | None,
        audit: AuditRecord,
    ) -> None:
        with self._tx() as c:
            self._write_row(c, item, expected_version)
            self._insert_version(c, ItemVersion.of(item, change, by, audit.detail.get("note")))
            if vector is not None:
                self._put_vector(c, item.id, item.cube_id, vector)
            self._audit(c, audit)

    @staticmethod
    def _write_row(c: sqlite3.Connection, item: MemoryItem, expected_version: int) -> None:
        """Overwrite an item's content columns, if it is still at ``expected_version``."""
        try:
            row = item_values(item)
            cur = c.execute(
                f"UPDATE items SET {', '.join(f'{col} = ?' for col in REWRITTEN_COLUMNS)} "
                "WHERE id = ? AND version = ?",
                (*(row[col] for col in REWRITTEN_COLUMNS), item.id, expected_version),
            )
        except sqlite3.IntegrityError:
            raise content_clash() from None
        if cur.rowcount != 1:
            raise stale_version(item.id, expected_version)

    def set_state(
        self,
        ids: Sequence[str],
        to_state: str,
        *,
        from_states: Sequence[str],
        by: str | None,
        reason: str | None,
        audit: AuditRecord | None,
    ) -> list[str]:
        changed: list[str] = []
        with self._tx() as c:
            for chunk in _chunks(list(ids)):
                rows = c.execute(
                    f"SELECT id, state FROM items WHERE id IN ({_marks(len(chunk))}) "
                    f"AND state IN ({_marks(len(from_states))})",
                    (*chunk, *from_states),
                ).fetchall()
                changed += self._move(
                    c, [(r["id"], r["state"]) for r in rows], to_state, by, reason
                )
            if audit is not None:
                self._audit(c, audit.with_detail(changed=changed))
        return changed

    def _move(
        self,
        c: sqlite3.Connection,
        items: Sequence[tuple[str, str]],
        to_state: str,
        by: str | None,
        reason: str | None,
    ) -> list[str]:
        """Move ``(id, current state)`` pairs to ``to_state``, recording each transition."""
        now = datetime.now(UTC)
        for item_id, from_state in items:
            c.execute(
                "UPDATE items SET state = ?, updated_at = ? WHERE id = ?",
                (to_state, epoch(now), item_id),
            )
            self._insert_transition(c, Transition(item_id, from_state, to_state, by, reason, now))
        moved = [item_id for item_id, _ in items]
        if to_state == "deleted":
            self._drop_vectors(c, moved)
        return moved

    def mark_served(self, served: Sequence[Served]) -> None:
        """Count the accesses and activate the ``generated`` items: one transaction."""
        if not served:
            return
        with self._tx() as c:
            for event in served:
                marks = _marks(len(event.ids))
                c.execute(
                    "UPDATE items SET access_count = access_count + 1, last_accessed_at = ? "
                    f"WHERE id IN ({marks})",
                    (epoch(event.at), *event.ids),
                )
                fresh = c.execute(
                    f"UPDATE items SET state = 'activated' WHERE id IN ({marks}) "
                    "AND state = 'generated' RETURNING id",
                    event.ids,
                ).fetchall()
                for (item_id,) in fresh:
                    moved = Transition(
                        item_id, "generated", "activated", event.by, event.reason, event.at
                    )
                    self._insert_transition(c, moved)

    def expire_due(
        self, scope: Scope, now: datetime, *, by: str | None, audit: AuditRecord
    ) -> list[str]:
        """One UPDATE per served state (SQLite's RETURNING has no old values), no item loaded."""
        expired: list[str] = []
        with self._tx() as c:
            for state in SERVED_STATES:
                clause, params = _compile_scope(
                    scope,
                    And(
                        (
                            Cond("state", "text", "$eq", state),
                            Cond("expires_at", "time", "$lte", now.timestamp()),
                        )
                    ),
                )
                moved = [
                    r[0]
                    for r in c.execute(
                        f"UPDATE items SET state = 'expired', updated_at = ? WHERE {clause} "
                        "RETURNING id",
                        (epoch(now), *params),
                    )
                ]
                c.executemany(
                    "INSERT INTO transitions(item_id, from_state, to_state, by, reason, at) "
                    "VALUES (?,?,'expired',?,'ttl',?)",
                    [(i, state, by, epoch(now)) for i in moved],
                )
                expired += moved
            self._audit(c, audit.with_detail(expired=len(expired), items=expired[:100]))
        return expired

    # ------------------------------------------------------------------ items: reads

    def get_items(self, ids: Sequence[str]) -> list[MemoryItem]:
        found: dict[str, MemoryItem] = {}
        conn = self._conn()
        for chunk in _chunks(list(ids)):
            for r in conn.execute(
                f"SELECT {_ITEM_COLUMNS} FROM items WHERE id IN ({_marks(len(chunk))})",
                tuple(chunk),
            ):
                found[r["id"]] = item_from_row(r)
        return [found[i] for i in ids if i in found]

    def list_items(
        self,
        scope: Scope,
        where: Node | None,
        *,
        limit: int,
        offset: int,
        order: str,
    ) -> list[MemoryItem]:
        clause, params = _compile_scope(scope, where)
        order_sql = {
            "created": "created_at DESC, rid DESC",
            "created_asc": "created_at ASC, rid ASC",
            "event": "event_ts DESC, rid DESC",
            "event_asc": "event_ts ASC, rid ASC",
            "accessed": "access_count DESC, rid DESC",
        }[order]
        rows = self._conn().execute(
            f"SELECT {_ITEM_COLUMNS} FROM items WHERE {clause} ORDER BY {order_sql} "
            "LIMIT ? OFFSET ?",
            (*params, limit, offset),
        )
        return [item_from_row(r) for r in rows]

    def count_items(self, scope: Scope, where: Node | None) -> int:
        clause, params = _compile_scope(scope, where)
        return (
            self._conn().execute(f"SELECT count(*) FROM items WHERE {clause}", params).fetchone()[0]
        )

    def versions(self, item_id: str) -> list[ItemVersion]:
        rows = self._conn().execute(
            "SELECT * FROM item_versions WHERE item_id = ? ORDER BY version", (item_id,)
        )
        return [version_from_row(r) for r in rows]

    def transitions(self, item_id: str) -> list[Transition]:
        rows = self._conn().execute(
            "SELECT * FROM transitions WHERE item_id = ? ORDER BY id", (item_id,)
        )
        return [transition_from_row(r) for r in rows]

    # ------------------------------------------------------------------ search

    def _synced_indexes(self, conn: sqlite3.Connection) -> tuple[VectorIndex | None, TextIndex]:
        """The in-memory indexes, caught up with every committed change to memories."""
        head = conn.execute("SELECT max(seq) FROM index_log").fetchone()[0] or 0
        with self._index_lock:
            if self._text is not None and head == self._index_seq:
                return self._vectors, self._text
            if self._text is None:  # first use: load everything
                self._text = TextIndex()
                self._index_rows(conn.execute(_INDEXED_ROWS))
            else:  # replay the log entries this process has not seen
                entries = conn.execute(
                    "SELECT seq, item_id, cube_id, op FROM index_log WHERE seq > ? ORDER BY seq",
                    (self._index_seq,),
                ).fetchall()
                last: dict[str, str] = {r[1]: r[3] for r in entries}  # the last op per item
                removed = [i for i, op in last.items() if op == "del"]
                self._text.remove(removed)
                if self._vectors is not None:
                    self._vectors.remove(removed)
                added = [i for i, op in last.items() if op == "add"]
                for chunk in _chunks(added):
                    self._index_rows(
                        conn.execute(
                            f"{_INDEXED_ROWS} WHERE e.item_id IN ({_marks(len(chunk))})",
                            tuple(chunk),
                        )
                    )
            self._index_seq = head
            return self._vectors, self._text

    def _index_rows(self, cursor: sqlite3.Cursor) -> None:
        """Put ``_INDEXED_ROWS`` results into both indexes."""
        rows = cursor.fetchall()
        if not rows:
            return
        vectors = np.frombuffer(b"".join(r[2] for r in rows), np.float32).reshape(len(rows), -1)
        if self._vectors is None:
            self._vectors = VectorIndex(vectors.shape[1], ivf_min_rows=self._ivf_min_rows)
        self._vectors.add([r[1] for r in rows], [r[0] for r in rows], vectors)
        assert self._text is not None
        self._text.add((r[0], r[1], r[3], r[4]) for r in rows)

    @staticmethod
    def _admitted(
        conn: sqlite3.Connection, ids: Iterable[str], clause: str, params: Sequence[Any]
    ) -> set[str]:
        """The candidates that pass the scope and filter."""
        # Probe the ids in the covering index, never scan: without the hint the planner may
        # walk a whole cube via items_cube_state instead (6 ms vs 0.1 ms at 10k); the default
        # clause (cube, state, expiry) is then answered without reading the rows.
        out: set[str] = set()
        for chunk in _chunks(list(dict.fromkeys(ids))):
            rows = conn.execute(
                f"SELECT id FROM items INDEXED BY items_admit "
                f"WHERE id IN ({_marks(len(chunk))}) AND {clause}",
                (*chunk, *params),
            )
            out.update(r[0] for r in rows)
        return out

    def _leg(
        self,
        conn: sqlite3.Connection,
        leg: _Leg,
        n: int,
        ok: set[str],
        clause: str,
        params: Sequence[Any],
    ) -> list[tuple[str, float]]:
        """A leg's n best admitted (item id, score), given its first ranking was checked in ``ok``.

        While the filter rejects too many, over-fetch 8x (twice), then rank exactly the rows the
        filter admits, so n rows come back whenever they exist. Admitted ids join ``ok``.
        """
        want, ranked = n, leg.first
        for _ in range(3):
            hits = [(i, score) for i, score in ranked if i in ok]
            # an exhaustive ranking that came back short has shown every match: that is final
            if len(hits) >= n or (leg.exhaustive and len(ranked) < want):
                return hits[:n]
            want *= 8
            ranked = leg.index.search(leg.query, want, leg.cubes)
            ok.update(self._admitted(conn, (i for i, _ in ranked), clause, params))
        admitted = {r[0] for r in conn.execute(f"SELECT id FROM items WHERE {clause}", params)}
        hits = leg.index.search(leg.query, n, leg.cubes, only=admitted)
        ok.update(self._admitted(conn, (i for i, _ in hits), clause, params))
        return hits

    def search(self, request: SearchRequest) -> list[SearchHit]:
        n = request.depth
        clause, params = _compile_scope(request.scope, request.where)
        cubes = request.scope.cube_ids
        with self._read() as conn:
            vectors, texts = self._synced_indexes(conn)
            specs: list[tuple[VectorIndex | TextIndex, Any, bool, float]] = []
            if (
                request.mode in ("hybrid", "dense")
                and vectors is not None
                and request.vector is not None
            ):
                # an IVF scan may return fewer rows than asked for: not exhaustive
                specs.append((vectors, request.vector, False, request.dense_weight))
            if request.mode in ("hybrid", "text") and request.text:
                specs.append((texts, request.text, True, 1.0))
            legs = [
                _Leg(index, query, cubes, exhaustive, index.search(query, n, cubes))
                for index, query, exhaustive, _ in specs
            ]
            # one admission query for both legs' first rankings; it also fetches the rows
            ok = self._admitted(conn, (i for leg in legs for i, _ in leg.first), clause, params)
            ranked = [self._leg(conn, leg, n, ok, clause, params) for leg in legs]
            fused = rrf_fuse(
                [[i for i, _ in hits] for hits in ranked], weights=[w for *_, w in specs]
            )[: request.k]
            rows = {
                r["id"]: r
                for r in conn.execute(
                    f"SELECT {_ITEM_COLUMNS} FROM items INDEXED BY items_id "
                    f"WHERE id IN ({_marks(len(fused))})",
                    [i for i, _ in fused],
                )
            }
        scores = [dict(hits) for hits in ranked]
        dense_s = scores[0] if specs and specs[0][0] is vectors else {}
        text_s = scores[-1] if specs and specs[-1][0] is texts else {}
        return [
            SearchHit(item_from_row(rows[i]), score, dense_s.get(i), text_s.get(i))
            for i, score in fused
        ]

    # ------------------------------------------------------------------ artifacts

    def put_artifact(
        self, artifact: Artifact, audit: AuditRecord, *, replaces: Sequence[str] = ()
    ) -> None:
        with self._tx() as c:
            for chunk in _chunks(list(replaces)):
                c.execute(f"DELETE FROM artifacts WHERE id IN ({_marks(len(chunk))})", tuple(chunk))
            self._insert_artifact(c, artifact)
            self._audit(c, audit.with_detail(replaced=list(replaces)))

    @staticmethod
    def _insert_artifact(c: sqlite3.Connection, a: Artifact) -> None:
        c.execute(
            "INSERT OR REPLACE INTO artifacts(id, cube_id, kind, name, payload, fingerprint, "
            "sources, metadata, stale, created_at) VALUES (?,?,?,?,?,?,?,?,?,?)",
            (
                a.id,
                a.cube_id,
                a.kind,
                a.name,
                a.payload,
                dump_json(a.fingerprint),
                dump_json(a.sources),
                dump_json(a.metadata),
                int(a.stale),
                epoch(a.created_at),
            ),
        )

    def list_artifacts(
        self, cube_id: str, kind: str | None = None, *, with_payload: bool = True
    ) -> list[Artifact]:
        payload = "payload" if with_payload else "x'' AS payload"
        columns = (
            f"id, cube_id, kind, name, {payload}, fingerprint, sources, metadata, stale, created_at"
        )
        sql, params = f"SELECT {columns} FROM artifacts WHERE cube_id = ?", [cube_id]
        if kind is not None:
            sql += " AND kind = ?"
            params.append(kind)
        return [artifact_from_row(r) for r in self._conn().execute(sql + " ORDER BY id", params)]

    def get_artifact(self, artifact_id: str) -> Artifact | None:
        row = self._conn().execute("SELECT * FROM artifacts WHERE id = ?", (artifact_id,))
        found = row.fetchone()
        return artifact_from_row(found) if found is not None else None

    def touch_artifact(self, artifact_id: str, at: datetime) -> None:
        """Record a use (``metadata.used_at``), for least-recently-used eviction."""
        with self._tx() as c:
            c.execute(
                "UPDATE artifacts SET metadata = json_set(metadata, '$.used_at', ?) WHERE id = ?",
                (at.isoformat(), artifact_id),
            )

    def retire_artifacts(
        self, drop: Sequence[str], stale: Sequence[str], audit: AuditRecord
    ) -> None:
        with self._tx() as c:
            for ids, sql in (
                (drop, "DELETE FROM artifacts WHERE id IN ({})"),
                (stale, "UPDATE artifacts SET stale = 1 WHERE id IN ({})"),
            ):
                for chunk in _chunks(list(ids)):
                    c.execute(sql.format(_marks(len(chunk))), tuple(chunk))
            self._audit(c, audit.with_detail(dropped=list(drop), stale=list(stale)))

    # ------------------------------------------------------------------ governance

    def purge_user(self, user_id: str, audit: AuditRecord) -> dict[str, int]:
        """Hard-delete everything of a user in one transaction (GDPR erasure).

        Set-based: the ids go into temp tables once and every table is cleared with one
        DELETE joined on them. The in-memory search indexes drop the items right after.
        """
        with self._tx() as c:
            c.execute("CREATE TEMP TABLE IF NOT EXISTS purge_cubes(id TEXT PRIMARY KEY)")
            c.execute("CREATE TEMP TABLE IF NOT EXISTS purge_items(id TEXT PRIMARY KEY)")
            c.execute("DELETE FROM purge_cubes")
            c.execute("DELETE FROM purge_items")
            c.execute("INSERT INTO purge_cubes SELECT id FROM cubes WHERE owner = ?", (user_id,))
            c.execute(
                "INSERT INTO purge_items SELECT id FROM items WHERE owner = ? "
                "UNION SELECT i.id FROM items i JOIN purge_cubes p ON i.cube_id = p.id",
                (user_id,),
            )
            cubes = [r[0] for r in c.execute("SELECT id FROM purge_cubes")]
            counts: dict[str, int] = {}
            # the log keeps ids only; earlier entries go, one 'del' each tells other processes
            c.execute("DELETE FROM index_log WHERE item_id IN (SELECT id FROM purge_items)")
            c.execute(
                "INSERT INTO index_log(item_id, cube_id, op) SELECT item_id, cube_id, 'del' "
                "FROM embeddings WHERE item_id IN (SELECT id FROM purge_items)"
            )
            for table, column, key in (
                ("embeddings", "item_id", "vectors"),
                ("item_versions", "item_id", "versions"),
                ("transitions", "item_id", "transitions"),
                ("items", "id", "items"),
            ):
                counts[key] = c.execute(
                    f"DELETE FROM {table} WHERE {column} IN (SELECT id FROM purge_items)"
                ).rowcount
            counts["artifacts"] = c.execute(
                "DELETE FROM artifacts WHERE cube_id IN (SELECT id FROM purge_cubes)"
            ).rowcount
            counts["grants"] = c.execute(
                "DELETE FROM grants WHERE user_id = ? OR cube_id IN (SELECT id FROM purge_cubes)",
                (user_id,),
            ).rowcount
            counts["cubes"] = c.execute(
                "DELETE FROM cubes WHERE id IN (SELECT id FROM purge_cubes)"
            ).rowcount
            counts["audit"] = c.execute(
                "DELETE FROM audit WHERE actor = ? OR target = ? "
                "OR cube_id IN (SELECT id FROM purge_cubes)",
                (user_id, user_id),
            ).rowcount
            counts["users"] = c.execute("DELETE FROM users WHERE id = ?", (user_id,)).rowcount
            self._audit(c, audit.with_detail(**counts))
        if self._text is not None:  # no copy of the text stays in this process's indexes
            with self._read() as conn:
                self._synced_indexes(conn)
            with self._index_lock:  # nor the vectors of their cubes (others' rows go dead)
                for cube_id in cubes:
                    if self._vectors is not None:
                        self._vectors.drop_cube(cube_id)
        return counts

    # ------------------------------------------------------------------ portability

    def dump_cube(self, cube_id: str) -> CubeDump:
        with self._read() as c:
            row = c.execute("SELECT * FROM cubes WHERE id = ?", (cube_id,)).fetchone()
            if row is None:
                raise NotFound(f"cube {cube_id!r} does not exist")
            items = [
                item_from_row(r)
                for r in c.execute(
                    f"SELECT {_ITEM_COLUMNS} FROM items WHERE cube_id = ? ORDER BY rid", (cube_id,)
                )
            ]
            vecs = {
                r[0]: r[1]
                for r in c.execute(
                    "SELECT item_id, vector FROM embeddings WHERE cube_id = ?", (cube_id,)
                )
            }
            dim = int(self.get_meta("embedding_dim") or 0)
            vectors = np.zeros((len(items), dim), np.float32)
            for n, it in enumerate(items):
                if it.id in vecs:
                    vectors[n] = np.frombuffer(vecs[it.id], np.float32)
            versions = [
                version_from_row(r)
                for r in c.execute(
                    "SELECT v.* FROM item_versions v JOIN items i ON i.id = v.item_id "
                    "WHERE i.cube_id = ? ORDER BY i.rid, v.version",
                    (cube_id,),
                )
            ]
            transitions = [
                transition_from_row(r)
                for r in c.execute(
                    "SELECT t.* FROM transitions t JOIN items i ON i.id = t.item_id "
                    "WHERE i.cube_id = ? ORDER BY t.id",
                    (cube_id,),
                )
            ]
            grants = self.list_grants(cube_id=cube_id)
            artifacts = self.list_artifacts(cube_id)
        return CubeDump(
            cube_from_row(row), grants, items, vectors, versions, transitions, artifacts
        )

    def load_cube(self, dump: CubeDump, audit: AuditRecord) -> None:
        with self._tx() as c:
            try:
                self._load_rows(c, dump)
            except sqlite3.IntegrityError as exc:
                raise Conflict(f"the imported cube clashes with existing data: {exc}") from None
            self._audit(c, audit)

    def _load_rows(self, c: sqlite3.Connection, dump: CubeDump) -> None:
        self._insert_cube(c, dump.cube)
        c.executemany(
            "INSERT INTO grants(cube_id, user_id, access, granted_by, granted_at) "
            "VALUES (?,?,?,?,?)",
            [
                (g.cube_id, g.user_id, g.access, g.granted_by, epoch(g.granted_at))
                for g in dump.grants
            ],
        )
        c.executemany(
            f"INSERT INTO items({_ITEM_COLUMNS}) VALUES ({_ITEM_MARKS})",
            [tuple(item_values(it).values()) for it in dump.items],
        )
        for v in dump.versions:
            self._insert_version(c, v)
        for t in dump.transitions:
            self._insert_transition(c, t)
        for it, vec in zip(dump.items, dump.vectors, strict=True):
            if it.state != "deleted":
                self._put_vector(c, it.id, it.cube_id, vec)
        for a in dump.artifacts:
            self._insert_artifact(c, a)

    def stats(self, scope: Scope) -> dict[str, Any]:
        clause, params = _compile_scope(scope, None)
        c = self._conn()
        by_state = dict(
            c.execute(
                f"SELECT state, count(*) FROM items WHERE {clause} GROUP BY state", params
            ).fetchall()
        )
        by_kind = dict(
            c.execute(
                f"SELECT kind, count(*) FROM items WHERE {clause} GROUP BY kind", params
            ).fetchall()
        )
        versions = c.execute(
            "SELECT count(*) FROM item_versions WHERE item_id IN "
            f"(SELECT id FROM items WHERE {clause})",
            params,
        ).fetchone()[0]
        return {
            "backend": "sqlite",
            "path": str(self.path),
            "items": sum(by_state.values()),
            "by_state": by_state,
            "by_kind": by_kind,
            "versions": versions,
            "file_bytes": self.path.stat().st_size if self.path.exists() else 0,
        }


# ---------------------------------------------------------------------------- SQL compilation


def _compile_scope(scope: Scope, where: Node | None) -> tuple[str, list[Any]]:
    return compile_scope(
        scope,
        where,
        _compile_cond,
        mark="?",
        one_of=lambda column, values: (f"{column} IN ({_marks(len(values))})", list(values)),
    )


def _compile_cond(c: Cond) -> tuple[str, list[Any]]:
    if c.type == "tags":
        member = "EXISTS (SELECT 1 FROM json_each(items.tags) WHERE json_each.value = ?)"
        if c.op == "$contains":
            return member, [c.value]
        if c.op == "$any":
            return (
                f"EXISTS (SELECT 1 FROM json_each(items.tags) WHERE json_each.value IN "
                f"({_marks(len(c.value))}))",
                list(c.value),
            )
        return "(" + " AND ".join([member] * len(c.value)) + ")", list(c.value)  # $all
    if c.type == "json":
        return _compile_json(c)
    expr = "items." + TIME_COLUMNS.get(c.field, c.field)  # field names are whitelisted
    if c.op == "$exists":
        return f"({expr} IS {'NOT ' if c.value else ''}NULL)", []
    if c.op == "$ne":
        return f"({expr} IS NULL OR {expr} != ?)", [c.value]
    if c.op == "$in":
        return f"({expr} IN ({_marks(len(c.value))}))", list(c.value)
    if c.op == "$nin":
        return f"({expr} IS NULL OR {expr} NOT IN ({_marks(len(c.value))}))", list(c.value)
    return f"({expr} {SQL_OPS[c.op]} ?)", [c.value]


# JSON types (json_type) a filter value of each Python type matches: like with like only.
_JSON_TYPES = {bool: "('true','false')", int: "('integer','real')", float: "('integer','real')",
               str: "('text')"}  # fmt: skip


def _compile_json(c: Cond) -> tuple[str, list[Any]]:
    """User metadata: ``null`` and a missing key both count as "no value"; values compare
    only with values of their JSON type (``true`` is not ``1``), as on PostgreSQL."""
    path = "$." + ".".join(f'"{k}"' for k in c.path)  # keys are validated [A-Za-z0-9_-]
    kind = "json_type(items.metadata, ?)"
    if c.op == "$exists":
        return f"({kind} IS {'NOT ' if c.value else ''}NULL)", [path]
    absent = f"coalesce({kind} = 'null', 1)"
    if c.op in ("$gt", "$gte", "$lt", "$lte"):
        if c.value is None:
            return "0", []
        types = _JSON_TYPES[float if isinstance(c.value, int | float) else type(c.value)]
        return (
            f"coalesce({kind} IN {types} AND json_extract(items.metadata, ?) {SQL_OPS[c.op]} ?, 0)",
            [path, path, c.value],
        )
    values = c.value if c.op in ("$in", "$nin") else (c.value,)
    parts: list[str] = []
    params: list[Any] = []
    for value in values:
        if value is None:
            parts.append(absent)
            params.append(path)
        else:
            parts.append(
                f"coalesce({kind} IN {_JSON_TYPES[type(value)]} "
                "AND json_extract(items.metadata, ?) = ?, 0)"
            )
            params += [path, path, value]
    hit = "(" + " OR ".join(parts) + ")"
    return (hit if c.op in ("$eq", "$in") else f"(NOT {hit})"), params


def _split_sql(script: str) -> list[str]:
    """Split a migration script into statements (triggers contain ';' inside BEGIN..END)."""
    statements, buf = [], []
    for line in script.strip().splitlines():
        buf.append(line)
        joined = "\n".join(buf).strip()
        if joined.endswith(";") and (
            not joined.upper().startswith("CREATE TRIGGER") or joined.upper().endswith("END;")
        ):
            statements.append(joined)
            buf = []
    if "".join(buf).strip():
        statements.append("\n".join(buf))
    return statements
