"""Background lifecycle policies, run by ``mos.maintain()`` (and ``memos maintain``).

One pass, in order, over the cubes the caller may write:

1. **TTL expiry**: served items past ``expires_at`` become ``expired`` (set-based, in the store).
2. **Capacity eviction**: a cube holding more served items than ``Settings.cube_capacity``
   archives its *least important* ones (:func:`importance`: priority, access count, recency,
   confidence), never by age alone as MemOS's FIFO does; priority ``PINNED`` items stay.
   Archived items keep their history and come back with ``set_state(id, "activated")``.
3. **Promotion candidates**: *hot* items (accessed at least ``hot_min_accesses`` times) that no
   fresh KV cache holds, for the activation tier; *stable* items (accessed at least
   ``stable_min_accesses`` times, unchanged for ``stable_min_age``) that no fresh adapter holds,
   for the parametric tier. Reported, not built: building a cache needs the chat model and the
   user it is for (``mos.build_activation``), an adapter a training run.
4. **Demotion of stale artifacts**: a KV cache whose sources changed (or that was not used
   for ``artifact_idle``) is dropped, its memories fall back to the prompt; other artifacts
   whose sources changed are flagged ``stale`` (not served, kept for retraining).

Every step takes ``now`` from the engine's clock, so tests drive it with a fake one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from .items import AuditRecord, MemoryItem
from .lifecycle import SERVED_STATES
from .scheduler import SLOT_KINDS

if TYPE_CHECKING:
    from ..storage.base import Scope
    from .engine import MemOS

PINNED = 1000  # the highest priority: such memories are never evicted for capacity
_LIST_LIMIT = 1_000_000


@dataclass(frozen=True)
class MaintenanceReport:
    """What one ``maintain`` pass did (and what it suggests)."""

    at: datetime
    cubes: tuple[str, ...]
    expired: tuple[str, ...]
    evicted: dict[str, tuple[str, ...]]  # cube -> item ids archived for capacity
    promote_activation: dict[str, tuple[str, ...]]  # cube -> hot ids no fresh KV cache holds
    promote_parametric: dict[str, tuple[str, ...]]  # cube -> stable ids no adapter holds
    dropped_artifacts: tuple[str, ...]
    stale_artifacts: tuple[str, ...]

    def counts(self) -> dict[str, int]:
        return {
            "cubes": len(self.cubes),
            "expired": len(self.expired),
            "evicted": sum(map(len, self.evicted.values())),
            "promote_activation": sum(map(len, self.promote_activation.values())),
            "promote_parametric": sum(map(len, self.promote_parametric.values())),
            "dropped_artifacts": len(self.dropped_artifacts),
            "stale_artifacts": len(self.stale_artifacts),
        }

    def describe(self) -> dict[str, Any]:
        """JSON-ready: the counts, then the ids."""
        return {
            "at": self.at.isoformat(),
            **self.counts(),
            "ids": {
                "expired": list(self.expired),
                "evicted": {c: list(v) for c, v in self.evicted.items()},
                "promote_activation": {c: list(v) for c, v in self.promote_activation.items()},
                "promote_parametric": {c: list(v) for c, v in self.promote_parametric.items()},
                "dropped_artifacts": list(self.dropped_artifacts),
                "stale_artifacts": list(self.stale_artifacts),
            },
        }


def importance(item: MemoryItem, now: datetime, half_life_s: float) -> float:
    """How much an item is worth keeping, in [0, 1]: priority weighs most, then use (log
    access count), then recency of the last access (or of creation), then confidence."""
    priority = (item.priority + 1000) / 2000
    use = min(1.0, math.log1p(item.access_count) / math.log1p(100))
    last = item.last_accessed_at or item.created_at
    recency = 0.5 ** (max((now - last).total_seconds(), 0.0) / half_life_s)
    return 0.4 * priority + 0.3 * use + 0.2 * recency + 0.1 * item.confidence


def run(mos: MemOS, scope: Scope, actor: str | None) -> MaintenanceReport:
    """One maintenance pass over ``scope`` (already checked for writing) as ``actor``."""
    now = mos.clock()
    s = mos.settings
    cubes = (
        list(scope.cube_ids)
        if scope.cube_ids is not None
        else [c.id for c in mos.store.list_cubes()]
    )
    expired = mos.store.expire_due(
        scope, now, by=actor, audit=AuditRecord(actor, "expire", None, None, {"ttl": True}, now)
    )
    evicted: dict[str, tuple[str, ...]] = {}
    hot: dict[str, tuple[str, ...]] = {}
    stable: dict[str, tuple[str, ...]] = {}
    dropped: list[str] = []
    flagged: list[str] = []
    for cube in cubes:
        if s.cube_capacity is not None:
            out = _evict(mos, cube, s.cube_capacity, now, actor)
            if out:
                evicted[cube] = out
        artifacts = mos.store.list_artifacts(cube, with_payload=False)
        fresh = {a.id for a in artifacts if not a.stale and mos.scheduler.is_fresh(a)}
        for a in artifacts:
            if a.id in fresh:
                idle = a.kind == "activation" and _idle(a.metadata.get("used_at"), now, s)
                if idle:
                    dropped.append(a.id)
            elif a.kind == "activation":
                dropped.append(a.id)
            elif not a.stale:
                flagged.append(a.id)
        held = {
            kind: {i for a in artifacts if a.id in fresh and a.kind == kind for i in a.sources}
            for kind in ("activation", SLOT_KINDS["adapter"])
        }
        candidates = _served(mos, cube, s.hot_min_accesses)
        ids = tuple(it.id for it in candidates if it.id not in held["activation"])
        if ids:
            hot[cube] = ids[: s.activation_items]
        ids = tuple(
            it.id
            for it in candidates
            if it.access_count >= s.stable_min_accesses
            and now - it.updated_at >= s.stable_min_age
            and it.id not in held[SLOT_KINDS["adapter"]]
        )
        if ids:
            stable[cube] = ids
    if dropped or flagged:
        mos.store.retire_artifacts(
            dropped, flagged, AuditRecord(actor, "demote:artifacts", None, None, at=now)
        )
    report = MaintenanceReport(
        now, tuple(cubes), tuple(expired), evicted, hot, stable, tuple(dropped), tuple(flagged)
    )
    mos.store.add_audit(AuditRecord(actor, "maintain", None, None, report.counts(), now))
    return report


def _served(mos: MemOS, cube: str, min_accesses: int) -> list[MemoryItem]:
    """The cube's live items accessed at least ``min_accesses`` times, most used first."""
    from ..storage.base import Scope

    where = mos._where(
        {"access_count": {"$gte": min_accesses}},
        None,
        None,
        None,
        None,
        None,
        SERVED_STATES,
        live_only=True,
    )
    return mos.store.list_items(
        Scope((cube,), None), where, limit=_LIST_LIMIT, offset=0, order="accessed"
    )


