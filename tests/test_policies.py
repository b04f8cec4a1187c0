"""Lifecycle policies of ``maintain()`` driven by a controllable clock, on both stores."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from _backends import BACKENDS

from memos_integrations import MemOS
from memos_integrations.core.config import Settings
from memos_integrations.core.cube import Artifact
from memos_integrations.core.items import AuditRecord
from memos_integrations.core.policies import PINNED

STORES = BACKENDS


class Clock:
    """A clock that moves only when told to."""

    def __init__(self) -> None:
        self.now = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def lm(target, embedder, db_path: Path, clock: Clock) -> Iterator[MemOS]:
    """An engine on the fake clock: alice and bob with a cube each, small policy thresholds."""
    settings = Settings(
        db_path=db_path,
        cube_capacity=3,
        hot_min_accesses=2,
        stable_min_accesses=3,
        stable_min_age=timedelta(days=7),
        artifact_idle=timedelta(days=30),
    )
    with MemOS.open(target, embedder=embedder, settings=settings, clock=clock) as m:
        for user in ("alice", "bob"):
            m.create_user(user)
            m.create_cube(f"{user}-personal", owner=user)
        yield m


def test_ttl_expiry_follows_the_clock(lm: MemOS, clock: Clock) -> None:
    [short] = lm.add(["Alice is at the dentist"], user="alice", ttl=60)
    [bobs] = lm.add(["Bob is on a call"], user="bob", ttl=60)
    [lasting] = lm.add(["Alice is vegetarian"], user="alice")
    clock.advance(seconds=59)
    assert short.id in {h.id for h in lm.search("dentist", user="alice", k=5)}
    assert lm.maintain(user="alice").expired == ()
    clock.advance(seconds=2)
    assert short.id not in {h.id for h in lm.search("dentist", user="alice", k=5)}
    report = lm.maintain(user="alice")  # alice's cubes only: bob's item waits for bob
    assert report.expired == (short.id,) and report.cubes == ("alice-personal",)
    assert lm.get(short.id).state == "expired" and lm.get(bobs.id).state == "generated"
    last = lm.transitions(short.id)[-1]
    assert (last.from_state, last.to_state, last.reason, last.at) == (
        "activated",
        "expired",
        "ttl",
        clock.now,
    )
    assert lm.maintain().expired == (bobs.id,)  # root: every cube
    assert lm.get(lasting.id).state != "expired"  # no TTL: never expires
    assert lm.audit(action="maintain")[0].detail["expired"] == 1


def test_capacity_evicts_by_importance_not_age(lm: MemOS, clock: Clock) -> None:
    [pinned] = lm.add(["Alice is allergic to penicillin"], user="alice", priority=PINNED)
    clock.advance(days=1)
    [used] = lm.add(["Alice's daughter is called Ines"], user="alice")
    clock.advance(days=1)
    [low] = lm.add(["Alice once tried a kebab"], user="alice", priority=-500)
    clock.advance(days=1)
    [plain] = lm.add(["Alice likes jazz"], user="alice")
    clock.advance(days=1)
    [newest] = lm.add(["Alice saw a red car"], user="alice")
    assert newest.created_at > plain.created_at
    for _ in range(3):
        lm.search("daughter Ines", user="alice", k=1)
    clock.advance(days=1)
    report = lm.maintain()
    # 5 live items, capacity 3: the two least important go (low priority, then the older of
    # two unused ones), whatever their age; FIFO would have dropped `pinned` and `used`
    assert set(report.evicted) == {"alice-personal"}
    assert set(report.evicted["alice-personal"]) == {low.id, plain.id}
    assert lm.get(pinned.id).state != "archived"  # the oldest, but pinned: FIFO would drop it
    assert lm.get(used.id).state == "activated"  # used often
    assert lm.count(user="alice", states=["generated", "activated"]) == 3
    assert lm.transitions(low.id)[-1].reason == "capacity"
    assert lm.maintain().evicted == {}  # at capacity now: nothing more
    lm.set_state(low.id, "activated", user="alice")  # archived, not lost


def test_promotion_candidates_and_demotion(lm: MemOS, clock: Clock) -> None:
    [fact] = lm.add(["Alice works at the observatory"], user="alice", priority=PINNED)
    [other] = lm.add(["Alice grows tomatoes"], user="alice", priority=PINNED)
    for _ in range(3):
        lm.search("observatory", user="alice", k=1)
    report = lm.maintain()
    assert report.promote_activation == {"alice-personal": (fact.id,)}
    assert report.promote_parametric == {}  # used enough, but not yet stable for 7 days
    clock.advance(days=8)
    assert lm.maintain().promote_parametric == {"alice-personal": (fact.id,)}

    def artifact(kind: str, name: str, sources: dict[str, int], **meta: str) -> Artifact:
        art = Artifact(
            f"{kind}-{name}", "alice-personal", kind, name, b"\x00", sources=sources, metadata=meta
        )
        lm.store.put_artifact(art, AuditRecord(None, f"build:{kind}", art.id, art.cube_id))
        return art

    kv = artifact("activation", "hot/alice/m", {fact.id: fact.version}, used_at=clock().isoformat())
    lora = artifact("parametric", "lora/alice", {fact.id: fact.version})
    idle = artifact("activation", "hot/bob/m", {other.id: 1}, used_at=clock().isoformat())
    clock.advance(days=20)
    lm.search("observatory", user="alice", k=1)
    lm.store.touch_artifact(kv.id, clock())
    report = lm.maintain()  # both tiers now hold the fact: no candidate
    assert report.promote_activation == {} and report.promote_parametric == {}
    assert report.dropped_artifacts == () and report.stale_artifacts == ()
    clock.advance(days=11)  # the other cache went unused past artifact_idle
    lm.store.touch_artifact(kv.id, clock())
    assert lm.maintain().dropped_artifacts == (idle.id,)

    lm.update(fact.id, user="alice", text="Alice works at the planetarium")
    report = lm.maintain()  # the source changed: the KV cache goes, the adapter is flagged
    assert report.dropped_artifacts == (kv.id,) and report.stale_artifacts == (lora.id,)
    assert [a.id for a in lm.artifacts("alice-personal")] == [lora.id]
    assert lm.artifacts("alice-personal")[0].stale
    assert lm.maintain().stale_artifacts == ()  # flagged once
    assert lm.audit(action="demote:artifacts")[0].detail["stale"] == [lora.id]


def test_expire_due_is_set_based(lm: MemOS, clock: Clock) -> None:
    lm.add([f"note {n}" for n in range(40)], user="alice", ttl=10)
    lm.add([f"bob note {n}" for n in range(5)], user="bob", ttl=10)
    clock.advance(seconds=11)
    calls: list[str] = []

    def spy(name: str):
        original = getattr(lm.store, name)

        def call(*args, **kw):
            calls.append(name)
            return original(*args, **kw)

        return call

    for name in ("get_items", "list_items"):  # loading items would go through these
        setattr(lm.store, name, spy(name))
    assert lm.expire_due(user="alice") == 40
    assert calls == []  # no item was loaded to expire them
    assert lm.count(user="bob", states=["expired"]) == 0
