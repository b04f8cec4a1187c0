"""The scheduler: query plans (explain vs. the chat that executes them), the adapter/expert
extension points and the per-session working memory. Chat mechanics on the tiny Llama."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from memos_integrations import CorruptExport, InvalidInput, MemOS
from memos_integrations.core.cube import Artifact
from memos_integrations.core.items import AuditRecord, MemoryItem, SearchHit, content_hash
from memos_integrations.core.scheduler import SlotChoice, WorkingMemory, WorkingWeights
from memos_integrations.models.runtime import LocalModel

FACTS = ["one two three four five", "the quick brown fox", "Paris is the capital of France"]


@pytest.fixture
def chat_mos(db_path: Path, embedder, tiny: LocalModel):
    with MemOS.open(db_path, embedder=embedder, model=tiny) as m:
        for user in ("alice", "bob"):
            m.create_user(user)
            m.create_cube(f"{user}-personal", owner=user)
        yield m


def test_explain_is_a_dry_run(mos: MemOS) -> None:
    items = mos.add(FACTS, user="alice")
    plan = mos.explain("the capital of France", user="alice", k=2)
    assert plan.hits[0].item.text == FACTS[2] and len(plan.hits) == 2
    assert plan.activation.action == "build" and set(plan.activation.hot_set) == {
        it.id for it in items
    }
    # nothing is stored: the turn would build the cache, which then covers the hot set
    assert plan.activation.artifact_id is None and plan.activation.covers_hot_set
    assert "not loaded" in plan.notes[0]  # and explain did not load it
    assert mos._model is None
    for slot in (plan.adapter, plan.expert):
        assert slot.name is None and slot.reason.startswith("none available")
    after = {it.id: it for it in mos.list(user="alice")}
    assert all(after[it.id].access_count == 0 and after[it.id].state == "generated" for it in items)
    assert mos.artifacts("alice-personal") == []
    described = plan.describe()
    assert described["in_prompt"] == []  # both hits are in the hot set: the cache serves them
    assert described["activation"]["action"] == "build"
    off = mos.explain("x", user="alice", memory="plaintext")
    assert off.activation.action == "off" and off.describe()["in_prompt"] == [
        h.item.id for h in off.hits
    ]
    with pytest.raises(InvalidInput):
        mos.explain("x", user="alice", memory="everything")


def test_chat_executes_the_plan_and_reports_coverage(chat_mos: MemOS) -> None:
    m = chat_mos
    items = m.add(FACTS, user="alice")
    first = m.plan_chat("the capital of France", user="alice")
    assert first.schedule is not None and first.schedule.activation.action == "build"
    assert {it.id for it in first.cached} == {it.id for it in items}
    [art] = m.artifacts("alice-personal")
    again = m.explain("the capital of France", user="alice")  # the model is loaded now
    assert again.activation.action == "reuse" and again.activation.artifact_id == art.id
    assert again.activation.covers_hot_set and again.notes == ()
    # a new memory becomes the most used: the stored cache no longer covers the hot set
    [new] = m.add(["Berlin is the capital of Germany"], user="alice")
    for _ in range(3):
        m.search("Berlin Germany", user="alice", k=1)
    later = m.plan_chat("Berlin Germany", user="alice", k=1)
    assert later.schedule.activation.action == "reuse"
    assert later.schedule.activation.uncovered == (new.id,)
    assert [it.id for it in later.in_prompt] == [new.id]  # served as text meanwhile
    assert later.describe()["covers_hot_set"] is False
    assert m.maintain().promote_activation == {"alice-personal": (new.id,)}
    m.build_activation("alice-personal", user="alice")  # nothing changed: still reused
    m.update(items[0].id, user="alice", text="six seven eight")  # a source changes
    rebuilt = m.plan_chat("Berlin Germany", user="alice", k=1)
    assert rebuilt.schedule.activation.action == "build"
    assert new.id in {it.id for it in rebuilt.cached} and rebuilt.in_prompt == ()


def _parametric(m: MemOS, item: MemoryItem) -> Artifact:
    art = Artifact("lora-1", "alice-personal", "parametric", "lora/alice", b"\x00", sources={
        item.id: item.version
    }, fingerprint=m.model.fingerprint.to_dict())  # fmt: skip
    m.store.put_artifact(art, AuditRecord(None, "build:parametric", art.id, art.cube_id))
    return art


def test_adapter_and_expert_slots_are_extension_points(chat_mos: MemOS) -> None:
    m = chat_mos
    [item] = m.add(["Alice studies astronomy"], user="alice")
    art = _parametric(m, item)
    plan = m.explain("astronomy", user="alice")
    # the engine's selector (the parametric tier) takes only the user's adapter for this model
    assert plan.adapter.name is None and plan.adapter.candidates == (art.id,)
    assert "alice's adapter for this model" in plan.adapter.reason
    assert plan.expert.name is None and plan.expert.candidates == ()
    seen: list[tuple[str, str]] = []

    def pick(query, *, user, cube, candidates):
        seen.append((query, user))
        return SlotChoice("adapter", candidates[0].id, "the only adapter of this cube")

    m.scheduler.adapter_selector = pick
    assert m.explain("astronomy", user="alice").adapter.name == art.id
    assert seen == [("astronomy", "alice")]
    assert m.explain("astronomy", user="alice", memory="plaintext").adapter.name is None
    with pytest.raises(CorruptExport):  # chosen, so applied: a broken one fails, never skipped
        m.plan_chat("astronomy", user="alice")
    m.scheduler.adapter_selector = lambda q, **kw: SlotChoice("adapter", "made-up", "?")
    with pytest.raises(InvalidInput, match="not among"):
        m.explain("astronomy", user="alice")
    m.scheduler.adapter_selector = pick
    m.update(item.id, user="alice", text="Alice studies geology")  # the adapter goes stale
    stale = m.explain("geology", user="alice")
    assert stale.adapter.name is None and stale.adapter.candidates == ()
    assert stale.adapter.stale == art.id and "is stale" in stale.adapter.reason
    m.grant("alice-personal", to="bob", by="alice")  # a reader of the cube: not alice's adapter
    assert m.explain("geology", user="bob", cube="alice-personal").adapter.stale is None


# ---------------------------------------------------------------------------- working memory


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2030, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def _item(name: str, *, priority: int = 0, accesses: int = 0) -> MemoryItem:
    return MemoryItem(
        id=name,
        cube_id="c",
        owner="u",
        text=name,
        kind="fact",
        content_hash=content_hash(name, None),
        embedding_model="m",
        priority=priority,
        access_count=accesses,
    )


def test_working_memory_ranks_by_four_signals_and_evicts_by_rank() -> None:
    clock = Clock()
    wm = WorkingMemory(3, clock, WorkingWeights(half_life=timedelta(minutes=10)))
    items = {
        "vital": _item("vital", priority=1000),
        "used": _item("used", accesses=50),
        "relevant": _item("relevant"),
        "weak": _item("weak"),
    }

    def ranked() -> list[str]:
        return [e.item.id for e in wm.rank("u", "s", lambda ids: [items[i] for i in ids])]

    wm.observe("u", "s", [SearchHit(items["relevant"], 0.03), SearchHit(items["weak"], 0.01)])
    clock.now += timedelta(minutes=20)  # two half-lives: the first query's hits fade
    wm.observe("u", "s", [SearchHit(items["vital"], 0.02), SearchHit(items["used"], 0.02)])
    # capacity 3: the lowest ranked goes (weak: least relevant, oldest, unused, priority 0);
    # first-in-first-out would have dropped "relevant" too
    assert ranked() == ["used", "vital", "relevant"]
    used, vital, relevant = wm.rank("u", "s", lambda ids: [items[i] for i in ids])
    assert used.relevance == vital.relevance == 1.0 and used.recency == vital.recency == 1.0
    assert used.accesses > 0.8 and vital.accesses == 0.0  # 50 accesses outweigh priority 1000
    assert vital.priority == 1.0 and used.priority == relevant.priority == 0.5
    assert relevant.recency == pytest.approx(0.25) and used.score > vital.score > relevant.score
    assert wm.rank("other", "s", lambda ids: [items[i] for i in ids]) == []  # per user
    assert wm.rank("u", "s", lambda ids: []) == [] and ranked() == []  # gone from the store


def test_session_working_memory_through_chat(chat_mos: MemOS) -> None:
    m = chat_mos
    items = m.add(FACTS, user="alice")
    m.plan_chat("Paris capital France", user="alice", k=1, session="s1", memory="plaintext")
    follow = m.plan_chat("the quick brown fox", user="alice", k=1, session="s1",
                         memory="plaintext")  # fmt: skip
    ids = [it.id for it in follow.in_prompt]
    assert ids == [items[1].id, items[2].id]  # this turn's hit, then the session's memory
    assert [w.item.id for w in follow.schedule.working] == [items[1].id, items[2].id]
    assert [e.item.id for e in m.working_memory("s1", user="alice")] == ids
    assert m.working_memory("s1", user="bob") == []  # sessions are per user
    assert [it.id for it in m.plan_chat("the quick brown fox", user="alice", k=1,
                                        memory="plaintext").in_prompt] == [items[1].id]  # fmt: skip
    m.delete(items[2].id, user="alice")  # a deleted memory leaves the session too
    assert [e.item.id for e in m.working_memory("s1", user="alice")] == [items[1].id]
