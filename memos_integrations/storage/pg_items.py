"""Item writes on PostgreSQL: batched inserts, keyed re-adds, new versions, state moves.

Every function runs inside the caller's transaction (``c``) and raises
:class:`~memos_integrations.core.errors.Conflict` for clashes; the store rolls back.
Rows that several writers may touch are taken in one fixed order (unique key, then id), so
concurrent writers wait on each other but never in a cycle.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np
import psycopg
from psycopg import errors as pg_errors

from ..core.errors import Conflict
from ..core.items import ItemVersion, MemoryItem, Transition
from ..core.lifecycle import SERVED_STATES
from .base import READDED_BY_KEY, content_clash, keyed_readd, stale_version
from .pg_sql import ITEM_SELECT
from .rows import ITEM_COLUMNS, REWRITTEN_COLUMNS, item_from_row, item_values, version_snapshot

Conn = psycopg.Connection[dict[str, Any]]

COPY_MIN = 64  # rows from which a table is written by COPY rather than pipelined INSERTs
# SQL casts for item columns whose Python value is JSON text or a list.
CASTS = {"tags": "::text[]", "metadata": "::json", "provenance": "::json"}
_INSERT = "INSERT INTO items ({}) VALUES ({})".format(
    ", ".join(ITEM_COLUMNS), ", ".join("%s" + CASTS.get(c, "") for c in ITEM_COLUMNS)
)
_INSERT_SEQ = "INSERT INTO items (seq, {}) VALUES (%s, {})".format(
    ", ".join(ITEM_COLUMNS), ", ".join("%s" + CASTS.get(c, "") for c in ITEM_COLUMNS)
)
_ON_CONTENT = "ON CONFLICT (cube_id, content_hash) WHERE key IS NULL AND state <> 'deleted'"
_ON_KEY = "ON CONFLICT (cube_id, key) WHERE key IS NOT NULL AND state <> 'deleted'"
_VERSION_COLUMNS = ("cube_id", "item_id", "version", "change", "changed_by", "changed_at",
                    "snapshot")  # fmt: skip
_TRANSITION_COLUMNS = ("cube_id", "item_id", "from_state", "to_state", '"by"', "reason", "at")


def _identity(value: datetime | None) -> datetime | None:
    return value


def item_row(item: MemoryItem) -> tuple[Any, ...]:
    """An item's column values for PostgreSQL, in :data:`ITEM_COLUMNS` order."""
    values = item_values(item, time=_identity)
    values["tags"] = list(item.tags)
    return tuple(values.values())


def pairs(rows: Iterable[dict[str, Any]]) -> list[list[str]]:
    """(cube_id, id) of rows as two arrays, for ``IN (SELECT unnest(%s), unnest(%s))``."""
    cubes, ids = [], []
    for r in rows:
        cubes.append(r["cube_id"])
        ids.append(r["id"])
    return [cubes, ids]


def insert_rows(
    c: Conn,
    table: str,
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
    casts: dict[str, str] | None = None,
    binary: Sequence[str] | None = None,
) -> None:
    """Rows into a table (names are this package's): pipelined INSERTs for a few, COPY for
    many. ``casts`` types the INSERT placeholders whose Python value is text; ``binary``
    (the column types) sends the rows in binary, which vectors need to be fast."""
    if not rows:
        return
    if len(rows) < COPY_MIN:
        mark = "%b" if binary else "%s"
        marks = ", ".join(mark + (casts or {}).get(col, "") for col in columns)
        c.cursor().executemany(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})", rows)
        return
    how = " WITH (FORMAT BINARY)" if binary else ""
    with c.cursor() as cur, cur.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN{how}") as cp:
        if binary:
            cp.set_types(list(binary))
        for row in rows:
            cp.write_row(row)


