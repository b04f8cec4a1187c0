"""MemOSMemoryBlock in the stock LlamaIndex Memory: long-term memory across sessions."""

from __future__ import annotations

import asyncio

import pytest
from llama_index.core.base.llms.types import ChatMessage, MessageRole
from llama_index.core.memory import Memory

from memos_integrations import InvalidInput, MemOS
from memos_integrations.llama_index import MemOSChatStore, MemOSMemoryBlock


def user(text: str) -> ChatMessage:
    return ChatMessage(role=MessageRole.USER, content=text)


def bot(text: str) -> ChatMessage:
    return ChatMessage(role=MessageRole.ASSISTANT, content=text)


def small_memory(session: str, block: MemOSMemoryBlock, **kw) -> Memory:
    """A Memory whose short-term queue overflows after a few turns (so blocks get puts)."""
    return Memory.from_defaults(
        session_id=session,
        memory_blocks=[block],
        token_limit=60,
        chat_history_token_ratio=0.5,
        token_flush_size=10,
        **kw,
    )


def _system(messages: list[ChatMessage]) -> str:
    return "\n".join(m.content or "" for m in messages if m.role == MessageRole.SYSTEM)


def test_flushed_turns_become_memories_recalled_in_a_later_session(mos: MemOS) -> None:
    block = MemOSMemoryBlock(mos=mos, user_id="alice")

    async def run() -> list[ChatMessage]:
        first = small_memory("s1", block)
        for text in ("I moved to Lisbon last spring", "I work as a nurse"):
            await first.aput(user(text))
            await first.aput(bot("Noted, thanks for telling me about that."))
        await first.aput(user("bye"))
        second = small_memory("s2", block)
        await second.aput(user("Which city did I move to?"))
        return await second.aget()

    got = asyncio.run(run())
    stored = mos.list(user="alice", order="created_asc")
    assert "alice: I moved to Lisbon last spring" in [it.text for it in stored]
    assert {it.provenance.session_id for it in stored} == {"s1"}  # stamped by Memory
    assert all(it.key is None for it in stored)  # long-term memories: deduplicated by content
    assert "<memos>" in _system(got) and "I moved to Lisbon" in _system(got)
    assert got[-1] == user("Which city did I move to?")


def test_one_block_serves_many_sessions(mos: MemOS) -> None:
    """run-llama/llama_index#22701: VectorMemoryBlock stays pinned to its first session."""
    block = MemOSMemoryBlock(mos=mos, user_id="alice", k=10)
    store = MemOSChatStore(mos=mos, user_id="alice")

    async def run() -> tuple[list[str], str]:
        a = small_memory("a", block, chat_store=store)
        b = small_memory("b", block, chat_store=store)
        for n in range(3):
            await a.aput(user(f"session a says apples {n}"))
            await b.aput(user(f"session b says bananas {n}"))
            await a.aput(bot("mm-hm, that is good to know"))
            await b.aput(bot("mm-hm, that is good to know"))
        live_b = [m.content or "" for m in await store.get_messages("b")]  # active queue
        recalled = await block.aget([user("apples or bananas?")], session_id="b")
        return live_b, recalled

    live_b, recalled = asyncio.run(run())
    flushed = [it for it in mos.list(user="alice") if it.key is None and "says" in it.text]
    # every flushed turn is filed under its own session, whichever Memory flushed it
    assert {it.provenance.session_id for it in flushed} == {"a", "b"}
    assert all(f"session {it.provenance.session_id} says" in it.text for it in flushed)
    assert "apples" in recalled
    # b's live transcript (in b's chat history already) is not recalled a second time
    live_bananas = [text for text in live_b if "bananas" in text]
    assert live_bananas and not any(text in recalled for text in live_bananas)
    assert "bananas" in recalled  # b's flushed turns are long-term memories now
    assert "session" not in block.model_dump()  # no per-session state on the block


def test_block_serialises_and_checks_its_arguments(mos: MemOS) -> None:
    block = MemOSMemoryBlock(mos=mos, user_id="alice", name="longterm", k=3)
    data = block.model_dump()
    assert data["store_url"] == mos.store.url and data["k"] == 3
    assert MemOSMemoryBlock(**data).mos is mos
    for bad in ({"k": 0}, {"k": 1000}, {"mode": "semantic"}):
        with pytest.raises(InvalidInput):
            MemOSMemoryBlock(mos=mos, user_id="alice", **bad)