def _evict(
    mos: MemOS, cube: str, capacity: int, now: datetime, actor: str | None
) -> tuple[str, ...]:
    """Archive the least important served items beyond ``capacity`` (pinned ones stay)."""
    from ..storage.base import Scope

    scope = Scope((cube,), None)
    where = mos._where(None, None, None, None, None, None, SERVED_STATES, live_only=False)
    over = mos.store.count_items(scope, where) - capacity
    if over <= 0:
        return ()
    items = mos.store.list_items(scope, where, limit=_LIST_LIMIT, offset=0, order="created")
    half_life = mos.settings.importance_half_life.total_seconds()
    ranked = sorted(
        (it for it in items if it.priority < PINNED),
        key=lambda it: (importance(it, now, half_life), it.created_at, it.id),
    )
    victims = [it.id for it in ranked[:over]]
    if not victims:
        return ()
    moved = mos.store.set_state(
        victims,
        "archived",
        from_states=SERVED_STATES,
        by=actor,
        reason="capacity",
        audit=AuditRecord(
            actor, "evict", None, cube, {"capacity": capacity, "items": victims[:100]}, now
        ),
    )
    return tuple(moved)


def _idle(used_at: object, now: datetime, settings: Any) -> bool:
    from .errors import InvalidInput
    from .items import parse_time

    try:
        last = parse_time(used_at, "used_at")
    except InvalidInput:  # a hand-edited artifact: treat as never used
        return True
    return last is not None and now - last > settings.artifact_idle