def put_versions(c: Conn, versions: Sequence[ItemVersion], cube_of: dict[str, str]) -> None:
    insert_rows(
        c,
        "item_versions",
        _VERSION_COLUMNS,
        [(cube_of[v.item_id], v.item_id, v.version, v.change, v.changed_by, v.changed_at,
          version_snapshot(v)) for v in versions],
        {"snapshot": "::json"},
    )  # fmt: skip


def put_transitions(c: Conn, transitions: Sequence[Transition], cube_of: dict[str, str]) -> None:
    insert_rows(
        c,
        "transitions",
        _TRANSITION_COLUMNS,
        [(cube_of[t.item_id], t.item_id, t.from_state, t.to_state, t.by, t.reason, t.at)
         for t in transitions],
    )  # fmt: skip


def put_vectors(c: Conn, rows: Sequence[tuple[str, str, np.ndarray]], *, replace: bool) -> None:
    """(cube_id, item_id, vector) rows; with ``replace`` an item's old vector goes first."""
    if replace and rows:
        c.execute(
            "DELETE FROM item_vectors WHERE (cube_id, item_id) IN "
            "(SELECT unnest(%s::text[]), unnest(%s::text[]))",
            pairs({"cube_id": r[0], "id": r[1]} for r in rows),
        )
    vectors = [(cube, item, np.asarray(vec, np.float32)) for cube, item, vec in rows]
    columns = ("cube_id", "item_id", "embedding")
    insert_rows(c, "item_vectors", columns, vectors, binary=("text", "text", "vector"))


# ---------------------------------------------------------------------------- add


def add(
    c: Conn, items: Sequence[MemoryItem], vectors: np.ndarray
) -> tuple[list[tuple[str, bool]], list[str], list[str]]:
    """Store a batch: ``(id, created)`` per input, the ids created and the ids re-versioned.

    Unkeyed items are idempotent on content; a keyed item whose key is live is a re-add
    (:func:`~.base.keyed_readd`).
    """
    out: list[tuple[str, bool] | None] = [None] * len(items)
    updated: list[str] = []
    order = sorted(
        range(len(items)),
        key=lambda i: (items[i].key is None, items[i].cube_id, items[i].key or
                       items[i].content_hash),
    )  # fmt: skip
    new: list[int] = []
    for i in order:
        found = readd_keyed(c, items[i], vectors[i]) if items[i].key is not None else None
        if found is None:
            new.append(i)
            continue
        out[i] = (found[0], False)
        if found[1]:
            updated.append(found[0])
    created = _insert_new(c, [items[i] for i in new], new)
    lost = [items[i] for i in new if items[i].id not in created and items[i].key is None]
    existing = _live_by_content(c, lost)
    for i in new:
        item = items[i]
        if item.id in created:
            out[i] = (item.id, True)
        elif item.key is None:  # the same content is live: idempotent
            out[i] = (existing[(item.cube_id, item.content_hash)], False)
        else:  # another writer took the key meanwhile: a re-add after all
            found = readd_keyed(c, item, vectors[i])
            if found is None:
                raise Conflict(f"key {item.key!r} is being written concurrently; retry")
            out[i] = (found[0], False)
            if found[1]:
                updated.append(found[0])
    made = [i for i in new if items[i].id in created]
    cube_of = {items[i].id: items[i].cube_id for i in made}
    put_versions(c, [ItemVersion.of(items[i], "create", items[i].owner) for i in made], cube_of)
    put_transitions(
        c,
        [Transition(items[i].id, None, items[i].state, items[i].owner, "created",
                    items[i].created_at) for i in made],
        cube_of,
    )  # fmt: skip
    put_vectors(c, [(items[i].cube_id, items[i].id, vectors[i]) for i in made], replace=False)
    return [o for o in out if o is not None], [items[i].id for i in made], updated


