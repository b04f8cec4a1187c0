"""Chat with memory on the local model: which tier serves which memory, then generation.

A chat retrieves the user's relevant plaintext memories. The user's *hot set* (their most used
memories, bounded by ``Settings.activation_items`` and ``activation_tokens``) is served from the
activation tier: a KV cache of a system message holding those memories, built once, stored as a
cube artifact and injected. Retrieved memories outside the hot set go into the prompt as text.
When the user has a fresh LoRA adapter (the parametric tier, :mod:`.parametric`), it is applied
to every token, the KV cache included; ``memory="parametric-only"`` answers from the adapter
alone. ``ChatPlan`` records that split so callers can inspect it before or after generating.

What serves a turn is decided by the scheduler (:mod:`.scheduler`, a :class:`QueryPlan`);
this module executes the decision: it loads the adapter, loads or builds the KV cache and
renders the prompt.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from .errors import InvalidInput
from .items import AuditRecord, MemoryItem, SearchHit
from .parametric import ParametricTier
from .scheduler import ActivationChoice, QueryPlan

if TYPE_CHECKING:
    from ..models.activation import KVPrefix
    from ..models.parametric import LoRAAdapter
    from ..models.runtime import LocalModel
    from .cube import Artifact
    from .engine import MemOS

MemoryMode = Literal["auto", "activation", "plaintext", "none", "parametric-only"]
MEMORY_MODES: tuple[str, ...] = ("auto", "activation", "plaintext", "none", "parametric-only")
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
    adapter: LoRAAdapter | None = None  # the user's LoRA adapter applied to every token
    promoted: tuple[MemoryItem, ...] = ()  # memories the adapter was trained on

    @property
    def expert(self) -> str | None:
        """The SEAP task expert that answers this turn (None: the base model)."""
        return self.schedule.expert.name if self.schedule is not None else None

    @property
    def stale_adapter(self) -> str | None:
        """The user's demoted adapter left out of this turn (its sources changed)."""
        return self.schedule.adapter.stale if self.schedule is not None else None

    @property
    def tier(self) -> str:
        """The tiers used, joined by ``+`` (``parametric+activation+plaintext``), or ``none``."""
        used = [
            t
            for t, on in (
                ("parametric", self.adapter is not None),
                ("activation", self.cached),
                ("plaintext", self.in_prompt),
            )
            if on
        ]
        return "+".join(used) or "none"

    def describe(self) -> dict[str, Any]:
        """A JSON-ready summary (for logs, ``explain`` and the demo)."""
        out: dict[str, Any] = {
            "tier": self.tier,
            "cached": [it.id for it in self.cached],
            "in_prompt": [it.id for it in self.in_prompt],
            "prefix_tokens": self.activation.n_tokens if self.activation else 0,
            "retrieved": [h.item.id for h in self.hits],
            "promoted": [it.id for it in self.promoted],
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
        self.parametric = ParametricTier(mos)

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
        adapter: LoRAAdapter | None = None
        promoted: tuple[MemoryItem, ...] = ()
        if decided.adapter.name is not None and cube is not None:
            adapter, promoted = self.parametric.load(cube, decided.adapter.name, user=user)
        elif memory == "parametric-only" and not (decided.adapter.stale or decided.adapter.gated):
            raise InvalidInput(
                f"{user!r} has no adapter"
                + (f" in cube {cube!r}" if cube else ": pass the cube= that holds it")
                + f" ({decided.adapter.reason}): promote memories first, "
                "mos.promote(cube=..., to='parametric')"
            )
        prefix: KVPrefix | None = None
        cached: tuple[MemoryItem, ...] = ()
        if cube is not None and decided.activation.action in ("reuse", "build"):
            prefix, cached = self.execute(decided.activation, cube, user, instructions, adapter)
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
        return ChatPlan(
            query, prompt, prefix, cached, in_prompt, decided.hits, decided, adapter, promoted
        )

    @staticmethod
    def _notes(items: Sequence[MemoryItem]) -> str:
        from ..models.activation import MEMORY_HEADER, memory_lines

        return f"{MEMORY_HEADER}\n{memory_lines(items)}"

    def generate(self, plan: ChatPlan, **sampling: Any) -> Iterator[str]:
        if plan.expert is not None:  # the scheduler never pairs an expert with an adapter
            model = self.mos._experts.model(plan.expert)
            return model.stream(plan.prompt, prefix=plan.activation, **sampling)
        adapter = None
        if plan.adapter is not None:
            self.parametric.ensure_installed(plan.adapter)
            adapter = plan.adapter.id
        return self.mos.model.stream(
            plan.prompt, prefix=plan.activation, adapter=adapter, **sampling
        )

    # ---- the activation tier ---------------------------------------------------------------

    def execute(
        self,
        choice: ActivationChoice,
        cube: str,
        user: str,
        instructions: str,
        adapter: LoRAAdapter | None = None,
    ) -> tuple[KVPrefix | None, tuple[MemoryItem, ...]]:
        """Carry out the scheduler's activation decision: load the cache or build it.

        With an ``adapter`` the cache is built through it (keys and values depend on the
        weights) under its own name; it replaces the user's caches built through other
        adapters (a re-promotion leaves them behind), not the plain one.
        """
        from ..models import activation
        from ..models.parametric import applied

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
        adapter_id = adapter.id if adapter is not None else None
        name = artifact_name(user, model, adapter_id)

        def replaced(a: Artifact) -> bool:  # this cache, or one through a previous adapter
            owner = cache_owner(a.name, model)
            return a.name == name or (
                adapter_id is not None
                and owner is not None
                and owner[0] == user
                and owner[1] not in (None, adapter_id)
            )

        stored = [a for a in caches if replaced(a)]
        text = model.apply_chat_template(
            [activation.system_message(hot, instructions)], add_generation_prompt=False
        )
        with applied(adapter_id):
            prefix = activation.build(model, text, {it.id: it.version for it in hot})
        art = activation.to_artifact(prefix, cube, name)
        art = _with_metadata(
            art, instructions=digest(instructions), used_at=self.mos.clock().isoformat()
        )
        evicted = self._evictions(art, [a for a in caches if a not in stored])
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
        """Build (or reuse) the user's hot-set cache now, without a chat turn or a search:
        through the adapter an ``auto`` chat would use."""
        instructions = _instructions(instructions)
        model = self.mos.model
        slot = self.mos.scheduler.adapter("", user=user, cube=cube, memory="auto")
        adapter = None
        if slot.name is not None:
            adapter, _ = self.parametric.load(cube, slot.name, user=user)
        choice = self.mos.scheduler.activation(
            cube, user=user, model=model, instructions=instructions, adapter=slot.name
        )
        prefix = None
        if choice.action in ("reuse", "build"):
            prefix, _ = self.execute(choice, cube, user, instructions, adapter)
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


def artifact_name(user: str, model: LocalModel, adapter: str | None = None) -> str:
    # per reader: a shared cube's hot set depends on what this user may see; per adapter:
    # keys and values computed through an adapter differ from the base model's
    name = f"hot/{user}/{model.fingerprint.id}"
    return name if adapter is None else f"{name}/{adapter}"


def cache_owner(name: str, model: LocalModel | None) -> tuple[str, str | None] | None:
    """``(user, adapter id or None)`` of a KV cache named by :func:`artifact_name` for
    ``model`` (any model when None); None for another model's cache or another name."""
    parts = name.split("/")
    if len(parts) not in (3, 4) or parts[0] != "hot":
        return None
    if model is not None and parts[2] != model.fingerprint.id:
        return None
    return parts[1], (parts[3] if len(parts) == 4 else None)


def _instructions(given: str | None) -> str:
    return given if given is not None else DEFAULT_INSTRUCTIONS


def digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _with_metadata(art: Artifact, **extra: Any) -> Artifact:
    from dataclasses import replace

    return replace(art, metadata={**art.metadata, **extra})
