"""MemOSStore against LangGraph's InMemoryStore: the same random operations, the same answers.

Both stores embed with the same real model, so even search scores must agree. Where
InMemoryStore's answer depends on its dict layout (the order of items from *different*
namespaces in a search without a query) the test checks what the contract fixes: the same
items, each namespace's items in the same order, and the exact page when one namespace holds
all matches.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
from langgraph.store.base import (
    GetOp,
    ListNamespacesOp,
    MatchCondition,
    Op,
    PutOp,
    SearchItem,
    SearchOp,
)
from langgraph.store.memory import InMemoryStore

from memos_integrations.langchain import MemOSEmbeddings, MemOSStore

NAMESPACES = [
    ("users", "u1"),
    ("users", "u1", "prefs"),
    ("users", "u2"),
    ("users", "u2", "notes"),
    ("docs",),
    ("docs", "v1"),
    ("team", "t1", "shared"),
]
PREFIXES = [(), ("users",), ("users", "u1"), ("users", "u2", "notes"), ("docs",), ("team",)]
INDEXED_KEYS = ["k0", "k1", "k2", "k3", "k4"]
UNINDEXED_KEYS = ["n0", "n1"]  # always put with index=False
SENTENCES = [
    "likes hiking in the mountains",
    "prefers green tea over coffee",
    "is allergic to peanuts",
    "works as a nurse in Lisbon",
    "plays the cello on weekends",
    "is learning Japanese",
    "has a dog called Pixel",
    "drives an old blue van",
    "reads science fiction novels",
    "moved to Porto last spring",
]
QUERIES = ["what pets are there", "favourite drink", "music hobby", "where does someone live"]
FILTERS: list[dict[str, Any] | None] = [
    None,
    {"tag": "a"},
    {"tag": {"$ne": "a"}},
    {"n": {"$gt": 2}},
    {"n": {"$gte": 2}},
    {"n": {"$gte": 1, "$lt": 4}},
    {"n": {"$lt": 3}},
    {"n": {"$lte": 3}},
    {"n": 3},
    {"nested": {"x": 1}},
    {"tag": {"$eq": "b"}, "n": {"$ne": 3}},
]


class Reference(InMemoryStore):
    """InMemoryStore where a namespace exists while it holds items.

    InMemoryStore keeps its items in a defaultdict, so a read of an unknown namespace (or
    deleting its last item) leaves an empty namespace that ``list_namespaces`` reports; stores
    over a database (Postgres, SQLite, MemOS) have no such thing.
    """

    def batch(self, ops):  # type: ignore[no-untyped-def]
        out = super().batch(ops)
        for ns in [ns for ns, items in self._data.items() if not items]:
            del self._data[ns]
        return out

    async def abatch(self, ops):  # type: ignore[no-untyped-def]
        return self.batch(ops)


class Memo:
    """The real bundled model, memoised per text: both stores get identical vectors, and the
    texts of a whole run are embedded up front in one batch (one text at a time is slow)."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.model_id, self.dim = inner, inner.model_id, inner.dim
        self.cache: dict[str, np.ndarray] = {}

    def warm(self, texts: Sequence[str]) -> None:
        missing = [t for t in dict.fromkeys(texts) if t not in self.cache]
        if missing:
            self.cache.update(zip(missing, self.inner.embed_documents(missing), strict=True))

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        self.warm(texts)
        return np.stack([self.cache[t] for t in texts]) if texts else np.zeros((0, self.dim))

    def embed_query(self, text: str) -> np.ndarray:
        return self.embed_documents([text])[0]


def _texts(batches: Sequence[Sequence[Op]]) -> list[str]:
    out = list(QUERIES)
    for batch in batches:
        out += [op.value["text"] for op in batch if isinstance(op, PutOp) and op.value]
    return out


