"""The data model: users, cubes, memory items, their versions and transitions.

Plain frozen dataclasses: the engine builds them, stores persist them, adapters read
them. Validation of everything a caller can send lives here too, so every entry point
(engine, CLI, adapters, import) rejects bad input the same way before anything is written.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import unicodedata
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from .errors import InvalidInput
from .lifecycle import STATES, State

# private: only its owner sees it; cube: everyone who may read its cube.
Visibility = Literal["private", "cube"]
VISIBILITIES: tuple[str, ...] = ("private", "cube")
Access = Literal["read", "write"]
Role = Literal["admin", "user"]

# Limits that keep one bad call from filling the store; they are documented in docs/api.md.
MAX_TEXT_CHARS = 100_000
MAX_TAGS = 64
MAX_TAG_CHARS = 128
MAX_METADATA_BYTES = 64_000
MAX_METADATA_DEPTH = 32
MAX_TTL = timedelta(days=36_500)
MAX_INT = 2**63 - 1  # SQLite's INTEGER range
_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@:\-]{0,127}$")
_KIND_RE = re.compile(r"^[a-z][a-z0-9_]{0,31}$")


def new_id() -> str:
    """A fresh random id (made per call: never a default evaluated at import time)."""
    return uuid.uuid4().hex


def utcnow() -> datetime:
    return datetime.now(UTC)


# ---------------------------------------------------------------------------- validation


def check_id(value: object, what: str) -> str:
    if not isinstance(value, str) or not _ID_RE.match(value):
        raise InvalidInput(
            f"invalid {what} id {value!r}: use 1-128 characters from letters, digits and "
            "'_.@:-', starting with a letter or digit"
        )
    return value


def check_text(value: object, what: str = "text") -> str:
    """Return ``value`` as storable text or raise :class:`InvalidInput`."""
    if not isinstance(value, str):
        raise InvalidInput(f"{what} must be a string, got {type(value).__name__}")
    if not value.strip():
        raise InvalidInput(f"{what} is empty; nothing to remember")
    if len(value) > MAX_TEXT_CHARS:
        raise InvalidInput(
            f"{what} has {len(value):,} characters, more than the {MAX_TEXT_CHARS:,} allowed for "
            "one memory; split it into smaller memories (one fact, turn or passage each)"
        )
    return check_unicode(value, what)


def check_unicode(value: str, what: str) -> str:
    """Reject strings SQLite/JSON cannot keep faithfully: lone surrogates and NULs."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidInput(
            f"{what} is not valid Unicode (lone surrogate at position {exc.start}); "
            "decode your input with errors='replace' first"
        ) from None
    if "\x00" in value:
        raise InvalidInput(f"{what} contains a NUL character, which cannot be indexed")
    return value


def check_kind(value: object) -> str:
    if not isinstance(value, str) or not _KIND_RE.match(value):
        raise InvalidInput(
            f"invalid kind {value!r}: use a short lowercase word such as 'fact', 'preference', "
            "'event', 'raw_turn'"
        )
    return value


def check_tags(value: object) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise InvalidInput(f"tags must be a list of strings, got {type(value).__name__}")
    tags: list[str] = []
    for tag in value:
        if not isinstance(tag, str) or not tag.strip() or len(tag) > MAX_TAG_CHARS:
            raise InvalidInput(f"invalid tag {tag!r}: non-empty strings of <= {MAX_TAG_CHARS}")
        check_text(tag, "tag")
        if tag not in tags:
            tags.append(tag)
    if len(tags) > MAX_TAGS:
        raise InvalidInput(f"{len(tags)} tags given; at most {MAX_TAGS} are allowed")
    return tuple(tags)


