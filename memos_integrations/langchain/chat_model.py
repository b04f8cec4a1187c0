"""``ChatMemOS``: a LangChain chat model that answers with the local model from MemOS memory.

Each call is one ``mos.plan_chat`` turn: the user's hot memories come from the activation tier
(a KV cache built once and injected), other retrieved memories go into the prompt as text, and
the engine's local model (the bundled SmolLM2-135M-Instruct by default) generates the answer.
Tool calling uses the JSON text format of :mod:`memos_integrations.models.tool_calls`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from langchain_core.caches import BaseCache
from langchain_core.callbacks import (
    AsyncCallbackManagerForLLMRun,
    CallbackManagerForLLMRun,
)
from langchain_core.language_models import BaseChatModel, LangSmithParams, LanguageModelInput
from langchain_core.language_models.chat_models import generate_from_stream
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.messages.ai import UsageMetadata
from langchain_core.outputs import ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable, RunnableConfig, ensure_config
from langchain_core.runnables.config import run_in_executor
from pydantic import AliasChoices, ConfigDict, Field, model_validator

from ..core.chat import ChatPlan, MemoryMode
from ..core.engine import MemOS
from ..core.errors import InvalidInput
from ..models.tool_calls import opens_with_call
from . import _bound_tools as bt
from ._chat_turns import conversation
from ._scope import CUBE_KEY, USER_KEY, ensure_user, run_value

# Accepted so code written for hosted chat models runs unchanged; a local model has no endpoint
# to time out on, retry or authenticate against.
_HOSTED_ONLY = ("timeout", "max_retries", "api_key", "base_url")
_CALL_OPTIONS = frozenset(
    {
        "user_id",
        "cube",
        "k",
        "memory",
        "max_tokens",
        "max_new_tokens",
        "temperature",
        "seed",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
    }
)


@dataclass(frozen=True)
class _Turn:
    """One prepared call: the engine's plan and how to generate and read the answer."""

    plan: ChatPlan
    tools: bt.ToolSet
    prefill: str  # the start of the answer written for the model (a required tool call)
    parallel: bool
    sampling: dict[str, Any]


