"""The PostgreSQL store: the same engine for many processes and many users at once.

psycopg 3 with a connection pool; pgvector for the dense leg (HNSW over cosine distance,
``hnsw.iterative_scan`` so a selective filter still yields k rows), BM25 for the
full-text leg from ``item_terms`` postings that triggers keep (a generated ``tsvector``
with GIN when a filter asks for more than live items), both fused by reciprocal rank
inside one SQL statement (:mod:`.pg_sql`). Writes are one transaction per call,
batched (``executemany`` runs in pipeline mode; side tables go by ``COPY``), ordered by
their unique keys so concurrent writers cannot deadlock, and retried on the rare
serialization failure.

Only transaction-scoped state is used (``SET LOCAL``, ``pg_advisory_xact_lock``), so
the store also works behind PgBouncer in transaction mode (see ``docs/postgres.md``).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import numpy as np
import psycopg
from pgvector.psycopg import register_vector
from psycopg import errors as pg_errors
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool, PoolTimeout

from ..core.cube import Artifact, MemCube
from ..core.errors import BackendUnavailable, Conflict, InvalidInput, NotFound
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
from . import pg_items, pg_schema
from .base import AuditQuery, CubeDump, Scope, SearchRequest, Served, add_audit_detail
from .pg_indexer import BATCH, Indexer
from .pg_sql import (
    ITEM_SELECT,
    POSTINGS_SLACK,
    admitted_vectors_sql,
    compile_scope,
    search_sql,
    uses_postings,
)
from .pg_text import TextIndex
from .rows import (
    ITEM_COLUMNS,
    artifact_from_row,
    audit_from_row,
    cube_from_row,
    dump_json,
    grant_from_row,
    item_from_row,
    transition_from_row,
    user_from_row,
    version_from_row,
)
from .search import And, Cond
from .sqlfilter import compile_audit, equalities

T = TypeVar("T")
log = logging.getLogger(__name__)
Conn = psycopg.Connection[dict[str, Any]]

_ORDERS = {
    "created": "items.created_at DESC, items.seq DESC",
    "created_asc": "items.created_at ASC, items.seq ASC",
    "event": "items.event_ts DESC NULLS LAST, items.seq DESC",
    "event_asc": "items.event_ts ASC NULLS FIRST, items.seq ASC",
    "accessed": "items.access_count DESC, items.seq DESC",
}
_RETRIES = 6  # attempts for a write that hit a deadlock or serialization failure
_TRANSIENT = (pg_errors.DeadlockDetected, pg_errors.SerializationFailure)


def _plan_mode(request: SearchRequest, postings: bool) -> str:
    """Planning a search costs more than running it (~3 ms against ~2 at 100k rows): once
    psycopg has prepared the statement, a search over every cube with the engine's own
    filter runs its generic plan. A scope or filter keeps custom plans, whose row estimates
    choose between the vector index and an exact scan of a user's few rows (a generic plan
    cannot see how selective they are: 60 ms against 9 for one user's 1%)."""
    if request.scope.cube_ids is None and postings:  # postings: the engine's own filter
        return "force_generic_plan"
    return "auto"


def redact(url: str) -> str:
    """The URL without its password (what ``store.url`` shows and errors quote)."""
    parts = urlsplit(url)
    if not parts.password:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


