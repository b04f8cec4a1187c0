"""``MemOSMemory``: a LlamaIndex agent memory kept in MemOS.

Short-term: the session's latest messages (within ``token_limit``), persisted as memories, so
a restarted process continues the conversation. Long-term: before each LLM call the user's
most relevant memories from every session are recalled and put in a system message.

>>> memory = MemOSMemory.from_defaults(mos=mos, user_id="alice", session_id="s1")
>>> await agent.run("I moved to Lisbon", memory=memory)

The memory is a plain pydantic model (the engine is found again by its store URL), so an
agent's ``Context.to_dict()`` / ``Context.from_dict()`` round trip restores it.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from typing import Any

from llama_index.core.base.llms.types import ChatMessage, MessageRole, TextBlock
from llama_index.core.bridge.pydantic import Field
from llama_index.core.memory.types import BaseMemory
from llama_index.core.utils import get_tokenizer

from ..core.engine import MemOS
from ..core.items import MemoryItem, SearchHit, check_text
from . import chat_log
from ._binding import UserBound
from ._checks import check_choice, check_int
from .messages import from_item, readable
from .recall import MAX_RECALL, RecallMode, lines, query_of, recall

_OPENERS = (MessageRole.USER, MessageRole.SYSTEM, MessageRole.DEVELOPER)
DEFAULT_HEADER = (
    "What you remember from earlier conversations with {user_id} (most relevant first; "
    "dates are when it was said):"
)


class MemOSMemory(UserBound, BaseMemory):
    """Chat buffer plus long-term recall for one user and session."""

    session_id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    token_limit: int = Field(default=3000, description="Tokens of recent messages returned.")
    max_messages: int = Field(default=200, description="Messages read to fill token_limit.")
    recall_k: int = Field(default=5, description="Long-term memories recalled; 0: none.")
    recall_mode: RecallMode = Field(default="hybrid")
    recall_header: str = Field(default=DEFAULT_HEADER)
    tokenizer_fn: Callable[[str], list[Any]] = Field(default_factory=get_tokenizer, exclude=True)

    def __init__(self, mos: MemOS | None = None, **data: Any) -> None:
        for name, lo, hi in (
            ("token_limit", 1, 10_000_000),
            ("max_messages", 1, 1000),
            ("recall_k", 0, MAX_RECALL),
        ):
            if name in data:
                check_int(data[name], name, lo, hi)
        if "recall_mode" in data:
            check_choice(data["recall_mode"], "recall_mode", ("hybrid", "dense", "text"))
        if "session_id" in data:
            check_text(data["session_id"], "session_id")
        super().__init__(mos, **data)

    @classmethod
    def class_name(cls) -> str:
        return "MemOSMemory"

    @classmethod
    def from_defaults(  # type: ignore[override]
        cls,
        mos: MemOS | None = None,
        *,
        user_id: str,
        session_id: str | None = None,
        cube_id: str | None = None,
        chat_history: list[ChatMessage] | None = None,
        **kwargs: Any,
    ) -> MemOSMemory:
        """A memory for ``user_id`` (created with a cube if new) in ``session_id``."""
        if session_id is not None:
            kwargs["session_id"] = session_id
        memory = cls(mos, user_id=user_id, cube_id=cube_id, **kwargs)
        if chat_history is not None:
            memory.set(chat_history)
        return memory

    # ------------------------------------------------------------------ reading

    def get(self, input: str | ChatMessage | None = None, **kwargs: Any) -> list[ChatMessage]:
        """The recent messages, preceded by recalled memories relevant to ``input``.

        Without ``input`` the latest user message is the query. Recalled memories leave out
        the messages already returned, and tool and system turns.
        """
        t = self.target()
        newest = chat_log.items(t, self.session_id, limit=self.max_messages, newest_first=True)
        window = self._window(newest)
        messages = [m for _, m in window]
        exclude = {"id": {"$nin": [it.id for it, _ in window]}} if window else None
        hits = recall(
            t, query_of(input, messages), k=self.recall_k, mode=self.recall_mode, exclude=exclude
        )
        return self._with_recall(messages, hits)

    def _window(self, newest_first: list[MemoryItem]) -> list[tuple[MemoryItem, ChatMessage]]:
        """The latest messages within the token limit, as whole turns.

        A window opening on an assistant or tool message would orphan a tool result or
        call (providers reject that), so it opens on a user (or system) message: the first
        one inside the budget or, when the newest turn alone is over budget, the user
        message that began it.
        """
        read = [(item, from_item(item)) for item in newest_first]
        used = n = 0
        for _, message in read:
            cost = len(self.tokenizer_fn(readable(message)))
            if n and used + cost > self.token_limit:
                break
            used, n = used + cost, n + 1
        kept = read[:n][::-1]
        start = next((i for i, (_, m) in enumerate(kept) if m.role in _OPENERS), None)
        if start is not None:
            return kept[start:]
        opening = next((i for i, (_, m) in enumerate(read) if m.role == MessageRole.USER), None)
        return read[: opening + 1][::-1] if opening is not None else kept

    def _with_recall(self, messages: list[ChatMessage], hits: list[SearchHit]) -> list[ChatMessage]:
        if not hits:
            return messages
        header = self.recall_header.replace("{user_id}", self.user_id)
        block = TextBlock(text=f"<memory>\n{header}\n{lines(hits)}\n</memory>")
        if messages and messages[0].role == MessageRole.SYSTEM:
            first = messages[0]
            merged = first.model_copy(update={"blocks": [block, *first.blocks]})
            return [merged, *messages[1:]]
        return [ChatMessage(role=MessageRole.SYSTEM, blocks=[block]), *messages]

    def get_all(self) -> list[ChatMessage]:
        """Every message of the session, oldest first."""
        return chat_log.messages(self.target(), self.session_id)

    # ------------------------------------------------------------------ writing

    def put(self, message: ChatMessage) -> None:
        self.put_messages([message])

    def put_messages(self, messages: list[ChatMessage]) -> None:
        """Append messages to the session (one transaction for all of them)."""
        chat_log.append(self.target(), self.session_id, messages)

    def set(self, messages: list[ChatMessage]) -> None:
        """Replace the session's messages (the old ones are tombstoned, history kept)."""
        chat_log.replace(self.target(), self.session_id, messages)

    def reset(self) -> None:
        """Forget this session's messages (tombstones; other sessions stay recallable)."""
        chat_log.clear(self.target(), self.session_id)

    # ------------------------------------------------------------------ async: one worker
    # thread per call (the engine is synchronous and thread-safe), never the event loop

    async def aget(
        self, input: str | ChatMessage | None = None, **kwargs: Any
    ) -> list[ChatMessage]:
        return await asyncio.to_thread(self.get, input, **kwargs)

    async def aget_all(self) -> list[ChatMessage]:
        return await asyncio.to_thread(self.get_all)

    async def aput(self, message: ChatMessage) -> None:
        await asyncio.to_thread(self.put_messages, [message])

    async def aput_messages(self, messages: list[ChatMessage]) -> None:
        await asyncio.to_thread(self.put_messages, messages)

    async def aset(self, messages: list[ChatMessage]) -> None:
        await asyncio.to_thread(self.set, messages)

    async def areset(self) -> None:
        await asyncio.to_thread(self.reset)
