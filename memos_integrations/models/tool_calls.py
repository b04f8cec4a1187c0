"""The JSON tool-call format small local models can follow, and its tolerant parser.

Framework-free, and the only one: the LangChain ``ChatMemOS`` and the LlamaIndex ``MemOSLLM``
both describe tools with :func:`format_tools`, prefill required calls with :func:`call_prefix`,
stop generating with :func:`opens_with_call` and read the answer with :func:`parse_tool_calls`.
Each adapter only turns the result into its framework's types.

The format. The tools are listed in a system message, each with a call to copy::

    You can call these tools:
    - get_weather: Get the current weather for a city.
      Call: {"tool": "get_weather", "arguments": {"city": "<string>"}}
    To call a tool, reply with only its JSON call, filled in. Otherwise answer in plain text.

and the model calls one by answering with that JSON object (alone, or in a ```json fenced
block, or with text around it). A JSON list of such objects calls several tools. The parser
also accepts the shapes larger models were trained on: ``"name"`` for ``"tool"``, ``"args"``
or ``"parameters"`` for ``"arguments"``, arguments flattened into the call object
(``{"name": "add", "a": 1}``), arguments as a JSON string and OpenAI's
``{"type": "function", "function": {"name": ..., "arguments": "<json>"}}``. A call of an
offered tool whose arguments are not an object is an invalid call (reported, never run).
Anything else — plain text, JSON that is not a call, a call of a tool not offered — is not a
call, and the answer is plain text.

A 135M model rarely decides to call a tool by itself; when a call is required,
:func:`call_prefix` is the start of the answer to put in its mouth (the caller prefills it),
after which it reliably completes the name and the arguments.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from ..core.errors import InvalidInput

__all__ = [
    "InvalidCall",
    "ParsedAnswer",
    "call_prefix",
    "fit_arguments",
    "format_tools",
    "opens_with_call",
    "parse_tool_calls",
    "render_call",
    "tool_choice",
]

ToolCall = tuple[str, dict[str, Any]]  # (tool name, arguments)

HEADER = "You can call these tools:"
FOOTER = "To call a tool, reply with only its JSON call, filled in. Otherwise answer in plain text."
_MUST = "You must call {}: reply with only its JSON call, filled in."
_PLACEHOLDERS = {"number": "number", "integer": "integer", "boolean": "true|false"}
_NAME_KEYS = ("tool", "name")
_ARG_KEYS = ("arguments", "args", "parameters")
_EMPTY_FENCE = re.compile(r"```(?:json)?\s*```")
_DECODER = json.JSONDecoder()


# ---- choosing and describing tools ---------------------------------------------------------


def tool_choice(choice: Any, names: Sequence[str]) -> str:
    """A framework's ``tool_choice`` as ``"auto"``, ``"none"``, ``"any"`` or a tool's name.

    Accepts ``None``/``"auto"``, ``"none"``/``False``, ``"any"``/``"required"``/``True``, a name
    of ``names`` and OpenAI's ``{"type": "function", "function": {"name": ...}}``.
    """
    if choice is None or choice == "auto":
        return "auto"
    if choice is True or choice in ("any", "required"):
        return "any"
    if choice is False or choice == "none":
        return "none"
    if isinstance(choice, Mapping):
        choice = (choice.get("function") or {}).get("name", choice.get("name"))
    if isinstance(choice, str) and choice in names:
        return choice
    raise InvalidInput(
        f"tool_choice {choice!r} is not 'auto', 'none', 'any'/'required' or one of the tools "
        f"offered ({', '.join(names) or 'none'})"
    )


def format_tools(schemas: Sequence[Mapping[str, Any]], choice: str = "auto") -> str:
    """The tools block for the system message.

    ``schemas``: ``{"name", "description", "parameters"}`` with ``parameters`` a JSON schema
    of an object (as OpenAI's ``function`` entries); the block shows each tool's description
    and a call with a placeholder per argument, optional ones marked. ``choice`` (as from
    :func:`tool_choice`) words the last line: answer in text or call (``"auto"``), or call
    one of the tools (``"any"``) or the named one.
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
    if choice == "auto":
        lines.append(FOOTER)
    else:
        lines.append(_MUST.format("one of these tools" if choice == "any" else choice))
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


# ---- writing calls -------------------------------------------------------------------------


def render_call(name: str, arguments: Mapping[str, Any]) -> str:
    """A call in the format (how earlier calls can appear in the conversation)."""
    return json.dumps({"tool": name, "arguments": dict(arguments)}, ensure_ascii=False)


def call_prefix(name: str | None = None, parameters: Mapping[str, Any] | None = None) -> str:
    """The opening of a call, to prefill when the model must call.

    ``{"tool": "`` lets the model pick the tool; with ``name`` the tool is written and the
    model writes the arguments. With that tool's ``parameters`` too, the arguments object and
    its first argument are opened as well (``{"city": "``), which a 135M model fills in more
    reliably still.
    """
    if name is None:
        return '{"tool": "'
    start = f'{{"tool": {json.dumps(name, ensure_ascii=False)}, "arguments": '
    if parameters is None:
        return start
    props = _properties(parameters)
    if not props:
        return start + "{"
    first, spec = next(iter(props.items()))
    quote = '"' if isinstance(spec, Mapping) and spec.get("type") == "string" else ""
    return f"{start}{{{json.dumps(first, ensure_ascii=False)}: {quote}"


# ---- reading calls -------------------------------------------------------------------------


class InvalidCall(NamedTuple):
    """A call of an offered tool that cannot be run: its arguments are not an object."""

    name: str
    arguments: str  # as the model wrote them (JSON text)
    error: str


@dataclass
class ParsedAnswer:
    """A model's answer read for tool calls."""

    text: str  # the answer without the calls (and the fences that held them)
    calls: list[ToolCall] = field(default_factory=list)
    invalid: list[InvalidCall] = field(default_factory=list)


def parse_tool_calls(
    text: str, tools: Collection[str] | Mapping[str, Mapping[str, Any]]
) -> ParsedAnswer:
    """The tool calls in a model's answer, and the rest of its text.

    Every JSON value in ``text`` is tried (fenced or not): a call object, or a list of call
    objects, naming tools in ``tools``. Calls come back in order, exact repeats once (a small
    model repeating itself calls once); a call whose arguments are not an object is in
    ``invalid``. ``text`` is the answer with the calls cut out — all of it when there are
    none. ``tools`` as a mapping of name to parameters schema also fits each call's arguments
    to its tool (:func:`fit_arguments`).
    """
    answer = ParsedAnswer(text)
    spans: list[tuple[int, int]] = []
    for start, end, value in _json_values(text):
        found = _as_calls(value, tools)
        if found is None:
            continue
        spans.append((start, end))
        for name, args in found:
            if isinstance(args, dict):
                if isinstance(tools, Mapping):
                    args = fit_arguments(args, tools[name])
                if (name, args) not in answer.calls:
                    answer.calls.append((name, args))
            else:
                shown = args if isinstance(args, str) else json.dumps(args, ensure_ascii=False)
                error = "the arguments of a tool call must be a JSON object"
                answer.invalid.append(InvalidCall(name, shown, error))
    if spans:
        rest = text
        for start, end in reversed(spans):
            rest = rest[:start] + rest[end:]
        answer.text = _EMPTY_FENCE.sub("", rest).strip()
    return answer


def opens_with_call(text: str, tools: Collection[str]) -> bool:
    """True once ``text`` starts with a complete call (after an optional code fence).

    Lets a caller stop generating as soon as the call is written: what a small model adds
    after it is chatter. An invalid call counts (it is complete; more text will not fix it).
    """
    body = text.lstrip()
    if body.startswith("```"):
        body = body.partition("\n")[2].lstrip()  # "```json\n{...": the fence's info line
    if not body.startswith(("{", "[")):
        return False
    try:
        value, _ = _DECODER.raw_decode(body)
    except ValueError:
        return False
    return _as_calls(value, tools) is not None


def fit_arguments(arguments: Mapping[str, Any], parameters: Mapping[str, Any]) -> dict[str, Any]:
    """``arguments`` without the keys the tool does not declare.

    Small models pad a call with made-up arguments (``"temperature": 25``) that a Python
    function would reject; a schema without ``properties`` keeps everything.
    """
    declared = _properties(parameters)
    if not declared or parameters.get("additionalProperties") is True:
        return dict(arguments)
    return {k: v for k, v in arguments.items() if k in declared}


def _json_values(text: str) -> Iterator[tuple[int, int, Any]]:
    """(start, end, value) of each top-level JSON object or array in ``text``, left to right."""
    i = 0
    while True:
        starts = [p for p in (text.find("{", i), text.find("[", i)) if p >= 0]
        if not starts:
            return
        start = min(starts)
        try:
            value, end = _DECODER.raw_decode(text, start)
        except ValueError:
            i = start + 1  # not JSON from here: a later brace may start some
            continue
        yield start, end, value
        i = end


def _as_calls(value: Any, names: Collection[str]) -> list[tuple[str, Any]] | None:
    """The calls a JSON value spells (arguments as written), or None if it is not only calls
    of ``names``: one bad item spoils a list."""
    items = value if isinstance(value, list) else [value]
    calls = [_as_call(item, names) for item in items]
    if not calls or any(c is None for c in calls):
        return None
    return [c for c in calls if c is not None]


def _as_call(value: Any, names: Collection[str]) -> tuple[str, Any] | None:
    if not isinstance(value, dict):
        return None
    if isinstance(value.get("function"), dict):  # OpenAI: {"type": "function", "function": ...}
        value = value["function"]
    key = next((k for k in _NAME_KEYS if isinstance(value.get(k), str)), None)
    if key is None or value[key] not in names:
        return None
    arg_key = next((k for k in _ARG_KEYS if k in value), None)
    # no arguments key: the model flattened them into the call object
    args = value[arg_key] if arg_key else {k: v for k, v in value.items() if k != key}
    if isinstance(args, str):  # OpenAI sends the arguments as a JSON string
        with contextlib.suppress(ValueError):  # else it stays a string: an invalid call
            args = json.loads(args) if args.strip() else {}
    return value[key], {} if args is None else args