class PostgresStore:
    """A :class:`~memos_integrations.storage.base.Store` on a PostgreSQL database.

    ``url`` is a libpq URL or conninfo string. ``prepare_threshold`` is psycopg's: set it to
    ``None`` behind PgBouncer < 1.21 in transaction mode (no server-side prepared statements).
    ``text_budget`` bounds the work of the full-text leg: the postings read per query word
    (``item_terms``, best first; see :func:`.pg_sql.search_sql`), or, when a filter sends
    the leg through the GIN index, the rows it ranks (see :func:`.pg_text.plan_text`);
    ``bulk_min`` is the load size from which :meth:`bulk_load` rebuilds the vector index at
    the end instead of maintaining it row by row. ``ef_search`` is the HNSW search breadth
    (pgvector's ``hnsw.ef_search``, at least the candidates a search ranks): raise it for
    recall, at some latency.
    New vectors are written staged (searched exactly) and join the HNSW graph in a background
    thread (:mod:`.pg_indexer`); ``index_in_background=False`` leaves them staged until
    :meth:`index_staged`, for a writer that indexes at a quiet hour.
    """

    def __init__(
        self,
        url: str,
        *,
        pool_size: int = 10,
        prepare_threshold: int | None = 5,
        text_budget: int = 2_000,
        bulk_min: int = 10_000,
        index_build_memory: str = "1GB",
        ef_search: int = 40,
        index_in_background: bool = True,
        connect_timeout: float = 30.0,
        on_close: Callable[[], None] | None = None,
    ) -> None:
        self.url = redact(url)
        self._bulk_min = bulk_min
        self._index_memory = index_build_memory
        if not 1 <= ef_search <= 1000:
            raise InvalidInput(f"ef_search must be between 1 and 1000, got {ef_search}")
        self._ef_search = ef_search
        self._timeout = connect_timeout
        self._on_close = on_close
        self._dim: int | None = None
        self._bulk_loads = 0  # bulk loads running in this process (see bulk_load)
        # seconds of the last bulk load's closing work: {"postings_s", "vector_index_s"}
        self.last_bulk_load: dict[str, float] = {}
        self._lock = threading.Lock()
        self._text = TextIndex(text_budget)
        kwargs: dict[str, Any] = {
            "autocommit": True,
            "row_factory": dict_row,
            "prepare_threshold": prepare_threshold,
        }
        try:  # migrate on a plain connection: the pool's configure needs the vector type
            with psycopg.connect(url, connect_timeout=int(connect_timeout), **kwargs) as conn:
                pg_schema.migrate(conn)
                self._dim = pg_schema.vector_dim(conn)
                self._pgvector = conn.execute(
                    "SELECT extversion FROM pg_extension WHERE extname = 'vector'"
                ).fetchone()["extversion"]
                staged = conn.execute(
                    "SELECT EXISTS (SELECT 1 FROM item_vectors WHERE NOT indexed) AS e"
                ).fetchone()["e"]
                if pg_schema.vector_index_predates_staging(conn):
                    log.warning(
                        "the HNSW index at %s predates staged vectors, so adds still insert "
                        "into it; run store.ensure_vector_index() once (concurrent, no "
                        "downtime) to rebuild it",
                        self.url,
                    )
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
        self._indexer = Indexer(self._index_batch) if index_in_background else None
        if staged:  # left by a process that stopped before indexing them
            self._staged()

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

    def _write(self, fn: Callable[[Conn], T], *, pipeline: bool = False) -> T:
        """Run ``fn`` in one transaction; retried whole on a deadlock or serialization failure
        (every write of this store is safe to repeat: it either committed or left nothing).

        ``pipeline`` queues statements and sends them together, BEGIN and COMMIT included,
        until one needs a result: fewer round trips for small writes.
        """
        for attempt in range(_RETRIES):
            try:
                with self._conn() as conn:
                    piped = conn.pipeline() if pipeline else contextlib.nullcontext()
                    with piped, conn.transaction():
                        return fn(conn)
            except _TRANSIENT:
                if attempt == _RETRIES - 1:
                    raise Conflict(
                        "concurrent writes kept colliding on the same rows; retry the call"
                    ) from None
                time.sleep(0.01 * 2**attempt)
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self._indexer is not None:
            self._indexer.close()
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

    def query_audit(self, query: AuditQuery) -> list[AuditRecord]:
        sql, params = compile_audit(
            query,
            mark="%s",
            time=lambda when: when,
            one_of=lambda column, values: (f"{column} = ANY(%s)", [list(values)]),
        )
        rows = self._read(
            lambda c: c.execute(
                f"SELECT * FROM audit WHERE {sql} ORDER BY id DESC LIMIT %s",
                (*params, query.limit),
            ).fetchall()
        )
        return [audit_from_row(r) for r in rows]

    # ------------------------------------------------------------------ users, cubes, grants

    def put_user(self, user: User, audit: AuditRecord) -> None:
        def tx(c: Conn) -> None:
            try:
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
            with self._conn() as conn:  # a bulk load in this process builds the index at its end
                pg_schema.ensure_vector_column(conn, dim, index=not self._bulk_loads)
            self._dim = dim

    @contextlib.contextmanager
    def bulk_load(self, expected: int) -> Iterator[None]:
        """Drop the HNSW index for a load at least as large as what is indexed, and build
        it once at the end: maintaining the graph row by row is the cost of a bulk load
        (~500 rows/s into an indexed table vs one build at ~3,000 rows/s). Searches stay
        exact meanwhile. The load's memories join the text leg's postings at its end, in
        one pass. A process that dies mid-load leaves the index and those postings out;
        the next bulk load or :meth:`ensure_vector_index` builds and fills them."""
        if expected < self._bulk_min:
            yield
            return
        with self._conn() as c:
            indexed = c.execute(  # the planner's estimate; a count only if never analysed
                "SELECT CASE WHEN reltuples >= 0 THEN reltuples::bigint "
                "ELSE (SELECT count(*) FROM item_vectors) END AS n "
                "FROM pg_class WHERE oid = 'item_vectors'::regclass"
            ).fetchone()["n"]
            if expected < indexed:  # upkeep is cheaper than rebuilding a larger index
                yield
                return
            if pg_schema.vector_index_state(c) == "hnsw":
                c.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {pg_schema.VECTOR_INDEX}")
            since = c.execute("SELECT coalesce(max(seq), 0) AS s FROM items").fetchone()["s"]
        with self._lock:
            self._bulk_loads += 1  # a first write meanwhile types the column, no index yet
        try:
            yield
        finally:
            with self._lock:
                self._bulk_loads -= 1
            start = time.perf_counter()
            self._fill_postings(since, rebuild=True)
            filled = time.perf_counter()
            self._build_vector_index()
            self.last_bulk_load = {
                "postings_s": filled - start,
                "vector_index_s": time.perf_counter() - filled,
            }

    def _fill_postings(self, since: int, *, rebuild: bool) -> None:
        """The postings of live items after ``since`` that have none: a bulk load's rows
        (its writes skip the trigger's row-by-row upkeep), with the postings' indexes
        rebuilt around them (``rebuild``: one sort each), or those a dead load left."""
        with self._conn() as c, c.transaction():
            if rebuild:
                c.execute("DROP INDEX item_terms_lexeme, item_terms_scope, item_terms_seq")
            c.execute(pg_schema.BACKFILL_TERMS, (since,))
            if rebuild:
                for ddl in pg_schema.TERMS_INDEXES:
                    c.execute(ddl)
        if rebuild:
            with self._conn() as c:  # index-only scans need the visibility map
                c.execute("VACUUM (ANALYZE) item_terms")

    def ensure_vector_index(self) -> str:
        """Build the HNSW index if it is missing or a build was interrupted (concurrently:
        writers are not blocked; a build running elsewhere is left alone), rebuild one that
        predates staged vectors as theirs (schema migration 3), and fill the postings a bulk
        load that died left out; returns the index state. Also refreshes planner statistics
        after a bulk load."""
        self._fill_postings(0, rebuild=False)
        return self._build_vector_index()

    def _staged(self) -> None:
        """Vectors were written staged: have the indexer take them into the graph."""
        if self._indexer is not None:
            self._indexer.poke()

    def _index_batch(self) -> int:
        with self._conn() as c:
            return c.execute(pg_schema.INDEX_STAGED, (BATCH,)).rowcount

    def index_staged(self, *, wait: float | None = None) -> int:
        """Take every staged vector into the HNSW graph now, in this thread (batches of
        :data:`~.pg_indexer.BATCH`, a transaction each); returns how many. ``wait`` first
        gives the background indexer that long to finish what it has started."""
        if wait is not None and self._indexer is not None:
            self._indexer.wait(wait)
        total = 0
        while (n := self._index_batch()) > 0:
            total += n
        return total

    def _build_vector_index(self) -> str:
        with self._conn() as c:
            dim = pg_schema.vector_dim(c)
            if dim is not None and dim <= pg_schema.HNSW_MAX_DIM:
                state = pg_schema.vector_index_state(c)
                # a graph of every vector (built before migration 3) is rebuilt without the
                # staged ones beside it, then swapped in: adds stop paying its inserts
                full = pg_schema.vector_index_predates_staging(c)
                if state in ("none", "invalid") or full:
                    name = pg_schema.VECTOR_INDEX + ("_partial" if full else "")
                    c.execute(
                        "SELECT set_config('maintenance_work_mem', %s, false)",
                        (self._index_memory,),
                    )
                    try:
                        # an interrupted build (invalid) or a dead try at the partial one
                        c.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {name}")
                        c.execute(pg_schema.index_ddl(concurrently=True, name=name))
                    finally:
                        c.execute("RESET maintenance_work_mem")
                    if full:
                        c.execute(f"DROP INDEX CONCURRENTLY {pg_schema.VECTOR_INDEX}")
                        c.execute(f"ALTER INDEX {name} RENAME TO {pg_schema.VECTOR_INDEX}")
            c.execute("ANALYZE items")
            c.execute("ANALYZE item_vectors")
            self._text.forget_stats()
            return pg_schema.vector_index_state(c)

    # ------------------------------------------------------------------ items: writes

    def add_items(
        self, items: Sequence[MemoryItem], vectors: np.ndarray, audit: AuditRecord
    ) -> list[tuple[str, bool]]:
        if len(items):
            self._ensure_dim(int(np.asarray(vectors).shape[1]))

        def tx(c: Conn) -> list[tuple[str, bool]]:
            if self._bulk_loads:  # postings come in one pass at the end (see bulk_load)
                c.execute("SELECT set_config('memos.bulk_load', 'on', true)")
            out, created, updated = pg_items.add(c, items, vectors)
            self._audit(c, add_audit_detail(audit, len(out), created, updated))
            return out

        # a small batch goes pipelined (a large one uses COPY, which cannot)
        out = self._write(tx, pipeline=len(items) < pg_items.COPY_MIN)
        if not self._bulk_loads:  # a bulk load's rows are indexed by its final build
            self._staged()
        return out

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
            pg_items.write_row(c, item, expected_version)
            version = ItemVersion.of(item, change, by, audit.detail.get("note"))
            pg_items.put_versions(c, [version], {item.id: item.cube_id})
            if vector is not None:
                pg_items.put_vectors(c, [(item.cube_id, item.id, vector)], replace=True)
            self._audit(c, audit)

        self._write(tx)
        if vector is not None:
            self._staged()

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
            changed = pg_items.move(c, ids, from_states, to_state, by, reason)
            if audit is not None:
                self._audit(c, audit.with_detail(changed=changed))
            return changed

        return self._write(tx)

    def mark_served(self, served: Sequence[Served]) -> None:
        """Count the accesses and activate the ``generated`` items: one transaction."""

        def tx(c: Conn) -> None:
            for event in served:  # one statement each, pipelined
                pg_items.mark_served(c, event.ids, event.at, event.by, event.reason)

        if served:
            self._write(tx, pipeline=True)

    def expire_due(
        self, scope: Scope, now: datetime, *, by: str | None, audit: AuditRecord
    ) -> list[str]:
        """One statement: lock, update and record the transitions of every due item."""
        where = And(
            (
                Cond("state", "text", "$in", tuple(SERVED_STATES)),
                Cond("expires_at", "time", "$lte", now.timestamp()),
            )
        )
        clause, params = compile_scope(scope, where)

        def tx(c: Conn) -> list[str]:
            expired = pg_items.move_where(c, clause, params, "expired", by, "ttl", now)
            self._audit(c, audit.with_detail(expired=len(expired), items=expired[:100]))
            return expired

        return self._write(tx)

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

    def search(self, request: SearchRequest) -> list[SearchHit]:
        n = request.depth

        def run(c: Conn) -> list[dict[str, Any]]:
            stats = self._text.statistics(c)  # also keeps planner statistics fresh
            wants_text = request.mode in ("hybrid", "text")
            text = self._text.plan(c, request.text, stats) if wants_text else None
            postings = uses_postings(request)
            per_word = max(self._text.budget, n + POSTINGS_SLACK)
            q = search_sql(request, text, n, postings=postings, per_word=per_word)
            # the settings and the query go in one round trip and one transaction: the
            # statements before the pipeline's Sync share an implicit one (no BEGIN/COMMIT)
            with c.pipeline():
                # iterative scans: an HNSW scan goes on until the filter admitted n rows
                c.execute(
                    "SELECT set_config('hnsw.iterative_scan', 'relaxed_order', true), "
                    "set_config('hnsw.ef_search', %s, true), "
                    "set_config('plan_cache_mode', %s, true)",
                    (str(min(1000, max(self._ef_search, n))), _plan_mode(request, postings)),
                )
                cur = c.execute(q.sql, q.params)
            rows = cur.fetchall()
            exact_dense = postings_short = False
            if q.dense:
                found = rows[0]["_dense_n"] if rows else 0
                if found < n:  # the index scan gave up early, or ran out: are there more?
                    sql, params = admitted_vectors_sql(request, n)
                    exact_dense = c.execute(sql, params).fetchone()["count"] > found
            if q.postings:  # the join dropped ranked rows and more were left unranked
                postings_short = not rows or (
                    rows[0]["_sparse_n"] < n and rows[0]["_terms_n"] >= n + POSTINGS_SLACK
                )
            if exact_dense or postings_short:
                again = search_sql(
                    request,
                    text,
                    n,
                    exact_dense=exact_dense,
                    postings=q.postings and not postings_short,
                    per_word=per_word,
                )
                rows = c.execute(again.sql, again.params).fetchall()
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

    def put_artifact(
        self, artifact: Artifact, audit: AuditRecord, *, replaces: Sequence[str] = ()
    ) -> None:
        def tx(c: Conn) -> None:
            if replaces:
                c.execute("DELETE FROM artifacts WHERE id = ANY(%s)", (list(replaces),))
            try:
                self._insert_artifact(c, artifact)
            except pg_errors.UniqueViolation:
                raise Conflict(f"artifact {artifact.id!r} belongs to another cube") from None
            self._audit(c, audit.with_detail(replaced=list(replaces)))

        self._write(tx)

    def list_artifacts(
        self, cube_id: str, kind: str | None = None, *, with_payload: bool = True
    ) -> list[Artifact]:
        payload = "payload" if with_payload else "''::bytea AS payload"
        sql = (
            f"SELECT id, cube_id, kind, name, {payload}, fingerprint, sources, metadata, stale, "
            "created_at FROM artifacts WHERE cube_id = %s"
        )
        params: list[Any] = [cube_id]
        if kind is not None:
            sql += " AND kind = %s"
            params.append(kind)
        rows = self._read(lambda c: c.execute(sql + " ORDER BY id", params).fetchall())
        return [artifact_from_row(r) for r in rows]

    def get_artifact(self, artifact_id: str) -> Artifact | None:
        row = self._read(
            lambda c: c.execute("SELECT * FROM artifacts WHERE id = %s", (artifact_id,)).fetchone()
        )
        return artifact_from_row(row) if row else None

    def touch_artifact(self, artifact_id: str, at: datetime) -> None:
        """Record a use (``metadata.used_at``), for least-recently-used eviction."""
        self._write(
            lambda c: c.execute(
                "UPDATE artifacts SET metadata = "
                "jsonb_set(metadata::jsonb, '{used_at}', to_jsonb(%s::text))::json WHERE id = %s",
                (at.isoformat(), artifact_id),
            ),
            pipeline=True,
        )

    def retire_artifacts(
        self, drop: Sequence[str], stale: Sequence[str], audit: AuditRecord
    ) -> None:
        def tx(c: Conn) -> None:
            c.execute("DELETE FROM artifacts WHERE id = ANY(%s)", (list(drop),))
            c.execute("UPDATE artifacts SET stale = true WHERE id = ANY(%s)", (list(stale),))
            self._audit(c, audit.with_detail(dropped=list(drop), stale=list(stale)))

        self._write(tx)

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
            counts["audit"] = c.execute(
                "DELETE FROM audit WHERE actor = %s OR target = %s OR cube_id = ANY(%s)",
                (user_id, user_id, cubes),
            ).rowcount
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
                self._load_rows(c, dump, live, cube_of)
            except (pg_errors.UniqueViolation, pg_errors.ForeignKeyViolation) as exc:
                raise Conflict(
                    f"the imported cube clashes with existing data: {exc.diag.message_detail}"
                ) from None
            self._audit(c, audit)

        self._write(tx)
        self._staged()

    def _load_rows(
        self,
        c: Conn,
        dump: CubeDump,
        live: Sequence[tuple[MemoryItem, np.ndarray]],
        cube_of: dict[str, str],
    ) -> None:
        pg_items.insert_rows(
            c,
            "grants",
            ("cube_id", "user_id", "access", "granted_by", "granted_at"),
            [(g.cube_id, g.user_id, g.access, g.granted_by, g.granted_at) for g in dump.grants],
        )
        pg_items.insert_rows(
            c, "items", ITEM_COLUMNS, [pg_items.item_row(it) for it in dump.items], pg_items.CASTS
        )
        pg_items.put_versions(c, dump.versions, cube_of)
        pg_items.put_transitions(c, dump.transitions, cube_of)
        vectors = [(it.cube_id, it.id, np.asarray(vec, np.float32)) for it, vec in live]
        pg_items.put_vectors(c, vectors, replace=False)
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
                # vectors searched exactly until the indexer takes them into the graph
                "vectors_staged": c.execute(
                    "SELECT count(*) AS n FROM item_vectors WHERE NOT indexed"
                ).fetchone()["n"],
            }

        return self._read(read)