class ChatMemOS(BaseChatModel):
    """The engine's local model as a LangChain chat model, answering from a user's memory.

    The last human message is the query (what is searched in memory), earlier messages are
    the history, system messages are the instructions (``instructions=`` is used when there
    are none). The user is ``user_id``, or ``user_id`` of the run (its LangGraph context or
    ``config["configurable"]``) on each call; the cube of the hot set is ``cube`` or the run's
    ``cube_id`` (default: the user's only cube). ``memory`` is the engine's mode: ``auto``,
    ``activation``, ``plaintext``, ``none`` or ``parametric-only`` (the user's LoRA adapter
    alone, see ``mos.promote``).

    Every answer carries ``response_metadata["memos"]`` (``plan.describe()``: the tier and
    which memories were cached, in the prompt, retrieved) and ``usage_metadata`` (input tokens
    include the cached prefix, also reported as ``cache_read``; output tokens are the answer
    re-tokenized). ``bind_tools`` describes the tools in a system message and parses the
    model's JSON answer into ``tool_calls``; with tools bound, ``stream`` yields the whole
    answer as one chunk (a call is only known once it is complete).

    Per call, ``user_id``, ``cube``, ``k``, ``memory``, ``max_tokens``, ``temperature`` and
    ``seed`` may be passed to ``invoke``/``stream``. LangChain's response cache is off by
    default (``cache=False``): answers depend on memory that changes between calls.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid")

    mos: MemOS
    user_id: str | None = None
    cube: str | None = None
    k: int = Field(default=5, ge=1)
    memory: MemoryMode = "auto"
    instructions: str | None = None
    max_new_tokens: int = Field(
        default=256, ge=0, validation_alias=AliasChoices("max_new_tokens", "max_tokens")
    )
    temperature: float = Field(default=0.0, ge=0.0)
    stop: list[str] | None = None
    seed: int | None = None
    streaming: bool = False
    create_missing: bool = True
    cache: BaseCache | bool | None = Field(default=False, exclude=True)

    @model_validator(mode="before")
    @classmethod
    def _drop_hosted_params(cls, data: Any) -> Any:
        if isinstance(data, Mapping):
            return {k: v for k, v in data.items() if k not in _HOSTED_ONLY}
        return data

    # ---- LangChain metadata ----------------------------------------------------------------

    @property
    def _llm_type(self) -> str:
        return "memos-chat"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {
            "user_id": self.user_id,
            "cube": self.cube,
            "k": self.k,
            "memory": self.memory,
            "instructions": self.instructions,
            "max_new_tokens": self.max_new_tokens,
            "temperature": self.temperature,
            "stop": self.stop,
            "seed": self.seed,
        }

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        params = super()._get_ls_params(stop=stop or self.stop, **kwargs)
        params["ls_provider"] = "memos"
        model = kwargs.get("model")
        params["ls_model_name"] = model if isinstance(model, str) else self.model_name
        params["ls_max_tokens"] = _max_tokens(kwargs, self.max_new_tokens)
        return params

    @property
    def model_name(self) -> str:
        """The local model's name: its directory, or its fingerprint id (loads the model)."""
        model = self.mos.model
        return model.path.name if model.path is not None else model.fingerprint.id

    def get_token_ids(self, text: str) -> list[int]:
        return self.mos.model.encode(text)

    # ---- who a call is for -----------------------------------------------------------------

    def invoke(
        self, input: LanguageModelInput, config: RunnableConfig | None = None, **kwargs: Any
    ) -> AIMessage:
        return super().invoke(input, config, **self._with_run(config, kwargs))

    async def ainvoke(
        self, input: LanguageModelInput, config: RunnableConfig | None = None, **kwargs: Any
    ) -> AIMessage:
        return await super().ainvoke(input, config, **self._with_run(config, kwargs))

    def stream(
        self, input: LanguageModelInput, config: RunnableConfig | None = None, **kwargs: Any
    ) -> Iterator[AIMessageChunk]:
        return super().stream(input, config, **self._with_run(config, kwargs))

    def astream(
        self, input: LanguageModelInput, config: RunnableConfig | None = None, **kwargs: Any
    ) -> AsyncIterator[AIMessageChunk]:
        return super().astream(input, config, **self._with_run(config, kwargs))

    def _with_run(self, config: RunnableConfig | None, kwargs: dict[str, Any]) -> dict[str, Any]:
        """The run's ``user_id``/``cube_id`` as call options, read once per call.

        ``ensure_config`` also picks up an enclosing run's config (a graph node, a tool), and
        a LangGraph runtime context wins over the config, as for the other adapters.
        """
        run = ensure_config(config)
        context = _graph_context()
        extra: dict[str, Any] = {}
        if "user_id" not in kwargs and self.user_id is None:
            user = run_value(context, run, USER_KEY)
            if user is not None:
                extra["user_id"] = user
        cube = run_value(context, run, CUBE_KEY)
        if "cube" not in kwargs and cube is not None:
            extra["cube"] = cube
        return {**kwargs, **extra}

    # ---- tools -----------------------------------------------------------------------------

    def bind_tools(
        self,
        tools: Sequence[bt.ToolLike],
        *,
        tool_choice: str | bool | dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """Bind tools (BaseTools, functions, pydantic models, JSON schemas) for the JSON format.

        ``tool_choice``: ``"auto"`` (default: call or answer), ``"none"``, ``"any"`` or
        ``"required"`` (some tool must be called), or a tool name. A required call is started
        for the model so that it only writes the tool's name or arguments. ``strict`` is
        accepted and ignored: schemas are described to the model, not enforced.
        """
        toolset = bt.ToolSet.bind(tools, tool_choice)
        kwargs.pop("strict", None)
        return super().bind(tools=list(toolset.tools), tool_choice=toolset.choice, **kwargs)

    # ---- planning --------------------------------------------------------------------------

    def plan(
        self, input: LanguageModelInput, config: RunnableConfig | None = None, **kwargs: Any
    ) -> ChatPlan:
        """What a call with ``input`` would give the model (prompt, cached prefix, memories),
        without generating. Takes the same options as ``invoke``, ``tools=`` included."""
        messages = self._convert_input(input).to_messages()
        return self._prepare(messages, None, self._with_run(config, kwargs)).plan

    def _prepare(
        self, messages: list[BaseMessage], stop: list[str] | None, options: dict[str, Any]
    ) -> _Turn:
        unknown = set(options) - _CALL_OPTIONS
        if unknown:
            raise InvalidInput(
                f"ChatMemOS got unknown call options {sorted(unknown)}; it takes "
                f"{sorted(_CALL_OPTIONS)}"
            )
        user = options.get("user_id") or self.user_id
        if user is None:
            raise InvalidInput(
                "ChatMemOS needs a user: ChatMemOS(mos=..., user_id='alice') or "
                "config={'configurable': {'user_id': 'alice'}} on the call"
            )
        ensure_user(self.mos, user, create=self.create_missing)
        cube = options.get("cube") or self.cube
        tools = bt.ToolSet.bind(options.get("tools") or (), options.get("tool_choice"))
        conv = conversation(messages)
        history = conv.history
        if tools.active:  # after the cached prefix, so the KV cache serves with or without tools
            history = [*history, {"role": "system", "content": tools.instructions()}]
        plan = self.mos.plan_chat(
            conv.query,
            user=user,
            cube=cube.replace("{user}", user) if cube else None,
            k=options.get("k", self.k),
            history=history,
            memory=options.get("memory", self.memory),
            instructions=conv.instructions or self.instructions,
            after=conv.after,
        )
        prefill = tools.prefill()
        if prefill:
            plan = dataclasses.replace(plan, prompt=plan.prompt + prefill)
        sampling = {
            "max_new_tokens": _max_tokens(options, self.max_new_tokens),
            "temperature": options.get("temperature", self.temperature),
            "seed": options.get("seed", self.seed),
            "stop": [*(self.stop or ()), *(stop or ())],
        }
        parallel = options.get("parallel_tool_calls") is not False
        return _Turn(plan, tools, prefill, parallel, sampling)

    # ---- generation ------------------------------------------------------------------------

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        # one code path: invoke and stream give the same answer
        return generate_from_stream(self._stream(messages, stop, run_manager, **kwargs))

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        turn = self._prepare(messages, stop, kwargs)
        pieces = self.mos.stream_chat(turn.plan, **turn.sampling)
        if not turn.tools.active:
            text = []
            for piece in pieces:
                text.append(piece)
                yield ChatGenerationChunk(message=AIMessageChunk(content=piece))
            yield self._last_chunk(turn, "".join(text), AIMessageChunk(content=""))
            return
        text = turn.prefill
        for piece in pieces:
            text += piece
            if turn.tools.forced and opens_with_call(text, turn.tools.parameters):
                break  # the required call is written: what follows would be discarded
        reply = bt.read_reply(text, turn.tools, parallel=turn.parallel)
        message = AIMessageChunk(
            content=reply.content,
            tool_calls=reply.tool_calls,
            invalid_tool_calls=reply.invalid_tool_calls,
        )
        yield self._last_chunk(turn, text[len(turn.prefill) :], message)

    def _last_chunk(
        self, turn: _Turn, generated: str, message: AIMessageChunk
    ) -> ChatGenerationChunk:
        """The final chunk: the plan's summary and the token usage."""
        model = self.mos.model
        cached = turn.plan.activation.n_tokens if turn.plan.activation is not None else 0
        prompt = cached + model.count_tokens(turn.plan.prompt)
        answer = model.count_tokens(generated)
        described = turn.plan.describe()
        message.usage_metadata = UsageMetadata(
            input_tokens=prompt,
            output_tokens=answer,
            total_tokens=prompt + answer,
            input_token_details={"cache_read": cached},
        )
        message.response_metadata = {"memos": described, "model_name": self.model_name}
        message.chunk_position = "last"
        return ChatGenerationChunk(message=message, generation_info={"memos": described})

    # Generation is synchronous torch code: the async twins run it in a worker thread, one
    # piece at a time, so the event loop stays free while the model works.

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return await run_in_executor(None, self._generate, messages, stop, None, **kwargs)

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        chunks = self._stream(messages, stop, None, **kwargs)
        done = object()
        while (chunk := await run_in_executor(None, next, chunks, done)) is not done:
            yield chunk


def _max_tokens(options: Mapping[str, Any], default: int) -> int:
    return options.get("max_new_tokens", options.get("max_tokens", default))


def _graph_context() -> Any:
    """The LangGraph runtime context of the enclosing graph run, if there is one."""
    try:
        from langgraph.runtime import get_runtime

        return getattr(get_runtime(), "context", None)
    except (ImportError, RuntimeError, KeyError):
        return None
