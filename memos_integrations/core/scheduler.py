"""The scheduler: per query, which memories of which tier serve it.

:meth:`Scheduler.decide` makes a :class:`QueryPlan`: the plaintext memories retrieved for the
query (plus the session's working memory), whether the user's stored KV cache (the activation
tier) covers their current hot set, and which LoRA adapter and task expert apply. The chat
(:mod:`.chat`) executes a plan; :meth:`MemOS.explain` returns one without side effects.

The adapter and expert slots are filled by a :data:`SlotSelector` on
``mos.scheduler.adapter_selector`` / ``expert_router`` choosing among the cube's fresh
``parametric`` / ``expert`` artifacts. The engine registers the parametric tier's selector
(:meth:`.parametric.ParametricTier.select`: the querying user's own adapter for the loaded
base model, when the query is about what it holds); an application may replace it. The
adapter slot is only filled in the ``auto`` and ``parametric-only`` memory modes and never
while SEAP task experts answer (an adapter belongs to the base model). ``parametric-only``
with a demoted (stale) adapter falls back to the plaintext tier: the current memories win
until a re-promotion; with an adapter the query is not about, the base model answers alone.

:class:`WorkingMemory` is the per-session short-term set, ranked by relevance, recency,
access count and priority, evicted by that rank (never first-in-first-out).
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal, Protocol

from .items import MemoryItem, SearchHit
from .lifecycle import SERVED_STATES

if TYPE_CHECKING:
    from ..models.runtime import LocalModel
    from .cube import Artifact
    from .engine import MemOS

Clock = Callable[[], datetime]
ActivationAction = Literal["reuse", "build", "none", "off"]
SlotName = Literal["adapter", "expert"]
# Artifact kinds that fill the two model slots (see core/cube.py Artifact.kind).
SLOT_KINDS: dict[str, str] = {"adapter": "parametric", "expert": "expert"}


# ---------------------------------------------------------------------------- plan parts


@dataclass(frozen=True)
class SlotChoice:
    """The LoRA adapter or task expert a turn runs with; ``name`` None means the base model."""

    slot: SlotName
    name: str | None
    reason: str
    candidates: tuple[str, ...] = ()  # ids of the cube's fresh artifacts of that kind
    stale: str | None = None  # the user's demoted artifact left out (its sources changed)
    gated: str | None = None  # the user's fresh adapter left out: the query is not about it

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "reason": self.reason,
            "candidates": list(self.candidates),
            "stale": self.stale,
            "gated": self.gated,
        }


class SlotSelector(Protocol):
    """Chooses an adapter or expert for a query among a cube's stored artifacts of that kind.

    Registered by the code that trains/prunes them; must return a :class:`SlotChoice` whose
    ``name`` is one of ``candidates``' ids, or None for the base model.
    """

    def __call__(
        self, query: str, *, user: str, cube: str | None, candidates: Sequence[Artifact]
    ) -> SlotChoice: ...


@dataclass(frozen=True)
class ActivationChoice:
    """Whether the user's KV cache serves this turn, and whether it covers the hot set.

    ``action``: ``reuse`` a fresh stored cache, ``build`` one (none is fresh), ``none`` (no
    hot set to cache) or ``off`` (the memory mode or a missing cube keeps the tier out).
    """

    action: ActivationAction
    artifact_id: str | None
    cached: tuple[str, ...]  # ids the injected cache holds (reuse) or would hold (build)
    hot_set: tuple[str, ...]  # the user's hot set now
    reason: str

    @property
    def covers_hot_set(self) -> bool:
        return bool(self.hot_set) and set(self.hot_set) <= set(self.cached)

    @property
    def uncovered(self) -> tuple[str, ...]:
        cached = set(self.cached)
        return tuple(i for i in self.hot_set if i not in cached)

    def describe(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "artifact": self.artifact_id,
            "covers_hot_set": self.covers_hot_set,
            "uncovered": list(self.uncovered),
            "reason": self.reason,
        }


@dataclass(frozen=True)
class QueryPlan:
    """What serves one query: inspect it with ``mos.explain``; ``mos.chat`` executes it."""

    query: str
    user: str
    cube: str | None  # the cube holding the user's hot set
    memory: str  # the memory mode asked for
    session: str | None
    hits: tuple[SearchHit, ...]  # what retrieval found
    working: tuple[WorkingEntry, ...]  # the session's working memory, ranked
    plaintext: tuple[MemoryItem, ...]  # candidates for the prompt, before the cache's share
    activation: ActivationChoice
    adapter: SlotChoice
    expert: SlotChoice
    notes: tuple[str, ...] = ()

    def describe(self) -> dict[str, Any]:
        cached = set(self.activation.cached) if self.activation.action != "off" else set()
        return {
            "query": self.query,
            "user": self.user,
            "cube": self.cube,
            "memory": self.memory,
            "retrieved": [h.item.id for h in self.hits],
            "working_memory": [w.describe() for w in self.working],
            "in_prompt": [it.id for it in self.plaintext if it.id not in cached],
            "activation": self.activation.describe(),
            "adapter": self.adapter.describe(),
            "expert": self.expert.describe(),
            "notes": list(self.notes),
        }


# ---------------------------------------------------------------------------- working memory


@dataclass(frozen=True)
class WorkingWeights:
    """How the four signals mix into a working-memory score (each signal is in [0, 1])."""

    relevance: float = 0.45  # the item's fused search score relative to the best hit
    recency: float = 0.25  # halves every ``half_life`` since the session last saw it
    accesses: float = 0.15  # log-scaled access count, saturating at ``access_cap``
    priority: float = 0.15  # the item's priority mapped from [-1000, 1000]
    half_life: timedelta = timedelta(minutes=30)
    access_cap: int = 100


@dataclass(frozen=True)
class WorkingEntry:
    item: MemoryItem
    score: float
    relevance: float
    recency: float
    accesses: float
    priority: float

    def describe(self) -> dict[str, Any]:
        return {
            "id": self.item.id,
            "score": round(self.score, 4),
            "relevance": round(self.relevance, 4),
            "recency": round(self.recency, 4),
            "accesses": round(self.accesses, 4),
            "priority": round(self.priority, 4),
        }


@dataclass
class _Slot:
    item: MemoryItem
    relevance: float
    seen_at: datetime


class WorkingMemory:
    """Per ``(user, session)``: the memories this session has used, best first.

    In-process and bounded (``capacity`` items per session, ``max_sessions`` sessions, least
    recently used session dropped first). Items are re-read from the store when ranked, so a
    memory deleted, expired or no longer visible to the user drops out.
    """

    def __init__(
        self,
        capacity: int,
        clock: Clock,
        weights: WorkingWeights | None = None,
        max_sessions: int = 1024,
    ) -> None:
        self.capacity = capacity
        self.clock = clock
        self.weights = weights or WorkingWeights()
        self.max_sessions = max_sessions
        self._sessions: OrderedDict[tuple[str, str], dict[str, _Slot]] = OrderedDict()
        self._lock = threading.Lock()

    def score(self, item: MemoryItem, relevance: float, seen_at: datetime) -> WorkingEntry:
        w, now = self.weights, self.clock()
        age = max((now - seen_at).total_seconds(), 0.0)
        recency = 0.5 ** (age / max(w.half_life.total_seconds(), 1e-9))
        accesses = min(1.0, math.log1p(item.access_count) / math.log1p(w.access_cap))
        priority = (item.priority + 1000) / 2000
        total = (
            w.relevance * relevance
            + w.recency * recency
            + w.accesses * accesses
            + w.priority * priority
        )
        return WorkingEntry(item, total, relevance, recency, accesses, priority)

    def observe(self, user: str, session: str, hits: Sequence[SearchHit]) -> None:
        """Take in a query's hits: relevance is each hit's score relative to the best one."""
        if not hits:
            return
        best = max(h.score for h in hits) or 1.0
        now = self.clock()
        with self._lock:
            slots = self._sessions.setdefault((user, session), {})
            self._sessions.move_to_end((user, session))
            for h in hits:
                slots[h.item.id] = _Slot(h.item, h.score / best, now)
            if len(slots) > self.capacity:  # evict the lowest ranked, not the oldest
                ranked = sorted(
                    slots, key=lambda i: self.score(slots[i].item, slots[i].relevance,
                                                    slots[i].seen_at).score
                )  # fmt: skip
                for item_id in ranked[: len(slots) - self.capacity]:
                    del slots[item_id]
            while len(self._sessions) > self.max_sessions:
                self._sessions.popitem(last=False)

    def rank(
        self, user: str, session: str, fresh: Callable[[list[str]], list[MemoryItem]]
    ) -> list[WorkingEntry]:
        """The session's entries, best first; ``fresh`` re-reads (and filters) the items."""
        with self._lock:
            slots = dict(self._sessions.get((user, session), {}))
        current = {it.id: it for it in fresh(list(slots))}
        now = self.clock()
        entries = [
            self.score(current[i], s.relevance, s.seen_at)
            for i, s in slots.items()
            if i in current and current[i].state in SERVED_STATES and not current[i].is_expired(now)
        ]
        with self._lock:  # what left the store leaves the session too
            live = self._sessions.get((user, session))
            for gone in set(slots) - set(current):
                if live is not None:
                    live.pop(gone, None)
        return sorted(entries, key=lambda e: (-e.score, e.item.id))

    def clear(self, *, user: str | None = None, session: str | None = None) -> int:
        """Drop sessions (all, one user's, or one); returns how many were dropped."""
        with self._lock:
            keys = [
                k
                for k in self._sessions
                if (user is None or k[0] == user) and (session is None or k[1] == session)
            ]
            for k in keys:
                del self._sessions[k]
        return len(keys)


