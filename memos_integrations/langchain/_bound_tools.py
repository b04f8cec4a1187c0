"""LangChain glue for the tool-call format of :mod:`memos_integrations.models.tool_calls`.

What is LangChain's own: its tool types (converted with ``convert_to_openai_tool``), its
``tool_choice`` spellings, and the ``tool_calls``/``invalid_tool_calls`` of an ``AIMessage``.
The format, the prefill, the early stop and the parser are the framework-free module's.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from langchain_core.messages import InvalidToolCall, ToolCall
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_openai_tool

from ..models import tool_calls as fmt

ToolLike = Mapping[str, Any] | type | Callable[..., Any] | BaseTool


@dataclass(frozen=True)
class ToolSet:
    """The tools bound to a model and whether (and which) one must be called."""

    tools: tuple[dict[str, Any], ...]  # OpenAI tool dicts
    choice: str  # "auto", "none", "any" or a tool name (models.tool_calls.tool_choice)

    @classmethod
    def bind(cls, tools: Sequence[ToolLike], choice: Any) -> ToolSet:
        formatted = tool_dicts(tools)
        names = [t["function"]["name"] for t in formatted]
        return cls(tuple(formatted), fmt.tool_choice(choice, names))

    @property
    def functions(self) -> list[dict[str, Any]]:
        return [t["function"] for t in self.tools]

    @property
    def parameters(self) -> dict[str, dict[str, Any]]:
        """name -> parameters schema, as the parser takes it (arguments are fitted)."""
        return {fn["name"]: fn.get("parameters") or {} for fn in self.functions}

    @property
    def active(self) -> bool:
        return bool(self.tools) and self.choice != "none"

    @property
    def forced(self) -> bool:
        return self.active and self.choice != "auto"

    def instructions(self) -> str:
        """The system message describing the tools and whether one must be called."""
        return fmt.format_tools(self.functions, self.choice)

    def prefill(self) -> str:
        """The start of the answer written for the model when a call is required ("" if
        not): the tool's name and first argument when the tool is known."""
        if not self.forced:
            return ""
        if self.choice == "any" and len(self.tools) > 1:
            return fmt.call_prefix()
        name = self.choice if self.choice != "any" else self.functions[0]["name"]
        return fmt.call_prefix(name, self.parameters[name])


def tool_dicts(tools: Sequence[ToolLike]) -> list[dict[str, Any]]:
    """OpenAI tool dicts for tools, functions, pydantic models or JSON schemas.

    A call names only a tool's name, so one description per name is given: the first (the
    same tool passed twice, as a pydantic model and as its JSON schema, is described once).
    """
    unique: dict[str, dict[str, Any]] = {}
    for tool in tools:
        formatted = convert_to_openai_tool(tool)
        unique.setdefault(formatted["function"]["name"], formatted)
    return list(unique.values())


@dataclass
class Reply:
    """An answer as the fields of an ``AIMessage``."""

    content: str
    tool_calls: list[ToolCall] = field(default_factory=list)
    invalid_tool_calls: list[InvalidToolCall] = field(default_factory=list)


def read_reply(text: str, toolset: ToolSet, *, parallel: bool = True) -> Reply:
    """The answer's calls of the bound tools (only the first unless ``parallel``) and the
    text around them; without any, the whole text is the content."""
    answer = fmt.parse_tool_calls(text, toolset.parameters)
    calls = answer.calls if parallel else answer.calls[:1]
    return Reply(
        answer.text,
        [ToolCall(name=name, args=args, id=_call_id()) for name, args in calls],
        [
            InvalidToolCall(
                name=bad.name,
                args=bad.arguments,
                id=_call_id(),
                error=bad.error,
                type="invalid_tool_call",
            )
            for bad in answer.invalid
        ],
    )


def _call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"
