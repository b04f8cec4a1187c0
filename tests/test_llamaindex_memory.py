"""MemOSMemory on a real SQLite store with the real embedder: buffer, recall, serialisation."""

from __future__ import annotations

import asyncio

import pytest
from llama_index.core.base.llms.types import (
    ChatMessage,
    ImageBlock,
    MessageRole,
    TextBlock,
    ToolCallBlock,
)

from memos_integrations import InvalidInput, MemOS
from memos_integrations.llama_index import MemOSMemory, register_engine
from memos_integrations.llama_index._binding import forget_engines


def user(text: str) -> ChatMessage:
    return ChatMessage(role=MessageRole.USER, content=text)


def bot(text: str) -> ChatMessage:
    return ChatMessage(role=MessageRole.ASSISTANT, content=text)


def tool_exchange(n: int) -> list[ChatMessage]:
    """An assistant tool call and its result, as FunctionAgent stores them."""
    call = ToolCallBlock(tool_call_id=f"call-{n}", tool_name="lookup", tool_kwargs={"n": n})
    return [
        ChatMessage(role=MessageRole.ASSISTANT, blocks=[call]),
        ChatMessage(
            role=MessageRole.TOOL,
            content=f"result {n}",
            additional_kwargs={"tool_call_id": f"call-{n}", "name": "lookup"},
        ),
    ]


def test_messages_round_trip_exactly_and_in_order(mos: MemOS) -> None:
    memory = MemOSMemory.from_defaults(mos=mos, user_id="alice", session_id="s1")
    image = ChatMessage(
        role=MessageRole.USER,
        blocks=[TextBlock(text="what is this?"), ImageBlock(url="https://example.com/cat.png")],
    )
    sent = [user("ok"), bot("ok"), user("ok"), *tool_exchange(1), image, bot("A cat.")]
    memory.put(sent[0])
    memory.put_messages(sent[1:])
    got = memory.get_all()
    assert [m.model_dump() for m in got] == [m.model_dump() for m in sent]  # "ok" x3 kept
    assert memory.get() == got  # everything fits; nothing recalled (all of it is shown)
    kinds = [it.kind for it in mos.list(user="alice", session="s1", order="created_asc")]
    assert kinds == ["raw_turn"] * 3 + ["tool_turn"] * 2 + ["raw_turn"] * 2


def test_window_keeps_the_newest_turns_and_never_opens_on_a_tool_result(mos: MemOS) -> None:
    turns = [
        user("first question about the weather"),
        *tool_exchange(1),
        bot("it is sunny"),
        user("second question"),
        *tool_exchange(2),
        bot("done"),
    ]
    MemOSMemory.from_defaults(mos=mos, user_id="alice", session_id="s1").put_messages(turns)

    def window(token_limit: int) -> list[ChatMessage]:
        return MemOSMemory.from_defaults(
            mos=mos, user_id="alice", session_id="s1", token_limit=token_limit, recall_k=0
        ).get()

    # 20 tokens reach back to the first tool result: the window starts at the next user turn
    assert window(20) == turns[4:]
    # 12 tokens end inside the newest turn: it is kept whole, from its user message
    assert window(12) == turns[4:]
    assert window(1) == turns[4:]
    assert window(10_000) == turns


def test_recall_brings_other_sessions_and_facts_but_not_what_is_shown(mos: MemOS) -> None:
    first = MemOSMemory.from_defaults(mos=mos, user_id="alice", session_id="trip")
    first.put_messages([user("I am flying to Tokyo in May"), bot("Have a great trip!")])
    first.put_messages(tool_exchange(7))
    mos.add("Alice is vegetarian", user="alice")
    now = MemOSMemory.from_defaults(mos=mos, user_id="alice", session_id="dinner", recall_k=3)
    now.put_messages(
        [ChatMessage(role=MessageRole.SYSTEM, content="Be brief."), user("Any vegetarian food?")]
    )
    got = now.get()
    system, question = got
    assert question == user("Any vegetarian food?")
    recalled = system.blocks[0].text
    assert "- (" in recalled and "Alice is vegetarian" in recalled
    assert system.blocks[1:] == [TextBlock(text="Be brief.")]  # merged into the system turn
    assert "Any vegetarian food" not in recalled  # already in the window
    assert "result 7" not in recalled and "lookup" not in recalled  # tool turns stay out
    assert "Be brief" not in recalled
    # an explicit input is the query
    assert "Tokyo" in now.get(input="when is my flight to Tokyo?")[0].blocks[0].text


def test_recall_can_be_switched_off(mos: MemOS) -> None:
    mos.add("Alice is vegetarian", user="alice")
    memory = MemOSMemory.from_defaults(mos=mos, user_id="alice", session_id="s", recall_k=0)
    memory.put(user("Anything vegetarian?"))
    assert memory.get() == [user("Anything vegetarian?")]


