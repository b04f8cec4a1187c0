"""LlamaIndex chat messages as MemOS memories, and back.

A user or assistant message with text is stored as a ``raw_turn`` through the engine's
message path ("alice: I moved to Lisbon"), so it is found by later searches like any other
conversation turn. Tool calls, tool results and system messages are stored too (kinds
``tool_turn`` and ``system_turn``) but are not recalled as long-term memories. The exact
message (blocks, tool calls, additional kwargs) travels in the item's metadata, so reading
it back gives the same ``ChatMessage``.
"""

from __future__ import annotations

import json
from typing import Any

from llama_index.core.base.llms.types import ChatMessage, MessageRole, ToolCallBlock

from ..core.errors import InvalidInput
from ..core.items import MAX_METADATA_BYTES, MemoryItem

MESSAGE_FIELD = "chat_message"  # metadata key holding the message as LlamaIndex JSON
TOOL_KIND = "tool_turn"
SYSTEM_KIND = "system_turn"
CHAT_KINDS = ("raw_turn", TOOL_KIND, SYSTEM_KIND)
NOT_RECALLED = (TOOL_KIND, SYSTEM_KIND)  # kept in the transcript, kept out of recall
_SPOKEN = (MessageRole.USER, MessageRole.ASSISTANT)
_SYSTEM = (MessageRole.SYSTEM, MessageRole.DEVELOPER)


def message_text(message: ChatMessage) -> str:
    """The text a person would read in a message (its text blocks)."""
    return (message.content or "").strip()


def readable(message: ChatMessage) -> str:
    """The message's text, or for a message without text a line saying what it did."""
    return message_text(message) or _describe(message)


def _describe(message: ChatMessage) -> str:
    calls = [b for b in message.blocks if isinstance(b, ToolCallBlock)]
    if calls:
        return "; ".join(
            f"called {c.tool_name}({json.dumps(c.tool_kwargs, ensure_ascii=False)})" for c in calls
        )
    legacy = message.additional_kwargs.get("tool_calls")  # OpenAI-style integrations
    if legacy:
        return f"called {len(legacy)} tool(s)"
    kinds = sorted({type(b).__name__ for b in message.blocks})
    return f"({message.role.value} message with {', '.join(kinds) or 'no content'})"


def _as_json(message: ChatMessage) -> dict[str, Any]:
    data = message.model_dump(mode="json")
    size = len(json.dumps(data, ensure_ascii=False).encode("utf-8"))
    if size > MAX_METADATA_BYTES - 1000:  # room for the rest of the item's metadata
        raise InvalidInput(
            f"a {message.role.value} message of {size:,} bytes (as JSON) is too large to keep "
            f"as one memory (at most {MAX_METADATA_BYTES - 1000:,}); shorten it, e.g. trim "
            "long tool outputs before they reach the agent's memory"
        )
    return data


def to_memory(
    message: ChatMessage, *, key: str | None = None, keep_message: bool = True
) -> dict[str, Any]:
    """The dict to pass to ``mos.add`` for one message (in the session given to ``add``)."""
    text = message_text(message)
    metadata = {MESSAGE_FIELD: _as_json(message)} if keep_message else {}
    spec: dict[str, Any]
    if message.role in _SPOKEN and text:
        spec = {"role": message.role.value, "content": text, "metadata": metadata}
    else:
        role = message.role.value
        spec = {
            "text": readable(message),
            "kind": SYSTEM_KIND if message.role in _SYSTEM else TOOL_KIND,
            "metadata": metadata,
            "provenance": {"source": "conversation", "role": role, "speaker": role},
        }
    if key is not None:
        spec["key"] = key
    return spec


def from_item(item: MemoryItem) -> ChatMessage:
    """The message an item holds; items written by others become plain text messages."""
    data = item.metadata.get(MESSAGE_FIELD)
    if isinstance(data, dict):
        return ChatMessage.model_validate(data)
    role = item.provenance.role
    known = {r.value for r in MessageRole}
    return ChatMessage(role=role if role in known else MessageRole.USER, content=item.text)


def render(item: MemoryItem) -> str:
    """One recalled memory as a line for the prompt, dated when the date is known."""
    when = item.event_time or item.created_at
    return f"- ({when.date().isoformat()}) {item.text}"
