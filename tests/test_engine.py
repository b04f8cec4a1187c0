"""The engine's user-facing flows on a real SQLite file with the real embedder."""

from __future__ import annotations

import asyncio
import time

import pytest
from _backends import BACKENDS, rows, vector_table

from memos_integrations import (
    InvalidInput,
    InvalidTransition,
    MemOS,
    NotFound,
)

STORES = BACKENDS  # every test here runs on both stores (see conftest.py)


def test_add_message_keeps_event_time_speaker_and_session(mos: MemOS) -> None:
    [item] = mos.add(
        [
            {
                "role": "user",
                "content": "I moved to Lisbon in March 2024",
                "timestamp": "2024-03-10T10:00:00+01:00",
                "id": "m1",
            }
        ],
        user="alice",
        cube="alice-personal",
        session="s1",
    )
    assert item.text == "alice: I moved to Lisbon in March 2024"
    assert item.kind == "raw_turn"
    assert item.state == "generated" and item.version == 1
    assert item.event_time is not None and item.event_time.utcoffset().total_seconds() == 3600
    p = item.provenance
    assert (p.source, p.session_id, p.message_ids, p.role, p.speaker) == (
        "conversation",
        "s1",
        ("m1",),
        "user",
        "alice",
    )
    assert item.embedding_model == mos.embedder.model_id
    assert item.created_at <= item.updated_at


def test_plain_texts_and_memory_dicts(mos: MemOS) -> None:
    items = mos.add(
        [
            "Alice is allergic to peanuts",
            {
                "text": "Alice prefers window seats",
                "kind": "preference",
                "tags": ["travel"],
                "metadata": {"source": "form", "score": 3},
                "priority": 5,
                "confidence": 0.8,
            },
        ],
        user="alice",
        tags=["health"],
    )
    assert [it.kind for it in items] == ["fact", "preference"]
    assert items[0].tags == ("health",) and items[1].tags == ("travel",)
    assert items[1].metadata == {"source": "form", "score": 3}
    assert (items[1].priority, items[1].confidence) == (5, 0.8)


def test_readding_same_content_is_idempotent(mos: MemOS) -> None:
    msg = {"role": "user", "content": "I like tea", "timestamp": "2024-01-01T00:00:00Z"}
    first = mos.add([msg], user="alice")
    second = mos.add([msg, dict(msg)], user="alice")
    assert {it.id for it in second} == {first[0].id}
    assert mos.count(user="alice") == 1
    # the same words on another day are another memory
    mos.add([{**msg, "timestamp": "2024-01-02T00:00:00Z"}], user="alice")
    assert mos.count(user="alice") == 2


def test_search_is_hybrid_scored_and_activates(mos: MemOS) -> None:
    mos.add(
        [
            "Alice moved to Lisbon in March 2024",
            "Alice's cat is called Pixel",
            "Alice works at a robotics startup",
        ],
        user="alice",
    )
    hits = mos.search("which city did alice move to?", user="alice", k=2)
    assert len(hits) == 2
    assert "Lisbon" in hits[0].text
    assert hits[0].score >= hits[1].score > 0
    assert hits[0].dense_score is not None and hits[0].text_score is not None
    item = mos.get(hits[0].id, user="alice")
    assert item.state == "activated" and item.access_count == 1
    assert [t.to_state for t in mos.transitions(item.id)] == ["generated", "activated"]
    dense = mos.search("which city did alice move to?", user="alice", k=3, mode="dense")
    text = mos.search("Lisbon", user="alice", k=3, mode="text")
    assert all(h.text_score is None for h in dense)
    assert [h.text for h in text] == ["Alice moved to Lisbon in March 2024"]


def test_search_filters(mos: MemOS) -> None:
    mos.add(
        [
            {
                "text": "Trip to Rome",
                "kind": "event",
                "tags": ["travel"],
                "event_time": "2023-05-01T00:00:00Z",
                "metadata": {"city": "Rome", "n": 1},
            },
            {
                "text": "Trip to Oslo",
                "kind": "event",
                "tags": ["travel", "work"],
                "event_time": "2024-05-01T00:00:00Z",
                "metadata": {"city": "Oslo", "n": 2},
            },
            {"text": "Likes trips by train", "kind": "preference"},
        ],
        user="alice",
    )
    q = "trip"

    def texts(**kw) -> set[str]:
        return {h.text for h in mos.search(q, user="alice", k=10, **kw)}

    assert texts(kinds=["event"]) == {"Trip to Rome", "Trip to Oslo"}
    assert texts(tags=["work"]) == {"Trip to Oslo"}
    assert texts(since="2024-01-01") == {"Trip to Oslo"}
    assert texts(until="2024-01-01") == {"Trip to Rome"}
    assert texts(filter={"metadata.city": "Rome"}) == {"Trip to Rome"}
    assert texts(filter={"metadata.n": {"$gte": 2}}) == {"Trip to Oslo"}
    assert texts(filter={"metadata.city": {"$exists": False}}) == {"Likes trips by train"}
    assert texts(filter={"$or": [{"kind": "preference"}, {"metadata.city": "Oslo"}]}) == {
        "Likes trips by train",
        "Trip to Oslo",
    }
    assert texts(filter={"$not": {"kind": "event"}}) == {"Likes trips by train"}
    assert texts(filter={"tags": {"$all": ["travel", "work"]}}) == {"Trip to Oslo"}


