"""Consolidation of extracted memories: duplicates, updates, contradictions, merges, replays.

The reader here is a plain rule-based function (each user turn is a memory as said), so the
tests exercise the engine's consolidation with the real embedder and store. The LLM judge is
a scripted function standing in for a remote model.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from _backends import BACKENDS

from memos_integrations import MemOS
from memos_integrations.core.consolidation import Consolidator
from memos_integrations.core.errors import InvalidInput

STORES = BACKENDS  # consolidation rewrites provenance in a new version: both stores


def verbatim(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A reader that keeps each turn as one memory (they are written in the third person)."""
    return [{"text": m["content"], "kind": "fact", "turns": [n]} for n, m in enumerate(messages)]


def turn(text: str, day: int, n: int) -> dict[str, Any]:
    return {"role": "user", "content": text, "timestamp": f"2024-03-{day:02d}", "id": f"m{n}"}


@pytest.fixture
def fine(open_mos) -> MemOS:
    mos = open_mos(reader=verbatim)
    mos.create_user("alice")
    mos.create_cube("alice-personal", owner="alice")
    return mos


def memories(mos: MemOS) -> list[str]:
    return [
        m.text
        for m in mos.list(user="alice", states=["generated", "activated"], order="created_asc")
        if m.kind != "raw_turn"
    ]


def test_update_supersedes_the_old_memory_as_a_new_version(fine: MemOS) -> None:
    [paris] = fine.add([turn("Alice lives in Paris.", 1, 1)], user="alice", mode="fine")
    [moved] = fine.add([turn("Alice lives in Lisbon.", 20, 2)], user="alice", mode="fine")
    assert moved.id == paris.id and moved.version == 2  # the same memory, updated
    assert memories(fine) == ["Alice lives in Lisbon."]
    assert [v.text for v in fine.history(paris.id)] == [
        "Alice lives in Paris.",
        "Alice lives in Lisbon.",
    ]
    assert fine.history(paris.id)[-1].change == "consolidate"
    assert moved.provenance.message_ids == ("m1", "m2")  # both sources kept
    assert len(moved.provenance.derived_from) == 2
    assert moved.event_time is not None and moved.event_time.day == 20


def test_an_older_statement_does_not_overwrite_a_newer_one(fine: MemOS) -> None:
    fine.add([turn("Alice likes coffee.", 20, 1)], user="alice", mode="fine")
    fine.add([turn("Alice likes tea.", 1, 2)], user="alice", mode="fine")  # said earlier
    assert sorted(memories(fine)) == ["Alice likes coffee.", "Alice likes tea."]


def test_duplicates_add_nothing(fine: MemOS) -> None:
    fine.add([turn("Alice plays the oboe in an orchestra.", 1, 1)], user="alice", mode="fine")
    [again] = fine.add(
        [turn("Alice plays the oboe in an orchestra!", 2, 2)], user="alice", mode="fine"
    )
    assert memories(fine) == ["Alice plays the oboe in an orchestra."] and again.version == 1
    unrelated = [turn("Bob collects stamps.", 3, 3)]
    fine.add(unrelated, user="alice", mode="fine")
    assert len(memories(fine)) == 2


def test_llm_judge_merges_and_the_old_item_is_merged_not_deleted(fine: MemOS) -> None:
    asked: list[tuple[str, list[str]]] = []

    def judge(new: str, existing: list[str]) -> dict[str, Any]:
        asked.append((new, existing))
        return {"action": "merge", "target": 1, "text": "Alice has a cat called Miso, who is 3."}

    fine.consolidator = Consolidator(judge=judge)
    [cat] = fine.add([turn("Alice has a cat called Miso.", 1, 1)], user="alice", mode="fine")
    [merged] = fine.add([turn("Alice's cat Miso is 3.", 2, 2)], user="alice", mode="fine")
    assert asked == [("Alice's cat Miso is 3.", ["Alice has a cat called Miso."])]
    assert memories(fine) == ["Alice has a cat called Miso, who is 3."]
    old = fine.get(cat.id)
    assert old.state == "merged"
    assert merged.id in (fine.transitions(cat.id)[-1].reason or "")
    assert cat.id in merged.provenance.derived_from
    assert merged.provenance.message_ids == ("m2", "m1")
    assert fine.search("Miso", user="alice", k=5)[0].item.id == merged.id


def test_an_invalid_judge_answer_falls_back_to_the_rules(fine: MemOS) -> None:
    fine.consolidator = Consolidator(judge=lambda new, existing: {"action": "explode"})
    fine.add([turn("Alice lives in Paris.", 1, 1)], user="alice", mode="fine")
    fine.add([turn("Alice lives in Lisbon.", 20, 2)], user="alice", mode="fine")
    assert memories(fine) == ["Alice lives in Lisbon."]  # the rule's update


def test_llm_judge_as_a_chat_model(fine: MemOS) -> None:
    from langchain_core.language_models.fake_chat_models import GenericFakeChatModel

    model = GenericFakeChatModel(messages=iter([json.dumps({"action": "add"})]))
    fine.consolidator = Consolidator(judge=model)
    fine.add([turn("Alice lives in Paris.", 1, 1)], user="alice", mode="fine")
    fine.add([turn("Alice lives in Lisbon.", 20, 2)], user="alice", mode="fine")
    assert sorted(memories(fine)) == ["Alice lives in Lisbon.", "Alice lives in Paris."]
    with pytest.raises(InvalidInput, match="similar <= duplicate"):
        Consolidator(similar=0.95, duplicate=0.9)


def test_replaying_a_conversation_adds_nothing(fine: MemOS) -> None:
    facts = [
        "Alice works as a nurse.",
        "Alice adopted a dog named Rex.",
        "Alice is learning Portuguese.",
        "Alice runs every Sunday morning.",
    ]
    conversation = [turn(t, 1 + n, n) for n, t in enumerate(facts)]
    fine.add(conversation, user="alice", session="s", mode="fine")
    first = fine.count(user="alice", states=["generated", "activated", "merged", "archived"])
    assert sorted(memories(fine)) == sorted(facts)
    fine.add(conversation, user="alice", session="s", mode="fine")
    fine.add(conversation, user="alice", session="s")  # a fast replay too
    assert (
        fine.count(user="alice", states=["generated", "activated", "merged", "archived"]) == first
    )
    assert sorted(memories(fine)) == sorted(facts)
