"""The engine's parametric tier: promote a cube's stable memories into a LoRA adapter, choose
the owner's adapter for the scheduler's adapter slot, keep a few adapters installed on the
local model.

An adapter belongs to the cube owner (it is trained on what they may see) and to one base
model: its artifact name is ``lora/<owner>/<model fingerprint id>``. Like a KV cache it is
stale as soon as a source memory changed version, left the served states or expired; the
scheduler never offers a stale adapter (:meth:`.scheduler.Scheduler._slot` keeps only fresh
candidates), so the current plaintext answers until the next promotion.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from ..storage.base import SearchRequest
from .errors import InvalidInput, NotFound
from .items import AuditRecord, MemoryItem
from .lifecycle import SERVED_STATES
from .scheduler import SlotChoice

if TYPE_CHECKING:
    from ..models.parametric import LoRAAdapter, PromotionPolicy
    from ..models.parametric_data import Fact
    from ..models.runtime import LocalModel
    from .cube import Artifact, MemCube
    from .engine import MemOS

_LOADED_ADAPTERS = 8  # installed on the model at once (each is a few MB)
_GATED_ADAPTERS = 256  # adapters whose gate keys stay embedded in memory
_RIVALS = 5  # the user's memories nearest a query that the gate compares with the adapter's
_RIVAL_KEYS = 4096  # memories whose gate keys stay embedded in memory
_MAX_CANDIDATES = 10_000


@dataclass(frozen=True)
class PromotionReport:
    """What a promotion did: the stored adapter (metadata only), which memories went in."""

    artifact: Artifact
    promoted: tuple[str, ...]
    skipped: dict[str, str] = field(default_factory=dict)  # item id -> why it stayed plaintext

    @property
    def metrics(self) -> dict[str, Any]:
        return dict(self.artifact.metadata.get("metrics", {}))

    def describe(self) -> dict[str, Any]:
        return {
            "adapter": self.artifact.id,
            "name": self.artifact.name,
            "promoted": list(self.promoted),
            "skipped": dict(self.skipped),
            "bytes": self.artifact.metadata.get("bytes"),
            "metrics": self.metrics,
        }


@dataclass(frozen=True)
class _GateKeys:
    """What the serving gate knows of one adapter (cached per adapter id)."""

    sources: frozenset[str]  # the ids of the memories it was trained on
    facts: tuple[Fact, ...]  # those memories read as facts (to recognise restatements)
    name: str  # the owner's name, as the promotion called them
    vectors: np.ndarray  # what it is about (about_texts), embedded


def adapter_name(user: str, model: LocalModel) -> str:
    return f"lora/{user}/{model.fingerprint.id}"


class ParametricTier:
    def __init__(self, mos: MemOS) -> None:
        self.mos = mos
        self._loaded: OrderedDict[str, tuple[str, LoRAAdapter]] = OrderedDict()  # id -> owner
        self._lock = threading.Lock()
        self._about: OrderedDict[str, _GateKeys] = OrderedDict()  # adapter id -> gate keys
        self._general: np.ndarray | None = None  # the default replay questions, embedded
        self._rivals: OrderedDict[tuple[str, int], np.ndarray] = OrderedDict()  # (id, version)

    # ---- promotion -------------------------------------------------------------------------

    def promote(
        self,
        cube: MemCube,
        *,
        actor: str | None,
        items: Sequence[str] | None,
        policy: PromotionPolicy | None,
        instructions: str,
        digest: str,
        **training: Any,
    ) -> PromotionReport:
        from ..models import parametric

        if policy is None:  # "stable" as mos.maintain() reports promotion candidates
            s = self.mos.settings
            policy = parametric.PromotionPolicy(s.stable_min_age, s.stable_min_accesses)
        if not isinstance(policy, parametric.PromotionPolicy):
            raise InvalidInput(f"policy must be a PromotionPolicy, got {type(policy).__name__}")
        owner = cube.owner
        live = self.mos.list(
            user=owner, cube=cube.id, states=SERVED_STATES, limit=_MAX_CANDIDATES, order="accessed"
        )
        if items is not None:
            wanted = list(dict.fromkeys(items))
            by_id = {it.id: it for it in live}
            missing = [i for i in wanted if i not in by_id]
            if missing:
                raise NotFound(f"no live memory {missing[0]!r} of {owner!r} in cube {cube.id!r}")
            chosen, skipped = [by_id[i] for i in wanted], {}
        else:
            chosen, skipped = policy.select(live, now=self.mos.clock())
        if not chosen:
            raise InvalidInput(
                f"nothing in cube {cube.id!r} is promotable under {policy}; pass items=[...] "
                "or a PromotionPolicy (e.g. PromotionPolicy.everything())"
            )
        model = self.mos.model
        user = self.mos.get_user(owner)
        adapter = parametric.train_adapter(
            model, chosen, name=user.name or owner, instructions=instructions, **training
        )
        name = adapter_name(owner, model)
        art = parametric.to_artifact(adapter, cube.id, name)
        art = replace(art, metadata={**art.metadata, "instructions": digest, "user": owner})
        previous = [a.id for a in self._artifacts(cube.id) if a.name == name]
        self.mos.store.put_artifact(
            art,
            AuditRecord(
                actor, "promote:parametric", art.id, cube.id, {"items": [it.id for it in chosen]}
            ),
            replaces=previous,
        )
        for old in previous:
            self.unload(old)
        return PromotionReport(
            replace(art, payload=b""), tuple(it.id for it in chosen), dict(skipped)
        )

    # ---- serving ---------------------------------------------------------------------------

    def select(
        self, query: str, *, user: str, cube: str | None, candidates: Sequence[Artifact]
    ) -> SlotChoice:
        """The scheduler's adapter selector: ``user``'s own adapter for the loaded base model
        (any model's while none is loaded, as ``explain`` runs without loading it), when the
        query is about what it holds: nearer to its memories than to general questions, at
        least ``settings.adapter_gate`` near, and nearer to them than to the user's other
        memories (an empty query, as :meth:`.chat.Chat.warm` asks, is not gated). Another
        user's adapter never serves: it was trained on what its owner may see."""
        from .engine import _is_loaded

        model = self.mos._model if _is_loaded(self.mos._model) else None
        mine = [
            a
            for a in candidates
            if a.name.split("/")[:2] == ["lora", user]
            and (model is None or a.name == adapter_name(user, model))
        ]
        if not mine:
            return SlotChoice("adapter", None, f"none of them is {user}'s adapter for this model")
        art = max(mine, key=lambda a: a.created_at)
        why = f"{user}'s adapter, fresh: trained on {len(art.sources)} memories"
        gate = self.mos.settings.adapter_gate
        if gate == 0 or not query.strip():
            return SlotChoice("adapter", art.id, why)
        keys, q = self._gate_keys(art), self.mos.embedder.embed_query(query)
        near, general = self._similarities(keys, q)
        about = f"nearest of its memories {near:.2f}, of general questions {general:.2f}"
        if near < gate or near <= general:
            return SlotChoice(
                "adapter",
                None,
                f"{user}'s adapter {art.id!r} is not about this query ({about}; "
                f"adapter_gate {gate:g}): the base model answers",
                gated=art.id,
            )
        rival = self._rival(keys, q, near, user)
        if rival is not None:
            return SlotChoice(
                "adapter",
                None,
                f"this query is about {rival[0].id!r} ({rival[1]:.2f} near), which {user}'s "
                f"adapter {art.id!r} does not hold ({about}): the base model answers",
                gated=art.id,
            )
        return SlotChoice("adapter", art.id, f"{why}; about this query ({about})")

    def relevance(self, art: Artifact, query: str) -> tuple[float, float]:
        """The query's cosine similarity (by the engine's embedder) to the nearest text the
        adapter ``art`` is about, and to the nearest general question of the default replay,
        which the adapter was trained to leave alone."""
        return self._similarities(self._gate_keys(art), self.mos.embedder.embed_query(query))

    def _similarities(self, keys: _GateKeys, q: np.ndarray) -> tuple[float, float]:
        from ..models.parametric import REPLAY_PROMPTS

        if self._general is None:
            self._general = self.mos.embedder.embed_documents(list(REPLAY_PROMPTS))
        near = float((keys.vectors @ q).max()) if len(keys.vectors) else -1.0
        return near, float((self._general @ q).max())

    def _gate_keys(self, art: Artifact) -> _GateKeys:
        """The adapter's memories and what they are about
        (:func:`~..models.parametric_data.about_texts`), embedded once: an artifact's sources
        never change."""
        from ..models.parametric_data import about_texts, facts

        with self._lock:
            keys = self._about.get(art.id)
            if keys is not None:
                self._about.move_to_end(art.id)
                return keys
        owner = str(art.metadata.get("user") or art.name.split("/")[1])
        items = self.mos.store.get_items(list(art.sources))
        name = self.mos.get_user(owner).name or owner  # as the promotion named them
        keys = _GateKeys(
            frozenset(art.sources),
            tuple(facts(items, name)),
            name,
            self.mos.embedder.embed_documents(about_texts(items, name)),
        )
        with self._lock:
            self._about[art.id] = keys
            while len(self._about) > _GATED_ADAPTERS:
                self._about.popitem(last=False)
        return keys

    def _rival(
        self, keys: _GateKeys, q: np.ndarray, near: float, user: str
    ) -> tuple[MemoryItem, float] | None:
        """Another memory of ``user``'s that the query is nearer to than to the adapter's
        (``near``), compared the same way (its :func:`~..models.parametric_data.about_texts`),
        among the ``_RIVALS`` memories nearest the query: asked for the cat's name, an adapter
        that holds the dog would answer with the dog's. A memory that restates one the
        adapter holds is no rival."""
        from ..models.parametric_data import about_texts, restates

        mos = self.mos
        where = mos._where(None, None, None, None, None, None, SERVED_STATES, live_only=True)
        scope = mos.gov.readable(mos.gov.user(user))
        hits = mos.store.search(SearchRequest(scope, _RIVALS, None, q, where, "dense"))
        best: tuple[MemoryItem, float] | None = None
        for hit in hits:
            item = hit.item
            if item.id in keys.sources or restates(item, keys.facts, keys.name):
                continue
            with self._lock:
                vectors = self._rivals.get((item.id, item.version))
                if vectors is not None:
                    self._rivals.move_to_end((item.id, item.version))
            if vectors is None:
                vectors = mos.embedder.embed_documents(about_texts([item], keys.name))
                with self._lock:
                    self._rivals[(item.id, item.version)] = vectors
                    while len(self._rivals) > _RIVAL_KEYS:
                        self._rivals.popitem(last=False)
            score = float((vectors @ q).max()) if len(vectors) else -1.0
            if score >= near and (best is None or score > best[1]):
                best = (item, score)
        return best

    def load(
        self, cube: str, artifact_id: str, *, user: str
    ) -> tuple[LoRAAdapter, tuple[MemoryItem, ...]]:
        """The chosen adapter installed on the local model, and the memories it holds."""
        art = next((a for a in self._artifacts(cube) if a.id == artifact_id), None)
        items = self.mos.scheduler.sources(art) if art is not None else None
        if art is None or items is None:
            raise InvalidInput(f"adapter {artifact_id!r} went stale or left while planning; retry")
        return self._load(art, user, self.mos.model), items

    def ensure_installed(self, adapter: LoRAAdapter) -> None:
        """Re-install a planned adapter that was unloaded before its generation started."""
        with self._lock:
            if adapter.id in self._loaded:
                self._loaded.move_to_end(adapter.id)
                return
        self._track(adapter, str(adapter.metadata.get("user", "")), self.mos.model)

    def _load(self, art: Artifact, user: str, model: LocalModel) -> LoRAAdapter:
        from ..models import parametric

        with self._lock:
            if art.id in self._loaded:
                self._loaded.move_to_end(art.id)
                return self._loaded[art.id][1]
        full = self.mos.store.get_artifact(art.id)
        if full is None:
            raise InvalidInput(f"adapter {art.id!r} disappeared while loading; retry")
        adapter = parametric.from_artifact(full, model)
        self.mos.store.touch_artifact(art.id, self.mos.clock())
        self._track(adapter, user, model)
        return adapter

    def _track(self, adapter: LoRAAdapter, user: str, model: LocalModel) -> None:
        """Install ``adapter`` and keep at most ``_LOADED_ADAPTERS``, least recently used out."""
        from ..models import parametric

        parametric.install(model, adapter)
        with self._lock:
            self._loaded[adapter.id] = (user, adapter)
            evicted = []
            while len(self._loaded) > _LOADED_ADAPTERS:
                evicted.append(self._loaded.popitem(last=False)[0])
        for old in evicted:
            parametric.uninstall(model, old)

    def loaded(self) -> list[str]:
        """Ids of the adapters installed on the local model, least recently used first."""
        with self._lock:
            return list(self._loaded)

    def unload(self, adapter_id: str | None = None) -> int:
        """Uninstall one adapter (or all); returns how many were installed."""
        from ..models import parametric

        with self._lock:
            ids = [adapter_id] if adapter_id is not None else list(self._loaded)
            ids = [i for i in ids if self._loaded.pop(i, None) is not None]
        if ids:
            model = self.mos.model
            for i in ids:
                parametric.uninstall(model, i)
        return len(ids)

    def forget(self, user: str) -> int:
        """Unload every adapter of ``user`` (their artifacts are purged by the store)."""
        with self._lock:
            ids = [i for i, (owner, _) in self._loaded.items() if owner == user]
        return sum(self.unload(i) for i in ids)

    def _artifacts(self, cube: str) -> list[Artifact]:
        from ..models.parametric import KIND

        return self.mos.store.list_artifacts(cube, KIND, with_payload=False)
