"""Bad input is refused with the documented error class, a useful message, and no writes.

Every case runs against a real SQLite file and the real bundled embedder. After each
refused call the item count, the audit log, the version count and the raw row count of
every table must be exactly what they were before the call. SQL-looking strings are data:
they are stored and matched literally and leave the schema intact.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import pytest
from _backends import (
    BACKENDS,
    PG_TABLES,
    assert_intact,
    is_pg,
    rows,
    table_counts,
    table_names,
    vector_table,
)

from memos_integrations import MemOS
from memos_integrations.core.errors import (
    FilterError,
    InvalidInput,
    InvalidTransition,
    MemOSError,
    NotFound,
)
from memos_integrations.core.items import MAX_METADATA_BYTES, MAX_TAGS, MAX_TEXT_CHARS
from memos_integrations.core.lifecycle import STATES

SQL_STRINGS = ("'; DROP TABLE items; --", '" OR 1=1 --', "x') OR ('1'='1")
NAN, INF = float("nan"), float("inf")


# ---------------------------------------------------------------------------- helpers


def snapshot(m: MemOS) -> dict[str, Any]:
    """Everything a refused call must leave unchanged (but for the audit record of a refusal
    by governance, ``denied:<method>``, which is the one thing it must write)."""
    denied = len(m.audit(action="denied:*", limit=10_000))
    tables = table_counts(m)
    tables["audit"] -= denied
    return {
        "count": m.count(),
        "all_states": m.count(states=list(STATES)),
        "audit": len(m.audit(limit=10_000)) - denied,
        "versions": m.stats()["versions"],
        "tables": tables,
    }


def deep_dict(depth: int, leaf: Any = 1) -> Any:
    node = leaf
    for _ in range(depth):
        node = {"a": node}
    return node


def deep_not(depth: int) -> dict[str, Any]:
    node: dict[str, Any] = {"kind": "fact"}
    for _ in range(depth):
        node = {"$not": node}
    return node


def deep_and(depth: int) -> dict[str, Any]:
    node: dict[str, Any] = {"kind": "fact"}
    for _ in range(depth):
        node = {"$and": [node]}
    return node


def assert_refused(
    m: MemOS,
    call: Callable[[], Any],
    exc: type[MemOSError] | tuple[type[MemOSError], ...],
    match: str,
) -> None:
    before = snapshot(m)
    with pytest.raises(exc) as info:
        call()
    assert isinstance(info.value, MemOSError)
    message = str(info.value)
    assert len(message) >= 10, f"unhelpful message: {message!r}"
    assert match.lower() in message.lower(), f"{match!r} not in {message!r}"
    assert snapshot(m) == before, "a refused call wrote something"


# ---------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module", params=BACKENDS)
def store(request, tmp_path_factory, embedder):
    """One seeded store per backend for the refusal cases: each case compares before/after
    itself."""
    if request.param == "sqlite":
        target = tmp_path_factory.mktemp("bad") / "memos.db"
    else:
        target = request.getfixturevalue("pg_schemas")()
    m = MemOS.open(target, embedder=embedder)
    for user in ("alice", "bob"):
        m.create_user(user)
        m.create_cube(f"{user}-personal", owner=user)
    m.create_user("carol", role="admin")
    m.add(
        [
            {
                "text": "Alice moved to Lisbon in March 2024",
                "tags": ["move"],
                "metadata": {"city": "Lisbon"},
            },
            {"text": "Alice prefers green tea over coffee", "kind": "preference"},
        ],
        user="alice",
    )
    m.add("Bob plays the cello on Sundays", user="bob")
    yield m
    m.close()


@pytest.fixture
def item_id(store: MemOS) -> str:
    return store.list(user="alice", cube="alice-personal", order="created_asc")[0].id


# ---------------------------------------------------------------------------- memory text

TEXT_CASES = [
    pytest.param("", "empty", id="empty"),
    pytest.param("   \n\t  ", "empty", id="whitespace"),
    pytest.param("x" * 1_000_000, "characters", id="1MB"),
    pytest.param("y" * (MAX_TEXT_CHARS + 1), f"{MAX_TEXT_CHARS:,}", id="limit+1"),
    pytest.param("bad \ud800 surrogate", "unicode", id="lone-surrogate"),
    pytest.param("\udfff", "unicode", id="lone-low-surrogate"),
    pytest.param("nul \x00 inside", "nul", id="nul"),
]


@pytest.mark.parametrize(("text", "match"), TEXT_CASES)
def test_bad_text_as_string(store: MemOS, text: str, match: str) -> None:
    assert_refused(store, lambda: store.add(text, user="alice"), InvalidInput, match)


@pytest.mark.parametrize(("text", "match"), TEXT_CASES)
def test_bad_text_as_memory_dict(store: MemOS, text: str, match: str) -> None:
    assert_refused(
        store, lambda: store.add({"text": text, "kind": "fact"}, user="alice"), InvalidInput, match
    )


@pytest.mark.parametrize(("text", "match"), TEXT_CASES)
def test_bad_text_as_chat_message(store: MemOS, text: str, match: str) -> None:
    assert_refused(
        store,
        lambda: store.add({"role": "user", "content": text}, user="alice"),
        InvalidInput,
        match,
    )


@pytest.mark.parametrize(("text", "match"), TEXT_CASES)
def test_bad_text_in_update(store: MemOS, item_id: str, text: str, match: str) -> None:
    assert_refused(
        store, lambda: store.update(item_id, user="alice", text=text), InvalidInput, match
    )


def test_text_at_the_limit_is_accepted(store: MemOS) -> None:
    """The boundary itself: exactly MAX_TEXT_CHARS is stored (and MAX+1 is not, above)."""
    before = store.count()
    words = ("limit boundary " * (MAX_TEXT_CHARS // 15 + 1))[:MAX_TEXT_CHARS]
    assert len(words) == MAX_TEXT_CHARS
    [item] = store.add(words, user="alice")
    assert store.get(item.id).text == words
    assert store.count() == before + 1
    store.delete(item.id)


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(123, id="int"),
        pytest.param(4.5, id="float"),
        pytest.param(None, id="None"),
        pytest.param(True, id="bool"),
        pytest.param(object(), id="object"),
        pytest.param(b"raw bytes", id="bytes"),
        pytest.param([123], id="list-of-int"),
        pytest.param([["nested list"]], id="nested-list"),
        pytest.param([None], id="list-of-None"),
        pytest.param({"text": 123}, id="dict-text-int"),
        pytest.param({"text": None}, id="dict-text-None"),
        pytest.param({"text": ["a"]}, id="dict-text-list"),
        pytest.param({"role": "user", "content": 5}, id="message-content-int"),
    ],
)
def test_non_string_text(store: MemOS, value: Any) -> None:
    assert_refused(store, lambda: store.add(value, user="alice"), InvalidInput, "str")


@pytest.mark.parametrize(
    ("memory", "match"),
    [
        pytest.param({"no_text": "x"}, "text", id="no-text-key"),
        pytest.param({"text": "ok", "kind": "Not A Kind"}, "kind", id="bad-kind"),
        pytest.param({"text": "ok", "kind": ""}, "kind", id="empty-kind"),
        pytest.param({"text": "ok", "event_time": "next tuesday"}, "iso", id="bad-event-time"),
        pytest.param({"text": "ok", "event_time": True}, "event_time", id="bool-event-time"),
        pytest.param({"text": "ok", "event_time": NAN}, "finite", id="nan-event-time"),
        pytest.param({"text": "ok", "event_time": 1e20}, "event_time", id="huge-event-time"),
        pytest.param(
            {"role": "user", "content": "hi", "timestamp": "soon"},
            "timestamp",
            id="bad-message-time",
        ),
        pytest.param(
            {"role": "user", "content": "hi", "id": "m\ud800"}, "unicode", id="surrogate-message-id"
        ),
        pytest.param(
            {"text": "ok", "provenance": "not a dict"}, "provenance", id="provenance-not-dict"
        ),
        pytest.param(
            {"text": "ok", "provenance": {"session_id": object()}},
            "provenance",
            id="provenance-non-json",
        ),
    ],
)
def test_bad_memory_dicts(store: MemOS, memory: dict[str, Any], match: str) -> None:
    assert_refused(store, lambda: store.add(memory, user="alice"), InvalidInput, match)


def test_bad_mode_and_session(store: MemOS) -> None:
    assert_refused(store, lambda: store.add("ok", user="alice", mode="turbo"), InvalidInput, "mode")
    assert_refused(
        store, lambda: store.add("ok", user="alice", session="  "), InvalidInput, "session"
    )
    assert_refused(
        store, lambda: store.add("ok", user="alice", session="s\ud800"), InvalidInput, "unicode"
    )
    assert_refused(store, lambda: store.add("ok", user="alice", kind="BAD"), InvalidInput, "kind")


# ---------------------------------------------------------------------------- who and where


@pytest.mark.parametrize(
    ("call", "match"),
    [
        pytest.param(lambda m, i: m.add("hello", user="nobody"), "nobody", id="add-user"),
        pytest.param(
            lambda m, i: m.add("hello", user="alice", cube="no-such-cube"),
            "no-such-cube",
            id="add-cube",
        ),
        pytest.param(
            lambda m, i: m.add("hello", user="bob", cube="alice-personal"),
            "alice-personal",
            id="add-foreign-cube",
        ),
        pytest.param(lambda m, i: m.search("tea", user="nobody"), "nobody", id="search-user"),
        pytest.param(
            lambda m, i: m.search("tea", user="alice", cubes=["no-such-cube"]),
            "no-such-cube",
            id="search-cube",
        ),
        pytest.param(
            lambda m, i: m.search("tea", user="bob", cubes=["alice-personal"]),
            "alice-personal",
            id="search-foreign-cube",
        ),
        pytest.param(lambda m, i: m.list(user="nobody"), "nobody", id="list-user"),
        pytest.param(lambda m, i: m.count(cube="no-such-cube"), "no-such-cube", id="count-cube"),
        pytest.param(lambda m, i: m.get("0" * 32), "0" * 32, id="get-missing-item"),
        pytest.param(lambda m, i: m.get(i, user="bob"), "memory", id="get-foreign-item"),
        pytest.param(
            lambda m, i: m.update(i, user="bob", text="hijack"), "memory", id="update-foreign-item"
        ),
        pytest.param(lambda m, i: m.delete(i, user="bob"), "memory", id="delete-foreign-item"),
        pytest.param(lambda m, i: m.update("0" * 32, text="x"), "0" * 32, id="update-missing"),
        pytest.param(lambda m, i: m.rollback(i, 99), "99", id="rollback-missing-version"),
        pytest.param(
            lambda m, i: m.create_cube("orphan", owner="nobody"), "nobody", id="cube-owner"
        ),
        pytest.param(
            lambda m, i: m.grant("alice-personal", to="nobody"), "nobody", id="grant-user"
        ),
        pytest.param(
            lambda m, i: m.grant("no-such-cube", to="bob"), "no-such-cube", id="grant-cube"
        ),
        pytest.param(
            lambda m, i: m.export_cube("no-such-cube", "/nonexistent/never"),
            "no-such-cube",
            id="export-cube",
        ),
    ],
)
def test_unknown_users_cubes_items(store: MemOS, item_id: str, call, match: str) -> None:
    assert_refused(store, lambda: call(store, item_id), NotFound, match)


# ---------------------------------------------------------------------------- filters

FILTER_CASES = [
    pytest.param({"colour": "red"}, "unknown filter field", id="unknown-field"),
    pytest.param({"text": "Lisbon"}, "unknown filter field", id="text-not-filterable"),
    pytest.param({"kind": {"$regex": ".*"}}, "not valid", id="unknown-operator"),
    pytest.param({"tags": {"$eq": "move"}}, "not valid", id="operator-wrong-type"),
    pytest.param({"$xor": [{"kind": "fact"}]}, "logical operator", id="unknown-logical"),
    pytest.param({"kind": 5}, "string", id="text-field-int"),
    pytest.param({"kind": {"$in": "fact"}}, "list", id="in-not-list"),
    pytest.param({"kind": {"$in": []}}, "list", id="in-empty"),
    pytest.param({"id": {"$in": ["a"] * 1001}}, "1000", id="in-too-long"),
    pytest.param({"priority": "high"}, "number", id="number-field-str"),
    pytest.param({"priority": True}, "number", id="number-field-bool"),
    pytest.param({"priority": 2**70}, "priority", id="number-beyond-int64"),
    pytest.param({"metadata.city": 2**70}, "metadata", id="metadata-beyond-int64"),
    pytest.param({"event_time": {"$gte": "yesterday"}}, "iso", id="time-not-iso"),
    pytest.param({"event_time": {"$gte": [2024]}}, "event_time", id="time-list"),
    pytest.param({"event_time": {"$gte": 1e20}}, "event_time", id="time-out-of-range"),
    pytest.param({"created_at": {"$lt": NAN}}, "created_at", id="time-nan"),
    pytest.param({"tags": ""}, "tags", id="tags-empty-str"),
    pytest.param({"tags": {"$any": []}}, "list", id="tags-any-empty"),
    pytest.param({"tags": {"$all": [1]}}, "tags", id="tags-all-int"),
    pytest.param({"kind": {"$exists": "yes"}}, "$exists", id="exists-not-bool"),
    pytest.param({"kind": {}}, "empty", id="empty-operator-object"),
    pytest.param({}, "empty", id="empty-filter"),
    pytest.param({"$or": []}, "non-empty list", id="empty-or"),
    pytest.param({"$and": []}, "non-empty list", id="empty-and"),
    pytest.param({"$or": {"kind": "fact"}}, "non-empty list", id="or-not-list"),
    pytest.param({"$or": [1, 2]}, "dict", id="or-of-ints"),
    pytest.param({"$not": "kind"}, "dict", id="not-of-str"),
    pytest.param({1: "fact"}, "string", id="int-key"),
    pytest.param({"metadata.": 1}, "metadata path", id="metadata-empty-path"),
    pytest.param({"metadata.a b": 1}, "metadata path", id="metadata-space"),
    pytest.param({"metadata.x'); DROP TABLE items; --": 1}, "metadata path", id="metadata-sql"),
    pytest.param({"metadata.city": {"nested": 1}}, "not valid", id="metadata-dict-value"),
    pytest.param({"metadata.city": {"$eq": [1, 2]}}, "compares", id="metadata-list-value"),
    pytest.param({"metadata.city": {"$eq": {"a": 1}}}, "compares", id="metadata-obj-value"),
    pytest.param({"kind": "f\ud800"}, "unicode", id="text-value-surrogate"),
    pytest.param({"metadata.city": "L\ud800"}, "unicode", id="metadata-value-surrogate"),
    pytest.param({"tags": "t\udfff"}, "unicode", id="tag-value-surrogate"),
    pytest.param(deep_not(3000), "256", id="deep-not"),
    pytest.param(deep_and(400), "256", id="deep-and"),
    pytest.param({"$and": [{"kind": "fact"}] * 300}, "256", id="wide-and"),
    pytest.param(deep_dict(50), "unknown filter field", id="deep-garbage-dict"),
    pytest.param(
        {"$or": [{"$and": [{"$not": {"kind": {"$in": [None]}}}]}]},
        "string",
        id="nested-garbage-value",
    ),
    pytest.param("kind = 'fact'", "dict", id="str-filter"),
    pytest.param(["kind", "fact"], "dict", id="list-filter"),
    pytest.param(42, "dict", id="int-filter"),
]


@pytest.mark.parametrize(("spec", "match"), FILTER_CASES)
@pytest.mark.parametrize("method", ["search", "list", "count"])
def test_malformed_filters(store: MemOS, method: str, spec: Any, match: str) -> None:
    calls = {
        "search": lambda: store.search("tea", user="alice", filter=spec),
        "list": lambda: store.list(user="alice", filter=spec),
        "count": lambda: store.count(user="alice", filter=spec),
    }
    assert_refused(store, calls[method], FilterError, match)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        pytest.param({"since": "last week"}, "iso", id="since-not-iso"),
        pytest.param({"until": 1e20}, "until", id="until-out-of-range"),
        pytest.param({"kinds": ["Not A Kind"]}, "kind", id="kinds"),
        pytest.param({"tags": "move"}, "list", id="tags-str"),
        pytest.param({"tags": [""]}, "tag", id="tags-empty"),
        pytest.param({"states": ["bogus"]}, "state", id="states"),
        pytest.param({"session": ""}, "session", id="session-empty"),
        pytest.param({"mode": "fuzzy"}, "mode", id="mode"),
    ],
)
def test_bad_search_arguments(store: MemOS, kwargs: dict[str, Any], match: str) -> None:
    assert_refused(store, lambda: store.search("tea", user="alice", **kwargs), InvalidInput, match)


@pytest.mark.parametrize(
    "query",
    [
        pytest.param("", id="empty"),
        pytest.param("   ", id="blank"),
        pytest.param("q\ud800", id="surrogate"),
        pytest.param("q\x00", id="nul"),
        pytest.param(None, id="None"),
        pytest.param(42, id="int"),
        pytest.param("z" * (MAX_TEXT_CHARS + 1), id="too-long"),
    ],
)
def test_bad_search_query(store: MemOS, query: Any) -> None:
    assert_refused(store, lambda: store.search(query, user="alice"), InvalidInput, "query")


# ---------------------------------------------------------------------------- k and paging


@pytest.mark.parametrize("k", [0, -1, 1001, 10**9, 2.5, True, False, "5", None, NAN])
def test_invalid_k(store: MemOS, k: Any) -> None:
    assert_refused(store, lambda: store.search("tea", user="alice", k=k), InvalidInput, "k must")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"limit": 0}, "limit"),
        ({"limit": -5}, "limit"),
        ({"limit": "10"}, "limit"),
        ({"offset": -1}, "offset"),
        ({"order": "random"}, "order"),
        ({"order": "created; DROP TABLE items"}, "order"),
    ],
)
def test_invalid_paging(store: MemOS, kwargs: dict[str, Any], match: str) -> None:
    assert_refused(store, lambda: store.list(user="alice", **kwargs), InvalidInput, match)


# ---------------------------------------------------------------------------- tags, metadata

BAD_TAGS = [
    pytest.param("work", "list", id="str"),
    pytest.param(5, "list", id="int"),
    pytest.param([1], "tag", id="int-tag"),
    pytest.param([None], "tag", id="None-tag"),
    pytest.param([""], "tag", id="empty-tag"),
    pytest.param(["   "], "tag", id="blank-tag"),
    pytest.param(["x" * 129], "128", id="long-tag"),
    pytest.param([f"t{i}" for i in range(MAX_TAGS + 1)], str(MAX_TAGS), id="too-many"),
    pytest.param(["t\ud800"], "unicode", id="surrogate-tag"),
    pytest.param(["t\x00"], "nul", id="nul-tag"),
]


def _huge_metadata() -> dict[str, Any]:
    return {"blob": "m" * (MAX_METADATA_BYTES + 1)}


BAD_METADATA = [
    pytest.param({"score": NAN}, "nan", id="nan"),
    pytest.param({"score": INF}, "inf", id="inf"),
    pytest.param({"score": -INF}, "inf", id="-inf"),
    pytest.param({"a": [1, {"b": NAN}]}, "nan", id="nested-nan"),
    pytest.param({1: "x"}, "key", id="int-key"),
    pytest.param({("a",): "x"}, "key", id="tuple-key"),
    pytest.param({"": "x"}, "key", id="empty-key"),
    pytest.param({"k\ud800": 1}, "unicode", id="surrogate-key"),
    pytest.param({"k": "v\ud800"}, "unicode", id="surrogate-value"),
    pytest.param({"k": object()}, "type", id="object"),
    pytest.param({"k": b"bytes"}, "type", id="bytes"),
    pytest.param({"k": {1, 2}}, "type", id="set"),
    pytest.param({"k": 1 + 2j}, "type", id="complex"),
    pytest.param({"k": datetime(2024, 1, 1)}, "type", id="datetime"),
    pytest.param(_huge_metadata(), "bytes", id="too-large"),
    pytest.param({f"k{i}": "v" * 100 for i in range(700)}, "bytes", id="too-many-keys"),
    pytest.param(deep_dict(5000), "metadata", id="deep-5000"),
    pytest.param(deep_dict(1200), "metadata", id="deep-1200"),
    pytest.param(["a", "b"], "dict", id="list"),
    pytest.param("city=Lisbon", "dict", id="str"),
    pytest.param(5, "dict", id="int"),
]


@pytest.mark.parametrize(("tags", "match"), BAD_TAGS)
def test_bad_tags(store: MemOS, item_id: str, tags: Any, match: str) -> None:
    assert_refused(store, lambda: store.add("tagged", user="alice", tags=tags), InvalidInput, match)
    assert_refused(
        store,
        lambda: store.add({"text": "tagged", "tags": tags}, user="alice"),
        InvalidInput,
        match,
    )
    assert_refused(
        store, lambda: store.update(item_id, user="alice", tags=tags), InvalidInput, match
    )


@pytest.mark.parametrize(("metadata", "match"), BAD_METADATA)
def test_bad_metadata(store: MemOS, item_id: str, metadata: Any, match: str) -> None:
    assert_refused(
        store, lambda: store.add("meta", user="alice", metadata=metadata), InvalidInput, match
    )
    assert_refused(
        store,
        lambda: store.add({"text": "meta", "metadata": metadata}, user="alice"),
        InvalidInput,
        match,
    )
    assert_refused(
        store, lambda: store.update(item_id, user="alice", metadata=metadata), InvalidInput, match
    )


@pytest.mark.parametrize(
    "metadata",
    [{"blob": "m" * (MAX_METADATA_BYTES - 20)}, deep_dict(20), {"big": 2**62, "f": -1.5e300}],
    ids=["just-under-size", "deep-20", "extreme-numbers"],
)
def test_valid_metadata_edges_round_trip(store: MemOS, metadata: Any) -> None:
    [item] = store.add(
        {"text": f"edge metadata {len(str(metadata))}", "metadata": metadata}, user="alice"
    )
    assert store.get(item.id).metadata == metadata
    store.delete(item.id)


# ---------------------------------------------------------------------------- ttl, visibility, ...

BAD_OPTIONS = [
    pytest.param("ttl", 0, "ttl", id="ttl-0"),
    pytest.param("ttl", -5, "ttl", id="ttl-negative"),
    pytest.param("ttl", NAN, "ttl", id="ttl-nan"),
    pytest.param("ttl", INF, "ttl", id="ttl-inf"),
    pytest.param("ttl", "3600", "ttl", id="ttl-str"),
    pytest.param("ttl", True, "ttl", id="ttl-bool"),
    pytest.param("ttl", timedelta(0), "ttl", id="ttl-zero-delta"),
    pytest.param("ttl", timedelta(seconds=-1), "ttl", id="ttl-negative-delta"),
    pytest.param("ttl", 1e300, "ttl", id="ttl-1e300"),
    pytest.param("ttl", 10**12, "ttl", id="ttl-beyond-year-9999"),
    pytest.param("visibility", "public", "visibility", id="vis-public"),
    pytest.param("visibility", "", "visibility", id="vis-empty"),
    pytest.param("visibility", None, "visibility", id="vis-None"),
    pytest.param("visibility", "PRIVATE", "visibility", id="vis-case"),
    pytest.param("priority", 1001, "priority", id="prio-high"),
    pytest.param("priority", -1001, "priority", id="prio-low"),
    pytest.param("priority", 1.5, "priority", id="prio-float"),
    pytest.param("priority", True, "priority", id="prio-bool"),
    pytest.param("priority", "1", "priority", id="prio-str"),
    pytest.param("priority", 2**80, "priority", id="prio-huge"),
    pytest.param("confidence", -0.01, "confidence", id="conf-low"),
    pytest.param("confidence", 1.01, "confidence", id="conf-high"),
    pytest.param("confidence", NAN, "confidence", id="conf-nan"),
    pytest.param("confidence", INF, "confidence", id="conf-inf"),
    pytest.param("confidence", True, "confidence", id="conf-bool"),
    pytest.param("confidence", "0.5", "confidence", id="conf-str"),
]


@pytest.mark.parametrize(("option", "value", "match"), BAD_OPTIONS)
def test_bad_options_on_add(store: MemOS, option: str, value: Any, match: str) -> None:
    assert_refused(
        store, lambda: store.add("options", user="alice", **{option: value}), InvalidInput, match
    )
    assert_refused(
        store,
        lambda: store.add({"text": "options", option: value}, user="alice"),
        InvalidInput,
        match,
    )


@pytest.mark.parametrize(
    ("option", "value", "match"), [p for p in BAD_OPTIONS if p.values[1] is not None]
)
def test_bad_options_on_update(
    store: MemOS, item_id: str, option: str, value: Any, match: str
) -> None:
    assert_refused(
        store, lambda: store.update(item_id, user="alice", **{option: value}), InvalidInput, match
    )


def test_bad_state_changes(store: MemOS, item_id: str) -> None:
    assert_refused(store, lambda: store.set_state(item_id, "bogus"), InvalidInput, "state")
    assert_refused(
        store, lambda: store.set_state(item_id, "generated"), InvalidTransition, "cannot move"
    )
    assert_refused(
        store, lambda: store.update(item_id, user="alice"), InvalidInput, "nothing to update"
    )
    assert_refused(store, lambda: store.create_user("dave", role="root"), InvalidInput, "role")
    assert_refused(
        store,
        lambda: store.grant("alice-personal", to="bob", access="admin"),
        InvalidInput,
        "access",
    )


# ---------------------------------------------------------------------------- ids

BAD_IDS = [
    pytest.param("../x", id="dotdot"),
    pytest.param("", id="empty"),
    pytest.param("a b", id="space"),
    pytest.param("x" * 129, id="too-long"),
    pytest.param("-leading-dash", id="leading-dash"),
    pytest.param("a/b", id="slash"),
    pytest.param("a\x00b", id="nul"),
    pytest.param("é", id="non-ascii"),
    pytest.param(None, id="None"),
    pytest.param(5, id="int"),
    *[pytest.param(s, id=f"sql{n}") for n, s in enumerate(SQL_STRINGS)],
]


@pytest.mark.parametrize("bad", BAD_IDS)
def test_invalid_ids(store: MemOS, item_id: str, bad: Any) -> None:
    invalid = (InvalidInput, "id")
    calls: list[tuple[Callable[[], Any], tuple[Any, str]]] = [
        (lambda: store.get(bad), invalid),
        (lambda: store.history(bad), invalid),
        (lambda: store.transitions(bad), invalid),
        (lambda: store.update(bad, text="new text"), invalid),
        (lambda: store.delete(bad), invalid),
        (lambda: store.set_state(bad, "archived"), invalid),
        (lambda: store.rollback(bad, 1), invalid),
        (lambda: store.create_user(bad), invalid),
        (lambda: store.create_cube("Some name", owner="alice", cube_id=bad), invalid),
        (lambda: store.export_cube(bad, "/nonexistent/never"), invalid),
        (lambda: store.add("valid text", user=bad), invalid),
        # a malformed grantee can only be unknown: either answer is fine, a crash is not
        (lambda: store.grant("alice-personal", to=bad), ((InvalidInput, NotFound), "user")),
    ]
    if bad is not None:  # cube=None means "the user's default cube"
        calls += [
            (lambda: store.add("valid text", user="alice", cube=bad), invalid),
            (lambda: store.search("tea", user="alice", cubes=[bad]), invalid),
        ]
    for call, (exc, match) in calls:
        assert_refused(store, call, exc, match)


# ---------------------------------------------------------------------------- batches


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param("", id="empty"),
        pytest.param("   ", id="blank"),
        pytest.param("lone \ud800", id="surrogate"),
        pytest.param("nul \x00", id="nul"),
        pytest.param("w" * (MAX_TEXT_CHARS + 1), id="too-long"),
        pytest.param(42, id="int"),
        pytest.param(None, id="None"),
        pytest.param({"text": "ok", "metadata": {"x": NAN}}, id="nan-metadata"),
        pytest.param({"text": "ok", "kind": "Bad Kind"}, id="bad-kind"),
        pytest.param({"text": "ok", "tags": [1]}, id="bad-tags"),
        pytest.param({"text": "ok", "event_time": "garbage"}, id="bad-event-time"),
        pytest.param({"text": "ok", "visibility": "public"}, id="bad-visibility"),
        pytest.param({"text": "ok", "ttl": -1}, id="bad-ttl"),
        pytest.param({"text": "ok", "priority": 5000}, id="bad-priority"),
        pytest.param({"text": "ok", "confidence": 2}, id="bad-confidence"),
        pytest.param({"role": "user", "content": ""}, id="empty-message"),
        pytest.param({"nothing": "here"}, id="no-text"),
    ],
)
def test_batch_with_one_bad_memory_stores_none(store: MemOS, bad: Any) -> None:
    good = [f"batch member {n} next to {bad!r:.20}" for n in range(5)]
    batch: list[Any] = [*good[:2], bad, *good[3:]]
    assert_refused(store, lambda: store.add(batch, user="alice"), InvalidInput, "")
    stored = {it.text for it in store.list(states=list(STATES), limit=1000)}
    assert not stored & set(good)


def test_good_members_of_a_refused_batch_were_really_not_stored(store: MemOS) -> None:
    good = [f"refused batch survivor {n}" for n in range(5)]
    assert_refused(
        store,
        lambda: store.add([*good[:2], {"text": "x", "ttl": -1}, *good[3:]], user="alice"),
        InvalidInput,
        "ttl",
    )
    # Adding the four good ones now creates four items (re-adding stored content would not).
    before = store.count()
    added = store.add([*good[:2], *good[3:]], user="alice")
    assert store.count() == before + 4
    assert [store.get(it.id).version for it in added] == [1, 1, 1, 1]
    for it in added:
        store.delete(it.id)


def test_batch_refused_in_ingest_stores_nothing(store: MemOS) -> None:
    good = [f"ingest member {n}" for n in range(5)]
    assert_refused(
        store,
        lambda: store.ingest([*good[:2], "", *good[3:]], user="alice", progress=False),
        InvalidInput,
        "empty",
    )


# ---------------------------------------------------------------------------- SQL-looking strings


@pytest.mark.parametrize("sql", SQL_STRINGS)
def test_sql_looking_strings_are_plain_data(mos: MemOS, sql: str) -> None:
    plain = mos.add(
        [
            {
                "text": "Alice keeps her bicycle in the hallway",
                "metadata": {"k": "normal"},
                "tags": ["normal"],
            },
            {
                "text": "Bob's favourite number is 7",
                "metadata": {"k": sql + " "},
                "tags": [sql + "x"],
            },
            {"text": "A note with an empty value", "metadata": {"k": ""}},
        ],
        user="alice",
    )
    [target] = mos.add(
        {"text": sql, "tags": [sql], "metadata": {"k": sql, sql: sql}}, user="alice", session=sql
    )
    bob_item = mos.add({"text": "Bob's note", "metadata": {"k": sql}}, user="bob")[0]

    got = mos.get(target.id)
    assert got.text == sql
    assert got.tags == (sql,)
    assert got.metadata == {"k": sql, sql: sql}
    assert got.provenance.session_id == sql

    def ids(**kw: Any) -> set[str]:
        return {it.id for it in mos.list(user="alice", **kw)}

    assert ids(filter={"metadata.k": sql}) == {target.id}
    assert ids(filter={"metadata.k": {"$in": [sql, "no such value"]}}) == {target.id}
    assert ids(filter={"metadata.k": {"$ne": sql}}) == {it.id for it in plain}
    assert ids(filter={"metadata.k": {"$nin": [sql]}}) == {it.id for it in plain}
    assert ids(filter={"tags": sql}) == {target.id}
    assert ids(filter={"tags": {"$any": [sql, "nope"]}}) == {target.id}
    assert ids(tags=[sql]) == {target.id}
    assert ids(filter={"session_id": sql}) == {target.id}
    assert ids(session=sql) == {target.id}
    assert ids(filter={"id": sql}) == set()
    assert ids(filter={"owner": {"$in": [sql]}}) == set()
    assert ids(filter={"$or": [{"metadata.k": sql}, {"kind": sql}]}) == {target.id}
    assert ids(filter={"$not": {"metadata.k": sql}}) == {it.id for it in plain}
    assert mos.count(user="alice", filter={"metadata.k": sql}) == 1
    # Root sees both holders of the value (alice's target and bob's note), no more.
    assert {it.id for it in mos.list(filter={"metadata.k": sql})} == {target.id, bob_item.id}

    # As a search query, in every mode and as a filter value in search.
    for mode in ("text", "hybrid"):
        hits = mos.search(sql, user="alice", k=5, mode=mode)
        assert hits and hits[0].id == target.id, (mode, [h.text for h in hits])
    hits = mos.search("number", user="alice", filter={"metadata.k": sql})
    assert [h.id for h in hits] == [target.id]
    assert mos.search(sql, user="bob", k=5)[0].id == bob_item.id

    # Where names are free text they are stored literally ...
    cube = mos.create_cube(sql, owner="alice", cube_id="sql-cube")
    assert mos.get_cube("sql-cube").name == sql == cube.name
    mos.create_user("mallory", name=sql)
    assert mos.get_user("mallory").name == sql
    [in_cube] = mos.add(sql, user="alice", cube="sql-cube")
    assert mos.get(in_cube.id).text == sql
    updated = mos.update(plain[0].id, text=sql + " (edited)", metadata={"k": sql})
    assert updated.text == sql + " (edited)"
    assert mos.rollback(plain[0].id, 1).text == plain[0].text
    # ... where they are ids they are refused (and write nothing).
    assert_refused(mos, lambda: mos.create_user(sql), InvalidInput, "id")
    assert_refused(mos, lambda: mos.create_cube(sql, owner="alice"), InvalidInput, "id")
    assert_refused(mos, lambda: mos.add("x", user=sql), InvalidInput, "id")
    assert_refused(mos, lambda: mos.get(sql), InvalidInput, "id")

    # The schema and every row survived.
    assert_intact(mos)
    expected = set(PG_TABLES) if is_pg(mos) else {"items", "users", "cubes", "audit", "embeddings"}
    assert expected <= table_names(mos)
    counts = table_counts(mos)
    assert (counts["items"], counts["users"], counts["cubes"]) == (6, 4, 3)
    assert counts[vector_table(mos)] == 6
    assert rows(mos, "SELECT count(*) FROM items WHERE text = ?", (sql,)) == [(2,)]
    assert mos.count() == 6
    assert mos.stats()["versions"] == 6 + 2


FTS_QUERIES = [
    "NEAR(alice bob)",
    '"unbalanced',
    "alice AND OR NOT",
    "*",
    "^text:alice",
    "text: alice",
    "alice*",
    "{a b}",
    "a - b + c",
    "items_fts MATCH 'x'",
    "🙂🙂",
    "' OR ''='",
    "%_%",
    "\\",
    "COLLATE NOCASE",
    'bicycle"); --',
]


def test_fts_syntax_in_queries_is_literal(mos: MemOS) -> None:
    [bike, _] = mos.add(
        ["Alice keeps her bicycle in the hallway", "Bob writes text messages"], user="alice"
    )
    for n, query in enumerate(FTS_QUERIES):  # the full-text leg is where syntax could leak
        for mode in ("text", "hybrid") if n % 4 == 0 else ("text",):
            hits = mos.search(query, user="alice", k=5, mode=mode)
            assert all(not math.isnan(h.score) for h in hits), query
    assert mos.search('bicycle"); --', user="alice", mode="text")[0].id == bike.id
    assert table_counts(mos)["items"] == mos.count() == 2
