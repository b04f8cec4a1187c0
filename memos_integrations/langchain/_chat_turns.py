"""LangChain messages as a MemOS chat turn: instructions, history, the query and what follows.

The last human message is the query (what memory is searched for); system messages become the
instructions; earlier messages are the history; the assistant's tool calls and the tool
results after the query are the turn's continuation. Tool calls are told in words ("Calling
get_weather with {...}.") and their results become user turns ("get_weather returned: ..."),
so a model without a tool role reads them in order. Not as the JSON call itself: shown its own
JSON call, a 135M model writes it again instead of answering from the result.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    ChatMessage,
    FunctionMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)

from ..core.errors import InvalidInput

Turn = dict[str, str]


@dataclass(frozen=True)
class Conversation:
    instructions: str | None  # the system messages, joined; None: the engine's default
    history: list[Turn]
    query: str
    after: list[Turn]


def conversation(messages: Sequence[BaseMessage]) -> Conversation:
    last = next((i for i in reversed(range(len(messages))) if _is_human(messages[i])), None)
    if last is None:
        raise InvalidInput("ChatMemOS needs a human message: the last one is the query")
    reader = _Reader()
    history = reader.turns(messages[:last])
    after = reader.turns(messages[last + 1 :])
    instructions = "\n\n".join(reader.system) if reader.system else None
    return Conversation(instructions, history, _text(messages[last]), after)


def _is_human(message: BaseMessage) -> bool:
    return isinstance(message, HumanMessage) or (
        isinstance(message, ChatMessage) and message.role in ("user", "human")
    )


class _Reader:
    """Turns of a message list; collects the system messages on the way."""

    def __init__(self) -> None:
        self.system: list[str] = []
        self.tool_names: dict[str, str] = {}  # tool call id -> tool name, to label results

    def turns(self, messages: Sequence[BaseMessage]) -> list[Turn]:
        turns: list[Turn] = []
        results: list[str] = []  # consecutive tool results become one user turn
        for message in messages:
            if isinstance(message, ToolMessage | FunctionMessage):
                results.append(self._result(message))
                continue
            if results:
                turns.append({"role": "user", "content": "\n".join(results)})
                results = []
            turn = self._turn(message)
            if turn is not None:
                turns.append(turn)
        if results:
            turns.append({"role": "user", "content": "\n".join(results)})
        return turns

    def _turn(self, message: BaseMessage) -> Turn | None:
        if isinstance(message, SystemMessage) or (
            isinstance(message, ChatMessage) and message.role == "system"
        ):
            self.system.append(_text(message))
            return None
        if isinstance(message, AIMessage):
            for call in message.tool_calls:
                self.tool_names[call.get("id") or ""] = call["name"]
            parts = [_text(message, skip_other=True)]
            parts += [
                f"Calling {c['name']} with {json.dumps(c['args'], ensure_ascii=False)}."
                for c in message.tool_calls
            ]
            return {"role": "assistant", "content": "\n".join(p for p in parts if p)}
        if _is_human(message):
            return {"role": "user", "content": _text(message)}
        if isinstance(message, ChatMessage):
            return {"role": message.role, "content": _text(message)}
        raise InvalidInput(f"ChatMemOS cannot read a {message.type!r} message")

    def _result(self, message: ToolMessage | FunctionMessage) -> str:
        call_id = getattr(message, "tool_call_id", "")
        name = message.name or self.tool_names.get(call_id) or "the tool"
        failed = getattr(message, "status", "success") == "error"
        return f"{name} {'failed' if failed else 'returned'}: {_text(message)}"


def _text(message: BaseMessage, *, skip_other: bool = False) -> str:
    """The text of a message; non-text blocks are refused (or skipped, for AI messages)."""
    content: Any = message.content
    if isinstance(content, str):
        return content
    parts = []
    for block in content:
        if isinstance(block, str):
            parts.append(block)
        elif isinstance(block, dict) and block.get("type") == "text":
            parts.append(str(block.get("text", "")))
        elif not skip_other:
            kind = block.get("type") if isinstance(block, dict) else type(block).__name__
            raise InvalidInput(f"ChatMemOS reads text only; got a {kind!r} content block")
    return "".join(parts)
