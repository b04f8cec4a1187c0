"""create_memos_tools outside an agent: schemas, choices, errors, async."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from langchain.tools import ToolRuntime

from memos_integrations import InvalidInput
from memos_integrations.langchain import create_memos_tools


def runtime(user: str | None, **configurable: Any) -> ToolRuntime:
    if user is not None:
        configurable["user_id"] = user
    return ToolRuntime(
        state={},
        context=None,
        config={"configurable": configurable},
        stream_writer=lambda _: None,
        tool_call_id="call-1",
        store=None,
    )


def tools_by_name(mos, **kw):  # type: ignore[no-untyped-def]
    return {t.name: t for t in create_memos_tools(mos, **kw)}


def test_the_model_never_sees_a_user_argument(mos) -> None:
    tools = tools_by_name(mos)
    assert set(tools) == {"search_memory", "add_memory", "update_memory", "delete_memory"}
    for t in tools.values():
        schema = t.tool_call_schema.model_json_schema()
        assert not {"runtime", "user", "user_id"} & set(schema["properties"])
    assert set(tools["update_memory"].args) >= {"memory_id", "text"}
    assert set(tools_by_name(mos, allow=("search",))) == {"search_memory"}
    with pytest.raises(InvalidInput, match="unknown memory tools"):
        create_memos_tools(mos, allow=("search", "purge"))


def test_tools_act_for_the_run_user_and_report_errors(mos) -> None:
    tools = tools_by_name(mos)
    saved = tools["add_memory"].invoke({"text": "Alice owns a kayak", "runtime": runtime("alice")})
    memory_id = saved.split()[-1].rstrip(".")
    assert mos.get(memory_id, user="alice").text == "Alice owns a kayak"
    found = tools["search_memory"].invoke({"query": "kayak", "runtime": runtime("alice")})
    assert memory_id in found and "Alice owns a kayak" in found
    assert tools["search_memory"].invoke({"query": "kayak", "runtime": runtime("bob")}) == (
        "No memories found."
    )
    denied = tools["update_memory"].invoke(
        {"memory_id": memory_id, "text": "Bob owns it", "runtime": runtime("bob")}
    )
    assert denied.startswith("NotFound:") and mos.get(memory_id).text == "Alice owns a kayak"
    empty = tools["add_memory"].invoke({"text": "  ", "runtime": runtime("alice")})
    assert empty.startswith("InvalidInput:")
    with pytest.raises(InvalidInput, match="needs a user"):
        tools["search_memory"].invoke({"query": "kayak", "runtime": runtime(None)})
    # a user the application has not seen yet has no memories, and gets a cube on first write
    assert tools["search_memory"].invoke({"query": "x", "runtime": runtime("erin")}) == (
        "No memories found."
    )
    tools["add_memory"].invoke({"text": "Erin is new here", "runtime": runtime("erin")})
    assert mos.get_cube("erin").owner == "erin"


def test_read_only_grants_hold_for_tools(mos) -> None:
    mos.grant("alice-personal", to="bob", access="read", by="alice")
    [item] = mos.add("Alice's door code is 1234", user="alice")
    tools = tools_by_name(mos)
    found = tools["search_memory"].invoke({"query": "door code", "runtime": runtime("bob")})
    assert item.id in found  # bob may read the shared cube
    denied = tools["delete_memory"].invoke({"memory_id": item.id, "runtime": runtime("bob")})
    assert denied.startswith("PermissionDenied:") and mos.get(item.id).state != "deleted"


def test_tools_run_async(mos) -> None:
    tools = tools_by_name(mos)

    async def run() -> str:
        await tools["add_memory"].ainvoke({"text": "Alice likes jazz", "runtime": runtime("alice")})
        return await tools["search_memory"].ainvoke({"query": "jazz", "runtime": runtime("alice")})

    assert "Alice likes jazz" in asyncio.run(run())
