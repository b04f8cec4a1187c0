"""MemOSStore: namespace mapping, access control, TTL, errors and persistence.

Behaviour shared with LangGraph's InMemoryStore is checked by the differential test
(test_langchain_store_differential.py); this file covers what is MemOS's own.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from langgraph.store.base import GetOp, PutOp, SearchOp

from memos_integrations import FilterError, InvalidInput, NotFound, PermissionDenied
from memos_integrations.langchain import MemOSEmbeddings, MemOSStore


def _store_items(mos, user):
    return mos.list(user=user, filter={"kind": "store"})


def test_user_label_maps_namespaces_to_users_and_cubes(mos) -> None:
    store = MemOSStore(mos, user_label=1, index={"fields": ["text"]})
    store.put(("memories", "alice"), "colour", {"text": "favourite colour is teal"})
    store.put(("memories", "dave"), "colour", {"text": "favourite colour is red"})
    store.put(("settings",), "theme", {"text": "dark"})

    [alice_item] = _store_items(mos, "alice")
    assert alice_item.cube_id == "alice-personal"  # her only cube
    assert alice_item.key == '["memories", "alice", "colour"]'
    assert alice_item.text == "favourite colour is teal"
    assert mos.get_cube("dave").owner == "dave"  # created on first write
    assert [it.text for it in _store_items(mos, "dave")] == ["favourite colour is red"]
    assert [it.owner for it in _store_items(mos, "langgraph")] == ["langgraph"]
    assert _store_items(mos, "bob") == []  # bob's memory holds nothing of theirs
    # a search under one user's namespace only reads that user's cube
    hits = store.search(("memories", "alice"), query="colour")
    assert [h.value["text"] for h in hits] == ["favourite colour is teal"]
    # the application can still search across users, as with any LangGraph store
    assert {h.namespace for h in store.search(("memories",), query="colour")} == {
        ("memories", "alice"),
        ("memories", "dave"),
    }


def test_reput_writes_a_version_and_delete_keeps_history(mos) -> None:
    store = MemOSStore(mos, user="alice")
    store.put(("prefs",), "food", {"likes": "pizza"})
    store.put(("prefs",), "food", {"likes": "pizza"})  # unchanged: no new version
    store.put(("prefs",), "food", {"likes": "sushi"})
    [item] = _store_items(mos, "alice")
    history = mos.history(item.id, user="alice")
    assert [v.metadata["lg"]["value"] for v in history] == [{"likes": "pizza"}, {"likes": "sushi"}]
    store.delete(("prefs",), "food")
    assert store.get(("prefs",), "food") is None
    assert mos.get(item.id, user="alice").state == "deleted"  # a tombstone, history kept
    store.put(("prefs",), "food", {"likes": "ramen"})  # the key can be used again
    assert store.get(("prefs",), "food").value == {"likes": "ramen"}


def test_bound_store_acts_as_its_user(mos) -> None:
    alice = MemOSStore(mos, user="alice")
    alice.put(("notes",), "n1", {"text": "alice's secret"})
    bob = MemOSStore(mos, user="bob")
    assert bob.get(("notes",), "n1") is None
    assert bob.search(("notes",), query="secret") == []
    # bob aimed at alice's cube: no grant, nothing visible, nothing written
    intruder = MemOSStore(mos, user="bob", cube="alice-personal")
    with pytest.raises(NotFound):
        intruder.put(("notes",), "n2", {"text": "graffiti"})
    with pytest.raises(NotFound):
        intruder.search(("notes",))
    mos.grant("alice-personal", to="bob", access="read", by="alice")
    assert intruder.get(("notes",), "n1").value == {"text": "alice's secret"}
    with pytest.raises(PermissionDenied):
        intruder.put(("notes",), "n2", {"text": "graffiti"})
    assert [it.text for it in _store_items(mos, "alice")] == ['{"text": "alice\'s secret"}']


def test_unknown_users_are_refused_without_create_missing(mos) -> None:
    store = MemOSStore(mos, user_label=1, create_missing=False)
    with pytest.raises(NotFound, match="unknown user 'zed'"):
        store.put(("memories", "zed"), "k", {"a": 1})
    assert store.get(("memories", "zed"), "k") is None
    assert "zed" not in {u.id for u in mos.list_users()}


def test_ttl_expires_and_refreshes_on_read(mos) -> None:
    store = MemOSStore(mos, user="alice")
    store.put(("t",), "short", {"v": 1}, ttl=0.005)  # 0.3 s
    store.put(("t",), "long", {"v": 2}, ttl=0.02)  # 1.2 s
    time.sleep(0.4)
    assert store.get(("t",), "short") is None
    assert [it.key for it in store.search(("t",), refresh_ttl=False)] == ["long"]
    [long_item] = [it for it in _store_items(mos, "alice") if it.metadata["lg"]["key"] == "long"]
    before = long_item.expires_at
    store.get(("t",), "long", refresh_ttl=False)
    assert mos.get(long_item.id, user="alice").expires_at == before
    store.get(("t",), "long")  # refresh_on_read by default: 0.4 s later, 0.4 s more to live
    after = mos.get(long_item.id, user="alice").expires_at
    assert after > before
    assert mos.history(long_item.id, user="alice")[-1].note == "ttl refresh"
    # a re-put of the same value restarts its TTL too
    store.put(("t",), "short", {"v": 1}, ttl=0.02)
    assert store.get(("t",), "short").value == {"v": 1}


def test_default_ttl_from_ttl_config(mos) -> None:
    store = MemOSStore(mos, user="alice", ttl={"default_ttl": 60, "refresh_on_read": False})
    store.put(("t",), "k", {"v": 1})
    [item] = _store_items(mos, "alice")
    assert item.metadata["lg"]["ttl"] == 60
    assert 3500 < (item.expires_at - item.created_at).total_seconds() <= 3600


def test_unindexed_reput_loses_its_score(mos) -> None:
    # InMemoryStore keeps the old vector of a key re-put with index=False; MemOS does not
    store = MemOSStore(mos, user="alice", index={"fields": ["text"]})
    store.put(("d",), "a", {"text": "the cat sat on the mat"})
    store.put(("d",), "a", {"text": "the cat sat on the mat"}, index=False)
    [hit] = store.search(("d",), query="cat")
    assert hit.score is None
    store.put(("d",), "b", {"title": "no text field"})  # nothing at the index fields
    assert {h.key: h.score for h in store.search(("d",), query="cat")} == {"a": None, "b": None}


def test_filter_semantics_where_inmemorystore_raises(mos) -> None:
    store = MemOSStore(mos, user="alice")
    store.put(("f",), "with", {"n": 5, "s": "7"})
    store.put(("f",), "without", {"s": "x"})
    # a missing or non-numeric field does not match an ordering operator (no TypeError)
    assert [i.key for i in store.search(("f",), filter={"n": {"$gt": 1}})] == ["with"]
    assert [i.key for i in store.search(("f",), filter={"s": {"$gt": 6}})] == ["with"]
    # a missing field is "not equal" to anything
    assert [i.key for i in store.search(("f",), filter={"n": {"$ne": 5}})] == ["without"]
    with pytest.raises(FilterError, match=r"\$regex"):
        store.search(("f",), filter={"s": {"$regex": "x"}})


def test_bad_writes_raise_and_write_nothing(mos) -> None:
    store = MemOSStore(mos, user="alice")
    with pytest.raises(InvalidInput, match="JSON"):
        store.batch([PutOp(("b",), "ok", {"v": 1}), PutOp(("b",), "bad", {"v": object()})])
    with pytest.raises(InvalidInput, match="must be a dict"):
        store.batch([PutOp(("b",), "bad", ["not", "a", "dict"])])  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="minutes"):
        store.batch([PutOp(("b",), "bad", {"v": 1}, ttl=-1)])
    assert _store_items(mos, "alice") == []
    with pytest.raises(InvalidInput, match="at most 1000"):
        store.search(("b",), query="x", limit=900, offset=200)


def test_index_config_must_match_the_engine(mos, embedder) -> None:
    MemOSStore(mos, index={"dims": 384, "embed": MemOSEmbeddings(embedder), "fields": ["t"]})
    with pytest.raises(InvalidInput, match="dims=1536"):
        MemOSStore(mos, index={"dims": 1536})
    with pytest.raises(InvalidInput, match="embeds with its MemOS engine"):
        MemOSStore(mos, index={"embed": "openai:text-embedding-3-small"})


def test_batch_reads_see_the_state_before_its_writes(mos) -> None:
    store = MemOSStore(mos, user="alice")
    store.put(("b",), "k", {"v": 1})
    got, _, searched, _ = store.batch(
        [
            GetOp(("b",), "k"),
            PutOp(("b",), "k", {"v": 2}),
            SearchOp(("b",)),
            PutOp(("b",), "k", {"v": 3}),  # the last write to a key wins
        ]
    )
    assert got.value == {"v": 1} and [s.value for s in searched] == [{"v": 1}]
    assert store.get(("b",), "k").value == {"v": 3}


def test_items_persist_across_a_restart(mos, open_mos) -> None:
    MemOSStore(mos, user_label=1).put(("memories", "alice"), "home", {"city": "Lisbon"})
    mos.close()
    store = MemOSStore(open_mos(), user_label=1)
    item = store.get(("memories", "alice"), "home")
    assert item.value == {"city": "Lisbon"} and item.namespace == ("memories", "alice")
    assert store.list_namespaces() == [("memories", "alice")]


def test_async_api(mos) -> None:
    store = MemOSStore(mos, user="alice", index={"fields": ["text"]})

    async def run() -> None:
        await store.aput(("a",), "k", {"text": "Alice plays the cello"})
        assert (await store.aget(("a",), "k")).value["text"] == "Alice plays the cello"
        [hit] = await store.asearch(("a",), query="music")
        assert hit.score is not None and hit.score > 0.1
        assert await store.alist_namespaces() == [("a",)]
        await store.adelete(("a",), "k")
        assert await store.aget(("a",), "k") is None

    asyncio.run(run())
