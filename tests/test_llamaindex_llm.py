"""``MemOSLLM``: the local model as a LlamaIndex function-calling LLM answering from memory.

Mechanics run on the tiny random Llama (real generation, real store and embedder). Only the
agent-loop tests script the model's text (a random model cannot call a tool): they replace
``mos.stream_chat`` and leave planning, memory and the agent workflow real. Behaviour runs
on the bundled SmolLM2 (two bounded checks).
"""

from __future__ import annotations

import asyncio
import json
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from llama_index.core.agent.workflow import AgentStream, FunctionAgent
from llama_index.core.base.llms.types import ChatMessage, MessageRole, ToolCallBlock
from llama_index.core.prompts import PromptTemplate
from llama_index.core.tools import FunctionTool
from pydantic import BaseModel

from memos_integrations import InvalidInput, MemOS, NotFound, PermissionDenied
from memos_integrations.core.chat import ChatPlan
from memos_integrations.llama_index import MemOSLLM, MemOSMemory
from memos_integrations.llama_index.llm import PLAN_KEY
from memos_integrations.models import tool_calls
from memos_integrations.models.runtime import LocalModel

torch = pytest.importorskip("torch")

FACTS = ["one two three four five", "the quick brown fox", "Paris is the capital of France"]
QUESTION = "the capital of France"


def user(text: str) -> ChatMessage:
    return ChatMessage(role=MessageRole.USER, content=text)


def save_city(city: str) -> str:
    """Record the city the user lives in."""
    return f"city recorded: {city}"


def get_weather(city: str) -> str:
    """Get the current weather for a city."""
    return f"sunny, 21 degrees in {city}"


@pytest.fixture
def wide(tiny_dirs: tuple[Path, Path], home: Path, tmp_path: Path) -> LocalModel:
    """The tiny model with a 1,024-token context, room for a tools block (rope extends)."""
    copy = shutil.copytree(tiny_dirs[0], tmp_path / "wide")
    config = json.loads((copy / "config.json").read_text())
    config["max_position_embeddings"] = 1024
    (copy / "config.json").write_text(json.dumps(config))
    return LocalModel.load(copy)


def _engine(db_path: Path, embedder: Any, model: LocalModel) -> MemOS:
    mos = MemOS.open(db_path, embedder=embedder, model=model)
    for name in ("alice", "bob"):
        mos.create_user(name)
        mos.create_cube(f"{name}-personal", owner=name)
    return mos


@pytest.fixture
def chat_mos(db_path: Path, embedder: Any, tiny: LocalModel) -> Iterator[MemOS]:
    with _engine(db_path, embedder, tiny) as mos:
        yield mos


@pytest.fixture
def wide_mos(db_path: Path, embedder: Any, wide: LocalModel) -> Iterator[MemOS]:
    with _engine(db_path, embedder, wide) as mos:
        yield mos


# ---- one answer, every entry point ---------------------------------------------------------


async def test_complete_chat_stream_and_async_give_the_same_answer(chat_mos: MemOS) -> None:
    items = chat_mos.add(FACTS, user="alice")
    llm = MemOSLLM(chat_mos, user_id="alice", max_new_tokens=16)
    expected = chat_mos.chat(QUESTION, user="alice", max_new_tokens=16).text
    assert len(expected) > 5  # the tiny model says something (random, but greedy: stable)

    reply = llm.chat([user(QUESTION)])
    assert reply.message.content == expected
    plan = reply.additional_kwargs[PLAN_KEY]
    assert plan["tier"] == "activation" and set(plan["cached"]) == {it.id for it in items}
    assert reply.raw == {"text": expected, PLAN_KEY: plan}

    chunks = list(llm.stream_chat([user(QUESTION)]))
    assert len(chunks) > 1 and "".join(c.delta or "" for c in chunks) == expected
    assert chunks[-1].message.content == expected
    assert llm.complete(QUESTION).text == expected
    assert "".join(r.delta or "" for r in llm.stream_complete(QUESTION)) == expected

    assert (await llm.achat([user(QUESTION)])).message.content == expected
    assert (await llm.acomplete(QUESTION)).text == expected
    streamed = [c async for c in await llm.astream_chat([user(QUESTION)])]
    assert "".join(c.delta or "" for c in streamed) == expected
    completed = [c async for c in await llm.astream_complete(QUESTION)]
    assert completed[-1].text == expected and completed[-1].additional_kwargs[PLAN_KEY] == plan


