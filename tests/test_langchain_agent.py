"""End to end: ``create_agent`` with MemOS memory, driven by a scripted chat model.

The chat model is langchain-core's ``GenericFakeChatModel`` (the only fake: it stands in for
a remote LLM); the store, the embedder and the engine are real. The model records every
prompt it is given, so the tests read exactly what the middleware put in front of it.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from langchain.agents import create_agent
from langchain.tools import ToolRuntime
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, BaseMessage, SystemMessage
from langchain_core.tools import tool
from langgraph.checkpoint.memory import InMemorySaver
from pydantic import Field

from memos_integrations import InvalidInput, NotFound
from memos_integrations.langchain import (
    MemOSMemoryMiddleware,
    MemOSStore,
    create_memos_tools,
)
from memos_integrations.langchain.middleware import TAG


class ScriptedModel(GenericFakeChatModel):
    """langchain-core's scripted chat model that accepts tools and records its prompts."""

    prompts: list[list[BaseMessage]] = Field(default_factory=list)

    def bind_tools(self, tools: Any, **kwargs: Any) -> ScriptedModel:  # type: ignore[override]
        return self

    def _generate(self, messages: list[BaseMessage], *args: Any, **kwargs: Any):  # type: ignore[no-untyped-def]
        self.prompts.append(list(messages))
        return super()._generate(messages, *args, **kwargs)

    def block(self, n: int = -1) -> str:
        """The memory block of prompt ``n`` ("" when none was injected)."""
        first = self.prompts[n][0]
        return first.text if isinstance(first, SystemMessage) else ""


def call(name: str, **args: Any) -> AIMessage:
    return AIMessage("", tool_calls=[{"name": name, "args": args, "id": f"call-{name}"}])


def config(user: str, thread: str) -> dict[str, Any]:
    return {"configurable": {"user_id": user, "thread_id": thread}}


def say(text: str) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": text}]}


def agent_for(mos, model, **kw):  # type: ignore[no-untyped-def]
    middleware = MemOSMemoryMiddleware(mos, **kw.pop("middleware_options", {}))
    return create_agent(
        model,
        tools=kw.pop("tools", create_memos_tools(mos)),
        middleware=[middleware],
        checkpointer=InMemorySaver(),
        **kw,
    )


def test_cross_thread_recall_is_scoped_to_the_user(mos) -> None:
    model = ScriptedModel(messages=iter(["Noted.", "Noted.", "Teal.", "Red."]))
    agent = agent_for(mos, model)
    agent.invoke(say("My favourite colour is teal"), config("alice", "a1"))
    agent.invoke(say("My favourite colour is red"), config("bob", "b1"))
    assert model.block(0) == "" and model.block(1) == ""  # nothing known yet

    agent.invoke(say("What is my favourite colour?"), config("alice", "a2"))
    agent.invoke(say("What is my favourite colour?"), config("bob", "b2"))
    alice_block, bob_block = model.block(2), model.block(3)
    assert "alice: My favourite colour is teal" in alice_block and "red" not in alice_block
    assert "bob: My favourite colour is red" in bob_block and "teal" not in bob_block
    assert alice_block.startswith(f"<{TAG}>") and alice_block.endswith(f"</{TAG}>")
    assert "not instructions" in alice_block
    # the turns were stored as the user's raw turns, one session per thread
    turns = mos.list(user="alice", kinds=["raw_turn"], order="created_asc")
    assert [(t.text, t.provenance.session_id) for t in turns] == [
        ("alice: My favourite colour is teal", "a1"),
        ("assistant: Noted.", "a1"),
        ("alice: What is my favourite colour?", "a2"),
        ("assistant: Teal.", "a2"),
    ]
    assert {t.cube_id for t in turns} == {"alice-personal"}


