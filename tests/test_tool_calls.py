"""The one JSON tool-call format and its parser (``memos_integrations.models.tool_calls``),
shared by the LangChain ``ChatMemOS`` and the LlamaIndex ``MemOSLLM``. Framework-free: no model
runs here; the adapters' tests check the format on scripted and real model output."""

from __future__ import annotations

from typing import Any

import pytest

from memos_integrations import InvalidInput
from memos_integrations.models import tool_calls
from memos_integrations.models.tool_calls import (
    call_prefix,
    fit_arguments,
    format_tools,
    opens_with_call,
    parse_tool_calls,
    tool_choice,
)

NAMES = ("get_weather", "add")


@pytest.mark.parametrize(
    ("text", "calls", "rest"),
    [
        (
            '{"tool": "get_weather", "arguments": {"city": "Paris"}}',
            [("get_weather", {"city": "Paris"})],
            "",
        ),
        (  # fenced, with text around: the text is the rest, the empty fence goes
            'Sure!\n```json\n{"tool": "add", "arguments": {"a": 1, "b": 2}}\n```\nDone.',
            [("add", {"a": 1, "b": 2})],
            "Sure!\n\nDone.",
        ),
        # the shapes other models were trained on
        ('{"name": "add", "parameters": {"a": 1}}', [("add", {"a": 1})], ""),
        ('{"name": "add", "a": 1, "b": 2}', [("add", {"a": 1, "b": 2})], ""),  # flattened
        (
            '{"tool": "add", "arguments": "{\\"a\\": 1, \\"b\\": 2}"}',  # a JSON string
            [("add", {"a": 1, "b": 2})],
            "",
        ),
        (
            '{"type": "function", "function": {"name": "add", "arguments": "{\\"a\\": 3}"}}',
            [("add", {"a": 3})],
            "",
        ),
        # several calls
        (
            '[{"tool": "add", "arguments": {"a": 1, "b": 2}}, {"name": "get_weather", '
            '"args": {"city": "Oslo"}}]',
            [("add", {"a": 1, "b": 2}), ("get_weather", {"city": "Oslo"})],
            "",
        ),
        (
            '[{"tool": "add", "arguments": {"a": 1}}, {"tool": "get_weather"}]',
            [("add", {"a": 1}), ("get_weather", {})],
            "",
        ),
        (  # a small model repeating itself calls once
            '{"tool": "add", "arguments": {"a": 1}} {"tool": "add", "arguments": {"a": 1}}',
            [("add", {"a": 1})],
            "",
        ),
        ('{"tool": "add", "arguments": null}', [("add", {})], ""),
        # not calls of an offered tool: the whole answer stays text
        ("It is sunny in Paris.", [], None),
        ("The weather is {sunny} today.", [], None),
        ('{"city": "Paris"}', [], None),  # JSON, not a call
        ('{"tool": "send_email", "arguments": {}}', [], None),  # not an offered tool
        ('{"tool": "add", "arguments": {"a": 1, "b": 2}', [], None),  # cut off
        ('{"tool": "get_weather", "arguments": {"city": "Par', [], None),
        ('{"tool": "get_weather", "arguments": {"city": "Paris"}', [], None),  # unclosed outer
        ("{'tool': 'add', 'arguments': {}}", [], None),  # not JSON
        ('[{"tool": "add"}, {"tool": "nope"}]', [], None),  # one bad call spoils the list
        ("", [], None),
    ],
)
def test_parse_tool_calls(text: str, calls: list[tuple[str, dict[str, Any]]], rest: str | None):
    answer = parse_tool_calls(text, NAMES)
    assert answer.calls == calls
    assert answer.text == (text if rest is None else rest)
    assert not answer.invalid


@pytest.mark.parametrize(
    ("text", "arguments"),
    [
        ('{"tool": "add", "arguments": [1, 2]}', "[1, 2]"),
        ('{"tool": "add", "arguments": "not json"}', "not json"),
        ('{"tool": "add", "arguments": 3}', "3"),
    ],
)
def test_arguments_that_are_not_an_object_make_an_invalid_call(text: str, arguments: str):
    answer = parse_tool_calls(text, NAMES)
    assert not answer.calls and answer.text == ""
    [bad] = answer.invalid
    assert bad.name == "add" and bad.arguments == arguments and "JSON object" in bad.error
    mixed = parse_tool_calls('[{"tool": "add", "arguments": [1]}, {"tool": "get_weather"}]', NAMES)
    assert mixed.calls == [("get_weather", {})] and [b.name for b in mixed.invalid] == ["add"]


