"""Long-term recall shared by ``MemOSMemory`` and ``MemOSMemoryBlock``.

One hybrid search over everything the user may read (all sessions, facts added by other
means, shared cubes), minus tool and system turns, rendered as dated lines for the prompt.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from llama_index.core.base.llms.types import ChatMessage, MessageRole

from ..core.items import SearchHit
from ._binding import Target
from .messages import NOT_RECALLED, message_text, render

RecallMode = Literal["hybrid", "dense", "text"]
MAX_RECALL = 100


def query_of(input: str | ChatMessage | None, messages: Sequence[ChatMessage]) -> str:
    """What to recall for: the given input, else the latest user message."""
    if isinstance(input, ChatMessage):
        input = message_text(input)
    if isinstance(input, str) and input.strip():
        return input
    for m in reversed(messages):
        if m.role == MessageRole.USER and message_text(m):
            return message_text(m)
    return ""


def recall(
    t: Target, query: str, *, k: int, mode: RecallMode, exclude: dict[str, Any] | None = None
) -> list[SearchHit]:
    """The ``k`` memories most relevant to ``query`` (none for an empty query or ``k=0``)."""
    if not query.strip() or k <= 0:
        return []
    recalled: dict[str, Any] = {"kind": {"$nin": list(NOT_RECALLED)}}
    where = recalled if exclude is None else {"$and": [recalled, exclude]}
    return t.mos.search(query, user=t.user, k=k, filter=where, mode=mode)


def lines(hits: Sequence[SearchHit]) -> str:
    return "\n".join(render(h.item) for h in hits)
