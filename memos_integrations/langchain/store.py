"""``MemOSStore``: MemOS as a LangGraph ``BaseStore`` (the long-term memory of LangGraph agents).

Namespaces map onto MemOS users and cubes (see :class:`MemOSStore` and docs/langchain.md);
each store item is one keyed memory of kind ``store`` (layout in ``_store_values``), so it is
versioned, audited, searchable by the middleware and tools, and erased by ``forget_user``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from langgraph.store.base import (
    BaseStore,
    GetOp,
    IndexConfig,
    Item,
    ListNamespacesOp,
    MatchCondition,
    Op,
    PutOp,
    Result,
    SearchItem,
    SearchOp,
    TTLConfig,
    validate_op_namespace,
)

from ..core.engine import MAX_K, MemOS
from ..core.errors import Conflict, InvalidInput, NotFound
from ..core.items import MemoryItem, utcnow
from ..core.lifecycle import SERVED_STATES
from . import _store_values as sv
from ._listing import by_keys, list_all, pages
from ._scope import user_cube

DEFAULT_USER = "langgraph"
# A read refreshes an item's TTL only once the refresh would extend it by more than this share
# of the TTL: a burst of reads then costs one write, and an item still lives >= 90% of its
# TTL after its last read.
_REFRESH_SHARE = 0.1


@dataclass(frozen=True)
class _Scope:
    """Where a read looks: one cube (or every cube, for the root principal), acting as whom."""

    actor: str | None
    cube: str | None


class MemOSStore(BaseStore):
    """A LangGraph store whose items are MemOS memories.

    Namespace mapping (documented in docs/langchain.md):

    - ``MemOSStore(mos)``: every namespace lives in the cube of the user ``"langgraph"``
      (created on first use); the store acts as the application (the root principal).
    - ``MemOSStore(mos, user="alice")``: every namespace lives in alice's cube and every
      operation acts as alice (the engine's access checks apply).
    - ``MemOSStore(mos, user_label=1)``: the namespace label at that position names the user,
      so ``("memories", "alice")`` lives in alice's cube and ``("memories", "bob")`` in bob's;
      namespaces too short to have that label go to ``user`` (default ``"langgraph"``). Users
      and their cubes are created on first write unless ``create_missing=False``.

    ``cube`` picks the cube by id or template (``"{user}-langgraph"``); by default a user's
    only cube, or a new cube named after the user. ``index`` takes LangGraph's ``IndexConfig``:
    ``fields`` (default ``["$"]``, the whole value) say what is embedded; the embedding model
    is always the engine's (``dims``/``embed``, if given, must agree with it). Semantic search
    is always on. ``ttl`` takes LangGraph's ``TTLConfig`` (minutes); expired items are never
    returned.
    """

    supports_ttl = True

    def __init__(
        self,
        mos: MemOS,
        *,
        user: str | None = None,
        user_label: int | None = None,
        cube: str | None = None,
        index: IndexConfig | None = None,
        ttl: TTLConfig | None = None,
        create_missing: bool = True,
    ) -> None:
        if user_label is not None and (
            isinstance(user_label, bool) or not isinstance(user_label, int)
        ):
            raise InvalidInput(f"user_label must be a namespace position (int), got {user_label!r}")
        self.mos = mos
        self.user = user
        self.user_label = user_label
        self.cube = cube
        self.create_missing = create_missing
        self.index_config = _index_config(mos, index)
        self.ttl_config = ttl

    # ------------------------------------------------------------------ routing

    def _owner(self, namespace: Sequence[str]) -> str:
        """The MemOS user a namespace belongs to."""
        label = self.user_label
        if label is not None and -len(namespace) <= label < len(namespace):
            return namespace[label]
        return self.user or DEFAULT_USER

    def _actor(self, owner: str) -> str:
        """Who writes: a bound store acts as its user; an application store as the owner."""
        return self.user if self.user is not None and self.user_label is None else owner

    def _read_scope(self, namespace: Sequence[str], *, whole: bool = False) -> _Scope | None:
        """Where to read for a namespace (``whole``) or a namespace prefix; ``None`` when
        nothing can be stored there yet."""
        label = self.user_label
        bound = self.user is not None and label is None
        if label is not None and not whole and not 0 <= label < len(namespace):
            # a longer namespace may name any user: every cube, as the application
            return _Scope(None, None)
        owner = self._owner(namespace)
        try:
            cube = user_cube(self.mos, owner, self.cube, create=False)
        except NotFound:
            return None
        return _Scope(owner if bound else None, cube)

    # ------------------------------------------------------------------ batch

    def batch(self, ops: Iterable[Op]) -> list[Result]:
        """Run ops like LangGraph's stores: reads see the state before this batch's writes,
        and of several writes to one key the last wins."""
        ops = list(ops)
        writes: dict[tuple[tuple[str, ...], str], PutOp] = {}
        results: list[Result] = [None] * len(ops)
        for op in ops:
            validate_op_namespace(op)
            if isinstance(op, PutOp):
                writes[(tuple(op.namespace), op.key)] = op
            elif isinstance(op, SearchOp):
                sv.check_filter(op.filter)
            elif not isinstance(op, GetOp | ListNamespacesOp):
                raise InvalidInput(f"unknown store operation {type(op).__name__}")
        drafts = {k: self._draft(op) for k, op in writes.items() if op.value is not None}
        for i, op in enumerate(ops):
            if isinstance(op, GetOp):
                results[i] = self._get(op)
            elif isinstance(op, SearchOp):
                results[i] = self._search(op)
            elif isinstance(op, ListNamespacesOp):
                results[i] = self._list_namespaces(op)
        if writes:
            self._write(list(writes.values()), drafts)
        return results

    async def abatch(self, ops: Iterable[Op]) -> list[Result]:
        # The engine is synchronous and thread-safe: run the batch off the event loop.
        return await asyncio.to_thread(self.batch, list(ops))

    # ------------------------------------------------------------------ writes

    def _draft(self, op: PutOp) -> dict[str, Any]:
        value = sv.check_value(op.value)
        as_json = sv.json_text(value)  # also rejects what JSON cannot hold, before any write
        if op.index is False:
            texts: list[str] = []
        else:
            fields = self.index_config["fields"] if op.index is None else list(op.index)
            texts = sv.texts_to_embed(value, fields)
        text = "\n".join(texts)
        indexed = bool(text.strip())  # blank text has nothing to embed: keep it unscored
        if not indexed:
            text = as_json
        draft: dict[str, Any] = {
            "text": text,
            "key": sv.item_key(op.namespace, op.key),
            "kind": sv.STORE_KIND,
            "metadata": sv.record(op.namespace, op.key, value, indexed, op.ttl),
        }
        if op.ttl is not None:
            draft["ttl"] = _ttl_seconds(op.ttl)
        return draft

    def _write(self, ops: list[PutOp], drafts: Mapping[Any, dict[str, Any]]) -> None:
        by_owner: dict[str, list[PutOp]] = {}
        for op in ops:
            by_owner.setdefault(self._owner(op.namespace), []).append(op)
        for owner, owned in by_owner.items():
            actor = self._actor(owner)
            deletes = [sv.item_key(op.namespace, op.key) for op in owned if op.value is None]
            puts = [drafts[(tuple(op.namespace), op.key)] for op in owned if op.value is not None]
            if deletes:
                try:
                    cube = user_cube(self.mos, owner, self.cube, create=False)
                except NotFound:
                    cube = None  # nothing was ever stored for this owner: nothing to delete
                if cube is not None:
                    found = by_keys(self.mos, deletes, user=actor, cube=cube, kinds=[sv.STORE_KIND])
                    for item in found:
                        self.mos.delete(item.id, user=actor, reason="store delete")
            if puts:
                cube = user_cube(self.mos, owner, self.cube, create=self.create_missing)
                items = self.mos.add(puts, user=actor, cube=cube)
                # A re-put of unchanged content is a no-op in the engine; its TTL still restarts.
                self._refresh([it for it in items if sv.ttl_minutes(it.metadata)], actor)

    def _refresh(self, items: Sequence[MemoryItem], actor: str | None) -> None:
        now = utcnow()
        for item in items:
            minutes = sv.ttl_minutes(item.metadata)
            if minutes is None:
                continue
            ttl = timedelta(minutes=minutes)
            if item.expires_at is not None and now + ttl - item.expires_at <= ttl * _REFRESH_SHARE:
                continue
            # Conflict: written concurrently, and that writer set a fresh TTL itself.
            with contextlib.suppress(Conflict):
                self.mos.update(item.id, user=actor, ttl=ttl, note="ttl refresh")

    # ------------------------------------------------------------------ reads

    def _live_filter(self, prefix: Sequence[str], extra: Mapping[str, Any]) -> dict[str, Any]:
        now = utcnow().isoformat()
        return {
            **sv.prefix_filter(prefix),
            **extra,
            "$or": [{"expires_at": {"$exists": False}}, {"expires_at": {"$gt": now}}],
        }

    @staticmethod
    def _list_args(scope: _Scope, where: Mapping[str, Any]) -> dict[str, Any]:
        return {"user": scope.actor, "cube": scope.cube, "filter": where, "states": SERVED_STATES}

    def _get(self, op: GetOp) -> Item | None:
        scope = self._read_scope(op.namespace, whole=True)
        if scope is None:
            return None
        where = self._live_filter(op.namespace, {"key": sv.item_key(op.namespace, op.key)})
        found = self.mos.list(**self._list_args(scope, where), limit=1)
        if not found:
            return None
        if op.refresh_ttl:
            self._refresh(found, scope.actor)
        return _item(found[0])

    def _search(self, op: SearchOp) -> list[SearchItem]:
        if op.limit < 0 or op.offset < 0:
            raise InvalidInput("search limit and offset must not be negative")
        scope = self._read_scope(op.namespace_prefix)
        if scope is None or op.limit == 0:
            return []
        where = self._live_filter(op.namespace_prefix, sv.pushdown(op.filter))
        if op.query:
            hits = self._ranked(op, scope, where)
            scored = hits[op.offset : op.offset + op.limit]
            unscored: list[tuple[MemoryItem, float | None]] = []
            if len(scored) < op.limit:  # as LangGraph's stores: unindexed items fill up
                unindexed = {**where, f"metadata.{sv.RECORD}.indexed": False}
                unscored = [
                    (it, None)
                    for it in self._scan(scope, unindexed, op.filter, 0, op.limit - len(scored))
                ]
            found = scored + unscored
        else:
            found = [(it, None) for it in self._scan(scope, where, op.filter, op.offset, op.limit)]
        if op.refresh_ttl:
            self._refresh([it for it, _ in found], scope.actor)
        return [_search_item(it, score) for it, score in found]

    def _ranked(
        self, op: SearchOp, scope: _Scope, where: Mapping[str, Any]
    ) -> list[tuple[MemoryItem, float | None]]:
        """Indexed items by cosine similarity, best first, up to ``offset + limit`` of them."""
        want = op.offset + op.limit
        if want > MAX_K:
            raise InvalidInput(
                f"semantic search returns at most {MAX_K} results (offset + limit); "
                "page without a query for more"
            )
        where = {**where, f"metadata.{sv.RECORD}.indexed": True}
        k = min(max(want, 10), MAX_K)
        while True:
            hits = self.mos.search(
                op.query,  # type: ignore[arg-type]
                user=scope.actor,
                k=k,
                cubes=None if scope.cube is None else [scope.cube],
                filter=where,
                mode="dense",
            )
            kept = [
                (h.item, h.dense_score)
                for h in hits
                if sv.matches(sv.read_record(h.item.metadata)[2], op.filter)
            ]
            # Python decides the filter; widen until enough pass or nothing more is there.
            if len(kept) >= want or len(hits) < k or k == MAX_K:
                return kept[:want]
            k = min(k * 4, MAX_K)

    def _scan(
        self,
        scope: _Scope,
        where: Mapping[str, Any],
        spec: Mapping[str, Any] | None,
        offset: int,
        limit: int,
    ) -> list[MemoryItem]:
        """Matching items in creation order: ``limit`` of them after skipping ``offset``."""
        out: list[MemoryItem] = []
        skipped = 0
        for page in pages(self.mos, **self._list_args(scope, where)):
            for item in page:
                if not sv.matches(sv.read_record(item.metadata)[2], spec):
                    continue
                if skipped < offset:
                    skipped += 1
                    continue
                out.append(item)
                if len(out) == limit:
                    return out
        return out

    def _list_namespaces(self, op: ListNamespacesOp) -> list[tuple[str, ...]]:
        conditions = op.match_conditions or ()
        fixed = _fixed_prefix(conditions)
        scope = self._read_scope(fixed)
        if scope is None:
            return []
        where = self._live_filter(fixed, {})
        seen = {
            sv.read_record(it.metadata)[0]
            for it in list_all(self.mos, **self._list_args(scope, where))
        }
        found = [ns for ns in seen if all(_matches_condition(c, ns) for c in conditions)]
        if op.max_depth is not None:
            found = list({ns[: op.max_depth] for ns in found})
        return sorted(found)[op.offset : op.offset + op.limit]

    def __repr__(self) -> str:
        where = self.mos.store.url
        return f"MemOSStore({where!r}, user={self.user!r}, user_label={self.user_label!r})"


# ---------------------------------------------------------------------------- helpers


def _index_config(mos: MemOS, index: IndexConfig | None) -> dict[str, Any]:
    index = dict(index or {})
    unknown = set(index) - {"dims", "embed", "fields"}
    if unknown:
        raise InvalidInput(f"unknown IndexConfig keys: {', '.join(sorted(unknown))}")
    embed = index.get("embed")
    if embed is not None and getattr(embed, "model_id", None) != mos.embedder.model_id:
        raise InvalidInput(
            "MemOSStore embeds with its MemOS engine's model; open the engine with that "
            "embedder instead (MemOS.open(..., embedder=...)) and leave IndexConfig.embed out"
        )
    dims = index.get("dims")
    if dims is not None and dims != mos.embedder.dim:
        raise InvalidInput(
            f"IndexConfig dims={dims}, but the engine's model {mos.embedder.model_id!r} "
            f"makes {mos.embedder.dim}-dimensional vectors"
        )
    fields = index.get("fields") or ["$"]
    if isinstance(fields, str) or not all(isinstance(f, str) and f for f in fields):
        raise InvalidInput("IndexConfig fields must be a list of JSON paths such as ['text']")
    return {"dims": mos.embedder.dim, "fields": list(fields)}


def _ttl_seconds(minutes: float) -> float:
    if isinstance(minutes, bool) or not isinstance(minutes, int | float) or minutes <= 0:
        raise InvalidInput(f"ttl is in minutes and must be a positive number, got {minutes!r}")
    return float(minutes) * 60


def _item(item: MemoryItem) -> Item:
    namespace, key, value = sv.read_record(item.metadata)
    return Item(
        namespace=namespace,
        key=key,
        value=value,
        created_at=item.created_at,
        updated_at=item.updated_at,
    )


def _search_item(item: MemoryItem, score: float | None) -> SearchItem:
    namespace, key, value = sv.read_record(item.metadata)
    return SearchItem(namespace, key, value, item.created_at, item.updated_at, score)


def _fixed_prefix(conditions: Sequence[MatchCondition]) -> tuple[str, ...]:
    """The leading labels every listed namespace must have (no wildcards), for SQL."""
    best: tuple[str, ...] = ()
    for c in conditions:
        if c.match_type != "prefix":
            continue
        fixed: list[str] = []
        for label in c.path:
            if label == "*":
                break
            fixed.append(label)
        if len(fixed) > len(best):
            best = tuple(fixed)
    return best


def _matches_condition(condition: MatchCondition, namespace: tuple[str, ...]) -> bool:
    path = tuple(condition.path)
    if len(namespace) < len(path):
        return False
    if condition.match_type == "prefix":
        pairs = zip(namespace, path, strict=False)
    elif condition.match_type == "suffix":
        pairs = zip(reversed(namespace), reversed(path), strict=False)
    else:
        raise InvalidInput(f"unknown namespace match type {condition.match_type!r}")
    return all(p == "*" or n == p for n, p in pairs)
