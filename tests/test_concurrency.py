"""Many threads, one engine; two engines, one store: nothing lost, nothing doubled.

Real stores (SQLite files, PostgreSQL schemas) and the real bundled MiniLM. Each ``add``
call stores one memory. So that 2,000 single-memory adds don't pay 2,000 separate forward
passes, the vectors of the test texts come from the real model in one batch up front
(:class:`Prewarmed`); queries and any other text still go through the model, concurrently
with the writers.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pytest
from _backends import BACKENDS, assert_intact, is_pg, rows, vector_table

from memos_integrations import MemOS

STORES = BACKENDS  # every test here runs on both stores (see conftest.py)

WRITERS = 4
PER_WRITER = 500
SAME_TEXTS = 200

_COLORS = ("amber", "blue", "crimson", "green", "ivory", "olive", "silver", "violet")
_ANIMALS = ("badger", "crane", "falcon", "gecko", "heron", "otter", "panda", "walrus")
_PLACES = ("attic", "bakery", "canal", "garden", "harbor", "library", "market", "station")


def _text(tag: str, n: int) -> str:
    rnd = random.Random(f"{tag}-{n}")
    return f"{tag} {n} {rnd.choice(_COLORS)} {rnd.choice(_ANIMALS)} {rnd.choice(_PLACES)}"


# Short, distinct texts (about 8 tokens each); the later scenarios reuse some in new stores.
WRITER_TEXTS = [[_text(f"w{w}", n) for n in range(PER_WRITER)] for w in range(WRITERS)]
RACED_TEXTS = WRITER_TEXTS[0][:SAME_TEXTS]
SYNC_TEXTS = WRITER_TEXTS[1][:100]


class Prewarmed:
    """The real bundled model; vectors of known texts are computed once, in one batch."""

    def __init__(self, real: Any, texts: Sequence[str]) -> None:
        self.real = real
        self.model_id = real.model_id
        self.dim = real.dim
        self._vectors = dict(zip(texts, real.embed_documents(list(texts)), strict=True))
        self._lock = threading.Lock()
        self.misses = 0

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        missing = [t for t in texts if t not in self._vectors]
        if missing:
            with self._lock:
                self.misses += len(missing)
            fresh = dict(zip(missing, self.real.embed_documents(missing), strict=True))
            return np.stack([self._vectors.get(t, fresh.get(t)) for t in texts])
        return np.stack([self._vectors[t] for t in texts])

    def embed_query(self, text: str) -> np.ndarray:
        return self.real.embed_query(text)


@pytest.fixture(scope="module")
def warm(embedder) -> Prewarmed:
    return Prewarmed(embedder, [t for ts in WRITER_TEXTS for t in ts])


def _setup(m: MemOS) -> None:
    m.create_user("alice")
    m.create_user("bob")
    m.create_cube("shared", owner="alice")
    for w in range(WRITERS):
        m.create_cube(f"side-{w}", owner="alice")
    m.create_cube("bob-personal", owner="bob")


def _run(threads: list[threading.Thread]) -> None:
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
        assert not t.is_alive(), "a worker thread hung"


def _guard(errors: list[BaseException], fn: Callable[[], None]) -> Callable[[], None]:
    def run() -> None:
        try:
            fn()
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    return run


# ---------------------------------------------------------------------------- one engine


def test_parallel_single_adds_lose_nothing_while_readers_run(open_mos, warm: Prewarmed) -> None:
    m = open_mos(embedder=warm)
    _setup(m)
    m.add("Bob's bicycle is red", user="bob")
    returned: list[list[tuple[str, str, str]]] = [[] for _ in range(WRITERS)]
    errors: list[BaseException] = []
    writing = threading.Event()
    writing.set()
    start = threading.Barrier(WRITERS + 2)
    reads = {"search": 0, "list": 0}

    def writer(w: int) -> None:
        start.wait()
        for n, text in enumerate(WRITER_TEXTS[w]):
            cube = f"side-{w}" if n % 5 == 0 else "shared"  # 100 aside, 400 into the shared cube
            items = m.add(text, user="alice", cube=cube)
            assert len(items) == 1 and items[0].text == text and items[0].cube_id == cube
            returned[w].append((items[0].id, text, cube))

    def searcher() -> None:
        start.wait()
        while writing.is_set():
            hits = m.search("blue heron canal", user="alice", k=10, filter={"kind": "fact"})
            assert all(h.item.cube_id != "bob-personal" for h in hits)
            bob = m.search("bicycle colour", user="bob", k=5)
            assert [h.text for h in bob] == ["Bob's bicycle is red"]
            reads["search"] += 1
            time.sleep(0.01)  # keep reading throughout without starving the writers

    def lister() -> None:
        start.wait()
        while writing.is_set():
            listed = m.list(user="alice", cube="shared", limit=50)
            for it in listed[:5]:
                assert m.get(it.id, user="alice").id == it.id
                assert m.history(it.id, user="alice")[0].version == 1
            m.count(user="alice")
            reads["list"] += 1
            time.sleep(0.01)

    writers = [
        threading.Thread(target=_guard(errors, lambda w=w: writer(w))) for w in range(WRITERS)
    ]
    readers = [
        threading.Thread(target=_guard(errors, searcher)),
        threading.Thread(target=_guard(errors, lister)),
    ]
    for t in readers:
        t.start()
    _run(writers)
    writing.clear()
    for t in readers:
        t.join(timeout=120)
    assert not errors, f"{len(errors)} thread errors, first: {errors[0]!r}"
    assert reads["search"] >= 1 and reads["list"] >= 1, reads

    # Nothing lost: every acknowledged id is there, with its text, in its cube.
    acked = [row for rows in returned for row in rows]
    assert len(acked) == WRITERS * PER_WRITER
    ids = [i for i, _, _ in acked]
    assert len(set(ids)) == len(ids)
    assert m.count(user="alice") == WRITERS * PER_WRITER
    assert m.count(cube="shared") == WRITERS * (PER_WRITER - PER_WRITER // 5)
    for w in range(WRITERS):
        assert m.count(cube=f"side-{w}") == PER_WRITER // 5
    for item_id, text, cube in acked:
        got = m.get(item_id)
        assert (got.text, got.cube_id, got.version) == (text, cube, 1)

    # Nothing doubled, and every side table agrees.
    total = WRITERS * PER_WRITER + 1
    assert rows(
        m, "SELECT count(*), count(DISTINCT content_hash), count(DISTINCT id) FROM items"
    ) == [(total, total, total)]
    assert rows(m, f"SELECT count(*) FROM {vector_table(m)}") == [(total,)]
    assert rows(m, "SELECT count(*) FROM item_versions") == [(total,)]
    if not is_pg(m):  # every vector reached the log the in-memory index replays
        assert rows(m, "SELECT count(DISTINCT item_id) FROM index_log WHERE op = 'add'") == [
            (total,)
        ]
    assert rows(m, "SELECT count(*) FROM transitions WHERE from_state IS NULL") == [(total,)]
    assert m.stats()["versions"] == total
    assert len(m.audit(actor="alice", action="add", limit=10_000)) == WRITERS * PER_WRITER
    assert_intact(m)

    # The vector index caught up with every concurrent write: exact texts come back first.
    sample = random.Random(7).sample(acked, 12)
    for item_id, text, cube in sample:
        hits = m.search(text, user="alice", k=1, cubes=[cube], mode="dense")
        assert [h.id for h in hits] == [item_id]


@pytest.mark.parametrize("engines", [1, 2], ids=["one-engine", "two-engines"])
def test_racing_identical_adds_store_each_text_once(
    open_mos, warm: Prewarmed, engines: int
) -> None:
    first = open_mos(embedder=warm)
    _setup(first)
    handles = [first] + [open_mos(embedder=warm) for _ in range(engines - 1)]
    got: list[dict[str, str]] = [{} for _ in range(WRITERS)]
    errors: list[BaseException] = []
    start = threading.Barrier(WRITERS)

    def racer(w: int) -> None:
        m = handles[w % engines]
        order = RACED_TEXTS[:]
        random.Random(w).shuffle(order)
        start.wait()
        for text in order:
            [item] = m.add(text, user="alice", cube="shared")
            got[w][text] = item.id

    _run([threading.Thread(target=_guard(errors, lambda w=w: racer(w))) for w in range(WRITERS)])
    assert not errors, f"{len(errors)} thread errors, first: {errors[0]!r}"
    for text in RACED_TEXTS:  # every racer was handed the one stored item
        assert len({got[w][text] for w in range(WRITERS)}) == 1, text
    assert first.count(cube="shared") == SAME_TEXTS
    assert len({got[0][t] for t in RACED_TEXTS}) == SAME_TEXTS
    assert first.stats()["versions"] == SAME_TEXTS
    adds = first.audit(action="add", limit=10_000)
    assert len(adds) == WRITERS * SAME_TEXTS
    assert sum(a.detail["created"] for a in adds) == SAME_TEXTS
    assert sum(a.detail["existing"] for a in adds) == (WRITERS - 1) * SAME_TEXTS
    assert rows(first, f"SELECT count(*) FROM {vector_table(first)}") == [(SAME_TEXTS,)]


# ---------------------------------------------------------------------------- two engines


def test_two_engines_on_one_store_see_each_others_writes(
    open_mos, embedder, warm: Prewarmed
) -> None:
    a = open_mos(embedder=embedder)
    b = open_mos(embedder=embedder)
    _setup(a)
    [seed] = a.add(
        "The lighthouse keeper paints the spiral stairs white", user="alice", cube="shared"
    )
    # b builds its index now; everything below reaches it only through index_log.
    assert [h.id for h in b.search("lighthouse stairs", user="alice", mode="dense")] == [seed.id]

    [from_a] = a.add(
        "Quantum annealing schedules for the shipping fleet", user="alice", cube="shared"
    )
    for mode in ("dense", "text", "hybrid"):
        assert (
            b.search("quantum annealing shipping", user="alice", k=1, mode=mode)[0].id == from_a.id
        ), mode
    [exact] = b.search(from_a.text, user="alice", k=1, mode="dense")
    assert exact.id == from_a.id and exact.dense_score > 0.99
    [from_b] = b.add(
        "Grandmother's recipe for plum dumplings with cinnamon", user="alice", cube="shared"
    )
    for mode in ("dense", "text", "hybrid"):
        assert a.search("plum dumplings recipe", user="alice", k=1, mode=mode)[0].id == from_b.id, (
            mode
        )

    # An update moves the vector in the other engine's index too.
    volcanic = "Volcanic soil makes the vineyard grapes taste smoky"
    a.update(from_a.id, text=volcanic)
    [hit] = b.search(volcanic, user="alice", k=1, mode="dense")
    assert hit.id == from_a.id and hit.text == volcanic
    assert hit.dense_score is not None and hit.dense_score > 0.99  # the new vector, not the old
    assert not [
        h
        for h in b.search("quantum annealing shipping", user="alice", k=5, mode="text")
        if h.id == from_a.id
    ]
    # A delete removes it there as well.
    b.delete(from_b.id)
    for mode in ("dense", "text", "hybrid"):
        assert from_b.id not in {
            h.id for h in a.search("plum dumplings recipe", user="alice", k=10, mode=mode)
        }, mode

    # Concurrent: one engine writes while the other searches, then sees all of it.
    errors: list[BaseException] = []
    done = threading.Event()
    searched = [0]
    a_warm = open_mos(embedder=warm)

    def write() -> None:
        try:
            for text in SYNC_TEXTS:
                a_warm.add(text, user="alice", cube=f"side-{len(text) % WRITERS}")
        finally:
            done.set()

    def read() -> None:
        while not done.is_set():
            b.search("otter harbor", user="alice", k=5)
            searched[0] += 1
            time.sleep(0.01)

    _run(
        [
            threading.Thread(target=_guard(errors, write)),
            threading.Thread(target=_guard(errors, read)),
        ]
    )
    assert not errors, f"{len(errors)} thread errors, first: {errors[0]!r}"
    assert searched[0] >= 1
    assert b.count() == a.count() == 3 + len(SYNC_TEXTS) - 1
    for text in random.Random(3).sample(SYNC_TEXTS, 8):
        [hit] = b.search(text, user="alice", k=1, mode="dense")
        assert hit.text == text
