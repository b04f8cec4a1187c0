"""The PostgreSQL store: the same engine for many processes and many users at once.

psycopg 3 with a connection pool; pgvector for the dense leg (HNSW over cosine distance,
``hnsw.iterative_scan`` so a selective filter still yields k rows), a generated
``tsvector`` with GIN for the full-text leg, both fused by reciprocal rank inside one SQL
statement (:mod:`.pg_sql`). Writes are one transaction per call, batched (``executemany``
runs in pipeline mode; side tables go by ``COPY``), ordered by their unique keys so
concurrent writers cannot deadlock, and retried on the rare serialization failure.

Only transaction-scoped state is used (``SET LOCAL``, ``pg_advisory_xact_lock``), so
the store also works behind PgBouncer in transaction mode (see ``docs/postgres.md``).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import numpy as np
import psycopg
from pgvector.psycopg import register_vector
from psycopg import errors as pg_errors
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool, PoolTimeout

from ..core.cube import Artifact, MemCube
from ..core.errors import BackendUnavailable, Conflict, NotFound
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
from . import pg_schema
from .base import (
    READDED_BY_KEY,
    CubeDump,
    Scope,
    SearchRequest,
    content_clash,
    keyed_readd,
    stale_version,
)
from .pg_sql import (
    ITEM_SELECT,
    LexemeStats,
    TextPlan,
    admitted_vectors_sql,
    compile_scope,
    plan_text,
    search_sql,
)
from .rows import (
    ITEM_COLUMNS,
    REWRITTEN_COLUMNS,
    artifact_from_row,
    audit_from_row,
    cube_from_row,
    dump_json,
    grant_from_row,
    item_from_row,
    item_values,
    transition_from_row,
    user_from_row,
    version_from_row,
    version_snapshot,
)
from .search import text_terms
from .sqlfilter import equalities

log = logging.getLogger(__name__)
T = TypeVar("T")
Conn = psycopg.Connection[dict[str, Any]]

# SQL casts for item columns whose Python value is text (JSON) or a list.
_CASTS = {"tags": "::text[]", "metadata": "::json", "provenance": "::json"}
_ITEM_INSERT = (
    f"INSERT INTO items (seq, {', '.join(ITEM_COLUMNS)}) VALUES "
    f"(%s, {', '.join('%s' + _CASTS.get(c, '') for c in ITEM_COLUMNS)})"
)
_ON_CONTENT = "ON CONFLICT (cube_id, content_hash) WHERE key IS NULL AND state <> 'deleted'"
_ON_KEY = "ON CONFLICT (cube_id, key) WHERE key IS NOT NULL AND state <> 'deleted'"
_ORDERS = {
    "created": "items.created_at DESC, items.seq DESC",
    "created_asc": "items.created_at ASC, items.seq ASC",
    "event": "items.event_ts DESC NULLS LAST, items.seq DESC",
    "event_asc": "items.event_ts ASC NULLS FIRST, items.seq ASC",
    "accessed": "items.access_count DESC, items.seq DESC",
}
_RETRIES = 6  # attempts for a write that hit a deadlock or serialization failure
_TRANSIENT = (pg_errors.DeadlockDetected, pg_errors.SerializationFailure)
_STATS_TTL_S = 60.0  # how long lexeme frequencies are reused before re-reading pg_stats
_LEXEME_CACHE = 50_000


def _identity(value: datetime | None) -> datetime | None:
    return value


def redact(url: str) -> str:
    """The URL without its password (what ``store.url`` shows and errors quote)."""
    parts = urlsplit(url)
    if not parts.password:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def _pg_item(item: MemoryItem) -> dict[str, Any]:
    values = item_values(item, time=_identity)
    values["tags"] = list(item.tags)
    return values


def _pairs(rows: Iterable[dict[str, Any]], a: str = "cube_id", b: str = "id") -> list[list[str]]:
    """Two parallel arrays, for ``(x, y) IN (SELECT unnest(%s), unnest(%s))``."""
    firsts, seconds = [], []
    for r in rows:
        firsts.append(r[a])
        seconds.append(r[b])
    return [firsts, seconds]


class PostgresStore:
    """A :class:`~memos_integrations.storage.base.Store` on a PostgreSQL database.

    ``url`` is a libpq URL or conninfo string. ``prepare_threshold`` is psycopg's: set it to
    ``None`` behind PgBouncer < 1.21 in transaction mode (no server-side prepared statements).
    ``text_budget`` bounds the rows the full-text leg ranks (see :func:`.pg_sql.plan_text`);
    ``bulk_min`` is the load size from which :meth:`bulk_load` rebuilds the vector index at
    the end instead of maintaining it row by row.
    """

    def __init__(
        self,
        url: str,
        *,
        pool_size: int = 10,
        prepare_threshold: int | None = 5,
        text_budget: int = 5_000,
        bulk_min: int = 10_000,
        index_build_memory: str = "1GB",
        connect_timeout: float = 30.0,
        on_close: Callable[[], None] | None = None,
    ) -> None:
        self.url = redact(url)
        self._text_budget = text_budget
        self._bulk_min = bulk_min
        self._index_memory = index_build_memory
        self._timeout = connect_timeout
        self._on_close = on_close
        self._dim: int | None = None
        self._lexemes: OrderedDict[str, tuple[str, ...]] = OrderedDict()
        self._stats: tuple[float, LexemeStats | None] = (0.0, None)
        self._cache_lock = threading.Lock()
        kwargs: dict[str, Any] = {
            "autocommit": True,
            "row_factory": dict_row,
            "prepare_threshold": prepare_threshold,
        }
        try:  # migrate on a plain connection: the pool's configure needs the vector type
            with psycopg.connect(url, connect_timeout=int(connect_timeout), **kwargs) as conn:
                pg_schema.migrate(conn)
                self._dim = pg_schema.vector_dim(conn)
                if pg_schema.vector_index_state(conn) == "invalid":  # an interrupted build
                    conn.execute(f"DROP INDEX IF EXISTS {pg_schema.VECTOR_INDEX}")
                self._pgvector = conn.execute(
                    "SELECT extversion FROM pg_extension WHERE extname = 'vector'"
                ).fetchone()["extversion"]
        except psycopg.OperationalError as exc:
            raise BackendUnavailable(
                f"cannot connect to PostgreSQL at {self.url}: {str(exc).strip()}; check the "
                "URL and that the server runs, or use MemOS.open_embedded_postgres(path)"
            ) from None
        self._pool = ConnectionPool(
            url,
            min_size=1,
            max_size=pool_size,
            kwargs=kwargs,
            configure=register_vector,
            timeout=connect_timeout,
            name="memos",
            open=True,
        )

    # ------------------------------------------------------------------ connections

    @contextlib.contextmanager
    def _conn(self) -> Iterator[Conn]:
        try:
            with self._pool.connection() as conn:
                yield conn
        except PoolTimeout:
            raise BackendUnavailable(
                f"no PostgreSQL connection from {self.url} within {self._timeout:.0f}s; the "
                "server is down or every pooled connection is busy (raise pool_size)"
            ) from None
        except psycopg.OperationalError as exc:
            raise BackendUnavailable(f"PostgreSQL at {self.url} failed: {exc}") from None

    @contextlib.contextmanager
    def connection(self) -> Iterator[Conn]:
        """A pooled connection (autocommit, dict rows) for your own SQL: reports,
        maintenance, checks. The tables are described in ``docs/postgres.md``."""
        with self._conn() as conn:
            yield conn

    def _read(self, fn: Callable[[Conn], T]) -> T:
        with self._conn() as conn:
            return fn(conn)

    def _write(self, fn: Callable[[Conn], T]) -> T:
        """Run ``fn`` in one transaction; retried whole on a deadlock or serialization failure
        (every write of this store is safe to repeat: it either committed or left nothing)."""
        for attempt in range(_RETRIES):
            try:
                with self._conn() as conn, conn.transaction():
                    return fn(conn)
            except _TRANSIENT:
                if attempt == _RETRIES - 1:
                    raise Conflict(
                        "concurrent writes kept colliding on the same rows; retry the call"
                    ) from None
                time.sleep(0.01 * 2**attempt)
        raise AssertionError("unreachable")

    def close(self) -> None:
        self._pool.close()
        if self._on_close is not None:
            self._on_close()
            self._on_close = None

    # ------------------------------------------------------------------ meta

    def get_meta(self, key: str) -> str | None:
        row = self._read(
            lambda c: c.execute("SELECT value FROM meta WHERE key = %s", (key,)).fetchone()
        )
        return row["value"] if row else None

    def set_meta(self, key: str, value: str) -> None:
        self._write(
            lambda c: c.execute(
                "INSERT INTO meta (key, value) VALUES (%s, %s) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (key, value),
            )
        )

    # ------------------------------------------------------------------ audit

    @staticmethod
    def _audit(c: Conn, r: AuditRecord) -> None:
        c.execute(
            "INSERT INTO audit (at, actor, action, target, cube_id, detail) "
            "VALUES (%s, %s, %s, %s, %s, %s::jsonb)",
            (r.at, r.actor, r.action, r.target, r.cube_id, dump_json(r.detail)),
        )

    def add_audit(self, record: AuditRecord) -> None:
        self._write(lambda c: self._audit(c, record))

    def query_audit(
        self,
        *,
        actor: str | None = None,
        action: str | None = None,
        cube_id: str | None = None,
        since: datetime | None = None,
        limit: int = 100,
    ) -> list[AuditRecord]:
        sql, params = equalities((("actor", actor), ("action", action), ("cube_id", cube_id)), "%s")
        if since is not None:
            sql, params = f"{sql} AND at >= %s", [*params, since]
        rows = self._read(
            lambda c: c.execute(
                f"SELECT * FROM audit WHERE {sql} ORDER BY id DESC LIMIT %s", (*params, limit)
            ).fetchall()
        )
        return [audit_from_row(r) for r in rows]

    # ------------------------------------------------------------------ users, cubes, grants

    def put_user(self, user: User, audit: AuditRecord) -> None:
        def tx(c: Conn) -> None:
            try:
                with c.transaction():
                    c.execute(
                        "INSERT INTO users (id, role, name, created_at) VALUES (%s, %s, %s, %s)",
                        (user.id, user.role, user.name, user.created_at),
                    )
            except pg_errors.UniqueViolation:
                raise Conflict(f"user {user.id!r} already exists") from None
            self._audit(c, audit)

        self._write(tx)

    def get_user(self, user_id: str) -> User | None:
        row = self._read(
            lambda c: c.execute("SELECT * FROM users WHERE id = %s", (user_id,)).fetchone()
        )
        return user_from_row(row) if row else None

    def list_users(self) -> list[User]:
        rows = self._read(lambda c: c.execute("SELECT * FROM users ORDER BY id").fetchall())
        return [user_from_row(r) for r in rows]

    def put_cube(self, cube: MemCube, audit: AuditRecord) -> None:
        def tx(c: Conn) -> None:
            self._insert_cube(c, cube)
            self._audit(c, audit)

        self._write(tx)

    @staticmethod
    def _insert_cube(c: Conn, cube: MemCube) -> None:
        try:
            with c.transaction():
                c.execute(
                    "INSERT INTO cubes (id, name, owner, description, metadata, created_at) "
                    "VALUES (%s, %s, %s, %s, %s::json, %s)",
                    (
                        cube.id,
                        cube.name,
                        cube.owner,
                        cube.description,
                        dump_json(cube.metadata),
                        cube.created_at,
                    ),
                )
        except pg_errors.UniqueViolation:
            raise Conflict(f"cube {cube.id!r} already exists") from None
        except pg_errors.ForeignKeyViolation:
            raise NotFound(f"unknown user {cube.owner!r}; create it first") from None

    def get_cube(self, cube_id: str) -> MemCube | None:
        row = self._read(
            lambda c: c.execute("SELECT * FROM cubes WHERE id = %s", (cube_id,)).fetchone()
        )
        return cube_from_row(row) if row else None

    def list_cubes(self, owner: str | None = None) -> list[MemCube]:
        def q(c: Conn) -> list[dict[str, Any]]:
            if owner is None:
                return c.execute("SELECT * FROM cubes ORDER BY created_at, id").fetchall()
            return c.execute(
                "SELECT * FROM cubes WHERE owner = %s ORDER BY created_at, id", (owner,)
            ).fetchall()

        return [cube_from_row(r) for r in self._read(q)]

    def set_grant(self, grant: Grant, audit: AuditRecord) -> None:
        def tx(c: Conn) -> None:
            c.execute(
                "INSERT INTO grants (cube_id, user_id, access, granted_by, granted_at) "
                "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (cube_id, user_id) DO UPDATE SET "
                "access = excluded.access, granted_by = excluded.granted_by, "
                "granted_at = excluded.granted_at",
                (grant.cube_id, grant.user_id, grant.access, grant.granted_by, grant.granted_at),
            )
            self._audit(c, audit)

        self._write(tx)

    def remove_grant(self, cube_id: str, user_id: str, audit: AuditRecord) -> bool:
        def tx(c: Conn) -> bool:
            cur = c.execute(
                "DELETE FROM grants WHERE cube_id = %s AND user_id = %s", (cube_id, user_id)
            )
            self._audit(c, audit)
            return cur.rowcount > 0

        return self._write(tx)

    def list_grants(self, cube_id: str | None = None, user_id: str | None = None) -> list[Grant]:
        sql, params = equalities((("cube_id", cube_id), ("user_id", user_id)), "%s")
        rows = self._read(
            lambda c: c.execute(
                f"SELECT * FROM grants WHERE {sql} ORDER BY cube_id, user_id", params
            ).fetchall()
        )
        return [grant_from_row(r) for r in rows]

    # ------------------------------------------------------------------ vectors and the index

    def _ensure_dim(self, dim: int) -> None:
        if self._dim != dim:
            with self._conn() as conn:
                pg_schema.ensure_vector_column(conn, dim)
            self._dim = dim

    @staticmethod
    def _copy(c: Conn, table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
        """Many rows into one table by COPY (table and column names are this module's)."""
        with c.cursor() as cur, cur.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as cp:
            for row in rows:
                cp.write_row(row)

    def _put_vectors(self, c: Conn, rows: Sequence[tuple[str, str, np.ndarray]]) -> None:
        """(cube_id, item_id, vector) rows; an existing vector of the item is replaced."""
        if not rows:
            return
        if len(rows) == 1:
            c.execute(
                "INSERT INTO item_vectors (cube_id, item_id, embedding) VALUES (%s, %s, %b) "
                "ON CONFLICT (cube_id, item_id) DO UPDATE SET embedding = excluded.embedding",
                rows[0],
            )
            return
        ids = _pairs({"cube_id": r[0], "id": r[1]} for r in rows)
        c.execute(
            "DELETE FROM item_vectors WHERE (cube_id, item_id) IN "
            "(SELECT unnest(%s::text[]), unnest(%s::text[]))",
            ids,
        )
        self._copy(c, "item_vectors", ("cube_id", "item_id", "embedding"), rows)

    @contextlib.contextmanager
    def bulk_load(self, expected: int) -> Iterator[None]:
        """Drop the HNSW index for a load at least as large as what is indexed, and build
        it once at the end: maintaining the graph row by row is the cost of a bulk load
        (~500 rows/s into an indexed table vs one build at ~3,000 rows/s). Searches stay
        exact meanwhile. A process that dies mid-load leaves the index out; the next bulk
        load or :meth:`ensure_vector_index` builds it."""
        dropped = False
        if expected >= self._bulk_min:
            with self._conn() as c:
                indexed = c.execute("SELECT count(*) AS n FROM item_vectors").fetchone()["n"]
                if expected >= indexed and pg_schema.vector_index_state(c) == "hnsw":
                    c.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {pg_schema.VECTOR_INDEX}")
                    dropped = True
        try:
            yield
        finally:
            if dropped:
                self.ensure_vector_index()

    def ensure_vector_index(self) -> str:
        """Build the HNSW index if it is missing (concurrently: writers are not blocked);
        returns its state. Also refreshes planner statistics after a bulk load."""
        with self._conn() as c:
            dim = pg_schema.vector_dim(c)
            if dim is not None and dim <= pg_schema.HNSW_MAX_DIM:
                state = pg_schema.vector_index_state(c)
                if state == "invalid":
                    c.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {pg_schema.VECTOR_INDEX}")
                if state != "hnsw":
                    c.execute(
                        "SELECT set_config('maintenance_work_mem', %s, false)",
                        (self._index_memory,),
                    )
                    try:
                        c.execute(pg_schema.index_ddl(concurrently=True))
                    finally:
                        c.execute("RESET maintenance_work_mem")
            c.execute("ANALYZE items")
            c.execute("ANALYZE item_vectors")
            self._stats = (0.0, None)
            return pg_schema.vector_index_state(c)

    # ------------------------------------------------------------------ items: writes

    @staticmethod
    def _insert_versions(c: Conn, versions: Sequence[tuple[str, ItemVersion]]) -> None:
        """(cube_id, version) pairs."""
        PostgresStore._copy(
            c,
            "item_versions",
            ("cube_id", "item_id", "version", "change", "changed_by", "changed_at", "snapshot"),
            (
                (cube, v.item_id, v.version, v.change, v.changed_by, v.changed_at,
                 version_snapshot(v))
                for cube, v in versions
            ),
        )  # fmt: skip

    @staticmethod
    def _insert_transitions(c: Conn, transitions: Sequence[tuple[str, Transition]]) -> None:
        """(cube_id, transition) pairs."""
        PostgresStore._copy(
            c,
            "transitions",
            ("cube_id", "item_id", "from_state", "to_state", '"by"', "reason", "at"),
            ((cube, t.item_id, t.from_state, t.to_state, t.by, t.reason, t.at)
             for cube, t in transitions),
        )  # fmt: skip

    def add_items(
        self, items: Sequence[MemoryItem], vectors: np.ndarray, audit: AuditRecord
    ) -> list[tuple[str, bool]]:
        if len(items):
            self._ensure_dim(int(np.asarray(vectors).shape[1]))

        def tx(c: Conn) -> list[tuple[str, bool]]:
            out: list[tuple[str, bool] | None] = [None] * len(items)
            updated: list[str] = []
            new: list[int] = []  # positions of items to insert, keyed ones first
            # a fixed order of unique keys in every transaction: concurrent adds cannot
            # wait on each other in a cycle
            order = sorted(
                range(len(items)),
                key=lambda i: (
                    items[i].key is None,
                    items[i].cube_id,
                    items[i].key or items[i].content_hash,
                ),
            )
            for i in order:
                item = items[i]
                if item.key is not None:
                    found = self._readd_keyed(c, item, vectors[i])
                    if found is not None:
                        out[i] = (found[0], False)
                        if found[1]:
                            updated.append(found[0])
                        continue
                new.append(i)
            # rows go in key order, but ``seq`` keeps the caller's order (list and export
            # order ties on created_at by it)
            seqs = dict(zip(sorted(new), self._next_seqs(c, len(new)), strict=True))
            created = self._insert_new(c, [(seqs[i], items[i]) for i in new])
            lost = [i for i in new if items[i].id not in created]
            existing = self._existing_ids(c, [items[i] for i in lost if items[i].key is None])
            for i in new:
                item = items[i]
                if item.id in created:
                    out[i] = (item.id, True)
                elif item.key is None:  # the same content is live: idempotent
                    out[i] = (existing[(item.cube_id, item.content_hash)], False)
                else:  # another writer took the key meanwhile: this is a re-add after all
                    found = self._readd_keyed(c, item, vectors[i])
                    if found is None:
                        raise Conflict(f"key {item.key!r} is being written concurrently; retry")
                    out[i] = (found[0], False)
                    if found[1]:
                        updated.append(found[0])
            made = [i for i in new if items[i].id in created]
            self._insert_versions(
                c, [(items[i].cube_id, ItemVersion.of(items[i], "create", items[i].owner))
                    for i in made]
            )  # fmt: skip
            self._insert_transitions(
                c,
                [(items[i].cube_id, Transition(items[i].id, None, items[i].state,
                                               items[i].owner, "created", items[i].created_at))
                 for i in made],
            )  # fmt: skip
            self._put_vectors(c, [(items[i].cube_id, items[i].id, vectors[i]) for i in made])
            done = [o for o in out if o is not None]
            ids = [items[i].id for i in made]
            self._audit(
                c,
                audit.with_detail(
                    created=len(ids),
                    updated=len(updated),
                    existing=len(done) - len(ids) - len(updated),
                    ids=[*ids, *updated][:100],
                ),
            )
            return done

        return self._write(tx)

    @staticmethod
    def _next_seqs(c: Conn, n: int) -> list[int]:
        if not n:
            return []
        return [
            r["s"]
            for r in c.execute(
                "SELECT nextval(pg_get_serial_sequence('items', 'seq')) AS s "
                "FROM generate_series(1, %s) ORDER BY 1",
                (n,),
            )
        ]

    @staticmethod
    def _insert_new(c: Conn, items: Sequence[tuple[int, MemoryItem]]) -> set[str]:
        """Insert (seq, item) pairs whose key or content is not live yet; returns the ids
        inserted."""
        if not items:
            return set()
        created: set[str] = set()
        try:
            with c.transaction(), c.cursor() as cur:
                keyed = [(q, *_pg_item(it).values()) for q, it in items if it.key is not None]
                plain = [(q, *_pg_item(it).values()) for q, it in items if it.key is None]
                for batch, target in ((keyed, _ON_KEY), (plain, _ON_CONTENT)):
                    if not batch:
                        continue
                    sql = f"{_ITEM_INSERT} {target} DO NOTHING RETURNING id"
                    cur.executemany(sql, batch, returning=True)  # pipelined
                    while True:
                        created.update(r["id"] for r in cur.fetchall())
                        if not cur.nextset():
                            break
        except pg_errors.UniqueViolation as exc:
            raise Conflict(
                f"an item with one of these ids already exists ({exc.diag.message_detail})"
            ) from None
        return created

    @staticmethod
    def _existing_ids(c: Conn, items: Sequence[MemoryItem]) -> dict[tuple[str, str], str]:
        """The live unkeyed items holding these items' content, by (cube, content hash)."""
        if not items:
            return {}
        rows = c.execute(
            "SELECT id, cube_id, content_hash FROM items WHERE key IS NULL "
            "AND state <> 'deleted' AND (cube_id, content_hash) IN "
            "(SELECT unnest(%s::text[]), unnest(%s::text[]))",
            ([it.cube_id for it in items], [it.content_hash for it in items]),
        ).fetchall()
        return {(r["cube_id"], r["content_hash"]): r["id"] for r in rows}

    def _readd_keyed(
        self, c: Conn, draft: MemoryItem, vector: np.ndarray
    ) -> tuple[str, bool] | None:
        """A keyed add whose key is live: (its id, whether a new version was written).

        None when the key is free, so the draft is inserted as a new item.
        """
        row = c.execute(
            f"SELECT {ITEM_SELECT} FROM items WHERE cube_id = %s AND key = %s "
            "AND state <> 'deleted' FOR UPDATE",
            (draft.cube_id, draft.key),
        ).fetchone()
        if row is None:
            return None
        current = item_from_row(row)
        new = keyed_readd(current, draft)
        if new is None:
            return current.id, False
        self._write_row(c, new, current.version)
        self._insert_versions(
            c, [(new.cube_id, ItemVersion.of(new, "update", draft.owner, READDED_BY_KEY))]
        )
        self._put_vectors(c, [(new.cube_id, new.id, vector)])
        if current.state not in SERVED_STATES:
            self._move(c, [current.id], (current.state,), "activated", draft.owner, READDED_BY_KEY)
        return current.id, True

    @staticmethod
    def _write_row(c: Conn, item: MemoryItem, expected_version: int) -> None:
        """Overwrite an item's content columns, if it is still at ``expected_version``."""
        values = _pg_item(item)
        assignments = ", ".join(f"{col} = %s{_CASTS.get(col, '')}" for col in REWRITTEN_COLUMNS)
        try:
            with c.transaction():
                cur = c.execute(
                    f"UPDATE items SET {assignments} WHERE id = %s AND version = %s",
                    (*(values[col] for col in REWRITTEN_COLUMNS), item.id, expected_version),
                )
        except pg_errors.UniqueViolation:
            raise content_clash() from None
        if cur.rowcount != 1:
            raise stale_version(item.id, expected_version)

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
        if vector is not None:
            self._ensure_dim(int(np.asarray(vector).shape[-1]))

        def tx(c: Conn) -> None:
            self._write_row(c, item, expected_version)
            version = ItemVersion.of(item, change, by, audit.detail.get("note"))
            self._insert_versions(c, [(item.cube_id, version)])
            if vector is not None:
                self._put_vectors(c, [(item.cube_id, item.id, vector)])
            self._audit(c, audit)

        self._write(tx)

    def _move(
        self,
        c: Conn,
        ids: Sequence[str],
        from_states: Sequence[str],
        to_state: str,
        by: str | None,
        reason: str | None,
    ) -> list[str]:
        """Move the items among ``ids`` that are in ``from_states`` to ``to_state``, recording
        each transition; rows are locked in id order (no deadlocks between movers)."""
        now = datetime.now(UTC)
        rows = c.execute(
            "WITH old AS (SELECT cube_id, id, state FROM items "
            "WHERE id = ANY(%s) AND state = ANY(%s) ORDER BY id FOR UPDATE), "
            "moved AS (UPDATE items SET state = %s, updated_at = %s FROM old "
            "WHERE items.cube_id = old.cube_id AND items.id = old.id "
            "RETURNING items.cube_id, items.id, old.state AS from_state) "
            'INSERT INTO transitions (cube_id, item_id, from_state, to_state, "by", reason, at) '
            "SELECT cube_id, id, from_state, %s, %s, %s, %s FROM moved ORDER BY id "
            "RETURNING cube_id, item_id AS id",
            (list(ids), list(from_states), to_state, now, to_state, by, reason, now),
        ).fetchall()
        if to_state == "deleted" and rows:
            c.execute(
                "DELETE FROM item_vectors WHERE (cube_id, item_id) IN "
                "(SELECT unnest(%s::text[]), unnest(%s::text[]))",
                _pairs(rows),
            )
        moved = {r["id"] for r in rows}
        return [i for i in dict.fromkeys(ids) if i in moved]

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
        def tx(c: Conn) -> list[str]:
            changed = self._move(c, ids, from_states, to_state, by, reason)
            if audit is not None:
                self._audit(c, audit.with_detail(changed=changed))
            return changed

        return self._write(tx)

    def mark_served(self, ids: Sequence[str], at: datetime, by: str | None, reason: str) -> None:
        """Count an access on each item and activate the ``generated`` ones: one statement."""
        if not ids:
            return
        self._write(
            lambda c: c.execute(
                "WITH old AS (SELECT cube_id, id, state FROM items WHERE id = ANY(%s) "
                "ORDER BY id FOR UPDATE), "
                "served AS (UPDATE items SET access_count = items.access_count + 1, "
                "last_accessed_at = %s, state = CASE WHEN items.state = 'generated' "
                "THEN 'activated' ELSE items.state END FROM old "
                "WHERE items.cube_id = old.cube_id AND items.id = old.id "
                "RETURNING items.cube_id, items.id, old.state AS was) "
                "INSERT INTO transitions "
                '(cube_id, item_id, from_state, to_state, "by", reason, at) '
                "SELECT cube_id, id, 'generated', 'activated', %s, %s, %s FROM served "
                "WHERE was = 'generated' ORDER BY id",
                (list(ids), at, by, reason, at),
            )
        )

    # ------------------------------------------------------------------ items: reads

    def get_items(self, ids: Sequence[str]) -> list[MemoryItem]:
        if not ids:
            return []
        rows = self._read(
            lambda c: c.execute(
                f"SELECT {ITEM_SELECT} FROM items WHERE id = ANY(%s)", (list(ids),)
            ).fetchall()
        )
        found = {r["id"]: item_from_row(r) for r in rows}
        return [found[i] for i in ids if i in found]

    def list_items(
        self,
        scope: Scope,
        where: Any,
        *,
        limit: int,
        offset: int,
        order: str,
    ) -> list[MemoryItem]:
        clause, params = compile_scope(scope, where)
        rows = self._read(
            lambda c: c.execute(
                f"SELECT {ITEM_SELECT} FROM items WHERE {clause} ORDER BY {_ORDERS[order]} "
                "LIMIT %s OFFSET %s",
                (*params, limit, offset),
            ).fetchall()
        )
        return [item_from_row(r) for r in rows]

    def count_items(self, scope: Scope, where: Any) -> int:
        clause, params = compile_scope(scope, where)
        row = self._read(
            lambda c: c.execute(
                f"SELECT count(*) AS n FROM items WHERE {clause}", params
            ).fetchone()
        )
        return int(row["n"])

    def versions(self, item_id: str) -> list[ItemVersion]:
        rows = self._read(
            lambda c: c.execute(
                "SELECT * FROM item_versions WHERE item_id = %s ORDER BY version", (item_id,)
            ).fetchall()
        )
        return [version_from_row(r) for r in rows]

    def transitions(self, item_id: str) -> list[Transition]:
        rows = self._read(
            lambda c: c.execute(
                "SELECT * FROM transitions WHERE item_id = %s ORDER BY seq", (item_id,)
            ).fetchall()
        )
        return [transition_from_row(r) for r in rows]

    # ------------------------------------------------------------------ search

    def _lexemes_of(self, c: Conn, terms: Sequence[str]) -> list[str]:
        """The query words as the ``english`` configuration indexes them (stemmed, stopwords
        dropped); cached, since that mapping never changes."""
        with self._cache_lock:
            missing = [t for t in terms if t not in self._lexemes]
        if missing:
            rows = c.execute(
                "SELECT t, tsvector_to_array(to_tsvector('english', t)) AS lx "
                "FROM unnest(%s::text[]) t",
                (missing,),
            ).fetchall()
            with self._cache_lock:
                for r in rows:
                    self._lexemes[r["t"]] = tuple(r["lx"])
                while len(self._lexemes) > _LEXEME_CACHE:
                    self._lexemes.popitem(last=False)
        with self._cache_lock:
            return [lx for t in terms for lx in self._lexemes.get(t, ())]

    def _lexeme_stats(self, c: Conn) -> LexemeStats | None:
        """Lexeme frequencies from ANALYZE's statistics of ``items.tsv`` (re-read each minute)."""
        read_at, stats = self._stats
        if time.monotonic() - read_at < _STATS_TTL_S:
            return stats
        row = c.execute(
            "SELECT s.most_common_elems::text::text[] AS elems, "
            "s.most_common_elem_freqs AS freqs, k.reltuples AS rows FROM pg_class k "
            "JOIN pg_namespace n ON n.oid = k.relnamespace "
            "LEFT JOIN pg_stats s ON s.schemaname = n.nspname AND s.tablename = k.relname "
            "AND s.attname = 'tsv' WHERE k.oid = 'items'::regclass"
        ).fetchone()
        stats = None
        if row and row["elems"] and row["rows"] > 0:
            freqs = row["freqs"]  # element frequencies, then min, max and null frequency
            stats = LexemeStats(
                float(row["rows"]), dict(zip(row["elems"], freqs, strict=False)), freqs[-3]
            )
        self._stats = (time.monotonic(), stats)
        return stats

    def _text_plan(self, c: Conn, req: SearchRequest) -> TextPlan | None:
        if req.mode not in ("hybrid", "text") or not req.text:
            return None
        terms = text_terms(req.text)
        lexemes = self._lexemes_of(c, terms) if terms else []
        if not lexemes:
            return None
        return plan_text(lexemes, self._lexeme_stats(c), self._text_budget)

    def search(self, request: SearchRequest) -> list[SearchHit]:
        n = max(2 * request.k, 50)  # candidates per leg before fusion

        def run(c: Conn) -> list[dict[str, Any]]:
            text = self._text_plan(c, request)
            q = search_sql(request, text, n)
            with c.transaction():
                # iterative scans: an HNSW scan goes on until the filter admitted n rows
                c.execute(
                    "SELECT set_config('hnsw.iterative_scan', 'relaxed_order', true), "
                    "set_config('hnsw.ef_search', %s, true)",
                    (str(min(1000, max(40, n))),),
                )
                rows = c.execute(q.sql, q.params).fetchall()
                if q.dense:
                    found = rows[0]["_dense_n"] if rows else 0
                    if found < n:  # the index scan gave up early: are there more?
                        sql, params = admitted_vectors_sql(request, n)
                        if c.execute(sql, params).fetchone()["count"] > found:
                            exact = search_sql(request, text, n, exact_dense=True)
                            rows = c.execute(exact.sql, exact.params).fetchall()
            return rows

        rows = self._read(run)
        return [
            SearchHit(item_from_row(r), float(r["_score"]), r["_dense"], r["_text"]) for r in rows
        ]

    # ------------------------------------------------------------------ artifacts

    @staticmethod
    def _insert_artifact(c: Conn, a: Artifact) -> None:
        c.execute(
            "INSERT INTO artifacts (cube_id, id, kind, name, payload, fingerprint, sources, "
            "metadata, stale, created_at) VALUES (%s, %s, %s, %s, %s, %s::json, %s::json, "
            "%s::json, %s, %s) ON CONFLICT (cube_id, id) DO UPDATE SET kind = excluded.kind, "
            "name = excluded.name, payload = excluded.payload, "
            "fingerprint = excluded.fingerprint, sources = excluded.sources, "
            "metadata = excluded.metadata, stale = excluded.stale, "
            "created_at = excluded.created_at",
            (
                a.cube_id,
                a.id,
                a.kind,
                a.name,
                a.payload,
                dump_json(a.fingerprint),
                dump_json(a.sources),
                dump_json(a.metadata),
                a.stale,
                a.created_at,
            ),
        )

    def put_artifact(self, artifact: Artifact, audit: AuditRecord) -> None:
        def tx(c: Conn) -> None:
            try:
                with c.transaction():
                    self._insert_artifact(c, artifact)
            except pg_errors.UniqueViolation:
                raise Conflict(f"artifact {artifact.id!r} belongs to another cube") from None
            self._audit(c, audit)

        self._write(tx)

    def list_artifacts(self, cube_id: str, kind: str | None = None) -> list[Artifact]:
        sql, params = "SELECT * FROM artifacts WHERE cube_id = %s", [cube_id]
        if kind is not None:
            sql += " AND kind = %s"
            params.append(kind)
        rows = self._read(lambda c: c.execute(sql + " ORDER BY id", params).fetchall())
        return [artifact_from_row(r) for r in rows]

    # ------------------------------------------------------------------ governance

    def purge_user(self, user_id: str, audit: AuditRecord) -> dict[str, int]:
        """Hard-delete everything of a user in one transaction (GDPR erasure)."""

        def tx(c: Conn) -> dict[str, int]:
            cubes = [
                r["id"]
                for r in c.execute(
                    "SELECT id FROM cubes WHERE owner = %s ORDER BY id FOR UPDATE", (user_id,)
                )
            ]
            mine = "(i.owner = %s OR i.cube_id = ANY(%s))"
            counts: dict[str, int] = {}
            for table, column, key in (
                ("item_vectors", "item_id", "vectors"),
                ("item_versions", "item_id", "versions"),
                ("transitions", "item_id", "transitions"),
            ):
                counts[key] = c.execute(
                    f"DELETE FROM {table} t USING items i WHERE t.cube_id = i.cube_id "
                    f"AND t.{column} = i.id AND {mine}",
                    (user_id, cubes),
                ).rowcount
            counts["items"] = c.execute(
                f"DELETE FROM items i WHERE {mine}", (user_id, cubes)
            ).rowcount
            counts["artifacts"] = c.execute(
                "DELETE FROM artifacts WHERE cube_id = ANY(%s)", (cubes,)
            ).rowcount
            counts["grants"] = c.execute(
                "DELETE FROM grants WHERE user_id = %s OR cube_id = ANY(%s)", (user_id, cubes)
            ).rowcount
            counts["cubes"] = c.execute("DELETE FROM cubes WHERE id = ANY(%s)", (cubes,)).rowcount
            counts["audit"] = c.execute("DELETE FROM audit WHERE actor = %s", (user_id,)).rowcount
            counts["users"] = c.execute("DELETE FROM users WHERE id = %s", (user_id,)).rowcount
            self._audit(c, audit.with_detail(**counts))
            return counts

        return self._write(tx)

    # ------------------------------------------------------------------ portability

    def dump_cube(self, cube_id: str) -> CubeDump:
        def read(c: Conn) -> CubeDump:
            c.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            row = c.execute("SELECT * FROM cubes WHERE id = %s", (cube_id,)).fetchone()
            if row is None:
                raise NotFound(f"cube {cube_id!r} does not exist")
            items = [
                item_from_row(r)
                for r in c.execute(
                    f"SELECT {ITEM_SELECT} FROM items WHERE cube_id = %s ORDER BY seq",
                    (cube_id,),
                )
            ]
            vecs = {
                r["item_id"]: r["embedding"].to_numpy()
                for r in c.execute(
                    "SELECT item_id, embedding FROM item_vectors WHERE cube_id = %s", (cube_id,)
                )
            }
            dim_row = c.execute("SELECT value FROM meta WHERE key = 'embedding_dim'").fetchone()
            vectors = np.zeros((len(items), int(dim_row["value"]) if dim_row else 0), np.float32)
            for n, it in enumerate(items):
                if it.id in vecs:
                    vectors[n] = vecs[it.id]
            versions = [
                version_from_row(r)
                for r in c.execute(
                    "SELECT v.* FROM item_versions v JOIN items i "
                    "ON i.cube_id = v.cube_id AND i.id = v.item_id "
                    "WHERE v.cube_id = %s ORDER BY i.seq, v.version",
                    (cube_id,),
                )
            ]
            transitions = [
                transition_from_row(r)
                for r in c.execute(
                    "SELECT * FROM transitions WHERE cube_id = %s ORDER BY seq", (cube_id,)
                )
            ]
            grants = [
                grant_from_row(r)
                for r in c.execute(
                    "SELECT * FROM grants WHERE cube_id = %s ORDER BY cube_id, user_id",
                    (cube_id,),
                )
            ]
            artifacts = [
                artifact_from_row(r)
                for r in c.execute(
                    "SELECT * FROM artifacts WHERE cube_id = %s ORDER BY id", (cube_id,)
                )
            ]
            return CubeDump(
                cube_from_row(row), grants, items, vectors, versions, transitions, artifacts
            )

        with self._conn() as conn, conn.transaction():
            return read(conn)

    def load_cube(self, dump: CubeDump, audit: AuditRecord) -> None:
        live = [(it, v) for it, v in zip(dump.items, dump.vectors, strict=True)
                if it.state != "deleted"]  # fmt: skip
        if live:
            self._ensure_dim(int(dump.vectors.shape[1]))
        cube_of = {it.id: it.cube_id for it in dump.items}

        def tx(c: Conn) -> None:
            self._insert_cube(c, dump.cube)
            try:
                with c.transaction():
                    self._load_rows(c, dump, live, cube_of)
            except (pg_errors.UniqueViolation, pg_errors.ForeignKeyViolation) as exc:
                raise Conflict(
                    f"the imported cube clashes with existing data: {exc.diag.message_detail}"
                ) from None
            self._audit(c, audit)

        self._write(tx)

    def _load_rows(
        self,
        c: Conn,
        dump: CubeDump,
        live: Sequence[tuple[MemoryItem, np.ndarray]],
        cube_of: dict[str, str],
    ) -> None:
        self._copy(
            c,
            "grants",
            ("cube_id", "user_id", "access", "granted_by", "granted_at"),
            ((g.cube_id, g.user_id, g.access, g.granted_by, g.granted_at) for g in dump.grants),
        )
        self._copy(c, "items", ITEM_COLUMNS, (tuple(_pg_item(it).values()) for it in dump.items))
        self._insert_versions(c, [(cube_of[v.item_id], v) for v in dump.versions])
        self._insert_transitions(c, [(cube_of[t.item_id], t) for t in dump.transitions])
        self._copy(
            c,
            "item_vectors",
            ("cube_id", "item_id", "embedding"),
            ((it.cube_id, it.id, np.asarray(vec, np.float32)) for it, vec in live),
        )
        for a in dump.artifacts:
            self._insert_artifact(c, a)

    def stats(self, scope: Scope) -> dict[str, Any]:
        clause, params = compile_scope(scope, None)

        def read(c: Conn) -> dict[str, Any]:
            by_state = {
                r["state"]: r["n"]
                for r in c.execute(
                    f"SELECT state, count(*) AS n FROM items WHERE {clause} GROUP BY state",
                    params,
                )
            }
            by_kind = {
                r["kind"]: r["n"]
                for r in c.execute(
                    f"SELECT kind, count(*) AS n FROM items WHERE {clause} GROUP BY kind", params
                )
            }
            versions = c.execute(
                "SELECT count(*) AS n FROM item_versions v JOIN items "
                f"ON items.cube_id = v.cube_id AND items.id = v.item_id WHERE {clause}",
                params,
            ).fetchone()["n"]
            size = c.execute(
                "SELECT sum(pg_total_relation_size(t::regclass)) AS b FROM unnest(%s::text[]) t",
                (["items", "item_vectors", "item_versions", "transitions", "audit", "artifacts"],),
            ).fetchone()["b"]
            return {
                "backend": "postgres",
                "url": self.url,
                "items": sum(by_state.values()),
                "by_state": by_state,
                "by_kind": by_kind,
                "versions": versions,
                "db_bytes": int(size or 0),
                "pgvector": self._pgvector,
                "vector_index": pg_schema.vector_index_state(c),
            }

        return self._read(read)
