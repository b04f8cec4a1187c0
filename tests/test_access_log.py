"""Access bookkeeping written behind searches: visible to the process at once, to other
handles soon after, never lost (a failed write is retried and reported)."""

from __future__ import annotations

import dataclasses
import time
from datetime import UTC, datetime

import pytest
from _backends import BACKENDS

from memos_integrations import MemOS
from memos_integrations.core.access import AccessLog
from memos_integrations.storage.base import Served

STORES = BACKENDS


def _seed(mos: MemOS) -> str:
    [item] = mos.add("Alice keeps bees on her roof in Porto", user="alice", cube="alice-personal")
    return item.id


def _eventually(check, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.02)
    return False


def test_own_reads_see_the_search_at_once(mos: MemOS) -> None:
    item_id = _seed(mos)
    for _ in range(3):
        assert mos.search("bees on the roof", user="alice", k=1)[0].item.id == item_id
    item = mos.get(item_id, user="alice")
    assert (item.state, item.access_count) == ("activated", 3)
    assert [t.to_state for t in mos.transitions(item_id)] == ["generated", "activated"]
    assert mos.count(user="alice", states=["activated"]) == 1
    assert mos.list(user="alice", order="accessed")[0].access_count == 3


def test_other_handles_see_it_after_the_delay(mos: MemOS, open_mos) -> None:
    item_id = _seed(mos)
    other = open_mos()
    mos.search("bees on the roof", user="alice", k=1)
    assert _eventually(lambda: other.get(item_id).access_count == 1)


def test_close_writes_what_is_queued(mos: MemOS, open_mos) -> None:
    item_id = _seed(mos)
    slow = open_mos(settings=dataclasses.replace(mos.settings, access_write_delay=60.0))
    slow.search("bees on the roof", user="alice", k=1)
    slow.close()
    assert mos.get(item_id).access_count == 1


def test_every_store_call_but_a_search_writes_the_queue_first(mos: MemOS, open_mos) -> None:
    """Structural, not per call site: whatever reaches the store through the engine (a
    read, a change, a policy, the scheduler) comes after every search so far."""
    item_id = _seed(mos)
    slow = open_mos(settings=dataclasses.replace(mos.settings, access_write_delay=60.0))
    for _ in range(2):
        slow.search("bees on the roof", user="alice", k=1)
    assert slow.store.raw.get_items([item_id])[0].access_count == 0  # searches only queue
    assert slow.store.get_items([item_id])[0].access_count == 2  # any other call writes first
    slow.search("bees on the roof", user="alice", k=1)
    assert slow.maintain(user="alice") is not None  # a policy pass: counts already in
    assert slow.store.raw.get_items([item_id])[0].access_count == 3
    slow.close()


def test_zero_delay_writes_inside_the_search(mos: MemOS, open_mos) -> None:
    item_id = _seed(mos)
    sync = open_mos(settings=dataclasses.replace(mos.settings, access_write_delay=0.0))
    sync.search("bees on the roof", user="alice", k=1)
    assert mos.get(item_id).access_count == 1  # another handle: no flush of its own queue


class _Refusing:
    """A store whose first ``fail`` access writes fail, as a locked database would."""

    def __init__(self, store, fail: int) -> None:
        self.store, self.fail, self.calls = store, fail, 0

    def mark_served(self, served) -> None:
        self.calls += 1
        if self.calls <= self.fail:
            raise RuntimeError("database is locked")
        self.store.mark_served(served)


def test_a_failed_write_is_reported_and_nothing_is_lost(mos: MemOS) -> None:
    item_id = _seed(mos)
    refusing = _Refusing(mos.store, fail=2)
    log = AccessLog(refusing, delay=60.0)  # no background write during the test
    at = datetime.now(UTC)
    log.record([item_id], at, "alice", "served by search")
    log.record([item_id], at, "alice", "served by search")
    with pytest.raises(RuntimeError, match="locked"):
        log.flush()
    with pytest.raises(RuntimeError, match="locked"):
        log.flush()
    log.flush()  # the store accepts writes again: both events land, once each
    log.close()
    assert mos.get(item_id).access_count == 2
    assert refusing.calls == 3


def test_a_background_failure_surfaces_on_the_next_flush(mos: MemOS) -> None:
    item_id = _seed(mos)
    refusing = _Refusing(mos.store, fail=1)
    log = AccessLog(refusing, delay=0.01)
    log.record([item_id], datetime.now(UTC), None, "served by search")
    assert _eventually(lambda: refusing.calls >= 1)
    with pytest.raises(RuntimeError, match="locked"):
        log.flush()  # reported once, and the events were written by the retry
    log.close()
    assert mos.get(item_id).access_count == 1


def test_batches_keep_their_order_and_actors(mos: MemOS) -> None:
    item_id = _seed(mos)
    at = datetime.now(UTC)
    mos.store.mark_served(
        [Served((item_id,), at, "alice", "served by search"), Served((item_id,), at, None, "x")]
    )
    assert mos.get(item_id).access_count == 2
    [moved] = [t for t in mos.transitions(item_id) if t.to_state == "activated"]
    assert (moved.by, moved.reason) == ("alice", "served by search")
