"""The JSON tool-call format of ``ChatMemOS``: tools described as text, calls parsed from text.

A small local model has no native function calling, so the bound tools are described in a
system message and the model answers either in plain text or with one JSON object::

    {"tool": "get_weather", "arguments": {"city": "Lisbon"}}

Several calls are a JSON list of such objects. The object may sit in a ```json fence or among
other text; ``"name"`` is accepted for ``"tool"`` and ``"args"``/``"parameters"`` for
``"arguments"`` (the spellings small models were trained on). Anything that is not a call of a
bound tool stays plain text. When a call is required (``tool_choice``), the answer is started
for the model (``{"tool": "``, or the tool's name and its first argument's name), which is what
makes a 135M model follow the format; left to choose, it seldom calls a tool at all.
"""

from __future__ import annotations

import contextlib
import json
import re
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from langchain_core.messages import InvalidToolCall, ToolCall
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_openai_tool

from ..core.errors import InvalidInput

ToolLike = Mapping[str, Any] | type | Callable[..., Any] | BaseTool
_NAME_KEYS = ("tool", "name")
_ARG_KEYS = ("arguments", "args", "parameters")
_EMPTY_FENCE = re.compile(r"```(?:json)?\s*```")
_DECODER = json.JSONDecoder()


@dataclass(frozen=True)
class ToolSet:
    """The tools bound to a model and whether (and which) one must be called."""

    tools: tuple[dict[str, Any], ...]  # OpenAI tool dicts
    choice: str  # "auto", "none", "any" or a tool name

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(t["function"]["name"] for t in self.tools)

    @property
    def active(self) -> bool:
        return bool(self.tools) and self.choice != "none"

    @property
    def forced(self) -> bool:
        return self.active and self.choice != "auto"


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


def tool_choice_name(choice: Any, names: Sequence[str]) -> str:
    """LangChain's ``tool_choice`` spellings as ``auto``, ``none``, ``any`` or a tool name."""
    if choice is None or choice == "auto":
        return "auto"
    if choice is True or choice in ("any", "required"):
        return "any"
    if choice is False or choice == "none":
        return "none"
    if isinstance(choice, Mapping):  # {"type": "function", "function": {"name": ...}}
        choice = (choice.get("function") or {}).get("name", choice.get("name"))
    if isinstance(choice, str) and choice in names:
        return choice
    raise InvalidInput(
        f"tool_choice {choice!r} is not 'auto', 'none', 'any'/'required' or a bound tool "
        f"({', '.join(names) or 'none bound'})"
    )


def instructions(toolset: ToolSet) -> str:
    """The system message that tells the model its tools and how to call them.

    Signatures and one example call in the format, rather than full JSON schemas: a 135M model
    copies what it is shown, and it copies a signature into arguments much better.
    """
    lines = ["You can use these tools:"]
    lines += [_signature(t["function"]) for t in toolset.tools]
    example = _function(toolset, toolset.choice if toolset.choice in toolset.names else None)
    shown = ", ".join(f"{json.dumps(p)}: ..." for p in _properties(example))
    lines.append(
        "To use a tool, reply with only a JSON object with the tool name and its arguments, "
        f'for example {{"tool": {json.dumps(example["name"])}, "arguments": {{{shown}}}}}.'
    )
    if toolset.choice == "auto":
        lines.append("If no tool is needed, reply in plain text.")
    elif toolset.choice == "any":
        lines.append("You must use one of the tools.")
    else:
        lines.append(f"You must use the tool {toolset.choice}.")
    return "\n".join(lines)


def prefill(toolset: ToolSet) -> str:
    """The start of the answer written for the model when a call is required ("" if not):
    the tool's name when it is known, and its first argument's name."""
    if not toolset.forced:
        return ""
    if toolset.choice == "any" and len(toolset.tools) > 1:
        return '{"tool": "'
    fn = _function(toolset, toolset.choice if toolset.choice != "any" else None)
    start = '{"tool": ' + json.dumps(fn["name"]) + ', "arguments": {'
    props = _properties(fn)
    if not props:
        return start
    first, schema = next(iter(props.items()))
    return start + json.dumps(first) + ": " + ('"' if schema.get("type") == "string" else "")


