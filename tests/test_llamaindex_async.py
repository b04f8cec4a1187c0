"""Every async path of the LlamaIndex adapters leaves the event loop free.

The loop runs in asyncio debug mode, which logs every callback that holds the loop longer
than ``slow_callback_duration``; the same detector is shown to catch a blocking call.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from llama_index.core.base.llms.types import ChatMessage, MessageRole
from llama_index.core.schema import TextNode
from llama_index.core.vector_stores.types import VectorStoreQuery
from llamaindex_scripted import agent

from memos_integrations import MemOS
from memos_integrations.llama_index import (
    MemOSChatStore,
    MemOSEmbedding,
    MemOSMemory,
    MemOSMemoryBlock,
    MemOSRetriever,
    MemOSVectorStore,
)

THRESHOLD = 0.1  # seconds a callback may hold the loop (asyncio's own default)


def slow_callbacks(main: Callable[[], Awaitable[object]]) -> list[str]:
    """Run ``main`` on a debug loop; return the slow-callback warnings it caused."""
    found: list[str] = []

    class Catch(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.getMessage().startswith("Executing"):
                found.append(record.getMessage())

    log = logging.getLogger("asyncio")
    handler, level = Catch(), log.level
    log.addHandler(handler)
    log.setLevel(logging.WARNING)
    loop = asyncio.new_event_loop()
    loop.set_debug(True)
    loop.slow_callback_duration = THRESHOLD
    try:
        loop.run_until_complete(main())
    finally:
        loop.close()
        log.removeHandler(handler)
        log.setLevel(level)
    return found


def test_the_detector_catches_a_blocking_call() -> None:
    async def blocking() -> None:
        time.sleep(3 * THRESHOLD)

    assert len(slow_callbacks(blocking)) == 1


def msg(text: str, role: MessageRole = MessageRole.USER) -> ChatMessage:
    return ChatMessage(role=role, content=text)


def test_adapters_never_block_the_loop(mos: MemOS) -> None:
    memory = MemOSMemory.from_defaults(mos=mos, user_id="alice", session_id="s1")
    chat = MemOSChatStore(mos=mos, user_id="alice")
    block = MemOSMemoryBlock(mos=mos, user_id="alice")
    store = MemOSVectorStore(mos=mos, user_id="alice", cube_id="alice-docs")
    embed = MemOSEmbedding(mos=mos)
    retriever = MemOSRetriever(mos, "alice", similarity_top_k=3)
    nodes = [
        TextNode(id_=f"n{i}", text=f"Document number {i} about topic {i % 3}") for i in range(40)
    ]
    later = MemOSMemory.from_defaults(mos=mos, user_id="alice", session_id="s0")

    async def main() -> None:
        await memory.aput(msg("I moved to Lisbon"))
        await memory.aput_messages([msg("Nice!", MessageRole.ASSISTANT), msg("Where now?")])
        assert (await memory.aget())[-1] == msg("Where now?")
        await memory.aget_all()
        await memory.aset([msg("fresh")])
        await memory.areset()

        await chat.add_messages("c", [msg(f"m{i}") for i in range(6)])
        await chat.get_messages("c", limit=3)
        await chat.count_messages("c")
        await chat.archive_oldest_messages("c", 2)
        await chat.delete_oldest_messages("c", 1)
        await chat.delete_message("c", 0)
        await chat.set_messages("c", [msg("only")])
        await chat.get_keys()
        await chat.delete_messages("c")

        await block.aput([msg("I like green tea")], session_id="s9")
        assert "green tea" in await block.aget([msg("what tea do I like?")], session_id="s1")

        await store.async_add(nodes)
        results = await asyncio.gather(
            store.aquery(VectorStoreQuery(query_str="topic 1", similarity_top_k=5)),
            store.aquery(VectorStoreQuery(query_str="document", similarity_top_k=5, mode="hybrid")),
            retriever.aretrieve("green tea"),
            embed.aget_query_embedding("tea"),
            embed.aget_text_embedding_batch([n.text for n in nodes]),
        )
        assert all(results)
        await store.aget_nodes(["n1", "n2"])
        await store.adelete_nodes(["n1"])
        await store.adelete("no-such-doc")
        await store.aclear()

        await later.aput(msg("I moved to Lisbon"))

    assert slow_callbacks(main) == []

    # and an agent run on top (its own workflow code is not ours to time: run it plainly)
    async def ask() -> str:
        memory = MemOSMemory.from_defaults(mos=mos, user_id="alice", session_id="s2")
        return str(await agent([]).run("Where do I live?", memory=memory))

    assert asyncio.run(ask()) == "You live in Lisbon."  # recalled from session s0


def test_concurrent_sessions_do_not_mix(mos: MemOS) -> None:
    n = 4
    memories = [
        MemOSMemory.from_defaults(mos=mos, user_id="alice", session_id=f"s{i}", recall_k=0)
        for i in range(n)
    ]

    async def talk(i: int) -> list[ChatMessage]:
        for turn in range(3):
            await memories[i].aput(msg(f"session {i} turn {turn}"))
        return await memories[i].aget_all()

    async def main() -> list[list[ChatMessage]]:
        return await asyncio.gather(*(talk(i) for i in range(n)))

    out: list[list[list[ChatMessage]]] = []
    assert slow_callbacks(lambda: _keep(main(), out)) == []
    for i, got in enumerate(out[0]):
        assert [m.content for m in got] == [f"session {i} turn {t}" for t in range(3)]


async def _keep(coro: Awaitable[list[list[ChatMessage]]], out: list) -> None:
    out.append(await coro)
