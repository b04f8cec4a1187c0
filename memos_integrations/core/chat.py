"""Chat with memory on the local model: which tier serves which memory, then generation.

A chat retrieves the user's relevant plaintext memories. The user's *hot set* (their most used
memories, bounded by ``Settings.activation_items`` and ``activation_tokens``) is served from the
activation tier: a KV cache of a system message holding those memories, built once, stored as a
cube artifact and injected. Retrieved memories outside the hot set go into the prompt as text.
When the user has a fresh LoRA adapter (the parametric tier, :mod:`.parametric`), it is applied
too; ``memory="parametric-only"`` answers from the adapter alone. ``ChatPlan`` records the
split so callers can inspect it before or after generating.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from .errors import InvalidInput
from .items import AuditRecord, MemoryItem, SearchHit, utcnow
from .lifecycle import SERVED_STATES
from .parametric import ParametricTier

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
    adapter: LoRAAdapter | None = None  # the user's LoRA adapter applied to every token
    promoted: tuple[MemoryItem, ...] = ()  # memories the adapter was trained on
    stale_adapter: str | None = None  # a demoted adapter left out (its sources changed)

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
        return {
            "tier": self.tier,
            "cached": [it.id for it in self.cached],
            "in_prompt": [it.id for it in self.in_prompt],
            "prefix_tokens": self.activation.n_tokens if self.activation else 0,
            "retrieved": [h.item.id for h in self.hits],
            "adapter": self.adapter.id if self.adapter is not None else None,
            "promoted": [it.id for it in self.promoted],
            "stale_adapter": self.stale_adapter,
        }


@dataclass(frozen=True)
class ChatReply:
    text: str
    plan: ChatPlan


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
    ) -> ChatPlan:
        from ..models import activation

        if memory not in MEMORY_MODES:
            raise InvalidInput(f"memory must be one of {', '.join(MEMORY_MODES)}, got {memory!r}")
        instructions = _instructions(instructions)
        model = self.mos.model
        adapter, promoted, stale = None, (), None
        if memory in ("auto", "parametric-only") and cube is not None:
            adapter, promoted, stale = self.parametric.serve(cube, user=user)
        if memory == "parametric-only":
            if adapter is None and stale is None:
                raise InvalidInput(
                    f"{user!r} has no adapter"
                    + (f" in cube {cube!r}" if cube else ": pass the cube= that holds it")
                    + ": promote memories first, mos.promote(cube=..., to='parametric')"
                )
            if adapter is None:
                memory = "plaintext"  # demoted: the current plaintext wins until re-promotion
        hits = () if memory in ("none", "parametric-only") else self._search(query, user, k)
        prefix: KVPrefix | None = None
        cached: tuple[MemoryItem, ...] = ()
        if memory in ("auto", "activation") and cube is not None:
            prefix, cached = self.activation(
                cube, user=user, instructions=instructions, adapter=adapter
            )
        if prefix is None and memory == "activation":
            raise InvalidInput(
                f"nothing to cache for {user!r}: pass the cube= that holds their memories"
                if cube is None
                else f"cube {cube!r} has no memories for {user!r} to cache yet"
            )
        cached_ids = {it.id for it in cached}
        in_prompt = tuple(h.item for h in hits if h.item.id not in cached_ids)
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
            query,
            prompt,
            prefix,
            cached,
            in_prompt,
            hits,
            adapter,
            promoted,
            stale.id if stale is not None else None,
        )

    def _search(self, query: str, user: str, k: int) -> tuple[SearchHit, ...]:
        return tuple(self.mos.search(query, user=user, k=k))

    @staticmethod
    def _notes(items: Sequence[MemoryItem]) -> str:
        from ..models.activation import MEMORY_HEADER, memory_lines

        return f"{MEMORY_HEADER}\n{memory_lines(items)}"

    def generate(self, plan: ChatPlan, **sampling: Any) -> Iterator[str]:
        adapter = None
        if plan.adapter is not None:
            self.parametric.ensure_installed(plan.adapter)
            adapter = plan.adapter.id
        return self.mos.model.stream(
            plan.prompt, prefix=plan.activation, adapter=adapter, **sampling
        )

    # ---- the activation tier ---------------------------------------------------------------

    def activation(
        self, cube: str, *, user: str, instructions: str, adapter: LoRAAdapter | None = None
    ) -> tuple[KVPrefix | None, tuple[MemoryItem, ...]]:
        """The user's current hot-set cache for ``cube``: loaded, or rebuilt when stale.

        With an ``adapter`` the cache is built through it (keys and values depend on the
        weights), under its own name; it replaces the user's caches for other adapters.
        """
        from ..models import activation

        model = self.mos.model
        base_name = _artifact_name(user, model)
        name = base_name if adapter is None else f"{base_name}/{adapter.id}"
        digest = _digest(instructions)
        caches = self._artifacts(cube)
        stored = [a for a in caches if a.name == base_name or a.name.startswith(base_name + "/")]
        for art in stored:
            items = self._sources(art)
            if (
                art.name == name
                and items is not None
                and art.metadata.get("instructions") == digest
            ):
                self.mos.store.touch_artifact(art.id, utcnow())
                return self._load(art, model), items
        hot = self.hot_set(cube, user=user, model=model)
        if not hot:
            return None, ()
        text = model.apply_chat_template(
            [activation.system_message(hot, instructions)], add_generation_prompt=False
        )
        from ..models.parametric import applied

        with applied(adapter.id if adapter is not None else None):
            prefix = activation.build(model, text, {it.id: it.version for it in hot})
        art = activation.to_artifact(prefix, cube, name)
        art = _with_metadata(art, instructions=digest, used_at=utcnow().isoformat())
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
        """Build (or reuse) the user's hot-set cache now, without a chat turn or a search."""
        adapter, _, _ = self.parametric.serve(cube, user=user)  # as an auto chat would use it
        prefix, _ = self.activation(
            cube, user=user, instructions=_instructions(instructions), adapter=adapter
        )
        if prefix is None:
            raise InvalidInput(f"cube {cube!r} has no memories for {user!r} to cache yet")
        return prefix

    def hot_set(self, cube: str, *, user: str, model: LocalModel) -> list[MemoryItem]:
        """The user's most accessed live memories in ``cube``, within the token budget."""
        from ..models.activation import memory_lines

        s = self.mos.settings
        candidates = self.mos.list(
            user=user, cube=cube, states=SERVED_STATES, limit=s.activation_items, order="accessed"
        )
        now = utcnow()
        hot: list[MemoryItem] = []
        for item in (it for it in candidates if not it.is_expired(now)):
            if model.count_tokens(memory_lines([*hot, item])) > s.activation_tokens:
                break
            hot.append(item)
        return hot

    def is_stale(self, artifact: Artifact) -> bool:
        return self._sources(artifact) is None

    def _sources(self, artifact: Artifact) -> tuple[MemoryItem, ...] | None:
        """The items an artifact was built from, or None if any changed, left or expired."""
        ids = list(artifact.sources)
        items = self.mos.store.get_items(ids)
        now = utcnow()
        fresh = len(items) == len(ids) and all(
            it.version == artifact.sources[it.id]
            and it.state in SERVED_STATES
            and not it.is_expired(now)
            for it in items
        )
        return tuple(items) if fresh else None

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


def _artifact_name(user: str, model: LocalModel) -> str:
    # per reader: a shared cube's hot set depends on what this user may see
    return f"hot/{user}/{model.fingerprint.id}"


def _instructions(given: str | None) -> str:
    return given if given is not None else DEFAULT_INSTRUCTIONS


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _with_metadata(art: Artifact, **extra: Any) -> Artifact:
    from dataclasses import replace

    return replace(art, metadata={**art.metadata, **extra})