async def test_async_generation_runs_off_the_event_loop(
    chat_mos: MemOS, monkeypatch: pytest.MonkeyPatch
) -> None:
    chat_mos.add(FACTS, user="alice")
    threads: list[int] = []
    real = chat_mos.stream_chat

    def spy(plan: ChatPlan, **kw: Any) -> Iterator[str]:
        for piece in real(plan, **kw):
            threads.append(threading.get_ident())  # the thread that decoded this piece
            yield piece

    monkeypatch.setattr(chat_mos, "stream_chat", spy)
    llm = MemOSLLM(chat_mos, user_id="alice", max_new_tokens=8)
    loop_thread = threading.get_ident()
    await llm.achat([user(QUESTION)])
    [c async for c in await llm.astream_chat([user(QUESTION)])]
    [c async for c in await llm.astream_complete(QUESTION)]
    assert threads and loop_thread not in threads


def test_metadata_and_settings(chat_mos: MemOS, tiny: LocalModel) -> None:
    llm = MemOSLLM(chat_mos, user_id="alice", max_new_tokens=32)
    meta = llm.metadata
    assert meta.context_window == tiny.context_length == 256
    assert meta.num_output == 32 and meta.model_name == tiny.fingerprint.id
    assert meta.is_chat_model and meta.is_function_calling_model
    for bad in ({"k": 0}, {"memory": "all"}, {"max_new_tokens": 0}, {"temperature": -1.0}):
        with pytest.raises(InvalidInput):
            MemOSLLM(chat_mos, user_id="alice", **bad)
    with pytest.raises(InvalidInput):
        MemOSLLM(chat_mos, user_id="")
    with pytest.raises(InvalidInput, match="max_new_tokens"):
        llm.chat([user(QUESTION)], max_new_tokens=-1)  # per-call settings are checked too
    with pytest.raises(InvalidInput, match="temperature"):
        llm.stream_chat([user(QUESTION)], temperature=-1)  # at the call, not at next()


def test_a_serialised_llm_comes_back_working(chat_mos: MemOS) -> None:
    chat_mos.add(FACTS, user="alice")
    llm = MemOSLLM(chat_mos, user_id="alice", max_new_tokens=8, memory="plaintext")
    again = MemOSLLM.from_json(llm.to_json())
    assert again.memory == "plaintext" and again.store_url == chat_mos.store.url
    assert again.complete(QUESTION).text == llm.complete(QUESTION).text


# ---- what the model is shown ---------------------------------------------------------------


def test_the_system_prompt_is_cached_and_the_conversation_is_prompt_text(
    chat_mos: MemOS,
) -> None:
    chat_mos.add(FACTS, user="alice")
    llm = MemOSLLM(chat_mos, user_id="alice", system_prompt="Answer in French.")
    messages = [
        ChatMessage(role=MessageRole.SYSTEM, content="recalled: alice likes tea"),
        user("I have a dog"),
        ChatMessage(role=MessageRole.ASSISTANT, content="Nice dog"),
        user(QUESTION),
    ]
    plan = llm.plan(messages)
    assert plan.query == QUESTION and plan.activation is not None
    # the LLM's system prompt leads the cached system message, before the hot memories
    cached = plan.activation.text
    assert cached.index("Answer in French.") < cached.index("quick brown fox")
    # the conversation's system message is prompt text, in order with the rest
    order = ["recalled: alice likes tea", "I have a dog", "Nice dog", QUESTION]
    assert [plan.prompt.index(t) for t in order] == sorted(plan.prompt.index(t) for t in order)
    assert "alice likes tea" not in cached
    # LLM.predict & co. prepend system_prompt as a message: it is not repeated
    extended = llm.plan(llm._extend_messages([user(QUESTION)]))
    assert "Answer in French." not in extended.prompt

    # a system message that changes every turn (a memory's recall block) reuses the cache
    [art] = chat_mos.artifacts("alice-personal", user="alice")
    changed = [ChatMessage(role=MessageRole.SYSTEM, content="recalled: something else"), user("x")]
    assert llm.plan(changed).activation.token_ids == plan.activation.token_ids
    assert [a.id for a in chat_mos.artifacts("alice-personal", user="alice")] == [art.id]

    default = MemOSLLM(chat_mos, user_id="alice").plan([user(QUESTION)])
    assert "Use the notes from memory" in default.activation.text  # the engine's default
    with pytest.raises(InvalidInput, match="end with a user message"):
        llm.plan([*messages, ChatMessage(role=MessageRole.ASSISTANT, content="Paris")])
    with pytest.raises(InvalidInput, match="there is none"):
        llm.plan([ChatMessage(role=MessageRole.SYSTEM, content="hi")])


