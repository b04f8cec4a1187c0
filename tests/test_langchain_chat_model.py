"""``ChatMemOS``: the engine's local model as a LangChain chat model, answering from memory.

Mechanics run on a real engine (SQLite file, bundled embedder) with a tiny random Llama as its
model: its answers are gibberish, but invoke, stream and async must agree on them and the plan
says which memories served. Tool calling is checked on scripted model output (the tiny model
cannot follow a format) and, bounded, on the real SmolLM2.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from langchain.agents import create_agent
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.runnables import RunnableLambda
from langchain_core.tools import tool
from pydantic import BaseModel, Field, ValidationError

from memos_integrations import InvalidInput, MemOS, NotFound
from memos_integrations.langchain import ChatMemOS
from memos_integrations.models import tool_calls
from memos_integrations.models.runtime import LocalModel

torch = pytest.importorskip("torch")

QUERY = "the capital of France"
ALICE = ["the quick brown fox", "Paris is the capital of France"]
BOB = ["one two three four five"]


@pytest.fixture
def mos(db_path: Path, embedder, tiny: LocalModel) -> Iterator[MemOS]:
    m = MemOS.open(db_path, embedder=embedder, model=tiny)
    for user, facts in (("alice", ALICE), ("bob", BOB)):
        m.create_user(user)
        m.create_cube(f"{user}-personal", owner=user)
        m.add(facts, user=user)
    yield m
    m.close()


@tool
def get_weather(city: str) -> str:
    """Get the current weather in a city."""
    return f"sunny in {city}"


@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


class Person(BaseModel):
    """A person."""

    name: str = Field(description="the person's name")
    age: int = Field(description="the person's age")


def _ids(message: AIMessage, key: str) -> set[str]:
    return set(message.response_metadata["memos"][key])


# ---- generation ----------------------------------------------------------------------------


def test_invoke_stream_and_async_agree_and_say_what_served(mos: MemOS) -> None:
    llm = ChatMemOS(mos=mos, user_id="alice", max_tokens=16)
    reply = llm.invoke(QUERY)
    assert isinstance(reply, AIMessage) and len(reply.content) > 5
    chunks = list(llm.stream(QUERY))
    assert len(chunks) > 2 and "".join(str(c.content) for c in chunks) == reply.content

    async def both() -> tuple[AIMessage, str]:
        pieces = [str(c.content) async for c in llm.astream(QUERY)]
        return await llm.ainvoke(QUERY), "".join(pieces)

    async_reply, async_streamed = asyncio.run(both())
    assert async_reply.content == async_streamed == reply.content

    alice = {it.id for it in mos.list(user="alice")}
    assert reply.response_metadata["memos"]["tier"] == "activation"
    assert _ids(reply, "cached") == alice and _ids(reply, "in_prompt") == set()
    assert reply.response_metadata["model_name"] == mos.model.path.name
    plan = llm.plan(QUERY)
    prefix = plan.activation.n_tokens
    usage = reply.usage_metadata
    assert usage["input_tokens"] == prefix + mos.model.count_tokens(plan.prompt)
    assert usage["input_token_details"] == {"cache_read": prefix}
    assert usage["output_tokens"] > 0
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]


def test_per_call_options_and_memory_modes(mos: MemOS) -> None:
    llm = ChatMemOS(mos=mos, user_id="alice", max_tokens=4, memory="plaintext")
    plain = llm.invoke(QUERY)
    assert plain.response_metadata["memos"]["tier"] == "plaintext"
    assert plain.usage_metadata["input_token_details"] == {"cache_read": 0}
    none = llm.invoke(QUERY, memory="none", max_tokens=2)
    assert none.response_metadata["memos"] == {
        "tier": "none",
        "cached": [],
        "in_prompt": [],
        "prefix_tokens": 0,
        "retrieved": [],
        "adapter": None,
        "promoted": [],
        "stale_adapter": None,
    }
    assert "Paris is the capital" in llm.plan(QUERY).prompt  # plaintext: memories as text
    assert "Paris is the capital" not in llm.plan(QUERY, memory="none").prompt
    greedy = str(llm.invoke(QUERY, max_tokens=12).content)
    cut = greedy[4:7]  # a stop sequence ends the answer just before its first occurrence
    assert llm.invoke(QUERY, max_tokens=12, stop=[cut]).content == greedy[: greedy.index(cut)]
    # the same seed samples the same answer
    sampled = [llm.invoke(QUERY, temperature=1.0, seed=7, max_tokens=12).content for _ in "ab"]
    assert sampled[0] == sampled[1]


def test_async_generation_leaves_the_event_loop_free(
    mos: MemOS, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The model waits, in its thread, for the event loop to run a coroutine: if generation ran
    on the loop, that coroutine could not run and the wait would time out."""
    loop_ran = threading.Event()
    real = mos.stream_chat

    def waiting(plan: Any, **sampling: Any) -> Iterator[str]:
        assert loop_ran.wait(timeout=20), "the event loop was blocked during generation"
        yield from real(plan, **sampling)

    monkeypatch.setattr(mos, "stream_chat", waiting)
    llm = ChatMemOS(mos=mos, user_id="alice", max_tokens=4)

    async def main() -> tuple[AIMessage, list[str]]:
        async def poke() -> None:
            await asyncio.sleep(0.05)
            loop_ran.set()

        poker = asyncio.create_task(poke())
        reply = await llm.ainvoke(QUERY)
        loop_ran.clear()
        poker = asyncio.create_task(poke())
        pieces = [str(c.content) async for c in llm.astream(QUERY)]
        await poker
        return reply, pieces

    reply, pieces = asyncio.run(main())
    assert "".join(pieces) == reply.content