def _insert_new(c: Conn, items: Sequence[MemoryItem], positions: Sequence[int]) -> set[str]:
    """Insert items whose key or content is not live yet; returns the ids inserted.

    Rows go in unique-key order; when that differs from the caller's (``positions``, the
    items' places in the call), ``seq`` values are taken first and handed out in the
    caller's order: list and export order break created_at ties by it.
    """
    if not items:
        return set()
    if list(positions) == sorted(positions) and len(items) < COPY_MIN:
        sql, rows = _INSERT, [item_row(it) for it in items]
    else:
        seqs = [
            r["s"]
            for r in c.execute(
                "SELECT nextval(pg_get_serial_sequence('items', 'seq')) AS s "
                "FROM generate_series(1, %s) ORDER BY 1",
                (len(items),),
            )
        ]
        rank = {p: r for r, p in enumerate(sorted(positions))}
        sql = _INSERT_SEQ
        rows = [(seqs[rank[p]], *item_row(it)) for p, it in zip(positions, items, strict=True)]
    created: set[str] = set()
    try:
        with c.cursor() as cur:
            for keyed, target in ((True, _ON_KEY), (False, _ON_CONTENT)):
                batch = [r for r, it in zip(rows, items, strict=True)
                         if (it.key is not None) == keyed]  # fmt: skip
                if not batch:
                    continue
                if len(batch) >= COPY_MIN and sql is _INSERT_SEQ:
                    created.update(_insert_staged(c, batch, target))
                    continue
                cur.executemany(f"{sql} {target} DO NOTHING RETURNING id", batch, returning=True)
                while True:
                    created.update(r["id"] for r in cur.fetchall())
                    if not cur.nextset():
                        break
    except pg_errors.UniqueViolation as exc:
        raise Conflict(
            f"an item with one of these ids already exists ({exc.diag.message_detail})"
        ) from None
    return created


def _insert_staged(c: Conn, rows: Sequence[Sequence[Any]], target: str) -> list[str]:
    """A large batch: COPY into a temporary table, then one set-based INSERT (with the same
    conflict handling, in unique-key order), several times faster than row-wise INSERTs."""
    columns = ", ".join(("seq", *ITEM_COLUMNS))
    c.execute(
        f"CREATE TEMP TABLE memos_stage ON COMMIT DROP AS SELECT {columns} FROM items WITH NO DATA"
    )
    with c.cursor() as cur, cur.copy(f"COPY memos_stage ({columns}) FROM STDIN") as cp:
        for row in rows:
            cp.write_row(row)
    ids = c.execute(
        f"INSERT INTO items ({columns}) SELECT {columns} FROM memos_stage "
        f"ORDER BY cube_id, coalesce(key, content_hash) {target} DO NOTHING RETURNING id"
    ).fetchall()
    c.execute("DROP TABLE memos_stage")  # a later batch in this transaction makes its own
    return [r["id"] for r in ids]


def _live_by_content(c: Conn, items: Sequence[MemoryItem]) -> dict[tuple[str, str], str]:
    """The live unkeyed items holding these items' content, by (cube, content hash)."""
    if not items:
        return {}
    rows = c.execute(
        "SELECT id, cube_id, content_hash FROM items WHERE key IS NULL AND state <> 'deleted' "
        "AND (cube_id, content_hash) IN (SELECT unnest(%s::text[]), unnest(%s::text[]))",
        ([it.cube_id for it in items], [it.content_hash for it in items]),
    ).fetchall()
    return {(r["cube_id"], r["content_hash"]): r["id"] for r in rows}


def readd_keyed(c: Conn, draft: MemoryItem, vector: np.ndarray) -> tuple[str, bool] | None:
    """A keyed add whose key is live: (its id, whether a new version was written); None
    when the key is free."""
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
    write_row(c, new, current.version)
    version = ItemVersion.of(new, "update", draft.owner, READDED_BY_KEY)
    put_versions(c, [version], {new.id: new.cube_id})
    put_vectors(c, [(new.cube_id, new.id, vector)], replace=True)
    if current.state not in SERVED_STATES:
        move(c, [current.id], (current.state,), "activated", draft.owner, READDED_BY_KEY)
    return current.id, True


