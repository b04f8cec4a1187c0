"""Chat with memory on the local model: which tier serves which memory, then generation.

A chat retrieves the user's relevant plaintext memories. The user's *hot set* (their most used
memories, bounded by ``Settings.activation_items`` and ``activation_tokens``) is served from the
activation tier: a KV cache of a system message holding those memories, built once, stored as a
cube artifact and injected. Retrieved memories outside the hot set go into the prompt as text.
``ChatPlan`` records that split so callers can inspect it before or after generating.

What serves a turn is decided by the scheduler (:mod:`.scheduler`, a :class:`QueryPlan`);
this module executes the decision: it loads or builds the KV cache and renders the prompt.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from .errors import BackendUnavailable, InvalidInput
from .items import AuditRecord, MemoryItem, SearchHit
from .scheduler import ActivationChoice, QueryPlan

if TYPE_CHECKING:
    from ..models.activation import KVPrefix
    from ..models.runtime import LocalModel
    from .cube import Artifact
    from .engine import MemOS

MemoryMode = Literal["auto", "activation", "plaintext", "none"]
MEMORY_MODES: tuple[str, ...] = ("auto", "activation", "plaintext", "none")
DEFAULT_INSTRUCTIONS = (
    "You are a helpful assistant. Answer briefly. Use the notes from memory when they are "
    "relevant to the question."
)
_LOADED_PREFIXES = 4  # decoded KV caches kept in this process (each can be tens of MB)


@dataclass(frozen=True)
class ChatPlan:
    """What a chat turn will use: the cached prefix, the prompt text and which memories."""

    query: str
    prompt: str  # the text to prefill: after the cached prefix, or the whole prompt
    activation: KVPrefix | None  # the injected KV cache, if any
    cached: tuple[MemoryItem, ...]  # memories served by the KV cache
    in_prompt: tuple[MemoryItem, ...]  # memories put into the prompt as text
    hits: tuple[SearchHit, ...]  # what retrieval found
    schedule: QueryPlan | None = None  # the scheduler's decision this plan executes

    @property
    def expert(self) -> str | None:
        """The SEAP task expert that answers this turn (None: the base model)."""
        return self.schedule.expert.name if self.schedule is not None else None

    @property
    def tier(self) -> str:
        """``activation+plaintext``, ``activation``, ``plaintext`` or ``none``."""
        used = [t for t, on in (("activation", self.cached), ("plaintext", self.in_prompt)) if on]
        return "+".join(used) or "none"

    def describe(self) -> dict[str, Any]:
        """A JSON-ready summary (for logs, ``explain`` and the demo)."""
        out: dict[str, Any] = {
            "tier": self.tier,
            "cached": [it.id for it in self.cached],
            "in_prompt": [it.id for it in self.in_prompt],
            "prefix_tokens": self.activation.n_tokens if self.activation else 0,
            "retrieved": [h.item.id for h in self.hits],
        }
        if self.schedule is not None:
            s = self.schedule
            out["covers_hot_set"] = s.activation.covers_hot_set
            out["working_memory"] = [w.item.id for w in s.working]
            out["adapter"] = s.adapter.describe()
            out["expert"] = s.expert.describe()
        return out


@dataclass(frozen=True)
class ChatReply:
    text: str
    plan: ChatPlan
    expert: str | None = None  # the task expert that answered, when experts are on


class Chat:
    """The chat service of one engine: plans turns and manages the activation tier."""

    def __init__(self, mos: MemOS) -> None:
        self.mos = mos
        self._loaded: OrderedDict[str, KVPrefix] = OrderedDict()  # artifact id -> prefix
        self._lock = threading.Lock()

    # ---- planning --------------------------------------------------------------------------

    def plan(
        self,
        query: str,
        *,
        user: str,
        cube: str | None,
        k: int,
        history: Sequence[dict[str, Any]],
        memory: str,
        instructions: str | None,
        after: Sequence[dict[str, Any]] = (),
        session: str | None = None,
    ) -> ChatPlan:
        from ..models import activation

        if memory not in MEMORY_MODES:
            raise InvalidInput(f"memory must be one of {', '.join(MEMORY_MODES)}, got {memory!r}")
        if self.mos._experts is not None:  # KV caches belong to the base model, not an expert
            if memory == "activation":
                raise InvalidInput("memory='activation' needs the base model; experts are on")
            memory = "plaintext" if memory == "auto" else memory
        instructions = _instructions(instructions)
        model = self.mos.model
        decided = self.mos.scheduler.decide(
            query,
            user=user,
            cube=cube,
            k=k,
            memory=memory,
            session=session,
            instructions=instructions,
            model=model,
            serve=True,
        )
        slots = [decided.adapter]
        if self.mos._experts is None:  # with SEAP experts on, MemOS.chat runs the chosen one
            slots.append(decided.expert)
        for slot in slots:
            if slot.name is not None:  # never pretend: the runtime cannot apply one yet
                raise BackendUnavailable(
                    f"the scheduler chose {slot.slot} {slot.name!r}, but the local runtime "
                    f"cannot apply a {slot.slot} yet"
                )
        prefix: KVPrefix | None = None
        cached: tuple[MemoryItem, ...] = ()
        if cube is not None and decided.activation.action in ("reuse", "build"):
            prefix, cached = self.execute(decided.activation, cube, user, instructions)
            self.mos._audit_foreign_reads(cached, user, "chat")
        if prefix is None and memory == "activation":
            raise InvalidInput(
                f"nothing to cache for {user!r}: pass the cube= that holds their memories"
                if cube is None
                else f"cube {cube!r} has no memories for {user!r} to cache yet"
            )
        cached_ids = {it.id for it in cached}
        in_prompt = tuple(it for it in decided.plaintext if it.id not in cached_ids)
        # retrieved memories outside the cache ride with the question: small models attend to
        # the last user turn far better than to a second system message
        asked = f"{self._notes(in_prompt)}\n\nQuestion: {query}" if in_prompt else query
        turns = [*history, {"role": "user", "content": asked}, *after]
        head = [activation.system_message(cached, instructions)]
        if prefix is not None:
            _, prompt = activation.split_chat(model, head, turns)
        else:
            prompt = model.apply_chat_template([*head, *turns], add_generation_prompt=True)
        return ChatPlan(query, prompt, prefix, cached, in_prompt, decided.hits, decided)

    @staticmethod
    def _notes(items: Sequence[MemoryItem]) -> str:
        from ..models.activation import MEMORY_HEADER, memory_lines

        return f"{MEMORY_HEADER}\n{memory_lines(items)}"

    def generate(self, plan: ChatPlan, **sampling: Any) -> Iterator[str]:
        model = self.mos.model if plan.expert is None else self.mos._experts.model(plan.expert)
        return model.stream(plan.prompt, prefix=plan.activation, **sampling)

    # ---- the activation tier ---------------------------------------------------------------

    def activation(
        self, cube: str, *, user: str, instructions: str
    ) -> tuple[KVPrefix | None, tuple[MemoryItem, ...]]:
        """The user's current hot-set cache for ``cube``: loaded, or rebuilt when stale."""
        choice = self.mos.scheduler.activation(
            cube, user=user, model=self.mos.model, instructions=instructions
        )
        if choice.action not in ("reuse", "build"):
            return None, ()
        return self.execute(choice, cube, user, instructions)

    def execute(
        self, choice: ActivationChoice, cube: str, user: str, instructions: str
    ) -> tuple[KVPrefix | None, tuple[MemoryItem, ...]]:
        """Carry out the scheduler's activation decision: load the cache or build it."""
        from ..models import activation

        model = self.mos.model
        caches = self._artifacts(cube)
        if choice.action == "reuse":
            art = next((a for a in caches if a.id == choice.artifact_id), None)
            items = self.mos.scheduler.sources(art) if art is not None else None
            if art is not None and items is not None:
                self.mos.store.touch_artifact(art.id, self.mos.clock())
                return self._load(art, model), items
        # build (or the chosen cache went stale in between): from the hot set now
        hot = self.mos.scheduler.hot_set(cube, user=user, model=model)
        if not hot:
            return None, ()
        name = artifact_name(user, model)
        stored = [a for a in caches if a.name == name]
        text = model.apply_chat_template(
            [activation.system_message(hot, instructions)], add_generation_prompt=False
        )
        prefix = activation.build(model, text, {it.id: it.version for it in hot})
        art = activation.to_artifact(prefix, cube, name)
        art = _with_metadata(
            art, instructions=digest(instructions), used_at=self.mos.clock().isoformat()
        )
        evicted = self._evictions(art, [a for a in caches if a.name != name])
        self.mos.store.put_artifact(
            art,
            AuditRecord(user, "build:activation", art.id, cube, {"tokens": prefix.n_tokens}),
            replaces=[a.id for a in stored] + evicted,
        )
        with self._lock:
            self._loaded[art.id] = prefix
            self._trim()
        return prefix, tuple(hot)

    def warm(self, cube: str, *, user: str, instructions: str | None) -> KVPrefix:
        """Build (or reuse) the user's hot-set cache now, without a chat turn or a search."""
        prefix, _ = self.activation(cube, user=user, instructions=_instructions(instructions))
        if prefix is None:
            raise InvalidInput(f"cube {cube!r} has no memories for {user!r} to cache yet")
        return prefix

    def is_stale(self, artifact: Artifact) -> bool:
        return not self.mos.scheduler.is_fresh(artifact)

    def _artifacts(self, cube: str) -> list[Artifact]:
        from ..models.activation import KIND

        return self.mos.store.list_artifacts(cube, KIND, with_payload=False)

    def _load(self, art: Artifact, model: LocalModel) -> KVPrefix:
        from ..models.activation import from_artifact

        with self._lock:
            if art.id in self._loaded:
                self._loaded.move_to_end(art.id)
                return self._loaded[art.id]
        full = self.mos.store.get_artifact(art.id)
        if full is None:
            raise InvalidInput(f"KV cache {art.id!r} disappeared while loading; retry")
        prefix = from_artifact(full, model)
        with self._lock:
            self._loaded[art.id] = prefix
            self._trim()
        return prefix

    def forget_loaded(self) -> None:
        """Drop every decoded KV cache held in this process (after an erasure)."""
        with self._lock:
            self._loaded.clear()

    def _trim(self) -> None:
        while len(self._loaded) > _LOADED_PREFIXES:
            self._loaded.popitem(last=False)

    def _evictions(self, new: Artifact, others: Sequence[Artifact]) -> list[str]:
        """Least recently used of ``others`` to drop so the cube stays within its byte budget."""
        others = sorted(
            others, key=lambda a: str(a.metadata.get("used_at") or a.created_at.isoformat())
        )
        total = int(new.metadata.get("bytes", 0)) + sum(
            int(a.metadata.get("bytes", 0)) for a in others
        )
        evicted = []
        for a in others:
            if total <= self.mos.settings.activation_cache_bytes:
                break
            evicted.append(a.id)
            total -= int(a.metadata.get("bytes", 0))
        return evicted


def artifact_name(user: str, model: LocalModel) -> str:
    # per reader: a shared cube's hot set depends on what this user may see
    return f"hot/{user}/{model.fingerprint.id}"


def _instructions(given: str | None) -> str:
    return given if given is not None else DEFAULT_INSTRUCTIONS


def digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _with_metadata(art: Artifact, **extra: Any) -> Artifact:
    from dataclasses import replace

    return replace(art, metadata={**art.metadata, **extra})