def test_tool_calls_and_results_in_the_history_reach_the_model(chat_mos: MemOS) -> None:
    llm = MemOSLLM(chat_mos, user_id="alice", memory="none")
    call = ToolCallBlock(tool_call_id="c1", tool_name="get_weather", tool_kwargs={"city": "Rome"})
    messages = [
        user("weather in Rome?"),
        ChatMessage(role=MessageRole.ASSISTANT, blocks=[call]),
        ChatMessage(
            role=MessageRole.TOOL, content="rain", additional_kwargs={"tool_call_id": "c1"}
        ),
    ]
    plan = llm.plan(messages)
    assert tool_calls.render_call("get_weather", {"city": "Rome"}) in plan.prompt
    # the results close the conversation as a user turn that repeats the question
    assert plan.query == (
        "The get_weather tool returned: rain\nUse this to answer my question: weather in Rome?"
    )
    # earlier results stay tool messages
    answered = ChatMessage(role=MessageRole.ASSISTANT, content="Wet.")
    later = llm.plan([*messages, answered, user("ok")])
    assert "<|im_start|>tool\nrain<|im_end|>" in later.prompt


def test_one_users_memories_never_reach_another_users_prompt(chat_mos: MemOS) -> None:
    alice_items = chat_mos.add(FACTS, user="alice")
    chat_mos.add(["bob keeps bees in the capital of France"], user="bob")
    for memory in ("auto", "plaintext"):
        bob_llm = MemOSLLM(chat_mos, user_id="bob", memory=memory)
        plan = bob_llm.plan([user(QUESTION)])
        seen = plan.prompt + (plan.activation.text if plan.activation else "")
        assert "bees" in seen
        assert not any(text in seen for text in FACTS)
        described = json.dumps(plan.describe())
        assert not any(it.id in described for it in alice_items)
    alice = MemOSLLM(chat_mos, user_id="alice").plan([user(QUESTION)])
    assert "bees" not in alice.prompt + alice.activation.text
    with pytest.raises((PermissionDenied, NotFound)):
        MemOSLLM(chat_mos, user_id="bob", cube_id="alice-personal").plan([user(QUESTION)])


# ---- tools on the real (tiny) model --------------------------------------------------------


def test_tools_are_described_and_a_required_call_is_prefilled(wide_mos: MemOS) -> None:
    llm = MemOSLLM(wide_mos, user_id="alice", memory="none", max_new_tokens=12)
    tools = [FunctionTool.from_defaults(fn=get_weather)]
    asked = [user("weather in Rome?")]

    auto = llm.plan(asked, tools=tools)
    assert tool_calls.HEADER in auto.prompt and '"tool": "get_weather"' in auto.prompt
    assert auto.prompt.endswith("<|im_start|>assistant\n")  # the model may answer in text
    assert tool_calls.HEADER not in llm.plan(asked, tools=tools, tool_choice="none").prompt
    required = llm.plan(asked, tools=tools, tool_required=True)
    assert required.prompt.endswith("assistant\n" + tool_calls.call_prefix())
    named = llm.plan(asked, tools=tools, tool_choice="get_weather")
    assert named.prompt.endswith(tool_calls.call_prefix("get_weather"))
    with pytest.raises(InvalidInput, match="tool_choice"):
        llm.plan(asked, tools=tools, tool_choice="send_email")

    # the random model continues the prefilled call with noise: no call, plain text
    reply = llm.chat_with_tools(tools, chat_history=asked, tool_required=True)
    text = reply.message.content or ""
    assert text.startswith(tool_calls.call_prefix()) and len(text) > len(tool_calls.call_prefix())
    assert llm.get_tool_calls_from_response(reply, error_on_no_tool_call=False) == []
    with pytest.raises(InvalidInput, match="without a tool call"):
        llm.get_tool_calls_from_response(reply)
    # text that may still become a call is held back, then sent as one piece
    chunks = list(llm.stream_chat_with_tools(tools, chat_history=asked, tool_required=True))
    assert [c.delta for c in chunks] == [text]


# ---- the agent loop (scripted text) --------------------------------------------------------


