"""A JSON tool-call format small local models can follow, and a tolerant parser for it.

Framework-free: the LlamaIndex and LangChain chat classes both render tools with
:func:`format_tools` and read the model's answer with :func:`parse_tool_call`.

The format. The tools are listed in the system message, each with a call to copy::

    - get_weather: Get the current weather for a city.
      Call: {"tool": "get_weather", "arguments": {"city": "<string>"}}

and the model calls one by answering with that JSON object (alone, or in a ```json fenced
block, or with text around it). A JSON list of such objects calls several tools. The parser
also accepts the shapes larger models were trained on: ``{"name": ..., "arguments": ...}``
(``"parameters"`` too) and OpenAI's ``{"function": {"name": ..., "arguments": "<json>"}}``.
Anything else — plain text, JSON that is not a call, a call of an unknown tool, arguments
that are not an object — is not a call, and the answer is plain text.

A 135M model rarely decides to call a tool by itself; when a call is required,
:func:`call_prefix` is the start of the answer to put in its mouth (the caller prefills it),
after which it reliably completes the name and the arguments.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterator, Mapping, Sequence
from typing import Any

__all__ = [
    "call_prefix",
    "fit_arguments",
    "format_tools",
    "opens_with_call",
    "parse_tool_call",
    "render_call",
]

ToolCall = tuple[str, dict[str, Any]]

HEADER = "You can call these tools:"
FOOTER = "To call a tool, reply with only its JSON call, filled in. Otherwise answer in plain text."
_PLACEHOLDERS = {"number": "number", "integer": "integer", "boolean": "true|false"}


def render_call(name: str, arguments: Mapping[str, Any]) -> str:
    """A call in the documented format (how earlier calls appear in the conversation)."""
    return json.dumps({"tool": name, "arguments": dict(arguments)}, ensure_ascii=False)


def call_prefix(name: str | None = None) -> str:
    """The opening of a call, to prefill when the model must call (``name``: that tool)."""
    if name is None:
        return '{"tool": "'
    return f'{{"tool": {json.dumps(name, ensure_ascii=False)}, "arguments": '


def format_tools(schemas: Sequence[Mapping[str, Any]]) -> str:
    """The tools block for the system message.

    ``schemas``: ``{"name", "description", "parameters"}`` with ``parameters`` a JSON schema
    of an object (as OpenAI's ``function`` entries); the block shows each tool's description
    and a call with a placeholder per argument, optional ones marked.
    """
    lines = [HEADER]
    for schema in schemas:
        name = str(schema["name"])
        description = " ".join(str(schema.get("description") or "").split())
        params = schema.get("parameters") or {}
        lines.append(f"- {name}: {description}" if description else f"- {name}")
        args = ", ".join(f"{json.dumps(p)}: {slot}" for p, slot in _slots(params))
        lines.append(f'  Call: {{"tool": {json.dumps(name)}, "arguments": {{{args}}}}}')
        for prop, spec in _properties(params).items():
            if isinstance(spec, Mapping) and spec.get("description"):
                lines.append(f"  {prop}: {' '.join(str(spec['description']).split())}")
    lines.append(FOOTER)
    return "\n".join(lines)


def _properties(params: Mapping[str, Any]) -> dict[str, Any]:
    props = params.get("properties")
    return dict(props) if isinstance(props, Mapping) else {}


def _slots(params: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    required = set(params.get("required") or ())
    for prop, spec in _properties(params).items():
        yield prop, _slot(spec if isinstance(spec, Mapping) else {}, prop not in required)


def _slot(spec: Mapping[str, Any], optional: bool) -> str:
    """A placeholder for one argument: ``"<string>"``, ``<number, optional>``, ``[...]``."""
    options = spec.get("anyOf")
    if "type" not in spec and isinstance(options, list):  # pydantic's Optional[X]
        spec = next((o for o in options if isinstance(o, Mapping) and o.get("type") != "null"), {})
    kind = spec.get("type")
    if kind == "array":
        return "[...]"
    if kind == "object":
        return "{...}"
    enum = spec.get("enum")
    if isinstance(enum, list) and enum:
        word, quoted = "|".join(str(v) for v in enum), all(isinstance(v, str) for v in enum)
    elif isinstance(kind, str) and kind in _PLACEHOLDERS:
        word, quoted = _PLACEHOLDERS[kind], False
    else:
        word, quoted = "string", True
    word += ", optional" if optional else ""
    return f'"<{word}>"' if quoted else f"<{word}>"


def parse_tool_call(text: str, tool_names: Collection[str]) -> list[ToolCall] | None:
    """The tool calls in a model's answer, or None when it answered in plain text.

    Every JSON value in ``text`` is tried (fenced or not, text around it is ignored): a call
    object, or a list of call objects, naming tools in ``tool_names``. Several calls come
    back in order, exact repeats once. ``None`` when no call is found.
    """
    names = set(tool_names)
    calls: list[ToolCall] = []
    for value in _json_values(text):
        found = _as_calls(value, names)
        for call in found or ():
            if call not in calls:  # a small model repeating itself calls once
                calls.append(call)
    return calls or None


def opens_with_call(text: str, tool_names: Collection[str]) -> bool:
    """True once ``text`` starts with a complete call (after an optional code fence).

    Lets a caller stop generating as soon as the call is written: what a small model adds
    after it is chatter.
    """
    body = text.lstrip()
    if body.startswith("```"):
        body = body.partition("\n")[2].lstrip()  # "```json\n{...": the fence's info line
    if not body.startswith(("{", "[")):
        return False
    try:
        value, _ = json.JSONDecoder().raw_decode(body)
    except ValueError:
        return False
    return _as_calls(value, set(tool_names)) is not None


def fit_arguments(arguments: Mapping[str, Any], parameters: Mapping[str, Any]) -> dict[str, Any]:
    """``arguments`` without the keys the tool does not declare.

    Small models pad a call with made-up arguments (``"temperature": 25``) that a Python
    function would reject; a schema without ``properties`` keeps everything.
    """
    declared = _properties(parameters)
    if not declared or parameters.get("additionalProperties") is True:
        return dict(arguments)
    return {k: v for k, v in arguments.items() if k in declared}


def _json_values(text: str) -> Iterator[Any]:
    """Each top-level JSON object or array in ``text``, left to right."""
    decoder = json.JSONDecoder()
    i = 0
    while True:
        starts = [p for p in (text.find("{", i), text.find("[", i)) if p >= 0]
        if not starts:
            return
        start = min(starts)
        try:
            value, end = decoder.raw_decode(text, start)
        except ValueError:
            i = start + 1  # not JSON from here: a later brace may start some
            continue
        yield value
        i = end


def _as_calls(value: Any, names: set[str]) -> list[ToolCall] | None:
    if isinstance(value, list):
        calls = [_as_call(v, names) for v in value]
        if not calls or any(c is None for c in calls):
            return None
        return [c for c in calls if c is not None]
    call = _as_call(value, names)
    return None if call is None else [call]


def _as_call(value: Any, names: set[str]) -> ToolCall | None:
    if not isinstance(value, dict):
        return None
    if isinstance(value.get("function"), dict):  # OpenAI: {"type": "function", "function": ...}
        value = value["function"]
    name = value.get("tool", value.get("name"))
    if not isinstance(name, str) or name not in names:
        return None
    args = next((value[k] for k in ("arguments", "parameters", "args") if k in value), {})
    if isinstance(args, str):  # OpenAI sends the arguments as a JSON string
        try:
            args = json.loads(args) if args.strip() else {}
        except ValueError:
            return None
    if args is None:
        args = {}
    return (name, args) if isinstance(args, dict) else None
