"""The filter language is validated into an AST before any SQL exists."""

from __future__ import annotations

import pytest

from memos_integrations import FilterError
from memos_integrations.storage.search import And, Cond, Not, Or, parse_filter, rrf_fuse, text_terms


def test_parse_shapes() -> None:
    assert parse_filter(None) is None
    assert parse_filter({"kind": "fact"}) == Cond("kind", "text", "$eq", "fact")
    assert parse_filter({"tags": "x"}) == Cond("tags", "tags", "$contains", "x")
    node = parse_filter({"metadata.a.b": {"$gt": 1, "$lt": 5}})
    assert node == And(
        (
            Cond("metadata", "json", "$gt", 1, ("a", "b")),
            Cond("metadata", "json", "$lt", 5, ("a", "b")),
        )
    )
    t = parse_filter({"event_time": {"$gte": "2024-01-01T00:00:00Z"}})
    assert isinstance(t, Cond) and t.value == 1704067200.0
    assert isinstance(parse_filter({"$or": [{"kind": "a"}, {"kind": "b"}]}), Or)
    assert isinstance(parse_filter({"$not": {"kind": "a"}}), Not)


@pytest.mark.parametrize(
    "spec",
    [
        [],
        "kind = 'fact'",
        {},
        {"nope": 1},
        {"kind": {"$regex": ".*"}},
        {"kind": 3},
        {"priority": "high"},
        {"priority": True},
        {"event_time": {"$gt": "yesterday"}},
        {"tags": {"$eq": "x"}},
        {"tags": {"$any": []}},
        {"$or": []},
        {"$or": {"kind": "a"}},
        {"$xor": [{"kind": "a"}]},
        {"metadata.": 1},
        {"metadata.a b": 1},
        {"metadata.a'--": 1},
        {"metadata.x": {"$eq": {"nested": 1}}},
        {"metadata.x": {"$in": list(range(2000))}},
        {"metadata.x": {"$exists": "yes"}},
        {1: "x"},
        {"$and": [{"kind": "a"}] * 300},
    ],
)
def test_malformed_filters_are_rejected(spec) -> None:
    with pytest.raises(FilterError):
        parse_filter(spec)


def test_text_terms_drop_stopwords_and_punctuation() -> None:
    assert text_terms("Where does Alice live now?") == ["alice", "live", "now"]
    assert text_terms('"; DROP TABLE items; --') == ["drop", "table", "items"]
    assert text_terms("the and of") == ["the", "and", "of"]  # all stopwords: keep them
    assert text_terms("") == []


def test_rrf_fuses_ranks_not_scores() -> None:
    fused = rrf_fuse([["a", "b", "c"], ["c", "a"]])
    assert [d for d, _ in fused] == ["a", "c", "b"]
    assert fused[0][1] == pytest.approx(1 / 61 + 1 / 62)