class Script:
    """Stands in for ``mos.stream_chat``: scripted pieces, chosen by what the prompt shows."""

    def __init__(self) -> None:
        self.plans: list[ChatPlan] = []
        self.pieces_taken = 0

    def __call__(self, plan: ChatPlan, **sampling: Any) -> Iterator[str]:
        self.plans.append(plan)
        if "tool returned" in plan.query:
            pieces = ["Saved: ", "Lisbon."]
        else:  # a call with a made-up argument, then chatter that generation should not reach
            pieces = ['{"tool": "save_city", ', '"arguments": {"city": "Lisbon", "mood": 1}}']
            pieces += ["\n\nI hope", " this helps", " you."]
        for piece in pieces:
            self.pieces_taken += 1
            yield piece


@pytest.mark.parametrize("streaming", [True, False])
async def test_function_agent_runs_a_tool_call_and_answers_from_its_result(
    wide_mos: MemOS, monkeypatch: pytest.MonkeyPatch, streaming: bool
) -> None:
    chat_mos = wide_mos  # the tools block needs more than the tiny model's 256 tokens
    script = Script()
    monkeypatch.setattr(chat_mos, "stream_chat", script)
    chat_mos.add(["I moved to Lisbon"], user="alice")
    recorded: list[str] = []

    def save(city: str) -> str:
        """Record the city the user lives in."""
        recorded.append(city)
        return f"city recorded: {city}"

    llm = MemOSLLM(chat_mos, user_id="alice")
    agent = FunctionAgent(
        tools=[FunctionTool.from_defaults(fn=save, name="save_city")],
        llm=llm,
        streaming=streaming,
    )
    memory = MemOSMemory.from_defaults(mos=chat_mos, user_id="alice", session_id="s1")
    handler = agent.run("Please save where I live", memory=memory)
    deltas = [e.delta async for e in handler.stream_events() if isinstance(e, AgentStream)]
    assert str(await handler) == "Saved: Lisbon."

    assert recorded == ["Lisbon"]  # the undeclared "mood" argument was dropped
    assert script.pieces_taken == 4  # stopped right after the call: no chatter generated
    first, second = script.plans
    assert "I moved to Lisbon" in first.prompt + first.activation.text  # memory, as always
    assert second.query == (
        "The save_city tool returned: city recorded: Lisbon\n"
        "Use this to answer my question: Please save where I live"
    )
    assert tool_calls.render_call("save_city", {"city": "Lisbon"}) in second.prompt
    if streaming:  # the call's JSON is never streamed as text
        assert "".join(deltas) == "Saved: Lisbon."
    roles = [m.role.value for m in await memory.aget_all()]
    assert roles == ["user", "assistant", "tool", "assistant"]


# ---- behaviour on the bundled SmolLM2 ------------------------------------------------------


def test_smollm2_answers_a_stored_fact_from_memory(smol_mos: MemOS) -> None:
    llm = MemOSLLM(smol_mos, user_id="alice", max_new_tokens=12)
    reply = llm.chat([user("What is my cat called?")])
    assert "Miso" in (reply.message.content or "")
    assert reply.additional_kwargs[PLAN_KEY]["tier"] == "activation"


async def test_smollm2_fills_in_a_prefilled_call(smol_mos: MemOS) -> None:
    """With the call's opening prefilled SmolLM2 completes a right call, then answers from the
    tool's result; ``structured_predict`` (a required tool) works the same way.

    Left to decide alone the 135M model answers in prose (seen while building this, not
    asserted here): tool calls from it need ``tool_required`` or a named ``tool_choice``.
    """
    asked: list[str] = []

    def weather(city: str) -> str:
        """Get the current weather for a city."""
        asked.append(city)
        return f"sunny, 21 degrees in {city}"

    llm = MemOSLLM(smol_mos, user_id="alice", max_new_tokens=32)
    agent = FunctionAgent(
        tools=[FunctionTool.from_defaults(fn=weather, name="get_weather")],
        llm=llm,
        initial_tool_choice="get_weather",
    )
    answer = await asyncio.wait_for(agent.run("What is the weather in Paris?"), timeout=240)
    assert [c.lower() for c in asked] == ["paris"]
    assert "sunny" in str(answer).lower()

    class Person(BaseModel):
        """A person."""

        name: str
        age: int

    extract = MemOSLLM(smol_mos, user_id="alice", memory="none", max_new_tokens=32)
    prompt = PromptTemplate("Extract the person from: {text}")
    person = await extract.astructured_predict(Person, prompt, text="Bob turned 42 last week.")
    assert person == Person(name="Bob", age=42)