# ---------------------------------------------------------------------------- the scheduler


@dataclass
class Scheduler:
    """Plans queries for one engine. ``adapter_selector`` and ``expert_router`` are the
    extension points for the parametric tier and task experts (None: none available)."""

    mos: MemOS
    working: WorkingMemory
    adapter_selector: SlotSelector | None = None
    expert_router: SlotSelector | None = None
    working_in_prompt: int = 3  # working-memory items added to a turn beyond its hits

    def decide(
        self,
        query: str,
        *,
        user: str,
        cube: str | None,
        k: int,
        memory: str,
        session: str | None,
        instructions: str,
        model: LocalModel | None,
        serve: bool,
    ) -> QueryPlan:
        """Plan one query. ``serve`` False is a dry run (``explain``): nothing is counted as
        an access and the session's working memory is not updated."""
        from .errors import InvalidInput

        notes: list[str] = []
        experts = self.mos._experts is not None
        if experts and memory in ("activation", "parametric-only"):
            raise InvalidInput(f"memory={memory!r} needs the base model; task experts are on")
        adapter = self.adapter(query, user=user, cube=cube, memory=memory)
        retrieve = memory not in ("none", "parametric-only")
        if memory == "parametric-only" and adapter.name is None and adapter.stale is not None:
            retrieve = True  # demoted: the current plaintext answers until a re-promotion
            notes.append(
                f"adapter {adapter.stale!r} is stale (a source memory changed): the current "
                "plaintext memories answer instead until the next promotion"
            )
        elif memory == "parametric-only" and adapter.gated is not None:
            notes.append(
                f"adapter {adapter.gated!r} does not hold what this query is about (the "
                "adapter slot says why): the base model answers it with no memory"
            )
        hits: tuple[SearchHit, ...] = ()
        if retrieve:
            hits = tuple(self.mos._search_for(query, user=user, k=k, serve=serve))
        working: tuple[WorkingEntry, ...] = ()
        if session is not None:
            if serve:
                self.working.observe(user, session, hits)
            working = tuple(self.working_memory(user, session))
        plaintext = [h.item for h in hits]
        if retrieve:  # the session's best memories ride along, beyond this query's hits
            seen = {it.id for it in plaintext}
            extra = [w.item for w in working if w.item.id not in seen]
            plaintext += extra[: self.working_in_prompt]
        if memory in ("auto", "activation") and cube is not None and not experts:
            activation = self.activation(
                cube, user=user, model=model, instructions=instructions, adapter=adapter.name
            )
        else:
            if experts:
                reason = "task experts are on: a KV cache belongs to the base model"
            elif memory not in ("auto", "activation"):
                reason = f"memory={memory!r} keeps the activation tier out"
            else:
                reason = "no cube given and the user does not own exactly one"
            activation = ActivationChoice("off", None, (), (), reason)
        if model is None and (activation.action != "off" or adapter.name is not None):
            notes.append(
                "the local model is not loaded: the hot set is not bounded by its token budget, "
                "and caches and adapters of any model fingerprint count"
            )
        return QueryPlan(
            query=query,
            user=user,
            cube=cube,
            memory=memory,
            session=session,
            hits=hits,
            working=working,
            plaintext=tuple(plaintext),
            activation=activation,
            adapter=adapter,
            expert=self._slot("expert", query, user, cube),
            notes=tuple(notes),
        )

    def adapter(self, query: str, *, user: str, cube: str | None, memory: str) -> SlotChoice:
        """The LoRA adapter slot: off unless ``memory`` is ``auto`` or ``parametric-only`` and
        the base model answers (task experts are pruned copies an adapter does not fit)."""
        if self.mos._experts is not None:
            return SlotChoice(
                "adapter", None, "task experts are on: an adapter belongs to the base model"
            )
        if memory not in ("auto", "parametric-only"):
            return SlotChoice("adapter", None, f"memory={memory!r} keeps the parametric tier out")
        return self._slot("adapter", query, user, cube)

    def working_memory(self, user: str, session: str) -> list[WorkingEntry]:
        actor = self.mos.gov.user(user)

        def fresh(ids: list[str]) -> list[MemoryItem]:
            return [it for it in self.mos.store.get_items(ids) if self.mos.gov.visible(actor, it)]

        return self.working.rank(user, session, fresh)

    # ---- the activation tier ---------------------------------------------------------------

    def activation(
        self,
        cube: str,
        *,
        user: str,
        model: LocalModel | None,
        instructions: str,
        adapter: str | None = None,
    ) -> ActivationChoice:
        """Reuse the user's fresh stored cache for ``cube`` (same instructions, built through
        the same ``adapter`` or none), else build one from the current hot set; report whether
        the cache covers the hot set."""
        from .chat import cache_owner, digest

        hot = tuple(it.id for it in self.hot_set(cube, user=user, model=model))
        stored = [
            a
            for a in self._artifacts(cube, "activation")
            if cache_owner(a.name, model) == (user, adapter)
        ]
        for art in stored:
            if self.is_fresh(art) and art.metadata.get("instructions") == digest(instructions):
                covered = set(hot) <= set(art.sources)
                return ActivationChoice(
                    "reuse",
                    art.id,
                    tuple(art.sources),
                    hot,
                    "a fresh cache of this user's hot set is stored"
                    + (f" (built through adapter {adapter!r})" if adapter else "")
                    + ("" if covered else "; newer hot memories go in the prompt until rebuilt"),
                )
        if not hot:
            return ActivationChoice("none", None, (), (), f"no memories of {user!r} to cache")
        why = "stored cache is stale" if stored else "no cache stored yet"
        through = f" through adapter {adapter!r}" if adapter else ""
        return ActivationChoice(
            "build", None, hot, hot, f"{why}: build one from the hot set{through}"
        )

    def hot_set(self, cube: str, *, user: str, model: LocalModel | None) -> list[MemoryItem]:
        """The user's most accessed live memories in ``cube``, within the token budget (when
        the model is known; else within the item bound only)."""
        from ..models.activation import memory_lines

        s = self.mos.settings
        candidates = self.mos.store.list_items(
            self.mos.gov.readable(self.mos.gov.user(user), [cube]),
            self.mos._where(None, None, None, None, None, None, SERVED_STATES, live_only=True),
            limit=s.activation_items,
            offset=0,
            order="accessed",
        )
        hot: list[MemoryItem] = []
        for item in candidates:
            if (
                model is not None
                and model.count_tokens(memory_lines([*hot, item])) > s.activation_tokens
            ):
                break
            hot.append(item)
        return hot

    def is_fresh(self, artifact: Artifact) -> bool:
        return self.sources(artifact) is not None

    def sources(self, artifact: Artifact) -> tuple[MemoryItem, ...] | None:
        """The items an artifact was built from, or None if any changed, left or expired."""
        ids = list(artifact.sources)
        items = self.mos.store.get_items(ids)
        now = self.mos.clock()
        fresh = len(items) == len(ids) and all(
            it.version == artifact.sources[it.id]
            and it.state in SERVED_STATES
            and not it.is_expired(now)
            for it in items
        )
        return tuple(items) if fresh else None

    def _artifacts(self, cube: str, kind: str) -> list[Artifact]:
        return self.mos.store.list_artifacts(cube, kind, with_payload=False)

    # ---- the parametric and expert slots ---------------------------------------------------

    def _slot(self, slot: SlotName, query: str, user: str, cube: str | None) -> SlotChoice:
        kind = SLOT_KINDS[slot]
        label = "LoRA adapters" if slot == "adapter" else "task experts"
        experts = self.mos._experts  # SEAP experts (mos.build_experts) serve every cube
        if slot == "expert" and experts is not None:
            task = experts.route(query)
            return SlotChoice(slot, task, "routed by the SEAP task router", tuple(experts.tasks))
        if cube is None:
            return SlotChoice(slot, None, f"no cube: no {label} to choose from")
        stored = self._artifacts(cube, kind)
        candidates = [a for a in stored if not a.stale and self.is_fresh(a)]
        ids = tuple(a.id for a in candidates)
        # artifact names carry their reader (``lora/<user>/<model>``): the user's demoted ones
        stale = max(
            (a for a in stored if a not in candidates and a.name.split("/")[1:2] == [user]),
            key=lambda a: a.created_at,
            default=None,
        )
        demoted = stale.id if stale is not None else None
        selector = self.adapter_selector if slot == "adapter" else self.expert_router
        if not candidates:
            why = f"none available: cube {cube!r} holds no fresh {label}"
            if demoted is not None:
                why += f"; {user}'s {demoted!r} is stale (a source memory changed)"
            return SlotChoice(slot, None, why, stale=demoted)
        if selector is None:
            return SlotChoice(
                slot,
                None,
                f"none chosen: {len(ids)} stored but no selector is registered "
                f"(mos.scheduler.{'adapter_selector' if slot == 'adapter' else 'expert_router'})",
                ids,
                demoted,
            )
        choice = selector(query, user=user, cube=cube, candidates=candidates)
        if choice.name is not None and choice.name not in ids:
            from .errors import InvalidInput

            raise InvalidInput(
                f"the {slot} selector chose {choice.name!r}, which is not among the cube's "
                f"fresh {label}: {', '.join(ids)}"
            )
        stale = demoted if choice.name is None else None
        return replace(choice, slot=slot, candidates=ids, stale=stale)


__all__ = [
    "ActivationChoice",
    "QueryPlan",
    "Scheduler",
    "SlotChoice",
    "SlotSelector",
    "WorkingEntry",
    "WorkingMemory",
    "WorkingWeights",
]
