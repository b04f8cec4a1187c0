"""A scripted function-calling LLM for the LlamaIndex agent tests (stands in for a remote API).

It answers from what it is shown, so a test can tell what the agent's memory put in front
of the model: "I moved to X" makes it call the ``save_city`` tool; "where do I live?" makes
it look for "moved to X" in the earlier messages (recalled memories included).
"""

from __future__ import annotations

import re
import uuid
from typing import Any

from llama_index.core.agent.workflow import FunctionAgent
from llama_index.core.base.llms.types import ChatMessage, MessageRole, ToolCallBlock
from llama_index.core.llms import MockFunctionCallingLLM
from llama_index.core.tools import FunctionTool

_MOVED = re.compile(r"moved to (\w+)", re.IGNORECASE)


def save_city(city: str) -> str:
    """Record the city the user lives in."""
    return f"city recorded: {city}"


def scripted_llm(seen: list[list[ChatMessage]]) -> MockFunctionCallingLLM:
    """The LLM; every list of messages it is called with is appended to ``seen``."""

    def respond(messages: list[ChatMessage], **kwargs: Any) -> ChatMessage:
        seen.append([m.model_copy(deep=True) for m in messages])
        last = messages[-1]
        text = last.content or ""
        if last.role == MessageRole.TOOL:
            return ChatMessage(role=MessageRole.ASSISTANT, content="All set.")
        moved = _MOVED.search(text)
        if moved and kwargs.get("tools"):
            call = ToolCallBlock(
                tool_call_id=f"call-{uuid.uuid4().hex[:8]}",
                tool_name="save_city",
                tool_kwargs={"city": moved.group(1)},
            )
            return ChatMessage(role=MessageRole.ASSISTANT, blocks=[call])
        if "where do i live" in text.lower():
            earlier = " ".join(m.content or "" for m in messages[:-1])
            found = _MOVED.search(earlier)
            answer = f"You live in {found.group(1)}." if found else "I don't know."
            return ChatMessage(role=MessageRole.ASSISTANT, content=answer)
        return ChatMessage(role=MessageRole.ASSISTANT, content="OK.")

    return MockFunctionCallingLLM(response_generator=respond)


def agent(seen: list[list[ChatMessage]]) -> FunctionAgent:
    return FunctionAgent(
        tools=[FunctionTool.from_defaults(fn=save_city)],
        llm=scripted_llm(seen),
        system_prompt="You are a helpful assistant.",
    )