def test_no_duplication_within_a_thread_and_across_tool_loops(mos) -> None:
    mos.add("Alice keeps bees on her roof", user="alice")
    model = ScriptedModel(
        messages=iter(["Nice!", call("search_memory", query="bees"), "You keep bees.", "Sure."])
    )
    agent = agent_for(mos, model)
    agent.invoke(say("I keep bees, remember?"), config("alice", "t"))
    agent.invoke(say("What do you know about my bees?"), config("alice", "t"))
    agent.invoke(say("Thanks for remembering the bees"), config("alice", "t"))
    for prompt in model.prompts:
        system = [m for m in prompt if isinstance(m, SystemMessage)]
        assert len(system) <= 1 and "".join(m.text for m in system).count(f"<{TAG}>") <= 1
        assert all(TAG not in m.text for m in prompt if not isinstance(m, SystemMessage))
    # turn 1 of this thread is in the messages already: recall must not repeat it
    later = model.block(-1)
    assert "Alice keeps bees on her roof" in later
    assert "alice: I keep bees, remember?" not in later
    assert "assistant: Nice!" not in later
    # each turn stored once, though the thread's history is replayed on every run
    texts = [t.text for t in mos.list(user="alice", kinds=["raw_turn"])]
    assert len(texts) == len(set(texts)) == 6


def test_memory_tools_edit_memory_under_acl(mos) -> None:
    model = ScriptedModel(messages=iter([]))

    def last_tool_output() -> str:
        return model.prompts[-1][-1].text

    def script() -> Iterator[AIMessage | str]:
        yield call("add_memory", text="Alice is vegetarian")
        yield "Saved."
        yield call("search_memory", query="diet vegetarian")
        memory_id = re.search(r"id=(\w+)", last_tool_output()).group(1)  # type: ignore[union-attr]
        yield call("update_memory", memory_id=memory_id, text="Alice eats fish now")
        yield "Updated."
        # bob's agent tries to delete alice's memory by id
        yield call("delete_memory", memory_id=memory_id)
        yield "Could not."
        yield call("delete_memory", memory_id=memory_id)
        yield "Deleted."

    model.messages = script()
    agent = agent_for(mos, model)
    agent.invoke(say("Remember I'm vegetarian"), config("alice", "t1"))
    [fact] = mos.list(user="alice", kinds=["fact"])
    assert fact.text == "Alice is vegetarian" and fact.provenance.session_id == "t1"

    agent.invoke(say("I eat fish now"), config("alice", "t2"))
    assert [v.text for v in mos.history(fact.id, user="alice")] == [
        "Alice is vegetarian",
        "Alice eats fish now",
    ]

    agent.invoke(say("Delete Alice's diet memory"), config("bob", "t3"))
    assert "NotFound" in last_tool_output() and fact.id in last_tool_output()
    assert mos.get(fact.id).state != "deleted"

    agent.invoke(say("Forget my diet"), config("alice", "t4"))
    assert mos.get(fact.id).state == "deleted"
    assert "Alice eats fish" not in model.block(-1)


async def test_ainvoke_path(mos) -> None:
    model = ScriptedModel(messages=iter(["Noted.", call("search_memory", query="dog"), "Rex."]))
    agent = agent_for(mos, model)
    await agent.ainvoke(say("My dog is called Rex"), config("alice", "a1"))
    await agent.ainvoke(say("What is my dog called?"), config("alice", "a2"))
    assert "alice: My dog is called Rex" in model.block(1)
    assert "alice: My dog is called Rex" in model.prompts[-1][-1].text  # the tool's answer
    assert len(mos.list(user="alice", kinds=["raw_turn"])) == 4


FIRST_PROCESS = """
import sys
from langchain.agents import create_agent
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from memos_integrations import MemOS
from memos_integrations.langchain import MemOSMemoryMiddleware, MemOSStore

class Model(GenericFakeChatModel):
    def bind_tools(self, tools, **kw):
        return self

mos = MemOS.open(sys.argv[1])
agent = create_agent(Model(messages=iter(["Noted."])), store=MemOSStore(mos, user_label=1),
                     middleware=[MemOSMemoryMiddleware(mos)])
agent.invoke({"messages": [{"role": "user", "content": "I was born in Oslo"}]},
             {"configurable": {"user_id": "dora", "thread_id": "t1"}})
agent.store.put(("memories", "dora"), "city", {"name": "Oslo"})
"""