def _check_json_value(value: Any, path: str, depth: int = 0) -> None:
    if depth > MAX_METADATA_DEPTH:
        raise InvalidInput(f"{path} is nested deeper than {MAX_METADATA_DEPTH} levels")
    if isinstance(value, str):
        check_unicode(value, f"value at {path}")
        return
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_INT:
        raise InvalidInput(f"value at {path} is outside the 64-bit integer range")
    if value is None or isinstance(value, bool | int):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidInput(f"value at {path} is {value}; JSON has no NaN/Infinity")
        return
    if isinstance(value, list | tuple):
        for i, v in enumerate(value):
            _check_json_value(v, f"{path}[{i}]", depth + 1)
        return
    if isinstance(value, Mapping):
        for k, v in value.items():
            if not isinstance(k, str) or not k:
                raise InvalidInput(f"key {k!r} at {path} must be a non-empty string")
            check_unicode(k, f"key at {path}")
            _check_json_value(v, f"{path}.{k}", depth + 1)
        return
    raise InvalidInput(
        f"value at {path} has type {type(value).__name__}; only JSON types "
        "(str, int, float, bool, None, list, dict) are stored"
    )


def check_metadata(value: object, what: str = "metadata") -> dict[str, Any]:
    """A JSON object of bounded size (user metadata, provenance). Returned as a deep copy."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InvalidInput(f"{what} must be a dict, got {type(value).__name__}")
    _check_json_value(value, what)
    encoded = json.dumps(value, ensure_ascii=False)
    if len(encoded.encode("utf-8")) > MAX_METADATA_BYTES:
        raise InvalidInput(f"{what} is larger than {MAX_METADATA_BYTES:,} bytes as JSON")
    return json.loads(encoded)


def parse_time(value: object, what: str = "timestamp") -> datetime | None:
    """Accept datetimes, ISO-8601 strings and epoch seconds; naive times are taken as UTC."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        dt = value
    elif isinstance(value, bool):
        raise InvalidInput(f"{what} must be a datetime, ISO-8601 string or epoch seconds")
    elif isinstance(value, int | float):
        if not math.isfinite(value):
            raise InvalidInput(f"{what} {value!r} is not a finite number")
        try:
            dt = datetime.fromtimestamp(value, UTC)
        except (OverflowError, OSError, ValueError):
            raise InvalidInput(f"{what} {value!r} is out of range for a date") from None
    elif isinstance(value, str):
        try:
            dt = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            raise InvalidInput(
                f"{what} {value!r} is not ISO-8601 (e.g. '2024-03-01T10:00:00+00:00')"
            ) from None
    else:
        raise InvalidInput(f"{what} must be a datetime, ISO-8601 string or epoch seconds")
    return dt if dt.tzinfo is not None else dt.replace(tzinfo=UTC)


def parse_ttl(value: object) -> timedelta | None:
    if value is None:
        return None
    if isinstance(value, timedelta):
        ttl = value
    elif isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        if abs(value) > MAX_TTL.total_seconds():
            raise InvalidInput(f"ttl must be at most {MAX_TTL.days} days")
        ttl = timedelta(seconds=value)
    else:
        raise InvalidInput("ttl must be a number of seconds or a timedelta")
    if ttl.total_seconds() <= 0 or ttl > MAX_TTL:
        raise InvalidInput(f"ttl must be positive and at most {MAX_TTL.days} days")
    return ttl


def check_visibility(value: object) -> Visibility:
    if value not in VISIBILITIES:
        raise InvalidInput(f"visibility must be one of {', '.join(VISIBILITIES)}, got {value!r}")
    return value  # type: ignore[return-value]