def _function(toolset: ToolSet, name: str | None) -> dict[str, Any]:
    """The ``function`` part of the tool ``name`` (the first tool when None)."""
    return next(
        t["function"] for t in toolset.tools if name is None or t["function"]["name"] == name
    )


def _properties(fn: Mapping[str, Any]) -> dict[str, Any]:
    return dict((fn.get("parameters") or {}).get("properties") or {})


def _signature(fn: Mapping[str, Any]) -> str:
    params = ", ".join(f"{name}: {_type(s)}" for name, s in _properties(fn).items())
    description = (fn.get("description") or "").strip().splitlines()
    return f"- {fn['name']}({params})" + (f": {description[0]}" if description else "")


def _type(schema: Mapping[str, Any]) -> str:
    if "enum" in schema:
        return "one of " + json.dumps(schema["enum"], ensure_ascii=False)
    kind = schema.get("type")
    if isinstance(kind, str):
        return kind
    if isinstance(kind, list):
        return " or ".join(map(str, kind))
    options = schema.get("anyOf") or schema.get("oneOf") or []
    return " or ".join(_type(o) for o in options if isinstance(o, Mapping)) or "any"


def call_complete(text: str) -> bool:
    """Whether ``text`` (which starts with a :func:`prefill`) already holds the whole call."""
    try:
        _DECODER.raw_decode(text)
    except ValueError:
        return False
    return True


@dataclass
class ParsedReply:
    content: str
    tool_calls: list[ToolCall] = field(default_factory=list)
    invalid_tool_calls: list[InvalidToolCall] = field(default_factory=list)


def parse_reply(text: str, names: Sequence[str], *, parallel: bool = True) -> ParsedReply:
    """Split a model answer into tool calls of the bound tools and the remaining text.

    Every JSON value in ``text`` is looked at; those that name a bound tool become calls (or
    invalid calls when their arguments are not an object) and are cut from the content.
    Without any, the whole text is the answer.
    """
    reply = ParsedReply(text)
    spans: list[tuple[int, int]] = []
    for start, end, value in _json_values(text):
        found = _calls_in(value, names)
        if found is None:
            continue
        spans.append((start, end))
        for name, args in found:
            call_id = f"call_{uuid.uuid4().hex[:24]}"
            if isinstance(args, dict):
                reply.tool_calls.append(ToolCall(name=name, args=args, id=call_id))
            else:
                reply.invalid_tool_calls.append(
                    InvalidToolCall(
                        name=name,
                        args=json.dumps(args, ensure_ascii=False),
                        id=call_id,
                        error="the arguments of a tool call must be a JSON object",
                        type="invalid_tool_call",
                    )
                )
    if not parallel:
        del reply.tool_calls[1:]
    if spans:
        rest = text
        for start, end in reversed(spans):
            rest = rest[:start] + rest[end:]
        reply.content = _EMPTY_FENCE.sub("", rest).strip()
    return reply


def _json_values(text: str) -> list[tuple[int, int, Any]]:
    """(start, end, value) of each outermost JSON object or list in ``text``."""
    found = []
    i = 0
    while i < len(text):
        if text[i] in "{[":
            try:
                value, end = _DECODER.raw_decode(text, i)
            except ValueError:
                i += 1
                continue
            found.append((i, end, value))
            i = end
        else:
            i += 1
    return found


def _calls_in(value: Any, names: Sequence[str]) -> list[tuple[str, Any]] | None:
    """The calls a decoded JSON value spells, or None if it is not (only) calls of ``names``."""
    items = value if isinstance(value, list) else [value]
    calls = []
    for item in items:
        if not isinstance(item, dict):
            return None
        key = next((k for k in _NAME_KEYS if isinstance(item.get(k), str)), None)
        if key is None or item[key] not in names:
            return None
        keys = [k for k in _ARG_KEYS if k in item]
        # no arguments key: the model flattened them into the call object
        args = item[keys[0]] if keys else {k: v for k, v in item.items() if k != key}
        if isinstance(args, str):  # some models send the arguments as a JSON string
            with contextlib.suppress(ValueError):
                args = json.loads(args)
        calls.append((item[key], args))
    return calls or None
