"""MemOSChatStore behaves like LlamaIndex's own SQLAlchemyChatStore and persists Memory."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from llama_index.core.base.llms.types import ChatMessage, MessageRole
from llama_index.core.memory import Memory
from llama_index.core.storage.chat_store.base_db import AsyncDBChatStore, MessageStatus
from llama_index.core.storage.chat_store.sql import SQLAlchemyChatStore

from memos_integrations import InvalidInput, MemOS
from memos_integrations.llama_index import MemOSChatStore

ACTIVE, ARCHIVED = MessageStatus.ACTIVE, MessageStatus.ARCHIVED


def msg(text: str, role: MessageRole = MessageRole.USER) -> ChatMessage:
    return ChatMessage(role=role, content=text)


async def _script(store: AsyncDBChatStore) -> list[Any]:
    """The same calls on any chat store; returns everything the store answered."""
    out: list[Any] = []
    await store.add_message("k1", msg("u1"))
    await store.add_messages("k1", [msg("a1", MessageRole.ASSISTANT), msg("u2"), msg("u2")])
    await store.add_message("k2", msg("other session"))
    out.append(await store.get_messages("k1"))
    out.append(await store.get_messages("k1", limit=2, offset=1))
    out.append(await store.get_messages("k1", limit=0))
    out.append(await store.count_messages("k1"))
    out.append(await store.archive_oldest_messages("k1", 2))
    for status in (ACTIVE, ARCHIVED, None):
        out.append(await store.get_messages("k1", status=status))
        out.append(await store.count_messages("k1", status=status))
    out.append(await store.delete_oldest_messages("k1", 1))
    await store.add_message("k1", msg("late archive"), status=ARCHIVED)
    out.append(await store.get_messages("k1", status=None))
    await store.set_messages("k2", [msg("p"), msg("q", MessageRole.ASSISTANT)])
    out.append(await store.get_messages("k2"))
    out.append(sorted(await store.get_keys()))
    await store.delete_messages("k1", status=ARCHIVED)
    out.append(await store.get_messages("k1", status=None))
    await store.delete_messages("k2")
    out.append(await store.get_messages("k2", status=None))
    out.append(sorted(await store.get_keys()))
    out.append(await store.get_messages("never-used"))
    return out


def _plain(value: Any) -> Any:
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value.model_dump() if isinstance(value, ChatMessage) else value


def test_same_answers_as_sqlalchemy_chat_store(mos: MemOS) -> None:
    ours = asyncio.run(_script(MemOSChatStore(mos=mos, user_id="alice")))
    reference = asyncio.run(_script(SQLAlchemyChatStore(table_name="reference")))
    assert _plain(ours) == _plain(reference)
    assert ours[3] == 4 and ours[-1] == []  # the script did exercise something


def test_archive_and_delete_use_the_memory_lifecycle(mos: MemOS) -> None:
    store = MemOSChatStore(mos=mos, user_id="alice")

    async def run() -> ChatMessage | None:
        await store.add_messages("s", [msg("one"), msg("two"), msg("three")])
        await store.archive_oldest_messages("s", 1)
        return await store.delete_message("s", 1)  # position in the whole transcript

    assert asyncio.run(run()) == msg("two")
    states = {it.text: it.state for it in mos.list(user="alice", states=["archived", "deleted"])}
    assert states == {"alice: one": "archived", "alice: two": "deleted"}
    assert [m.content for m in asyncio.run(store.get_messages("s", status=None))] == [
        "one",
        "three",
    ]
    assert asyncio.run(store.delete_message("s", 9)) is None


def test_stock_memory_persists_across_instances_and_restarts(mos: MemOS, open_mos) -> None:
    async def chat(engine: MemOS, text: str) -> list[ChatMessage]:
        memory = Memory.from_defaults(
            session_id="s1", chat_store=MemOSChatStore(mos=engine, user_id="alice")
        )
        await memory.aput(msg(text))
        return await memory.aget_all()

    assert [m.content for m in asyncio.run(chat(mos, "hello"))] == ["hello"]
    mos.close()
    restarted = open_mos()
    assert [m.content for m in asyncio.run(chat(restarted, "again"))] == ["hello", "again"]


def test_serialises_by_store_url(mos: MemOS) -> None:
    store = MemOSChatStore(mos=mos, user_id="alice", cube_id="alice-personal")
    data = store.model_dump()
    assert data == {"store_url": mos.store.url, "user_id": "alice", "cube_id": "alice-personal"}
    again = MemOSChatStore.model_validate(data)
    asyncio.run(store.add_message("s", msg("kept")))
    assert asyncio.run(again.get_messages("s")) == [msg("kept")]


@pytest.mark.parametrize("bad", [{"user_id": ""}, {"user_id": "alice", "cube_id": "a b"}])
def test_bad_scope_is_invalid_input(mos: MemOS, bad: dict[str, Any]) -> None:
    with pytest.raises(InvalidInput):
        MemOSChatStore(mos=mos, **bad)