class Ops:
    """A seeded generator of store operations."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)

    def value(self) -> dict[str, Any]:
        r = self.rng
        return {
            # 30 texts in all: items share texts, so scores tie too
            "text": f"{r.choice(['Alice', 'Bob', 'Carol'])} {r.choice(SENTENCES)}",
            "n": r.randrange(6) if r.random() < 0.8 else r.randrange(6) + 0.5,
            "tag": r.choice(["a", "b"]),
            "nested": {"x": r.choice([1, 2])},
        }

    def put(self) -> PutOp:
        r = self.rng
        ns = r.choice(NAMESPACES)
        if r.random() < 0.2:
            return PutOp(ns, r.choice(UNINDEXED_KEYS), self.value(), index=False)
        index = ["text"] if r.random() < 0.2 else None
        return PutOp(ns, r.choice(INDEXED_KEYS), self.value(), index=index)

    def delete(self) -> PutOp:
        r = self.rng
        return PutOp(r.choice(NAMESPACES), r.choice(INDEXED_KEYS + UNINDEXED_KEYS), None)

    def get(self) -> GetOp:
        r = self.rng
        return GetOp(r.choice(NAMESPACES), r.choice(INDEXED_KEYS + UNINDEXED_KEYS))

    def search(self) -> SearchOp:
        r = self.rng
        return SearchOp(
            r.choice(PREFIXES + NAMESPACES),
            filter=r.choice(FILTERS),
            limit=r.choice([1, 2, 3, 5, 10, 50]),
            offset=r.choice([0, 0, 0, 1, 3]),
            query=r.choice(QUERIES) if r.random() < 0.5 else None,
        )

    def list_namespaces(self) -> ListNamespacesOp:
        r = self.rng
        conditions = r.choice(
            [
                None,
                (MatchCondition("prefix", ("users",)),),
                (MatchCondition("prefix", ("users", "*", "notes")),),
                (MatchCondition("suffix", ("prefs",)),),
                (MatchCondition("suffix", ("*",)), MatchCondition("prefix", ("docs",))),
            ]
        )
        return ListNamespacesOp(
            match_conditions=conditions,
            max_depth=r.choice([None, None, 1, 2]),
            limit=r.choice([100, 2]),
            offset=r.choice([0, 0, 1]),
        )

    def op(self) -> Op:
        kind = self.rng.choices(
            ["put", "delete", "get", "search", "list"], weights=[30, 8, 15, 42, 5]
        )[0]
        return {
            "put": self.put,
            "delete": self.delete,
            "get": self.get,
            "search": self.search,
            "list": self.list_namespaces,
        }[kind]()

    def batch(self) -> list[Op]:
        """Usually one op; sometimes several, to check reads see the state before the batch."""
        if self.rng.random() < 0.85:
            return [self.op()]
        first, second = self.put(), self.put()
        while second.value["text"] == first.value["text"]:  # type: ignore[index]
            # InMemoryStore fails on one text put twice in a batch (it embeds texts once)
            second = self.put()
        return [first, GetOp(first.namespace, first.key), self.search(), second, self.get()]


def _ident(item: Any) -> tuple[tuple[str, ...], str]:
    return tuple(item.namespace), item.key


def _plain(item: Any) -> tuple[tuple[str, ...], str, dict[str, Any]]:
    return tuple(item.namespace), item.key, item.value


def _check_unranked(ours: Sequence[Any], theirs: Sequence[Any], full: Sequence[Any]) -> None:
    """Same page size, items from the full match list, each namespace in the same order."""
    assert len(ours) == len(theirs)
    everything = [_plain(it) for it in full]
    assert all(_plain(it) in everything for it in ours)
    assert len({_ident(it) for it in ours}) == len(ours)
    position = {(ns, key): i for i, (ns, key, _) in enumerate(everything)}
    for ns in {tuple(it.namespace) for it in ours}:
        mine = [position[_ident(it)] for it in ours if tuple(it.namespace) == ns]
        assert mine == sorted(mine)
    if len({ns for ns, _, _ in everything}) <= 1:
        assert [_plain(it) for it in ours] == [_plain(it) for it in theirs]


def _check_ranked(
    ours: Sequence[SearchItem], theirs: Sequence[SearchItem], full: Sequence[SearchItem]
) -> None:
    """The same scores in the same order; each item one that has that score (ties may swap)."""
    assert len(ours) == len(theirs)
    assert len({_ident(it) for it in ours}) == len(ours)
    for mine, ref in zip(ours, theirs, strict=True):
        assert mine.score == pytest.approx(ref.score, abs=1e-5)
        peers = [_plain(it) for it in full if it.score == pytest.approx(ref.score, abs=1e-5)]
        assert _plain(mine) in peers


def _compare(op: Op, ours: Any, theirs: Any, ref: Reference) -> None:
    if isinstance(op, GetOp):
        assert (ours is None) == (theirs is None)
        if ours is not None:
            assert _plain(ours) == _plain(theirs)
            assert type(ours).__name__ == "Item"
    elif isinstance(op, ListNamespacesOp):
        assert ours == theirs
    elif isinstance(op, SearchOp):
        full_op = op._replace(limit=10_000, offset=0, query=None)
        [full] = ref.batch([full_op])
        if op.query:
            ranked = [it for it in theirs if it.score is not None]
            [everything] = ref.batch([op._replace(limit=10_000, offset=0)])
            _check_ranked(ours[: len(ranked)], ranked, everything)
            unindexed = [it for it in full if it.key in UNINDEXED_KEYS]
            _check_unranked(ours[len(ranked) :], theirs[len(ranked) :], unindexed)
        else:
            _check_unranked(ours, theirs, full)
    else:
        assert ours is None and theirs is None


@pytest.fixture
def memo(embedder) -> Memo:
    return Memo(embedder)


@pytest.fixture
def stores(open_mos, memo):
    mos = open_mos(embedder=memo)
    ours = MemOSStore(mos, user_label=1, index={"fields": ["text"]})
    ref = Reference(index={"dims": 384, "embed": MemOSEmbeddings(memo), "fields": ["text"]})
    return ours, ref


def test_random_operations_match_inmemorystore(stores, memo) -> None:
    ours, ref = stores
    gen = Ops(seed=20240601)
    batches: list[list[Op]] = []
    while sum(map(len, batches)) < 300:
        batches.append(gen.batch())
    memo.warm(_texts(batches))
    counts = {"ranked": 0, "hits": 0, "gets_found": 0, "filtered": 0}
    for batch in batches:
        # the reference's full listings below are reads of the state *after* the batch
        mine, theirs = ours.batch(batch), ref.batch(batch)
        for op, a, b in zip(batch, mine, theirs, strict=True):
            if len(batch) > 1 and isinstance(op, SearchOp):
                assert len(a) == len(b)  # read before the batch's writes: compared below
                continue
            _compare(op, a, b, ref)
            if isinstance(op, SearchOp) and op.query:
                counts["ranked"] += 1
                counts["hits"] += len(a)
            if isinstance(op, SearchOp) and op.filter and a:
                counts["filtered"] += 1
            if isinstance(op, GetOp) and a is not None:
                counts["gets_found"] += 1
    # the sequence exercised what it claims to
    assert counts["ranked"] >= 20 and counts["hits"] >= 40
    assert counts["gets_found"] >= 30 and counts["filtered"] >= 25
    final = ListNamespacesOp(limit=1000)
    assert ours.batch([final]) == ref.batch([final])
    # owners: ("users", "u1") -> u1 ... ("docs",) -> the default user
    assert {"u1", "u2", "v1", "t1", "langgraph"} <= {u.id for u in ours.mos.list_users()}


def test_async_batches_match_inmemorystore(stores, memo) -> None:
    ours, ref = stores
    gen = Ops(seed=7)
    batches = [[gen.op()] for _ in range(60)]
    memo.warm(_texts(batches))

    async def run() -> None:
        for batch in batches:
            mine, theirs = await ours.abatch(batch), await ref.abatch(batch)
            _compare(batch[0], mine[0], theirs[0], ref)

    asyncio.run(run())