# ---- who the memory belongs to -------------------------------------------------------------


def test_the_user_comes_from_the_run_and_memories_never_cross(mos: MemOS) -> None:
    llm = ChatMemOS(mos=mos, max_tokens=4)
    bob = {"configurable": {"user_id": "bob"}}
    reply = llm.invoke(QUERY, config=bob)
    bobs = {it.id for it in mos.list(user="bob")}
    assert _ids(reply, "retrieved") == bobs == _ids(reply, "cached")
    plan = llm.plan(QUERY, config=bob)
    seen = plan.activation.text + plan.prompt
    assert "one two three" in seen
    assert not any(fact in seen for fact in ALICE)
    assert all(it.owner == "bob" for it in (*plan.cached, *plan.in_prompt))

    # an enclosing run's config reaches the model too (a chain step, a graph node)
    chain = RunnableLambda(lambda q: llm.invoke(q))
    assert _ids(chain.invoke(QUERY, config=bob), "cached") == bobs
    # a fixed user wins over the run's
    alice = ChatMemOS(mos=mos, user_id="alice", max_tokens=4).invoke(QUERY, config=bob)
    assert _ids(alice, "cached") == {it.id for it in mos.list(user="alice")}
    with pytest.raises(InvalidInput, match="needs a user"):
        llm.invoke(QUERY)


def test_a_langgraph_agent_passes_its_context_user(mos: MemOS) -> None:
    @dataclass
    class Context:
        user_id: str

    agent = create_agent(ChatMemOS(mos=mos, max_tokens=4), context_schema=Context)
    out = agent.invoke({"messages": [{"role": "user", "content": QUERY}]}, context=Context("bob"))
    assert _ids(out["messages"][-1], "cached") == {it.id for it in mos.list(user="bob")}


def test_unknown_users_are_created_unless_told_not_to(mos: MemOS) -> None:
    reply = ChatMemOS(mos=mos, user_id="dave", max_tokens=2).invoke(QUERY)
    assert reply.response_metadata["memos"]["tier"] == "none"
    assert mos.get_user("dave").id == "dave"
    with pytest.raises(NotFound):
        ChatMemOS(mos=mos, user_id="erin", create_missing=False).invoke(QUERY)


# ---- messages -> the turn the model sees ---------------------------------------------------


def test_messages_become_instructions_history_query_and_tool_results(mos: MemOS) -> None:
    llm = ChatMemOS(mos=mos, user_id="alice")
    call = {"name": "get_weather", "args": {"city": "Paris"}, "id": "c1"}
    messages = [
        SystemMessage("Answer in French."),
        HumanMessage("one two three"),
        AIMessage("four five"),
        HumanMessage(QUERY),
        AIMessage("", tool_calls=[call]),
        ToolMessage("sunny", tool_call_id="c1"),
        ToolMessage("boom", tool_call_id="c2", name="add", status="error"),
    ]
    plan = llm.plan(messages)
    assert plan.query == QUERY  # what memory is searched for
    assert plan.activation.text.count("Answer in French.") == 1  # instructions: cached prefix
    prompt = plan.prompt
    order = [
        "one two three",
        "four five",
        QUERY,
        'Calling get_weather with {"city": "Paris"}.',
        "get_weather returned: sunny\nadd failed: boom",  # consecutive results: one turn
    ]
    positions = [prompt.index(part) for part in order]
    assert positions == sorted(positions)
    assert prompt.endswith("<|im_start|>assistant\n")


def test_after_turns_follow_the_query_in_the_engine(mos: MemOS) -> None:
    after = [{"role": "assistant", "content": "four five"}, {"role": "user", "content": "six"}]
    plan = mos.plan_chat(QUERY, user="alice", after=after)
    assert plan.query == QUERY
    assert plan.prompt.index(QUERY) < plan.prompt.index("four five") < plan.prompt.index("six")


