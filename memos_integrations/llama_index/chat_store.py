"""``MemOSChatStore``: the stock LlamaIndex ``Memory`` persisted in MemOS.

>>> from llama_index.core.memory import Memory
>>> store = MemOSChatStore(mos=mos, user_id="alice")
>>> memory = Memory.from_defaults(session_id="s1", chat_store=store)

Chat store keys are session ids. Each operation runs in one worker thread, so the event
loop is never blocked; the messages are ordinary memories of the user (see ``chat_log``).
"""

from __future__ import annotations

import asyncio

from llama_index.core.base.llms.types import ChatMessage
from llama_index.core.storage.chat_store.base_db import AsyncDBChatStore, MessageStatus

from . import chat_log
from ._binding import UserBound


class MemOSChatStore(UserBound, AsyncDBChatStore):
    """An ``AsyncDBChatStore`` over one user's cube; keys are session ids."""

    @classmethod
    def class_name(cls) -> str:
        return "MemOSChatStore"

    async def get_messages(
        self,
        key: str,
        status: MessageStatus | None = MessageStatus.ACTIVE,
        limit: int | None = None,
        offset: int | None = None,
    ) -> list[ChatMessage]:
        return await asyncio.to_thread(
            lambda: chat_log.messages(self.target(), key, status, limit=limit, offset=offset or 0)
        )

    async def count_messages(
        self, key: str, status: MessageStatus | None = MessageStatus.ACTIVE
    ) -> int:
        return await asyncio.to_thread(lambda: chat_log.count(self.target(), key, status))

    async def add_message(
        self, key: str, message: ChatMessage, status: MessageStatus = MessageStatus.ACTIVE
    ) -> None:
        await self.add_messages(key, [message], status)

    async def add_messages(
        self,
        key: str,
        messages: list[ChatMessage],
        status: MessageStatus = MessageStatus.ACTIVE,
    ) -> None:
        await asyncio.to_thread(lambda: chat_log.append(self.target(), key, messages, status))

    async def set_messages(
        self,
        key: str,
        messages: list[ChatMessage],
        status: MessageStatus = MessageStatus.ACTIVE,
    ) -> None:
        await asyncio.to_thread(lambda: chat_log.replace(self.target(), key, messages, status))

    async def delete_message(self, key: str, idx: int) -> ChatMessage | None:
        """Delete the message at position ``idx`` of the key's transcript (any status)."""
        return await asyncio.to_thread(lambda: chat_log.delete_at(self.target(), key, idx))

    async def delete_messages(self, key: str, status: MessageStatus | None = None) -> None:
        await asyncio.to_thread(lambda: chat_log.clear(self.target(), key, status))

    async def delete_oldest_messages(self, key: str, n: int) -> list[ChatMessage]:
        return await asyncio.to_thread(lambda: chat_log.delete_oldest(self.target(), key, n))

    async def archive_oldest_messages(self, key: str, n: int) -> list[ChatMessage]:
        return await asyncio.to_thread(lambda: chat_log.archive_oldest(self.target(), key, n))

    async def get_keys(self) -> list[str]:
        return await asyncio.to_thread(lambda: chat_log.sessions(self.target()))