def check_priority(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not -1000 <= value <= 1000:
        raise InvalidInput("priority must be an integer from -1000 to 1000")
    return value


def check_confidence(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise InvalidInput("confidence must be a number from 0 to 1")
    return float(value)


MAX_KEY_CHARS = 1024


def check_key(value: object) -> str:
    """A caller-chosen item key (a document id, a store key): any non-blank text up to 1 KiB."""
    key = check_text(value, "key")
    if len(key) > MAX_KEY_CHARS:
        raise InvalidInput(f"key has {len(key):,} characters; at most {MAX_KEY_CHARS} allowed")
    return key


def content_hash(text: str, event_time: datetime | None) -> str:
    """Identity of a memory's content within a cube: same text at the same event time.

    Whitespace and Unicode normal form are canonicalised so a replayed conversation hashes
    the same; the event time keeps two genuine "ok" turns on different days apart.
    """
    canonical = " ".join(unicodedata.normalize("NFC", text).split())
    stamp = event_time.astimezone(UTC).isoformat() if event_time else ""
    return hashlib.sha256(f"{canonical}\x1f{stamp}".encode()).hexdigest()


# ---------------------------------------------------------------------------- records


@dataclass(frozen=True)
class User:
    id: str
    role: Role = "user"
    name: str | None = None
    created_at: datetime = field(default_factory=utcnow)


@dataclass(frozen=True)
class Grant:
    cube_id: str
    user_id: str
    access: Access
    granted_by: str | None
    granted_at: datetime = field(default_factory=utcnow)


@dataclass(frozen=True)
class Provenance:
    """Where a memory came from: enough to find the source turn again."""

    source: str = "api"  # conversation | api | import | reader
    session_id: str | None = None
    message_ids: tuple[str, ...] = ()
    role: str | None = None
    speaker: str | None = None
    timestamps: tuple[str, ...] = ()
    extractor: str = "fast"
    derived_from: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        # fields are strings, None and tuples of strings: no deep copy needed (asdict is slow)
        values = ((name, getattr(self, name)) for name in _PROVENANCE_FIELDS)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in values}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> Provenance:
        """Build from trusted data (a store row); use :func:`check_provenance` for input."""
        if not data:
            return cls()
        kw = {
            k: tuple(v) if isinstance(v, list) else v
            for k, v in data.items()
            if k in _PROVENANCE_FIELDS
        }
        return cls(**kw)


_PROVENANCE_FIELDS = tuple(f.name for f in fields(Provenance))  # once: fields() is slow


def check_provenance(data: object) -> Provenance:
    """Provenance from caller input: a JSON object; lists of strings where tuples go."""
    checked = check_metadata(data, "provenance")  # bounded size, JSON values, valid Unicode
    for name in ("message_ids", "timestamps", "derived_from"):
        value = checked.get(name, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise InvalidInput(f"provenance {name} must be a list of strings")
    for name in ("source", "session_id", "role", "speaker", "extractor"):
        if not isinstance(checked.get(name, ""), str | None):
            raise InvalidInput(f"provenance {name} must be a string")
    return Provenance.from_dict(checked)


@dataclass(frozen=True)
class MemoryItem:
    """One plaintext memory, as it is now (its past lives in :class:`ItemVersion` rows)."""

    id: str
    cube_id: str
    owner: str
    text: str
    kind: str
    content_hash: str
    embedding_model: str
    tags: tuple[str, ...] = ()
    metadata: dict[str, Any] = field(default_factory=dict)
    # the caller's own id for this memory, unique per cube among live items (see add())
    key: str | None = None
    provenance: Provenance = field(default_factory=Provenance)
    # preceding turns of the conversation, for retrieval only (not part of the memory's content)
    context: str = ""
    event_time: datetime | None = None
    created_at: datetime = field(default_factory=utcnow)
    updated_at: datetime = field(default_factory=utcnow)
    state: State = "generated"
    version: int = 1
    priority: int = 0
    confidence: float = 1.0
    expires_at: datetime | None = None
    access_count: int = 0
    last_accessed_at: datetime | None = None
    visibility: Visibility = "cube"

    def is_expired(self, now: datetime | None = None) -> bool:
        return self.expires_at is not None and self.expires_at <= (now or utcnow())

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (times as ISO-8601 strings)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, datetime):
                v = v.isoformat()
            elif isinstance(v, tuple):
                v = list(v)
            elif isinstance(v, Provenance):
                v = v.to_dict()
            out[f.name] = v
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MemoryItem:
        known = {f.name for f in fields(cls)}
        missing = {"id", "cube_id", "owner", "text", "kind", "content_hash"} - data.keys()
        if missing:
            raise InvalidInput(f"memory record lacks fields: {', '.join(sorted(missing))}")
        kw: dict[str, Any] = {k: v for k, v in data.items() if k in known}
        for name in ("event_time", "created_at", "updated_at", "expires_at", "last_accessed_at"):
            if name in kw:
                kw[name] = parse_time(kw[name], name)
        kw["tags"] = check_tags(kw.get("tags"))
        kw["provenance"] = check_provenance(kw.get("provenance"))
        kw.setdefault("embedding_model", "")
        return cls(**kw)

    def evolve(self, **changes: Any) -> MemoryItem:
        return replace(self, **changes)

    def same_content(self, other: MemoryItem) -> bool:
        """Whether re-adding ``other`` under this item's key would change nothing."""
        return all(getattr(self, f) == getattr(other, f) for f in _CONTENT_FIELDS) and (
            self.expires_at is None
        ) == (other.expires_at is None)

    def overwritten_by(self, draft: MemoryItem) -> MemoryItem:
        """The next version of this item carrying ``draft``'s content (a keyed re-add)."""
        return self.evolve(
            **{f: getattr(draft, f) for f in (*_CONTENT_FIELDS, *_DERIVED_FIELDS)},
            version=self.version + 1,
            updated_at=draft.updated_at,
        )


# What a caller sets on a memory (compared on a keyed re-add) and what follows from it.
_CONTENT_FIELDS = (
    "text",
    "kind",
    "tags",
    "metadata",
    "event_time",
    "priority",
    "confidence",
    "visibility",
)
_DERIVED_FIELDS = ("content_hash", "embedding_model", "expires_at", "context")


def check_item(item: MemoryItem) -> MemoryItem:
    """Validate a whole item as the engine would have built it (used for imports)."""
    check_id(item.id, "item")
    check_id(item.cube_id, "cube")
    check_id(item.owner, "user")
    check_text(item.text)
    if item.key is not None:
        check_key(item.key)
    if item.context:
        check_text(item.context, "context")
    check_kind(item.kind)
    check_tags(item.tags)
    check_metadata(item.metadata)
    check_visibility(item.visibility)
    check_priority(item.priority)
    check_confidence(item.confidence)
    if item.state not in STATES:
        raise InvalidInput(f"unknown state {item.state!r}")
    if not re.fullmatch(r"[0-9a-f]{64}", str(item.content_hash)):
        raise InvalidInput("content_hash must be 64 lowercase hex digits")
    for name in ("version", "access_count"):
        value = getattr(item, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < (name == "version"):
            raise InvalidInput(f"{name} must be a non-negative integer")
    return item


@dataclass(frozen=True)
class ItemVersion:
    """A snapshot of an item's content fields, written on every change."""

    item_id: str
    version: int
    text: str
    kind: str
    tags: tuple[str, ...]
    metadata: dict[str, Any]
    priority: int
    confidence: float
    visibility: str
    expires_at: datetime | None
    event_time: datetime | None
    content_hash: str
    change: str  # create | update | rollback
    changed_by: str | None
    changed_at: datetime = field(default_factory=utcnow)
    note: str | None = None

    @classmethod
    def of(cls, item: MemoryItem, change: str, by: str | None, note: str | None = None):
        return cls(
            item_id=item.id,
            version=item.version,
            text=item.text,
            kind=item.kind,
            tags=item.tags,
            metadata=item.metadata,
            priority=item.priority,
            confidence=item.confidence,
            visibility=item.visibility,
            expires_at=item.expires_at,
            event_time=item.event_time,
            content_hash=item.content_hash,
            change=change,
            changed_by=by,
            changed_at=item.updated_at,
            note=note,
        )


@dataclass(frozen=True)
class Transition:
    item_id: str
    from_state: str | None
    to_state: str
    by: str | None
    reason: str | None = None
    at: datetime = field(default_factory=utcnow)


@dataclass(frozen=True)
class SearchHit:
    """A search result: the item plus how it scored in each leg of the hybrid search."""

    item: MemoryItem
    score: float  # fused score (reciprocal rank fusion), higher is better
    dense_score: float | None = None  # cosine similarity, if the dense leg found it
    text_score: float | None = None  # BM25 (higher is better), if the full-text leg found it

    @property
    def id(self) -> str:
        return self.item.id

    @property
    def text(self) -> str:
        return self.item.text


@dataclass(frozen=True)
class AuditRecord:
    actor: str | None
    action: str
    target: str | None = None
    cube_id: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)
    at: datetime = field(default_factory=utcnow)
    id: int | None = None

    def with_detail(self, **extra: Any) -> AuditRecord:
        """The same record with more detail (what a store learns while writing)."""
        return replace(self, detail={**self.detail, **extra})
