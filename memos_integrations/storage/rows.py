"""Rows <-> records, shared by both SQL stores.

Both stores use the same column names and the same JSON shapes. They differ in how a time
is kept (SQLite: epoch seconds as REAL; PostgreSQL: ``timestamptz``) and in whether JSON
comes back as text (SQLite) or already decoded (PostgreSQL ``jsonb``/``text[]``): encoders
take the time encoding as an argument, decoders accept either form.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Protocol

from ..core.cube import Artifact, MemCube
from ..core.items import (
    AuditRecord,
    Grant,
    ItemVersion,
    MemoryItem,
    Provenance,
    Transition,
    User,
)

TimeEncoder = Callable[[datetime | None], Any]

# The columns of an item row, in the order :func:`item_values` returns them.
ITEM_COLUMNS: tuple[str, ...] = (
    "id",
    "cube_id",
    "owner",
    "text",
    "kind",
    "tags",
    "metadata",
    "provenance",
    "context",
    "session_id",
    "event_time",  # ISO text: keeps the caller's UTC offset
    "event_ts",  # the same instant, sortable (filters and ordering use this one)
    "created_at",
    "updated_at",
    "state",
    "version",
    "content_hash",
    "embedding_model",
    "priority",
    "confidence",
    "expires_at",
    "access_count",
    "last_accessed_at",
    "visibility",
    "key",
)
# What a new version rewrites; identity, state and access counters stay.
REWRITTEN_COLUMNS: tuple[str, ...] = (
    "text",
    "kind",
    "tags",
    "metadata",
    "provenance",  # consolidation unites the sources of a superseded memory
    "context",
    "event_time",
    "event_ts",
    "updated_at",
    "version",
    "content_hash",
    "embedding_model",
    "priority",
    "confidence",
    "expires_at",
    "visibility",
)


class Row(Protocol):
    """A result row addressable by column name (``sqlite3.Row`` or a psycopg ``dict_row``)."""

    def __getitem__(self, key: str, /) -> Any: ...


def dump_json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def load_json(value: Any) -> Any:
    """JSON kept as text (SQLite) or already decoded (PostgreSQL jsonb, text[])."""
    return json.loads(value) if isinstance(value, str | bytes) else value


def epoch(value: datetime | None) -> float | None:
    return value.timestamp() if value is not None else None


def load_time(value: float | datetime | None) -> datetime | None:
    """Epoch seconds (SQLite) or a timestamptz (PostgreSQL), as an aware UTC datetime."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.astimezone(UTC)
    return datetime.fromtimestamp(value, UTC)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _from_iso(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


# ---------------------------------------------------------------------------- items


def item_values(item: MemoryItem, time: TimeEncoder = epoch) -> dict[str, Any]:
    """An item as column values, in the order of :data:`ITEM_COLUMNS`."""
    return {
        "id": item.id,
        "cube_id": item.cube_id,
        "owner": item.owner,
        "text": item.text,
        "kind": item.kind,
        "tags": dump_json(list(item.tags)),
        "metadata": dump_json(item.metadata),
        "provenance": dump_json(item.provenance.to_dict()),
        "context": item.context,
        "session_id": item.provenance.session_id,
        "event_time": _iso(item.event_time),
        "event_ts": time(item.event_time),
        "created_at": time(item.created_at),
        "updated_at": time(item.updated_at),
        "state": item.state,
        "version": item.version,
        "content_hash": item.content_hash,
        "embedding_model": item.embedding_model,
        "priority": item.priority,
        "confidence": item.confidence,
        "expires_at": time(item.expires_at),
        "access_count": item.access_count,
        "last_accessed_at": time(item.last_accessed_at),
        "visibility": item.visibility,
        "key": item.key,
    }


def item_from_row(row: Row) -> MemoryItem:
    return MemoryItem(
        id=row["id"],
        cube_id=row["cube_id"],
        owner=row["owner"],
        text=row["text"],
        kind=row["kind"],
        tags=tuple(load_json(row["tags"])),
        metadata=load_json(row["metadata"]),
        provenance=Provenance.from_dict(load_json(row["provenance"])),
        context=row["context"],
        event_time=_from_iso(row["event_time"]),
        created_at=load_time(row["created_at"]),  # type: ignore[arg-type]
        updated_at=load_time(row["updated_at"]),  # type: ignore[arg-type]
        state=row["state"],
        version=row["version"],
        content_hash=row["content_hash"],
        embedding_model=row["embedding_model"],
        priority=row["priority"],
        confidence=row["confidence"],
        expires_at=load_time(row["expires_at"]),
        access_count=row["access_count"],
        last_accessed_at=load_time(row["last_accessed_at"]),
        visibility=row["visibility"],
        key=row["key"],
    )


# ---------------------------------------------------------------------------- history


def version_snapshot(v: ItemVersion) -> str:
    """The content fields of a version, as the JSON kept in ``item_versions.snapshot``."""
    return dump_json(
        {
            "text": v.text,
            "kind": v.kind,
            "tags": list(v.tags),
            "metadata": v.metadata,
            "priority": v.priority,
            "confidence": v.confidence,
            "visibility": v.visibility,
            "expires_at": _iso(v.expires_at),
            "event_time": _iso(v.event_time),
            "content_hash": v.content_hash,
            "note": v.note,
        }
    )


def version_from_row(row: Row) -> ItemVersion:
    snap = load_json(row["snapshot"])
    return ItemVersion(
        item_id=row["item_id"],
        version=row["version"],
        text=snap["text"],
        kind=snap["kind"],
        tags=tuple(snap["tags"]),
        metadata=snap["metadata"],
        priority=snap["priority"],
        confidence=snap["confidence"],
        visibility=snap["visibility"],
        expires_at=_from_iso(snap["expires_at"]),
        event_time=_from_iso(snap["event_time"]),
        content_hash=snap["content_hash"],
        change=row["change"],
        changed_by=row["changed_by"],
        changed_at=load_time(row["changed_at"]),  # type: ignore[arg-type]
        note=snap.get("note"),
    )


def transition_from_row(row: Row) -> Transition:
    return Transition(
        row["item_id"],
        row["from_state"],
        row["to_state"],
        row["by"],
        row["reason"],
        load_time(row["at"]),  # type: ignore[arg-type]
    )


# ---------------------------------------------------------------------------- the rest


def user_from_row(row: Row) -> User:
    return User(row["id"], row["role"], row["name"], load_time(row["created_at"]))  # type: ignore[arg-type]


def cube_from_row(row: Row) -> MemCube:
    return MemCube(
        row["id"],
        row["name"],
        row["owner"],
        row["description"],
        load_json(row["metadata"]),
        load_time(row["created_at"]),  # type: ignore[arg-type]
    )


def grant_from_row(row: Row) -> Grant:
    return Grant(
        row["cube_id"],
        row["user_id"],
        row["access"],
        row["granted_by"],
        load_time(row["granted_at"]),  # type: ignore[arg-type]
    )


def artifact_from_row(row: Row) -> Artifact:
    return Artifact(
        id=row["id"],
        cube_id=row["cube_id"],
        kind=row["kind"],
        name=row["name"],
        payload=bytes(row["payload"]),
        fingerprint=load_json(row["fingerprint"]),
        sources=load_json(row["sources"]),
        metadata=load_json(row["metadata"]),
        stale=bool(row["stale"]),
        created_at=load_time(row["created_at"]),  # type: ignore[arg-type]
    )


def audit_from_row(row: Row) -> AuditRecord:
    return AuditRecord(
        id=row["id"],
        at=load_time(row["at"]),  # type: ignore[arg-type]
        actor=row["actor"],
        action=row["action"],
        target=row["target"],
        cube_id=row["cube_id"],
        detail=load_json(row["detail"]),
    )