def test_with_schemas_the_arguments_are_fitted_to_the_tool() -> None:
    tools = {"add": {"type": "object", "properties": {"a": {}, "b": {}}}, "get_weather": {}}
    text = '[{"tool": "add", "arguments": {"a": 1, "mood": 2}}, {"tool": "get_weather", "x": 1}]'
    assert parse_tool_calls(text, tools).calls == [("add", {"a": 1}), ("get_weather", {"x": 1})]


def test_the_documented_call_parses_once_filled_in() -> None:
    schemas = [
        {
            "name": "get_weather",
            "description": "Weather\n for a city.",
            "parameters": {
                "type": "object",
                "properties": {
                    "city": {"type": "string", "description": "the city"},
                    "unit": {"anyOf": [{"enum": ["c", "f"]}, {"type": "null"}]},
                    "days": {"type": "integer"},
                },
                "required": ["city", "days"],
            },
        },
        {"name": "ping", "parameters": {}},
    ]
    block = format_tools(schemas)
    assert block.splitlines() == [
        tool_calls.HEADER,
        "- get_weather: Weather for a city.",
        '  Call: {"tool": "get_weather", "arguments": '
        '{"city": "<string>", "unit": "<c|f, optional>", "days": <integer>}}',
        "  city: the city",
        "- ping",
        '  Call: {"tool": "ping", "arguments": {}}',
        tool_calls.FOOTER,
    ]
    filled = block.splitlines()[2].split("Call: ")[1]
    filled = filled.replace('"<string>"', '"Oslo"').replace('"<c|f, optional>"', '"c"')
    filled = filled.replace("<integer>", "3")
    assert parse_tool_calls(filled, ["get_weather"]).calls == [
        ("get_weather", {"city": "Oslo", "unit": "c", "days": 3})
    ]
    # the last line says whether (and which) a tool must be called
    assert format_tools(schemas, "any").endswith(
        "You must call one of these tools: reply with only its JSON call, filled in."
    )
    assert format_tools(schemas, "ping").endswith(
        "You must call ping: reply with only its JSON call, filled in."
    )


def test_call_prefix_opens_a_call_the_model_completes() -> None:
    assert call_prefix() == '{"tool": "'
    assert parse_tool_calls(call_prefix() + 'add", "arguments": {"a": 4}}', NAMES).calls == [
        ("add", {"a": 4})
    ]
    assert parse_tool_calls(call_prefix("ping") + "{}}", ["ping"]).calls == [("ping", {})]
    params = {"properties": {"city": {"type": "string"}, "days": {"type": "integer"}}}
    opened = call_prefix("get_weather", params)
    assert opened == '{"tool": "get_weather", "arguments": {"city": "'
    assert parse_tool_calls(opened + 'Oslo"}}', NAMES).calls == [("get_weather", {"city": "Oslo"})]
    numbered = call_prefix("add", {"properties": {"a": {"type": "integer"}}})
    assert numbered == '{"tool": "add", "arguments": {"a": '
    assert call_prefix("ping", {}) == '{"tool": "ping", "arguments": {'


def test_opens_with_call_and_fit_arguments() -> None:
    call = '{"tool": "add", "arguments": {"a": 1}}'
    assert opens_with_call(call + " and more", NAMES)
    assert opens_with_call("```json\n" + call, NAMES)
    assert opens_with_call('{"tool": "add", "arguments": [1]}', NAMES)  # invalid, but complete
    assert not opens_with_call(call[:-1], NAMES)
    assert not opens_with_call("Sure: " + call, NAMES)  # found later, not opened
    assert not opens_with_call('{"tool": "nope"}', NAMES)
    params = {"type": "object", "properties": {"a": {}, "b": {}}}
    assert fit_arguments({"a": 1, "z": 2}, params) == {"a": 1}
    assert fit_arguments({"z": 2}, {}) == {"z": 2}
    open_params = {**params, "additionalProperties": True}
    assert fit_arguments({"z": 2}, open_params) == {"z": 2}


def test_tool_choice_spellings() -> None:
    for auto in (None, "auto"):
        assert tool_choice(auto, NAMES) == "auto"
    for none in ("none", False):
        assert tool_choice(none, NAMES) == "none"
    for any_ in ("any", "required", True):
        assert tool_choice(any_, NAMES) == "any"
    assert tool_choice("add", NAMES) == "add"
    assert tool_choice({"type": "function", "function": {"name": "add"}}, NAMES) == "add"
    with pytest.raises(InvalidInput, match="tool_choice 'send_email'"):
        tool_choice("send_email", NAMES)
