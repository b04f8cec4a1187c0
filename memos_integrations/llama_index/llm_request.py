"""A LlamaIndex conversation as one MemOS chat turn: instructions, history and query.

The instructions are the LLM's own ``system_prompt`` (and the tools block): they lead the
system message the engine caches with the user's hot memories, so they must not change from
turn to turn. System messages of the conversation (an agent's system prompt, a memory's
recall block, which changes every turn) stay where they are, as uncached prompt text —
taking them into the instructions would rebuild and rewrite the KV cache on every call.

The last user message is the query (what memory is searched for); earlier messages are the
history. A tool call appears as the call the model wrote (the JSON of
:mod:`memos_integrations.models.tool_calls`), a tool result as a ``tool`` message. When the
conversation ends with tool results (the agent ran the model's calls), the query is a user
turn holding those results and the user's question again: a 135M model answers from that,
where after a bare tool message it repeats its call.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from llama_index.core.base.llms.types import ChatMessage, MessageRole, ToolCallBlock

from ..core.chat import DEFAULT_INSTRUCTIONS
from ..core.errors import InvalidInput
from ..models.tool_calls import format_tools, render_call
from .messages import readable

_SYSTEM = (MessageRole.SYSTEM, MessageRole.DEVELOPER)
_TOOL = (MessageRole.TOOL, MessageRole.FUNCTION)
_ASSISTANT = (MessageRole.ASSISTANT, MessageRole.CHATBOT, MessageRole.MODEL)


@dataclass(frozen=True)
class ChatRequest:
    """The arguments of ``mos.plan_chat`` for one conversation."""

    query: str
    history: list[dict[str, str]]
    instructions: str | None  # None: the engine's default instructions


def tool_schema(tool: Any) -> dict[str, Any]:
    """``{"name", "description", "parameters"}`` of a LlamaIndex tool (or such a dict)."""
    if isinstance(tool, Mapping):
        if not isinstance(tool.get("name"), str):
            raise InvalidInput(f"a tool schema needs a 'name', got {dict(tool)!r}")
        return dict(tool)
    meta = getattr(tool, "metadata", None)
    name = getattr(meta, "name", None)
    if not isinstance(name, str) or not name:
        raise InvalidInput(f"cannot use {tool!r} as a tool: it has no metadata.name")
    return {
        "name": name,
        "description": meta.description,  # type: ignore[union-attr]
        "parameters": meta.get_parameters_dict(),  # type: ignore[union-attr]
    }


def to_request(
    messages: Sequence[ChatMessage],
    *,
    system_prompt: str | None = None,
    tools: Sequence[Mapping[str, Any]] = (),
) -> ChatRequest:
    """Split ``messages`` into instructions, history and query (see the module docstring)."""
    own = (system_prompt or "").strip()
    instructions = own or None
    if tools:
        instructions = f"{own or DEFAULT_INSTRUCTIONS}\n\n{format_tools(tools)}"
    # LLM.predict & co. prepend system_prompt as a message: it is in the instructions already
    messages = [m for m in messages if not (own and _says(m, own) and m.role in _SYSTEM)]
    # the last message that is not a system message decides what is answered; system
    # messages after it still come before the query
    end = max((i for i, m in enumerate(messages) if m.role not in _SYSTEM), default=-1)
    talk, late = list(messages[: end + 1]), list(messages[end + 1 :])
    results = _trailing_results(talk)
    before = talk[: len(talk) - len(results)]
    if results:
        query = _results_turn(results, before)
    elif talk and talk[-1].role == MessageRole.USER:
        query, before = readable(talk[-1]), talk[:-1]
    else:
        last = f"the last one is the {talk[-1].role.value}'s" if talk else "there is none"
        raise InvalidInput(
            f"the conversation must end with a user message or tool results ({last})"
        )
    return ChatRequest(query, [_turn(m) for m in [*before, *late]], instructions)


def _says(message: ChatMessage, text: str) -> bool:
    return (message.content or "").strip() == text


def _trailing_results(talk: Sequence[ChatMessage]) -> list[ChatMessage]:
    n = 0
    while n < len(talk) and talk[len(talk) - 1 - n].role in _TOOL:
        n += 1
    return list(talk[len(talk) - n :])


def _calls(message: ChatMessage) -> list[ToolCallBlock]:
    return [b for b in message.blocks if isinstance(b, ToolCallBlock)]


def _call_names(messages: Sequence[ChatMessage]) -> dict[str, str]:
    """tool_call_id -> tool name, from the calls the assistant made."""
    return {
        c.tool_call_id: c.tool_name
        for m in messages
        for c in _calls(m)
        if c.tool_call_id is not None
    }


def _turn(message: ChatMessage) -> dict[str, str]:
    if message.role in _SYSTEM:
        return {"role": "system", "content": message.content or ""}
    if message.role in _TOOL:
        return {"role": "tool", "content": message.content or ""}
    if message.role in _ASSISTANT:
        parts = [(message.content or "").strip()]
        parts += [render_call(c.tool_name, _kwargs(c)) for c in _calls(message)]
        content = "\n".join(p for p in parts if p) or readable(message)
        return {"role": "assistant", "content": content}
    return {"role": "user", "content": readable(message)}


def _kwargs(call: ToolCallBlock) -> dict[str, Any]:
    args = call.tool_kwargs
    return args if isinstance(args, dict) else {"arguments": args}


def _results_turn(results: Sequence[ChatMessage], before: Sequence[ChatMessage]) -> str:
    names = _call_names(before)
    lines = []
    for r in results:
        name = names.get(str(r.additional_kwargs.get("tool_call_id")), "")
        source = f"The {name} tool" if name else "A tool"
        lines.append(f"{source} returned: {(r.content or '').strip()}")
    question = next((m for m in reversed(before) if m.role == MessageRole.USER), None)
    if question is not None:
        lines.append(f"Use this to answer my question: {readable(question)}")
    return "\n".join(lines)
