"""Engine additions the adapters need: bulk tombstones, a per-search fusion weight, `closed`."""

from __future__ import annotations

import asyncio

import pytest

from memos_integrations import InvalidInput, MemOS, NotFound, PermissionDenied


def _ids(items) -> list[str]:
    return [it.id for it in items]


def test_delete_many_tombstones_in_one_transaction(mos: MemOS) -> None:
    a, b, c = mos.add(["red apples", "green pears", "blue plums"], user="alice")
    mos.delete(c.id, user="alice")
    before = len(mos.audit(action="state:deleted"))
    assert mos.delete_many([a.id, b.id, c.id, a.id], user="alice", reason="cleanup") == 2
    assert {mos.get(i).state for i in (a.id, b.id, c.id)} == {"deleted"}
    assert mos.list(user="alice") == []
    assert mos.transitions(a.id)[-1].reason == "cleanup"
    assert len(mos.audit(action="state:deleted")) == before + 1  # one record for the batch
    assert mos.delete_many([], user="alice") == 0


def test_delete_many_is_all_or_nothing_across_users(mos: MemOS) -> None:
    mine = _ids(mos.add(["alice's diary", "alice's plans"], user="alice"))
    [theirs] = _ids(mos.add(["bob's secret"], user="bob"))
    with pytest.raises(NotFound):
        mos.delete_many([*mine, theirs], user="alice")
    with pytest.raises(NotFound):
        mos.delete_many([*mine, "no-such-item"], user="alice")
    assert len(mos.list(user="alice")) == 2 and len(mos.list(user="bob")) == 1
    mos.grant("bob-personal", to="alice", access="read", by="bob")
    with pytest.raises(PermissionDenied):
        mos.delete_many([*mine, theirs], user="alice")
    assert len(mos.list(user="alice", cube="alice-personal")) == 2


def test_adelete_many(mos: MemOS) -> None:
    async def run() -> None:
        ids = _ids(await mos.aadd(["one thing", "another thing"], user="alice"))
        assert await mos.adelete_many(ids, user="alice") == 2
        assert await mos.alist(user="alice") == []

    asyncio.run(run())


def test_set_state_many_moves_only_what_may_move(mos: MemOS) -> None:
    a, b, c = mos.add(["first note", "second note", "third note"], user="alice")
    mos.set_state(c.id, "archived", user="alice")
    assert mos.set_state_many([a.id, b.id, c.id], "archived", user="alice", reason="old") == 2
    assert {mos.get(i).state for i in (a.id, b.id, c.id)} == {"archived"}
    assert mos.set_state_many([a.id], "activated", user="alice") == 1
    assert mos.get(a.id).state == "activated"
    with pytest.raises(InvalidInput):
        mos.set_state_many([a.id], "frozen", user="alice")


def test_dense_weight_per_search_moves_the_ranking_between_the_legs(mos: MemOS) -> None:
    mos.add(
        [
            "The quarterly revenue report is due on Friday",
            "Money earned this season must be summarised before the weekend",
            "My cat sleeps on the sofa",
            "quarterly cat report",
        ],
        user="alice",
    )
    query = "quarterly report deadline"

    def order(**kw) -> list[str]:
        return [h.text for h in mos.search(query, user="alice", k=4, **kw)]

    dense = order(mode="dense")
    text = order(mode="text")
    assert dense[0] != text[0]  # the legs disagree on this query
    assert order(dense_weight=1000.0)[: len(dense)] == dense
    assert order(dense_weight=1e-6)[: len(text)] == text
    for bad in (0, -1.0, float("nan"), 1e9, True, "1"):
        with pytest.raises(InvalidInput):
            mos.search(query, user="alice", dense_weight=bad)


def test_closed(open_mos) -> None:
    m = open_mos()
    assert not m.closed
    m.close()
    assert m.closed
