"""``MemOSLLM``: the engine's local model as a LlamaIndex function-calling LLM, with memory.

>>> llm = MemOSLLM(mos, user_id="alice")
>>> llm.complete("Where do I live?").text
>>> agent = FunctionAgent(tools=[...], llm=llm)

Every call is a MemOS chat turn (``mos.plan_chat`` then generation): the user's relevant
memories are retrieved, their hot set is served from the activation (KV-cache) tier and the
rest goes into the prompt. ``system_prompt`` is cached with the hot memories; system messages
of the conversation are prompt text (see :mod:`.llm_request`). Which memories served the
answer, and from which tier, is in ``response.additional_kwargs["memos_plan"]`` (and ``raw``).

Tools are described in the system message in the JSON format of
:mod:`memos_integrations.models.tool_calls`; an answer holding such a call comes back as
``ToolCallBlock``s (and no text). With ``tool_required=True`` (or a named ``tool_choice``,
e.g. ``FunctionAgent(initial_tool_choice=...)``) the opening of a call is prefilled, which
is what makes a 135M model call at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from llama_index.core.base.llms.types import (
    ChatMessage,
    ChatResponse,
    ChatResponseAsyncGen,
    ChatResponseGen,
    CompletionResponse,
    CompletionResponseAsyncGen,
    CompletionResponseGen,
    LLMMetadata,
    MessageRole,
    TextBlock,
    ToolCallBlock,
)
from llama_index.core.bridge.pydantic import Field
from llama_index.core.constants import DEFAULT_CONTEXT_WINDOW
from llama_index.core.llms.callbacks import llm_chat_callback, llm_completion_callback
from llama_index.core.llms.function_calling import FunctionCallingLLM
from llama_index.core.llms.llm import ToolSelection

from ..core.chat import MEMORY_MODES, ChatPlan
from ..core.engine import MAX_K, MemOS
from ..core.errors import InvalidInput
from ..core.threads import aiter_in_thread
from ..models.tool_calls import (
    ToolCall,
    call_prefix,
    opens_with_call,
    parse_tool_calls,
    tool_choice,
)
from ._binding import UserBound
from ._checks import check_choice, check_int
from .llm_request import to_request, tool_schema

if TYPE_CHECKING:
    from llama_index.core.tools.types import BaseTool

PLAN_KEY = "memos_plan"  # additional_kwargs / raw key holding ChatPlan.describe()
_SAMPLING = ("max_new_tokens", "temperature", "stop", "seed")


@dataclass(frozen=True)
class _Turn:
    """One planned answer: the plan (its prompt ends with ``prime``) and how to read it."""

    plan: ChatPlan
    prime: str  # the prefilled opening of a required tool call, or ""
    tools: dict[str, Mapping[str, Any]]  # name -> parameters schema of the offered tools
    sampling: dict[str, Any]


class MemOSLLM(UserBound, FunctionCallingLLM):
    """The local model answering as ``user_id``, from that user's MemOS memories."""

    k: int = Field(default=5, description="Memories retrieved per turn.")
    memory: str = Field(
        default="auto",
        description="auto | activation | plaintext | none | parametric-only (see mos.plan_chat).",
    )
    max_new_tokens: int = Field(default=256, description="Default cap on generated tokens.")
    temperature: float = Field(default=0.0, description="0: greedy; > 0: sampled.")

    def __init__(self, mos: MemOS | None = None, **data: Any) -> None:
        if "k" in data:
            check_int(data["k"], "k", 1, MAX_K)
        if "memory" in data:
            check_choice(data["memory"], "memory", MEMORY_MODES)
        if "max_new_tokens" in data:
            check_int(data["max_new_tokens"], "max_new_tokens", 1, 1_000_000)
        temperature = data.get("temperature", 0.0)
        if isinstance(temperature, bool) or not isinstance(temperature, int | float):
            raise InvalidInput(f"temperature must be a number >= 0, got {temperature!r}")
        if not temperature >= 0:  # also NaN
            raise InvalidInput(f"temperature must be >= 0, got {temperature!r}")
        super().__init__(mos, **data)

    @classmethod
    def class_name(cls) -> str:
        return "MemOSLLM"

    @property
    def metadata(self) -> LLMMetadata:
        model = self.mos.model
        return LLMMetadata(
            context_window=model.context_length or DEFAULT_CONTEXT_WINDOW,
            num_output=self.max_new_tokens,
            is_chat_model=True,
            is_function_calling_model=True,
            model_name=model.fingerprint.id,
        )

    # ------------------------------------------------------------------ planning

    def plan(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatPlan:
        """What a ``chat(messages, **kwargs)`` would use, without generating."""
        return self._turn(messages, kwargs).plan

    def _turn(self, messages: Sequence[ChatMessage], kwargs: Mapping[str, Any]) -> _Turn:
        schemas = [tool_schema(t) for t in kwargs.get("tools") or ()]
        choice = tool_choice(kwargs.get("tool_choice"), [s["name"] for s in schemas])
        if choice == "none":
            schemas = []
        forced = choice if choice not in ("auto", "any") else None
        required = choice != "auto" or bool(kwargs.get("tool_required"))
        request = to_request(messages, system_prompt=self.system_prompt, tools=schemas)
        t = self.target()
        plan = t.mos.plan_chat(
            request.query,
            user=t.user,
            cube=t.cube,
            k=self.k,
            history=request.history,
            memory=self.memory,
            instructions=request.instructions,
        )
        prime = call_prefix(forced) if (forced or required) and schemas else ""
        if prime:  # the model continues the opening of a call
            plan = dataclasses.replace(plan, prompt=plan.prompt + prime)
        sampling = {"max_new_tokens": self.max_new_tokens, "temperature": self.temperature}
        sampling.update({k: kwargs[k] for k in _SAMPLING if kwargs.get(k) is not None})
        tools = {s["name"]: s.get("parameters") or {} for s in schemas}
        return _Turn(plan, prime, tools, sampling)

    # ------------------------------------------------------------------ generation

    def _generate(
        self, messages: Sequence[ChatMessage], kwargs: Mapping[str, Any]
    ) -> Iterator[ChatResponse]:
        """Plan and start generating now (bad arguments raise here); the responses lazily."""
        turn = self._turn(messages, kwargs)
        return self._responses(turn, self.mos.stream_chat(turn.plan, **turn.sampling))

    def _responses(self, turn: _Turn, generated: Iterator[str]) -> Iterator[ChatResponse]:
        """Responses as the text grows; the last one is the answer.

        With tools offered, text that may still become a call is held back: a call ends
        generation and comes back as one response with ``ToolCallBlock``s, not as text.
        """
        text, shown, holding = "", 0, bool(turn.tools)
        with contextlib.closing(generated):  # stopping early ends the model's loop too
            for piece in itertools.chain([turn.prime] if turn.prime else [], generated):
                text += piece
                if holding:
                    if opens_with_call(text, turn.tools):
                        break  # the call is written; what follows would be chatter
                    if _may_open_call(text):
                        continue
                    holding = False
                yield self._response(turn, text, text[shown:])
                shown = len(text)
        calls = parse_tool_calls(text, turn.tools).calls if turn.tools else []
        if calls or shown < len(text) or not text:
            yield self._response(turn, text, "" if calls else text[shown:], calls)

    def _response(
        self,
        turn: _Turn,
        text: str,
        delta: str,
        calls: Sequence[ToolCall] = (),
    ) -> ChatResponse:
        described = turn.plan.describe()
        blocks: list[Any] = [
            ToolCallBlock(
                tool_call_id=f"call_{uuid.uuid4().hex[:16]}",
                tool_name=name,
                tool_kwargs=args,
            )
            for name, args in calls
        ] or [TextBlock(text=text)]
        return ChatResponse(
            message=ChatMessage(role=MessageRole.ASSISTANT, blocks=blocks),
            delta=delta,
            raw={"text": text, PLAN_KEY: described},
            additional_kwargs={PLAN_KEY: described},
        )

    def _chat(self, messages: Sequence[ChatMessage], kwargs: Mapping[str, Any]) -> ChatResponse:
        *_, last = self._generate(messages, kwargs)
        return last

    # ------------------------------------------------------------------ LlamaIndex API

    @llm_chat_callback()
    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        return self._chat(messages, kwargs)

    @llm_chat_callback()
    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        return self._generate(messages, kwargs)

    @llm_chat_callback()
    async def achat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        return await asyncio.to_thread(self._chat, messages, kwargs)

    @llm_chat_callback()
    async def astream_chat(
        self, messages: Sequence[ChatMessage], **kwargs: Any
    ) -> ChatResponseAsyncGen:
        return aiter_in_thread(await asyncio.to_thread(self._generate, messages, kwargs))

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        return _completion(self._chat(_user(prompt), kwargs))

    @llm_completion_callback()
    def stream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseGen:
        return (_completion(r) for r in self._generate(_user(prompt), kwargs))

    @llm_completion_callback()
    async def acomplete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponse:
        return _completion(await asyncio.to_thread(self._chat, _user(prompt), kwargs))

    @llm_completion_callback()
    async def astream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseAsyncGen:
        responses = await asyncio.to_thread(self._generate, _user(prompt), kwargs)

        async def gen() -> CompletionResponseAsyncGen:
            async for response in aiter_in_thread(responses):
                yield _completion(response)

        return gen()

    # ------------------------------------------------------------------ function calling

    def _prepare_chat_with_tools(
        self,
        tools: Sequence[BaseTool],
        user_msg: str | ChatMessage | None = None,
        chat_history: list[ChatMessage] | None = None,
        verbose: bool = False,
        allow_parallel_tool_calls: bool = False,
        tool_required: bool = False,
        tool_choice: str | dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> dict[str, Any]:
        messages = list(chat_history or [])
        if user_msg is not None:
            messages += _user(user_msg) if isinstance(user_msg, str) else [user_msg]
        return {
            "messages": messages,
            "tools": list(tools),
            "tool_required": tool_required,
            "tool_choice": tool_choice,
            **kwargs,
        }

    def _validate_chat_with_tools_response(
        self,
        response: ChatResponse,
        tools: Sequence[BaseTool],
        allow_parallel_tool_calls: bool = False,
        **kwargs: Any,
    ) -> ChatResponse:
        calls = [b for b in response.message.blocks if isinstance(b, ToolCallBlock)]
        if not allow_parallel_tool_calls and len(calls) > 1:
            response.message.blocks = [
                b for b in response.message.blocks if not isinstance(b, ToolCallBlock)
            ] + calls[:1]
        return response

    def get_tool_calls_from_response(
        self, response: ChatResponse, error_on_no_tool_call: bool = True, **kwargs: Any
    ) -> list[ToolSelection]:
        selections = [
            ToolSelection(
                tool_id=b.tool_call_id or "",
                tool_name=b.tool_name,
                tool_kwargs=b.tool_kwargs if isinstance(b.tool_kwargs, dict) else {},
            )
            for b in response.message.blocks
            if isinstance(b, ToolCallBlock)
        ]
        if not selections and error_on_no_tool_call:
            said = (response.message.content or "").strip()[:200]
            raise InvalidInput(
                "the model answered without a tool call (expected a JSON object like "
                f'{{"tool": "<name>", "arguments": {{...}}}}); it said: {said!r}. '
                "Pass tool_required=True to prefill the call"
            )
        return selections


def _user(prompt: str) -> list[ChatMessage]:
    return [ChatMessage(role=MessageRole.USER, content=prompt)]


def _completion(response: ChatResponse) -> CompletionResponse:
    return CompletionResponse(
        text=response.message.content or "",
        delta=response.delta,
        raw=response.raw,
        additional_kwargs=response.additional_kwargs,
    )


def _may_open_call(text: str) -> bool:
    """Whether ``text`` can still grow into a call written first (``{``, ``[`` or a fence)."""
    body = text.lstrip()
    return not body or body[0] in "{[`"


__all__ = ["PLAN_KEY", "MemOSLLM"]