def test_set_and_reset_touch_only_their_session(mos: MemOS) -> None:
    a = MemOSMemory.from_defaults(
        mos=mos, user_id="alice", session_id="a", chat_history=[user("one"), bot("two")]
    )
    b = MemOSMemory.from_defaults(mos=mos, user_id="alice", session_id="b")
    b.put(user("kept elsewhere"))
    assert a.get_all() == [user("one"), bot("two")]
    a.set([user("three")])
    assert a.get_all() == [user("three")]
    tombstones = mos.list(user="alice", session="a", states=["deleted"])
    assert sorted(it.text for it in tombstones) == ["alice: one", "assistant: two"]
    with pytest.raises(InvalidInput):  # a refused replacement leaves the session as it was
        a.set([user("fine"), ChatMessage(role=MessageRole.TOOL, content="x" * 70_000)])
    assert a.get_all() == [user("three")]
    a.reset()
    assert a.get_all() == [] and b.get_all() == [user("kept elsewhere")]


def test_serialises_without_the_engine_and_comes_back_after_a_restart(mos: MemOS, open_mos) -> None:
    memory = MemOSMemory.from_defaults(
        mos=mos, user_id="alice", session_id="s1", token_limit=500, recall_k=2
    )
    memory.put(user("I moved to Lisbon"))
    data = memory.to_dict()
    assert data["class_name"] == "MemOSMemory"
    assert "tokenizer_fn" not in data and "mos" not in data
    assert data["store_url"] == mos.store.url

    again = MemOSMemory.from_dict(data)
    assert again.mos is mos and (again.token_limit, again.recall_k) == (500, 2)
    assert again.get_all() == [user("I moved to Lisbon")]

    mos.close()  # the engine it was built with is gone: a restored memory reopens the store
    reopened = MemOSMemory.from_dict(data)
    assert reopened.mos is not mos and not reopened.mos.closed
    assert reopened.get_all() == [user("I moved to Lisbon")]
    forget_engines()  # as in a new process

    mine = open_mos()  # or the application reopens it and lends its engine to restored ones
    register_engine(mine)
    assert MemOSMemory.from_dict(data).mos is mine


def test_async_twins_match_the_sync_methods(mos: MemOS) -> None:
    memory = MemOSMemory.from_defaults(mos=mos, user_id="alice", session_id="s1")

    async def run() -> None:
        await memory.aput(user("hello"))
        await memory.aput_messages([bot("hi"), user("how are you?")])
        assert await memory.aget_all() == [user("hello"), bot("hi"), user("how are you?")]
        assert await memory.aget() == memory.get()
        await memory.aset([user("fresh start")])
        assert await memory.aget_all() == [user("fresh start")]
        await memory.areset()
        assert await memory.aget_all() == []

    asyncio.run(run())


def test_new_users_get_a_cube_and_bad_arguments_are_clear_errors(mos: MemOS) -> None:
    memory = MemOSMemory.from_defaults(mos=mos, user_id="dave", session_id="s1")
    memory.put(user("hello"))
    assert [c.id for c in mos.list_cubes(user="dave")] == ["dave-personal"]

    assert memory.cube_id == "dave-personal"  # resolved once, and serialised from then on
    assert memory.to_dict()["cube_id"] == "dave-personal"

    mos.create_cube("alice-work", owner="alice")  # <user>-personal stays the default
    assert MemOSMemory.from_defaults(mos=mos, user_id="alice").get_all() == []
    work = MemOSMemory.from_defaults(mos=mos, user_id="alice", cube_id="alice-work")
    work.put(user("work chat"))
    assert mos.list(user="alice", cube="alice-work")[0].text == "alice: work chat"
    mos.create_user("erin")
    for cube in ("erin-a", "erin-b"):
        mos.create_cube(cube, owner="erin")
    with pytest.raises(InvalidInput, match="cube_id"):
        MemOSMemory.from_defaults(mos=mos, user_id="erin").get_all()

    for bad in (
        {"user_id": "no spaces allowed"},
        {"user_id": "alice", "token_limit": 0},
        {"user_id": "alice", "recall_k": -1},
        {"user_id": "alice", "recall_mode": "fuzzy"},
        {"user_id": "alice", "session_id": " "},
    ):
        with pytest.raises(InvalidInput):
            MemOSMemory.from_defaults(mos=mos, **bad)
    with pytest.raises(InvalidInput, match="mos="):
        MemOSMemory(user_id="alice")
    with pytest.raises(InvalidInput, match="tool message of 70,"):
        memory.put(ChatMessage(role=MessageRole.TOOL, content="x" * 70_000))
    assert memory.get_all() == [user("hello")]  # nothing half-written