def test_update_history_rollback(mos: MemOS) -> None:
    [item] = mos.add(["Alice lives in Lisbon"], user="alice", tags=["home"])
    v2 = mos.update(item.id, user="alice", text="Alice lives in Porto", note="moved")
    assert (v2.version, v2.text, v2.tags) == (2, "Alice lives in Porto", ("home",))
    assert v2.content_hash != item.content_hash
    # the new text is what search finds; the old one is gone from the index
    hits = mos.search("Porto", user="alice", k=5, mode="text")
    assert [h.id for h in hits] == [item.id]
    assert mos.search("Lisbon", user="alice", k=5, mode="text") == []
    v3 = mos.rollback(item.id, 1, user="alice")
    assert (v3.version, v3.text) == (3, "Alice lives in Lisbon")
    history = mos.history(item.id, user="alice")
    assert [(v.version, v.change, v.text) for v in history] == [
        (1, "create", "Alice lives in Lisbon"),
        (2, "update", "Alice lives in Porto"),
        (3, "rollback", "Alice lives in Lisbon"),
    ]
    assert history[1].note == "moved"
    top = mos.search("where does alice live", user="alice", k=1, mode="dense")[0]
    assert top.id == item.id and top.text == "Alice lives in Lisbon"
    with pytest.raises(NotFound):
        mos.rollback(item.id, 9, user="alice")


def test_lifecycle_states_and_delete(mos: MemOS) -> None:
    [a, b] = mos.add(["Alice drinks coffee", "Alice drinks tea"], user="alice")
    mos.set_state(a.id, "archived", user="alice", reason="stale")
    assert mos.get(a.id).state == "archived"
    assert a.id not in {h.id for h in mos.search("drinks", user="alice", k=5)}
    assert a.id in {h.id for h in mos.search("drinks", user="alice", k=5, states=["archived"])}
    mos.set_state(a.id, "activated", user="alice")
    mos.delete(b.id, user="alice")
    assert mos.get(b.id).state == "deleted"  # tombstone kept, hidden from search and list
    assert b.id not in {it.id for it in mos.list(user="alice")}
    assert b.id in {it.id for it in mos.list(user="alice", states=["deleted"])}
    assert b.id not in {h.id for h in mos.search("tea", user="alice", k=5)}
    with pytest.raises(InvalidTransition):
        mos.set_state(b.id, "activated", user="alice")
    with pytest.raises(InvalidInput):
        mos.update(b.id, user="alice", text="x")
    # re-adding deleted content creates a fresh memory
    [again] = mos.add(["Alice drinks tea"], user="alice")
    assert again.id != b.id
    assert [t.to_state for t in mos.transitions(a.id)] == ["generated", "archived", "activated"]


def test_ttl_hides_then_expires(mos: MemOS) -> None:
    [short] = mos.add(["Alice is in a meeting"], user="alice", ttl=0.5)
    [lasting] = mos.add(["Alice is a vegetarian"], user="alice")
    assert short.expires_at is not None and lasting.expires_at is None
    time.sleep(0.6)
    assert short.id not in {h.id for h in mos.search("alice", user="alice", k=10)}
    assert mos.expire_due() == 1
    assert mos.get(short.id).state == "expired"
    assert mos.get(lasting.id).state == "activated"  # served by the search above


def test_priority_confidence_visibility_validation(mos: MemOS) -> None:
    with pytest.raises(InvalidInput):
        mos.add(["x"], user="alice", priority=10_000)
    with pytest.raises(InvalidInput):
        mos.add(["x"], user="alice", confidence=1.5)
    with pytest.raises(InvalidInput):
        mos.add(["x"], user="alice", visibility="world")


def test_default_cube_must_be_unambiguous(mos: MemOS) -> None:
    mos.create_cube("alice-work", owner="alice")
    with pytest.raises(InvalidInput, match="cube="):
        mos.add(["x"], user="alice")


def test_stats_and_audit(mos: MemOS) -> None:
    mos.add(["one", "two"], user="alice")
    stats = mos.stats(user="alice")
    assert stats["items"] == 2 and stats["by_state"] == {"generated": 2}
    assert stats["embedding_model"] == mos.embedder.model_id
    actions = [r.action for r in mos.audit(actor="alice")]
    assert actions[0] == "add" and "create_cube" in actions


