"""``MemOSMemoryBlock``: long-term MemOS memory for the stock LlamaIndex ``Memory``.

>>> block = MemOSMemoryBlock(mos=mos, user_id="alice")
>>> memory = Memory.from_defaults(session_id="s1", memory_blocks=[block])

Messages that leave ``Memory``'s short-term queue are written to the user's MemOS memories
(deduplicated by content); each ``Memory.aget`` recalls the ones relevant to the latest user
message. The block keeps no per-session state: the session comes with every call (the
``session_id`` ``Memory`` passes to ``aget`` and stamps on flushed messages), so one block
serves any number of sessions (unlike ``VectorMemoryBlock``, run-llama/llama_index#22701).
"""

from __future__ import annotations

import asyncio
from typing import Any

from llama_index.core.base.llms.types import ChatMessage
from llama_index.core.bridge.pydantic import Field
from llama_index.core.memory.memory import BaseMemoryBlock

from ..core.engine import MemOS
from ._binding import Target, UserBound
from ._checks import check_choice, check_int
from .messages import to_memory
from .recall import MAX_RECALL, RecallMode, lines, query_of, recall


class MemOSMemoryBlock(UserBound, BaseMemoryBlock[str]):
    """Recalls the user's relevant memories; stores what leaves the short-term queue."""

    name: str = Field(default="memos", description="The block's name in the memory prompt.")
    description: str | None = Field(default="Long-term memories of the user, from MemOS.")
    k: int = Field(default=5, description="Memories recalled per call.")
    mode: RecallMode = Field(default="hybrid")

    def __init__(self, mos: MemOS | None = None, **data: Any) -> None:
        if "k" in data:
            check_int(data["k"], "k", 1, MAX_RECALL)
        if "mode" in data:
            check_choice(data["mode"], "mode", ("hybrid", "dense", "text"))
        super().__init__(mos, **data)

    async def _aget(
        self,
        messages: list[ChatMessage] | None = None,
        session_id: str | None = None,
        **block_kwargs: Any,
    ) -> str:
        query = query_of(None, messages or [])
        # the session's own live transcript (a MemOSChatStore) is in the chat history already
        exclude = (
            {"$not": {"session_id": session_id, "key": {"$exists": True}}}
            if session_id is not None
            else None
        )
        hits = await asyncio.to_thread(
            lambda: recall(self.target(), query, k=self.k, mode=self.mode, exclude=exclude)
        )
        return lines(hits)

    async def _aput(self, messages: list[ChatMessage]) -> None:
        await asyncio.to_thread(lambda: self._store(self.target(), messages))

    @staticmethod
    def _store(t: Target, messages: list[ChatMessage]) -> None:
        by_session: dict[str | None, list[dict[str, Any]]] = {}
        for m in messages:
            session = m.additional_kwargs.get("session_id")
            by_session.setdefault(session if isinstance(session, str) else None, []).append(
                to_memory(m, keep_message=False)
            )
        for session, memories in by_session.items():
            t.mos.add(memories, user=t.user, cube=t.cube, session=session)
