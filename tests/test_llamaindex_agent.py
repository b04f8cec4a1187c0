"""A LlamaIndex FunctionAgent with MemOSMemory: two sessions, a Context round trip, a restart.

The LLM is scripted (tests/llamaindex_scripted.py); the store, the embedder and the agent
workflow are the real ones.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from llama_index.core.base.llms.types import ChatMessage, MessageRole, ToolCallBlock
from llamaindex_scripted import agent
from workflows import Context
from workflows.context.serializers import JsonSerializer

from memos_integrations import MemOS
from memos_integrations.llama_index import MemOSMemory

pytestmark = pytest.mark.asyncio


def _system_text(messages: list[ChatMessage]) -> str:
    return "\n".join(m.content or "" for m in messages if m.role == MessageRole.SYSTEM)


async def test_a_new_session_recalls_what_an_earlier_one_learnt(mos: MemOS) -> None:
    seen: list[list[ChatMessage]] = []
    bot = agent(seen)
    first = MemOSMemory.from_defaults(mos=mos, user_id="alice", session_id="s1")
    assert str(await bot.run("I moved to Lisbon", memory=first)) == "All set."

    # session 1's transcript: the user turn, the tool call, its result and the answer
    roles = [m.role for m in await first.aget_all()]
    assert roles == ["user", "assistant", "tool", "assistant"]

    seen.clear()
    second = MemOSMemory.from_defaults(mos=mos, user_id="alice", session_id="s2")
    assert str(await bot.run("Where do I live?", memory=second)) == "You live in Lisbon."
    shown = seen[0]
    # Lisbon reached the model only through the recalled-memory system block: the new
    # session's window holds just the question
    assert [m.role for m in shown if m.role != MessageRole.SYSTEM] == ["user"]
    assert "alice: I moved to Lisbon" in _system_text(shown)
    assert "city recorded" not in _system_text(shown)  # tool results are not recalled

    # bob has no such memory
    seen.clear()
    bobs = MemOSMemory.from_defaults(mos=mos, user_id="bob", session_id="s3")
    assert str(await bot.run("Where do I live?", memory=bobs)) == "I don't know."
    assert "Lisbon" not in " ".join(m.content or "" for m in seen[0])


async def test_context_round_trip_restores_a_working_memory(mos: MemOS) -> None:
    """run-llama/llama_index#19228: mem0's memory does not survive Context serialisation."""
    seen: list[list[ChatMessage]] = []
    bot = agent(seen)
    ctx = Context(bot)
    memory = MemOSMemory.from_defaults(mos=mos, user_id="alice", session_id="chat-1")
    await bot.run("I moved to Porto", memory=memory, ctx=ctx)
    data = json.loads(json.dumps(ctx.to_dict(serializer=JsonSerializer())))

    restored = Context.from_dict(bot, data, serializer=JsonSerializer())
    again = await restored.store.get("memory")
    assert type(again) is MemOSMemory
    assert (again.user_id, again.session_id) == ("alice", "chat-1")
    assert again.mos is mos  # found by its store URL
    assert await again.aget_all() == await memory.aget_all()

    seen.clear()
    assert str(await bot.run("Where do I live?", ctx=restored)) == "You live in Porto."
    assert len(await memory.aget_all()) == 6  # both runs wrote to the same session


async def test_agent_resumes_in_a_new_process(mos: MemOS, db_path: Path, tmp_path: Path) -> None:
    seen: list[list[ChatMessage]] = []
    bot = agent(seen)
    ctx = Context(bot)
    memory = MemOSMemory.from_defaults(mos=mos, user_id="alice", session_id="s1")
    await bot.run("I moved to Lisbon", memory=memory, ctx=ctx)
    call = next(
        b for m in await memory.aget_all() for b in m.blocks if isinstance(b, ToolCallBlock)
    )
    saved = tmp_path / "ctx.json"
    saved.write_text(json.dumps(ctx.to_dict(serializer=JsonSerializer())))
    mos.close()

    script = textwrap.dedent(
        """
        import asyncio, json, sys
        from llamaindex_scripted import agent
        from workflows import Context
        from workflows.context.serializers import JsonSerializer
        from llama_index.core.base.llms.types import ToolCallBlock

        async def main():
            seen = []
            bot = agent(seen)
            data = json.loads(open(sys.argv[1]).read())
            ctx = Context.from_dict(bot, data, serializer=JsonSerializer())
            answer = await bot.run("Where do I live?", ctx=ctx)
            memory = await ctx.store.get("memory")
            window = [m for m in seen[0] if m.role != "system"]
            print(json.dumps({
                "answer": str(answer),
                "memory": type(memory).__name__,
                "roles": [m.role.value for m in window],
                "calls": [b.tool_call_id for m in window for b in m.blocks
                          if isinstance(b, ToolCallBlock)],
                "tool_ids": [m.additional_kwargs.get("tool_call_id") for m in window
                             if m.role == "tool"],
            }))

        asyncio.run(main())
        """
    )
    tests = Path(__file__).parent
    out = subprocess.run(
        [sys.executable, "-c", script, str(saved)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(tests), str(tests.parent)])},
        check=False,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["answer"] == "You live in Lisbon."
    assert result["memory"] == "MemOSMemory"
    # the restored window is session 1's transcript, tool call and result paired, then the
    # new question
    assert result["roles"] == ["user", "assistant", "tool", "assistant", "user"]
    assert result["calls"] == result["tool_ids"] == [call.tool_call_id]

    reopened = MemOS.open(db_path, embedder=mos.embedder)
    try:
        after = MemOSMemory.from_defaults(mos=reopened, user_id="alice", session_id="s1")
        assert len(after.get_all()) == 6  # the new process appended its question and answer
    finally:
        reopened.close()
