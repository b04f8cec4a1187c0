"""MemOSChatMessageHistory, the legacy BaseChatMessageHistory shim."""

from __future__ import annotations

import asyncio

import pytest
from langchain_core.messages import AIMessage, ChatMessage, HumanMessage, SystemMessage, ToolMessage

from memos_integrations import InvalidInput
from memos_integrations.langchain.history import MemOSChatMessageHistory


def test_messages_round_trip_in_order(mos) -> None:
    history = MemOSChatMessageHistory(mos, "s1", user="alice")
    sent = [
        SystemMessage("You are terse.", id="m0"),
        HumanMessage("ok", id="m1"),
        AIMessage("ok", id="m2"),
        HumanMessage("ok", id="m3"),  # the same text again is still its own message
        ChatMessage(content="beep", role="robot", id="m4"),
    ]
    history.add_messages(sent[:2])
    history.add_message(sent[2])
    history.add_messages(sent[3:])
    assert history.messages == sent
    assert MemOSChatMessageHistory(mos, "s2", user="alice").messages == []
    assert MemOSChatMessageHistory(mos, "s1", user="bob").messages == []
    # the turns are ordinary memories of the session: searchable, recalled
    [hit] = mos.search("terse", user="alice", k=1)
    assert hit.item.provenance.session_id == "s1"


def test_clear_tombstones_one_session(mos) -> None:
    a = MemOSChatMessageHistory(mos, "a", user="alice")
    b = MemOSChatMessageHistory(mos, "b", user="alice")
    a.add_messages([HumanMessage("hello a")])
    b.add_messages([HumanMessage("hello b")])
    a.clear()
    assert a.messages == [] and [m.text for m in b.messages] == ["hello b"]
    [gone] = mos.list(user="alice", session="a", states=["deleted"])
    assert gone.text == "alice: hello a"


def test_unsupported_messages_are_refused(mos) -> None:
    history = MemOSChatMessageHistory(mos, "s", user="alice")
    with pytest.raises(InvalidInput, match="tool"):
        history.add_messages([HumanMessage("a"), ToolMessage("r", tool_call_id="c")])
    assert history.messages == []


def test_async_and_persistence(mos, open_mos) -> None:
    history = MemOSChatMessageHistory(mos, "s", user="alice")

    async def run() -> None:
        await history.aadd_messages([HumanMessage("hi", id="1"), AIMessage("hello", id="2")])
        assert [m.text for m in await history.aget_messages()] == ["hi", "hello"]

    asyncio.run(run())
    mos.close()
    again = MemOSChatMessageHistory(open_mos(), "s", user="alice")
    assert again.messages == [HumanMessage("hi", id="1"), AIMessage("hello", id="2")]
    asyncio.run(again.aclear())
    assert again.messages == []