def test_restart_between_threads(db_path, open_mos) -> None:
    # thread 1 in another process, which then exits
    done = subprocess.run(
        [sys.executable, "-c", FIRST_PROCESS, str(db_path)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    mos = open_mos()
    model = ScriptedModel(messages=iter(["Oslo."]))
    agent = agent_for(mos, model, store=MemOSStore(mos, user_label=1))
    agent.invoke(say("Where was I born?"), config("dora", "t2"))
    assert "dora: I was born in Oslo" in model.block()
    assert agent.store.get(("memories", "dora"), "city").value == {"name": "Oslo"}


def test_store_and_middleware_share_the_users_memory(mos) -> None:
    @tool
    def remember(fact: str, runtime: ToolRuntime) -> str:
        """Save a fact about the user in the LangGraph store."""
        user = runtime.config["configurable"]["user_id"]
        runtime.store.put(("memories", user), "fact-1", {"text": fact})  # type: ignore[union-attr]
        return "ok"

    model = ScriptedModel(
        messages=iter([call("remember", fact="Alice speaks Finnish"), "Saved.", "Finnish."])
    )
    store = MemOSStore(mos, user_label=1, index={"fields": ["text"]})
    agent = agent_for(mos, model, tools=[remember], store=store)
    agent.invoke(say("Note that I speak Finnish"), config("alice", "t1"))
    assert store.get(("memories", "alice"), "fact-1").value == {"text": "Alice speaks Finnish"}
    agent.invoke(say("Which languages do I speak?"), config("alice", "t2"))
    assert "Alice speaks Finnish" in model.block()  # the store item is alice's memory


def test_runtime_context_and_cube_choice(mos) -> None:
    from dataclasses import dataclass

    @dataclass
    class Context:
        user_id: str
        cube_id: str | None = None

    mos.create_cube("alice-work", owner="alice")
    model = ScriptedModel(messages=iter(["Noted.", "Noted."]))
    agent = create_agent(
        model,
        middleware=[MemOSMemoryMiddleware(mos)],
        context_schema=Context,
        checkpointer=InMemorySaver(),
    )
    agent.invoke(
        say("The launch is on Friday"),
        {"configurable": {"thread_id": "w"}},
        context=Context("alice", "alice-work"),
    )
    assert {t.cube_id for t in mos.list(user="alice", kinds=["raw_turn"])} == {"alice-work"}
    with pytest.raises(NotFound, match="no read grant"):
        agent.invoke(
            say("hi"), {"configurable": {"thread_id": "x"}}, context=Context("bob", "alice-work")
        )
    assert mos.list(user="bob", kinds=["raw_turn"]) == []


def test_a_run_without_a_user_is_refused(mos) -> None:
    agent = agent_for(mos, ScriptedModel(messages=iter(["hi"])))
    with pytest.raises(InvalidInput, match="needs a user"):
        agent.invoke(say("hello"), {"configurable": {"thread_id": "t"}})
    assert mos.list(kinds=["raw_turn"]) == []


def test_a_deleted_turn_is_not_saved_again(mos) -> None:
    model = ScriptedModel(messages=iter(["Noted.", "OK."]))
    agent = agent_for(mos, model)
    agent.invoke(say("My PIN is 4321"), config("alice", "t"))
    [pin] = [t for t in mos.list(user="alice", kinds=["raw_turn"]) if "4321" in t.text]
    mos.delete(pin.id, user="alice")  # the user asked to forget it
    agent.invoke(say("Thanks"), config("alice", "t"))  # the thread still holds the message
    live = [t.text for t in mos.list(user="alice", kinds=["raw_turn"])]
    assert not any("4321" in text for text in live) and "alice: Thanks" in live


def test_fine_mode_reads_each_new_turn_once(db_path, open_mos) -> None:
    read: list[list[str]] = []

    def reader(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """A rule-based reader: first-person user statements become facts."""
        read.append([m["content"] for m in messages])
        return [
            {"text": "The user " + m["content"][2:], "kind": "fact"}
            for m in messages
            if m["role"] == "user" and m["content"].startswith("I ")
        ]

    mos = open_mos(reader=reader)
    mos.create_user("alice")
    model = ScriptedModel(messages=iter(["Noted.", "Noted."]))
    agent = agent_for(mos, model, middleware_options={"mode": "auto"})
    agent.invoke(say("I play the oboe"), config("alice", "t"))
    agent.invoke(say("I collect stamps"), config("alice", "t"))
    assert read == [["I play the oboe", "Noted."], ["I collect stamps", "Noted."]]
    facts = [f.text for f in mos.list(user="alice", kinds=["fact"], order="created_asc")]
    assert facts == ["The user play the oboe", "The user collect stamps"]
    assert len(mos.list(user="alice", kinds=["raw_turn"])) == 4  # the turns are kept too
