"""``MemOSChatMessageHistory``: a legacy shim for code still on ``BaseChatMessageHistory``.

LangChain deprecated ``BaseChatMessageHistory`` (and ``RunnableWithMessageHistory``); new code
should use ``create_agent`` with a checkpointer for the thread and ``MemOSMemoryMiddleware`` for
long-term memory. This class keeps old code working on MemOS storage: each message is a raw
turn of the session, so it is also recalled by the middleware, searchable and versioned.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence

from langchain_core.chat_history import BaseChatMessageHistory
from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    ChatMessage,
    HumanMessage,
    SystemMessage,
)

from ..core.engine import MemOS
from ..core.errors import InvalidInput
from ..core.items import MemoryItem, check_text
from ._listing import list_all
from ._scope import user_cube

_ROLES = {"human": "user", "ai": "assistant", "system": "system"}


class MemOSChatMessageHistory(BaseChatMessageHistory):
    """The messages of one session of one user, stored as MemOS raw turns (legacy API).

    >>> history = MemOSChatMessageHistory(mos, session_id="t1", user="alice")
    >>> history.add_messages([HumanMessage("hi"), AIMessage("hello")])
    >>> history.messages

    Text messages round-trip with their type and id (tool calls and non-text content blocks
    are not kept: store those with a LangGraph checkpointer). ``clear()`` tombstones the
    session's turns; their history stays in MemOS.
    """

    def __init__(
        self,
        mos: MemOS,
        session_id: str,
        *,
        user: str,
        cube: str | None = None,
        create_missing: bool = True,
    ) -> None:
        self.mos = mos
        self.session_id = check_text(session_id, "session_id")
        self.user = user
        self.cube = user_cube(mos, user, cube, create=create_missing)

    @property
    def messages(self) -> list[BaseMessage]:  # type: ignore[override]
        return [_message(item) for item in self._turns()]

    def add_messages(self, messages: Sequence[BaseMessage]) -> None:
        drafts = []
        for message in messages:
            role = _ROLES.get(message.type)
            if role is None and isinstance(message, ChatMessage):
                role = message.role
            if role is None:
                raise InvalidInput(
                    f"MemOSChatMessageHistory keeps text messages (human, ai, system, chat); "
                    f"got a {message.type!r} message"
                )
            message_id = message.id or uuid.uuid4().hex
            drafts.append(
                {
                    "role": role,
                    "content": message.text,
                    "id": message_id,
                    # a key, so two identical messages ("ok", "ok") stay two turns
                    "key": f"history:{self.session_id}:{message_id}",
                }
            )
        if drafts:
            self.mos.add(drafts, user=self.user, cube=self.cube, session=self.session_id)

    def clear(self) -> None:
        for item in self._turns():
            self.mos.delete(item.id, user=self.user, reason="chat history cleared")

    async def aget_messages(self) -> list[BaseMessage]:
        return await asyncio.to_thread(lambda: self.messages)

    async def aadd_messages(self, messages: Sequence[BaseMessage]) -> None:
        await asyncio.to_thread(self.add_messages, messages)

    async def aclear(self) -> None:
        await asyncio.to_thread(self.clear)

    def _turns(self) -> list[MemoryItem]:
        return list_all(
            self.mos, user=self.user, cube=self.cube, session=self.session_id, kinds=["raw_turn"]
        )


def _message(item: MemoryItem) -> BaseMessage:
    """A stored turn as the message it was: its role, its content without the speaker."""
    prov = item.provenance
    content = item.text.removeprefix(f"{prov.speaker}: ") if prov.speaker else item.text
    message_id = prov.message_ids[0] if prov.message_ids else item.id
    if prov.role in ("user", "human"):
        return HumanMessage(content, id=message_id)
    if prov.role in ("assistant", "ai"):
        return AIMessage(content, id=message_id)
    if prov.role == "system":
        return SystemMessage(content, id=message_id)
    return ChatMessage(content=content, role=prov.role or "unknown", id=message_id)