@pytest.mark.parametrize(
    ("messages", "error"),
    [
        ([SystemMessage("only a system message")], "needs a human message"),
        (
            [HumanMessage([{"type": "image", "url": "https://x/y.png"}])],
            "text only",
        ),
    ],
)
def test_unreadable_input_is_refused(mos: MemOS, messages: list, error: str) -> None:
    with pytest.raises(InvalidInput, match=error):
        ChatMemOS(mos=mos, user_id="alice").invoke(messages)


def test_options_are_checked(mos: MemOS) -> None:
    llm = ChatMemOS(mos=mos, user_id="alice", timeout=200, max_retries=2, api_key="unused")
    with pytest.raises(InvalidInput, match="unknown call options"):
        llm.invoke(QUERY, top_k=3)
    with pytest.raises(InvalidInput, match="unknown call options"):
        llm.invoke(QUERY, model="gpt-5")  # the engine's model serves; no silent switch
    with pytest.raises(InvalidInput, match="tool_choice"):
        llm.bind_tools([get_weather], tool_choice="add")
    with pytest.raises(ValidationError):
        ChatMemOS(mos=mos, user_id="alice", temprature=0.5)
    with pytest.raises(ValidationError):
        ChatMemOS(mos=mos, memory="everything")
    assert ChatMemOS(mos=mos, max_new_tokens=7).max_new_tokens == 7
    assert llm.get_num_tokens(QUERY) == mos.model.count_tokens(QUERY)
    assert llm._get_ls_params(max_tokens=9)["ls_max_tokens"] == 9


# ---- tool calls ----------------------------------------------------------------------------

def test_invalid_calls_and_parallel_tool_calls(mos: MemOS, scripted: dict) -> None:
    """The parser is models.tool_calls' (tests/test_tool_calls.py); the message fields here."""
    llm = ChatMemOS(mos=mos, user_id="alice").bind_tools([get_weather, add])
    scripted["pieces"] = ['{"tool": "add", "arguments": [1, 2]}']
    reply = llm.invoke(QUERY)
    assert not reply.tool_calls and reply.content == ""
    [bad] = reply.invalid_tool_calls
    assert bad["name"] == "add" and bad["args"] == "[1, 2]" and bad["id"].startswith("call_")
    two = '[{"tool": "add", "arguments": {"a": 1}}, {"tool": "add", "arguments": {"a": 2}}]'
    scripted["pieces"] = [two]
    assert len(llm.invoke(QUERY).tool_calls) == 2
    assert len(llm.invoke(QUERY, parallel_tool_calls=False).tool_calls) == 1
    # undeclared arguments (a small model pads its calls) are dropped
    scripted["pieces"] = ['{"tool": "add", "arguments": {"a": 1, "b": 2, "mood": "happy"}}']
    assert llm.invoke(QUERY).tool_calls[0]["args"] == {"a": 1, "b": 2}