def test_forget_user_removes_everything(mos: MemOS, open_mos) -> None:
    [item] = mos.add(["Alice's secret"], user="alice")
    mos.update(item.id, user="alice", text="Alice's other secret")
    mos.add(["Bob note in his own cube"], user="bob")
    mos.grant("bob-personal", to="alice", access="write", by="bob")
    [in_bob] = mos.add(["Alice wrote into bob's cube"], user="alice", cube="bob-personal")
    report = mos.forget_user("alice")
    assert report["items"] == 2 and report["cubes"] == 1 and report["users"] == 1
    assert report["versions"] == 3 and report["grants"] == 1
    with pytest.raises(NotFound):
        mos.get(item.id)
    with pytest.raises(NotFound):
        mos.get(in_bob.id)
    with pytest.raises(NotFound):
        mos.get_user("alice")
    assert [h.text for h in mos.search("secret", user="bob", k=5)] == [
        "bob: Bob note in his own cube"
    ] or mos.count(user="bob") == 1
    for table, column in (("items", "owner"), ("cubes", "owner"), ("grants", "user_id")):
        assert rows(mos, f"SELECT count(*) FROM {table} WHERE {column}='alice'") == [(0,)]
    assert rows(mos, f"SELECT count(*) FROM {vector_table(mos)}") == [(1,)]
    assert rows(mos, "SELECT count(*) FROM item_versions") == [(1,)]
    # nor does any search index, in this process or a fresh one
    assert mos.search("secret", user="carol", k=5, mode="text") == []
    assert open_mos().search("secret", user="carol", k=5, mode="text") == []


def test_reopen_keeps_everything_and_checks_embedder(mos: MemOS, open_mos) -> None:
    [item] = mos.add(["Alice plays the cello"], user="alice")
    mos.close()
    again = open_mos()
    assert again.get(item.id).text == "Alice plays the cello"
    assert again.search("music instrument", user="alice", k=1)[0].id == item.id
    from langchain_core.embeddings import DeterministicFakeEmbedding

    from memos_integrations import EmbedderMismatch

    with pytest.raises(EmbedderMismatch, match="all-MiniLM"):
        open_mos(embedder=DeterministicFakeEmbedding(size=8))


def test_async_twins(mos: MemOS) -> None:
    async def main() -> None:
        items = await mos.aadd(["Alice sails on weekends"], user="alice")
        hits = await mos.asearch("hobby on the water", user="alice", k=1)
        assert hits[0].id == items[0].id
        assert (await mos.aget(items[0].id)).access_count == 1
        assert len(await mos.alist(user="alice")) == 1

    asyncio.run(main())
    assert MemOS.asearch.__name__ == "asearch"


def test_bulk_ingest_batches(mos: MemOS) -> None:
    items = mos.ingest(
        [f"fact number {i}" for i in range(300)], user="alice", batch_size=128, progress=False
    )
    assert len(items) == 300 == mos.count(user="alice")
    assert len({it.id for it in items}) == 300


def test_turns_keep_their_session_context_for_retrieval(mos: MemOS) -> None:
    first = mos.add(
        [
            {"role": "assistant", "content": "What did you do last weekend?"},
            {"role": "user", "content": "I went hiking with my brother."},
        ],
        user="alice",
        session="s9",
    )
    [later] = mos.add(
        [{"role": "user", "content": "It was exhausting but fun."}], user="alice", session="s9"
    )
    assert first[0].context == ""
    assert first[1].context == "assistant: What did you do last weekend?"
    # the context reaches back into earlier add calls of the same session (2 turns)
    assert later.context == (
        "assistant: What did you do last weekend? alice: I went hiking with my brother."
    )
    # context is retrieval-only: not part of the content hash or the text
    assert later.text == "alice: It was exhausting but fun."
    [other_session] = mos.add(
        [{"role": "user", "content": "New topic."}], user="alice", session="s10"
    )
    assert other_session.context == ""
    # a question worded like the preceding turn finds the reply through its context
    hits = mos.search("weekend", user="alice", k=3, mode="text")
    assert hits[0].id == first[0].id and first[1].id in {h.id for h in hits}


@pytest.mark.parametrize("mode", ["hybrid", "dense", "text"])
def test_selective_filter_still_returns_every_match(mos: MemOS, mode: str) -> None:
    # 3 of 300 similar notes carry the tag: over-fetching the best 50 candidates finds none of
    # them, so the search must widen and finally search exactly the admitted rows.
    mos.ingest(
        [
            {"text": f"note number {i} about the garden", "tags": ["rare"] if i % 100 == 7 else []}
            for i in range(300)
        ],
        user="alice",
        progress=False,
    )
    hits = mos.search("note about the garden", user="alice", k=10, tags=["rare"], mode=mode)
    assert sorted(h.text for h in hits) == [
        "note number 107 about the garden",
        "note number 207 about the garden",
        "note number 7 about the garden",
    ]
