"""The ``Store`` protocol: what the engine needs from a backend, and nothing more.

Stores know rows and bytes, not policy: the engine decides *who* may do *what* and hands
the store an already-resolved :class:`Scope`. Every method that writes is one transaction
and writes its audit record inside that same transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np

from ..core.cube import Artifact, MemCube
from ..core.errors import Conflict
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
from .search import Node

SearchMode = Literal["hybrid", "dense", "text"]


@dataclass(frozen=True)
class Scope:
    """Which items a caller may see: cubes it can read, minus other users' private items.

    ``cube_ids=None`` means every cube (the root principal); ``viewer=None`` means private
    items of every owner are visible.
    """

    cube_ids: tuple[str, ...] | None
    viewer: str | None


@dataclass(frozen=True)
class SearchRequest:
    scope: Scope
    k: int
    text: str | None = None
    vector: np.ndarray | None = None
    where: Node | None = None
    mode: SearchMode = "hybrid"
    dense_weight: float = 1.0  # RRF weight of the dense leg; the text leg weighs 1.0

    @property
    def depth(self) -> int:
        """Candidates per leg: fusion needs rows beyond k (a row ranked low in one leg can win
        on the sum); one leg alone ranks exactly its top k."""
        return max(2 * self.k, 50) if self.mode == "hybrid" else self.k


@dataclass(frozen=True)
class AuditQuery:
    """Which audit records to return, newest first.

    ``action`` is an exact action, or a prefix ending in ``*`` (``"read:*"``, ``"state:*"``).
    ``viewer``, when set, limits the records to what that user may see: their own actions,
    actions on them, and actions in the cubes ``viewer_cubes`` (the cubes they own).
    """

    actor: str | None = None
    action: str | None = None
    target: str | None = None
    cube_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    viewer: str | None = None
    viewer_cubes: tuple[str, ...] = ()
    limit: int = 100


@dataclass(frozen=True)
class Served:
    """Items handed to a caller once: each counts one access, ``generated`` ones activate."""

    ids: tuple[str, ...]
    at: datetime
    by: str | None
    reason: str


@dataclass
class CubeDump:
    """Everything a cube holds, in memory, for export and import (never pickled)."""

    cube: MemCube
    grants: list[Grant]
    items: list[MemoryItem]
    vectors: np.ndarray  # one row per item, same order; zeros for items without a vector
    versions: list[ItemVersion]
    transitions: list[Transition]
    artifacts: list[Artifact] = field(default_factory=list)


READDED_BY_KEY = "re-added by key"


def add_audit_detail(
    audit: AuditRecord, results: int, created: Sequence[str], updated: Sequence[str]
) -> AuditRecord:
    """The audit record of an add call, with what it did to how many items."""
    return audit.with_detail(
        created=len(created),
        updated=len(updated),
        existing=results - len(created) - len(updated),
        ids=[*created, *updated][:100],
    )


def content_clash() -> Conflict:
    """An update would give an item the exact content of another live one in its cube."""
    return Conflict(
        "another memory in this cube already has exactly this content; "
        "update or delete that one instead"
    )


def stale_version(item_id: str, expected: int) -> Conflict:
    """An update raced another one (optimistic concurrency on ``version``)."""
    return Conflict(
        f"item {item_id!r} changed since version {expected} was read; fetch it again and retry"
    )


def keyed_readd(current: MemoryItem, draft: MemoryItem) -> MemoryItem | None:
    """What re-adding ``draft`` under the key of live item ``current`` writes: its next
    version, or None when nothing would change.

    Re-adding is how a caller says "this is the memory now": an archived or expired item
    comes back (the store moves it to ``activated``); a merged one has a successor, so the
    caller must use that one instead.
    """
    servable = current.state in SERVED_STATES and not current.is_expired(draft.updated_at)
    if servable and current.same_content(draft):
        return None
    if current.state == "merged":
        raise Conflict(
            f"key {draft.key!r} belongs to a memory merged into another; update that one"
        )
    return current.overwritten_by(draft)


@runtime_checkable
class Store(Protocol):
    """A storage backend. See ``tests/test_store_conformance.py`` for the behaviour."""

    url: str

    def close(self) -> None: ...

    # -- settings recorded in the store (schema version, embedding model, ...)
    def get_meta(self, key: str) -> str | None: ...
    def set_meta(self, key: str, value: str) -> None: ...

    # -- principals and containers
    def put_user(self, user: User, audit: AuditRecord) -> None: ...
    def get_user(self, user_id: str) -> User | None: ...
    def list_users(self) -> list[User]: ...
    def put_cube(self, cube: MemCube, audit: AuditRecord) -> None: ...
    def get_cube(self, cube_id: str) -> MemCube | None: ...
    def list_cubes(self, owner: str | None = None) -> list[MemCube]: ...
    def set_grant(self, grant: Grant, audit: AuditRecord) -> None: ...
    def remove_grant(self, cube_id: str, user_id: str, audit: AuditRecord) -> bool: ...
    def list_grants(
        self, cube_id: str | None = None, user_id: str | None = None
    ) -> list[Grant]: ...

    # -- items
    def add_items(
        self, items: Sequence[MemoryItem], vectors: np.ndarray, audit: AuditRecord
    ) -> list[tuple[str, bool]]:
        """Insert items (idempotent on ``(cube_id, content_hash)``): (id, created) per input."""
        ...

    def bulk_load(self, expected: int) -> AbstractContextManager[None]:
        """A context for loading ``expected`` items over many ``add_items``/``load_cube``
        calls (ingest, import): the store may defer index upkeep to its end. Every write
        inside stays atomic and searchable."""
        ...

    def update_item(
        self,
        item: MemoryItem,
        *,
        expected_version: int,
        change: str,
        by: str | None,
        vector: np.ndarray | None,
        audit: AuditRecord,
    ) -> None: ...
    def set_state(
        self,
        ids: Sequence[str],
        to_state: str,
        *,
        from_states: Sequence[str],
        by: str | None,
        reason: str | None,
        audit: AuditRecord | None,
    ) -> list[str]: ...
    def mark_served(self, served: Sequence[Served]) -> None:
        """Count the accesses and activate the ``generated`` items (recorded), in order, in
        one transaction."""
        ...

    def expire_due(
        self, scope: Scope, now: datetime, *, by: str | None, audit: AuditRecord
    ) -> list[str]:
        """Move the served items in ``scope`` whose ``expires_at <= now`` to ``expired``, in
        set-based statements (no item is loaded), recording each transition; their ids."""
        ...

    def get_items(self, ids: Sequence[str]) -> list[MemoryItem]: ...
    def list_items(
        self,
        scope: Scope,
        where: Node | None,
        *,
        limit: int,
        offset: int,
        order: str,
    ) -> list[MemoryItem]: ...
    def count_items(self, scope: Scope, where: Node | None) -> int: ...
    def versions(self, item_id: str) -> list[ItemVersion]: ...
    def transitions(self, item_id: str) -> list[Transition]: ...
    def search(self, request: SearchRequest) -> list[SearchHit]: ...

    # -- artifacts of the activation and parametric tiers
    def put_artifact(
        self, artifact: Artifact, audit: AuditRecord, *, replaces: Sequence[str] = ()
    ) -> None:
        """Insert (or replace by id) an artifact, deleting ``replaces`` in the same transaction."""

    def list_artifacts(
        self, cube_id: str, kind: str | None = None, *, with_payload: bool = True
    ) -> list[Artifact]:
        """A cube's artifacts by id; ``with_payload=False`` leaves ``payload`` empty (cheap)."""

    def get_artifact(self, artifact_id: str) -> Artifact | None: ...
    def retire_artifacts(
        self, drop: Sequence[str], stale: Sequence[str], audit: AuditRecord
    ) -> None:
        """Delete the artifacts ``drop`` and flag ``stale`` as stale, in one transaction."""

    def touch_artifact(self, artifact_id: str, at: datetime) -> None:
        """Record a use in ``metadata.used_at`` (least-recently-used eviction reads it)."""

    # -- governance
    def purge_user(self, user_id: str, audit: AuditRecord) -> dict[str, int]: ...
    def add_audit(self, record: AuditRecord) -> None: ...
    def query_audit(self, query: AuditQuery) -> list[AuditRecord]: ...

    # -- portability and introspection
    def dump_cube(self, cube_id: str) -> CubeDump: ...
    def load_cube(self, dump: CubeDump, audit: AuditRecord) -> None: ...
    def stats(self, scope: Scope) -> dict[str, Any]: ...