# ---------------------------------------------------------------------------- change


def write_row(c: Conn, item: MemoryItem, expected_version: int) -> None:
    """Overwrite an item's content columns, if it is still at ``expected_version``."""
    values = dict(zip(ITEM_COLUMNS, item_row(item), strict=True))
    assignments = ", ".join(f"{col} = %s{CASTS.get(col, '')}" for col in REWRITTEN_COLUMNS)
    try:  # RETURNING, not rowcount: in a pipeline only a fetch waits for the result
        written = c.execute(
            f"UPDATE items SET {assignments} WHERE id = %s AND version = %s RETURNING id",
            (*(values[col] for col in REWRITTEN_COLUMNS), item.id, expected_version),
        ).fetchone()
    except pg_errors.UniqueViolation:
        raise content_clash() from None
    if written is None:
        raise stale_version(item.id, expected_version)


def move(
    c: Conn,
    ids: Sequence[str],
    from_states: Sequence[str],
    to_state: str,
    by: str | None,
    reason: str | None,
) -> list[str]:
    """Move the items among ``ids`` that are in ``from_states`` to ``to_state``, recording
    each transition (one statement; rows locked in id order); returns the ids moved."""
    moved = set(
        move_where(
            c,
            "id = ANY(%s) AND state = ANY(%s)",
            [list(ids), list(from_states)],
            to_state,
            by,
            reason,
            datetime.now(UTC),
        )
    )
    return [i for i in dict.fromkeys(ids) if i in moved]


def move_where(
    c: Conn,
    clause: str,
    params: Sequence[Any],
    to_state: str,
    by: str | None,
    reason: str | None,
    now: datetime,
) -> list[str]:
    """Move every item matching ``clause`` to ``to_state`` and record the transitions, in one
    statement (rows locked in id order); returns the ids moved, in id order."""
    rows = c.execute(
        f"WITH old AS (SELECT cube_id, id, state FROM items WHERE {clause} "
        "ORDER BY id FOR UPDATE), "
        "moved AS (UPDATE items SET state = %s, updated_at = %s FROM old "
        "WHERE items.cube_id = old.cube_id AND items.id = old.id "
        "RETURNING items.cube_id, items.id, old.state AS from_state) "
        'INSERT INTO transitions (cube_id, item_id, from_state, to_state, "by", reason, at) '
        "SELECT cube_id, id, from_state, %s, %s, %s, %s FROM moved ORDER BY id "
        "RETURNING cube_id, item_id AS id",
        (*params, to_state, now, to_state, by, reason, now),
    ).fetchall()
    if to_state == "deleted" and rows:  # tombstones keep no vector
        c.execute(
            "DELETE FROM item_vectors WHERE (cube_id, item_id) IN "
            "(SELECT unnest(%s::text[]), unnest(%s::text[]))",
            pairs(rows),
        )
    return [r["id"] for r in rows]


def mark_served(c: Conn, ids: Sequence[str], at: datetime, by: str | None, reason: str) -> None:
    """Count an access on each item and activate the ``generated`` ones: one statement."""
    c.execute(
        "WITH old AS (SELECT cube_id, id, state FROM items WHERE id = ANY(%s) "
        "ORDER BY id FOR UPDATE), "
        "served AS (UPDATE items SET access_count = items.access_count + 1, "
        "last_accessed_at = %s, state = CASE WHEN items.state = 'generated' "
        "THEN 'activated' ELSE items.state END FROM old "
        "WHERE items.cube_id = old.cube_id AND items.id = old.id "
        "RETURNING items.cube_id, items.id, old.state AS was) "
        'INSERT INTO transitions (cube_id, item_id, from_state, to_state, "by", reason, at) '
        "SELECT cube_id, id, 'generated', 'activated', %s, %s, %s FROM served "
        "WHERE was = 'generated' ORDER BY id",
        (list(ids), at, by, reason, at),
    )