@pytest.fixture
def scripted(mos: MemOS, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Replace generation (only) with scripted pieces; records the plans the model was given."""
    state: dict[str, Any] = {"pieces": [], "plans": [], "pulled": 0}

    def stream_chat(plan: Any, **sampling: Any) -> Iterator[str]:
        state["plans"].append(plan)
        for piece in state["pieces"]:
            state["pulled"] += 1
            yield piece

    monkeypatch.setattr(mos, "stream_chat", stream_chat)
    return state


def test_bound_tools_are_described_and_calls_come_back(mos: MemOS, scripted: dict) -> None:
    llm = ChatMemOS(mos=mos, user_id="alice")
    without = llm.plan(QUERY)
    scripted["pieces"] = [
        'Let me check.\n{"tool": "get_weather", ',
        '"arguments": {"city": "Paris"}}',
    ]
    reply = llm.bind_tools([get_weather, add]).invoke(QUERY)
    assert reply.content == "Let me check."
    assert [(c["name"], c["args"]) for c in reply.tool_calls] == [
        ("get_weather", {"city": "Paris"})
    ]
    assert reply.tool_calls[0]["id"].startswith("call_")
    assert reply.response_metadata["memos"]["tier"] == "activation"
    plan = scripted["plans"][-1]
    # tools are described after the cached prefix: the same KV cache serves with or without
    assert plan.activation.token_ids == without.activation.token_ids
    assert "- get_weather: Get the current weather in a city." in plan.prompt
    assert '  Call: {"tool": "add", "arguments": {"a": <integer>, "b": <integer>}}' in plan.prompt
    assert tool_calls.FOOTER in plan.prompt  # tool_choice="auto": a call or plain text
    assert plan.prompt.index(tool_calls.HEADER) < plan.prompt.index(QUERY)

    scripted["pieces"] = ['{"tool": "send_email", "arguments": {}}']
    text = llm.bind_tools([get_weather]).invoke(QUERY)
    assert text.content == scripted["pieces"][0] and not text.tool_calls

    # with tools bound, a stream is one chunk: a call is only known once complete
    scripted["pieces"] = ['{"tool": "add", "arguments": ', '{"a": 1, "b": 2}}']
    chunks = list(llm.bind_tools([get_weather, add]).stream(QUERY))
    assert len(chunks) == 1 and chunks[0].tool_calls[0]["args"] == {"a": 1, "b": 2}
    assert chunks[0].usage_metadata["output_tokens"] > 0

    scripted["pieces"] = ['{"tool": "add", "arguments": {"a": 1, "b": 2}}']
    assert not llm.bind_tools([add], tool_choice="none").invoke(QUERY).tool_calls
    assert tool_calls.HEADER not in scripted["plans"][-1].prompt


def test_a_required_call_is_started_for_the_model(mos: MemOS, scripted: dict) -> None:
    llm = ChatMemOS(mos=mos, user_id="alice")
    # named tool: the model writes only the first argument's value on
    scripted["pieces"] = ['Paris"}', "}", " and then some rambling", " that is never read"]
    reply = llm.bind_tools([get_weather, add], tool_choice="get_weather").invoke(QUERY)
    assert [(c["name"], c["args"]) for c in reply.tool_calls] == [
        ("get_weather", {"city": "Paris"})
    ]
    assert scripted["plans"][-1].prompt.endswith(
        'assistant\n{"tool": "get_weather", "arguments": {"city": "'
    )
    assert "You must call get_weather: reply with only" in scripted["plans"][-1].prompt
    assert scripted["pulled"] == 2  # generation stopped once the call was complete
    # any tool: the model names it
    scripted["pieces"] = ['add", "arguments": {"a": 4, "b": 5}}']
    reply = llm.bind_tools([get_weather, add], tool_choice="any").invoke(QUERY)
    assert [(c["name"], c["args"]) for c in reply.tool_calls] == [("add", {"a": 4, "b": 5})]
    assert scripted["plans"][-1].prompt.endswith('assistant\n{"tool": "')
    # a required call the model gets wrong is returned as text, not as a call
    scripted["pieces"] = ["oops"]
    wrong = llm.bind_tools([get_weather, add], tool_choice="required").invoke(QUERY)
    assert wrong.content == '{"tool": "oops' and not wrong.tool_calls


def test_structured_output(mos: MemOS, scripted: dict) -> None:
    llm = ChatMemOS(mos=mos, user_id="alice")
    scripted["pieces"] = ['Tom", "age": 31}}']
    assert llm.with_structured_output(Person).invoke("Tom is 31.") == Person(name="Tom", age=31)
    assert scripted["plans"][-1].prompt.endswith('{"tool": "Person", "arguments": {"name": "')

    as_dict = llm.with_structured_output(Person.model_json_schema(), include_raw=True)
    out = as_dict.invoke("Tom is 31.")
    assert out["parsed"] == {"name": "Tom", "age": 31} and out["parsing_error"] is None
    assert isinstance(out["raw"], AIMessage)

    scripted["pieces"] = ['Tom"}} and more']  # no age: the schema refuses it
    out = llm.with_structured_output(Person, include_raw=True).invoke("Tom is 31.")
    assert out["parsed"] is None and isinstance(out["parsing_error"], ValidationError)
    assert out["raw"].tool_calls[0]["args"] == {"name": "Tom"}


# ---- the real SmolLM2 (bounded: four short generations) -------------------------------------


def test_smollm2_answers_from_memory_and_calls_a_required_tool(smol_mos: MemOS) -> None:
    llm = ChatMemOS(mos=smol_mos, user_id="alice", max_tokens=24)

    answer = llm.invoke("What is my cat called?")
    assert "Miso" in answer.content
    assert answer.response_metadata["memos"]["tier"] == "activation"

    # left to choose (tool_choice="auto") the 135M model rarely calls a tool; required, it
    # writes the arguments into the started call
    question = HumanMessage("What is the weather in Paris?")
    call = llm.bind_tools([get_weather], tool_choice="any").invoke([question])
    assert [(c["name"], c["args"]) for c in call.tool_calls] == [("get_weather", {"city": "Paris"})]
    result = ToolMessage("sunny, 24 C", tool_call_id=call.tool_calls[0]["id"])
    final = llm.bind_tools([get_weather]).invoke([question, call, result])
    assert not final.tool_calls and "sunny" in final.content.lower()

    person = llm.with_structured_output(Person).invoke("My neighbour Ana just turned 45.")
    assert person == Person(name="Ana", age=45)
