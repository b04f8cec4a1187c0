"""Backend-neutral search pieces: the filter language, full-text query terms, rank fusion.

The filter language is a small JSON dialect (MongoDB-like). It is parsed and validated
into an AST here, *before* any SQL exists; each store compiles the AST with bound
parameters only, so no user value is ever spliced into a statement.

    {"kind": "fact"}                                   equality
    {"kind": {"$in": ["fact", "event"]}}               membership
    {"event_time": {"$gte": "2024-01-01"}}             ranges on times and numbers
    {"tags": {"$contains": "work"}}                    tags ($contains, $any, $all)
    {"metadata.city": {"$ne": "Paris"}}                the user's own metadata (dotted path)
    {"metadata.score": {"$exists": true}}
    {"$or": [{...}, {...}]}, {"$and": [...]}, {"$not": {...}}
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from ..core.errors import FilterError, InvalidInput
from ..core.items import MAX_INT, check_unicode, parse_time

FieldType = Literal["text", "number", "time", "tags", "json"]

# Filterable system fields and their types. ``metadata.<path>`` reaches user metadata.
FIELDS: dict[str, FieldType] = {
    "id": "text",
    "key": "text",
    "cube_id": "text",
    "owner": "text",
    "kind": "text",
    "state": "text",
    "visibility": "text",
    "session_id": "text",
    "content_hash": "text",
    "priority": "number",
    "confidence": "number",
    "access_count": "number",
    "version": "number",
    "event_time": "time",
    "created_at": "time",
    "updated_at": "time",
    "expires_at": "time",
    "last_accessed_at": "time",
    "tags": "tags",
}
_OPS_BY_TYPE: dict[FieldType, frozenset[str]] = {
    "text": frozenset({"$eq", "$ne", "$in", "$nin", "$exists"}),
    "number": frozenset({"$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in", "$nin", "$exists"}),
    "time": frozenset({"$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$exists"}),
    "tags": frozenset({"$contains", "$any", "$all"}),
    "json": frozenset({"$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in", "$nin", "$exists"}),
}
_META_PATH = re.compile(r"^[A-Za-z0-9_\-]{1,64}(\.[A-Za-z0-9_\-]{1,64}){0,7}$")
MAX_FILTER_NODES = 256
MAX_IN_VALUES = 1000


@dataclass(frozen=True)
class Cond:
    """One comparison: ``field op value`` (value already type-checked and normalised)."""

    field: str  # a FIELDS key, or "metadata" for user metadata
    type: FieldType
    op: str
    value: Any
    path: tuple[str, ...] = ()  # the metadata path, when field == "metadata"


@dataclass(frozen=True)
class And:
    parts: tuple[Node, ...]


@dataclass(frozen=True)
class Or:
    parts: tuple[Node, ...]


@dataclass(frozen=True)
class Not:
    part: Node


Node = Cond | And | Or | Not


def parse_filter(spec: Mapping[str, Any] | None) -> Node | None:
    """Validate a filter dict and return its AST (``None`` for no filter)."""
    if spec is None:
        return None
    counter = [0]
    node = _parse_object(spec, counter)
    return node


def combine(*nodes: Node | None) -> Node | None:
    present = tuple(n for n in nodes if n is not None)
    if not present:
        return None
    return present[0] if len(present) == 1 else And(present)


def _parse_object(spec: object, counter: list[int]) -> Node:
    if not isinstance(spec, Mapping):
        raise FilterError(f"a filter must be a dict, got {type(spec).__name__}")
    if not spec:
        raise FilterError("empty filter object; pass None for no filter")
    parts: list[Node] = []
    for key, value in spec.items():
        counter[0] += 1
        if counter[0] > MAX_FILTER_NODES:
            raise FilterError(f"filter has more than {MAX_FILTER_NODES} conditions")
        if not isinstance(key, str):
            raise FilterError(f"filter keys must be strings, got {key!r}")
        if key in ("$and", "$or"):
            if not isinstance(value, list | tuple) or not value:
                raise FilterError(f"{key} takes a non-empty list of filter objects")
            sub = tuple(_parse_object(v, counter) for v in value)
            parts.append(And(sub) if key == "$and" else Or(sub))
        elif key == "$not":
            parts.append(Not(_parse_object(value, counter)))
        elif key.startswith("$"):
            raise FilterError(f"unknown logical operator {key!r}; use $and, $or or $not")
        else:
            parts.append(_parse_field(key, value))
    return parts[0] if len(parts) == 1 else And(tuple(parts))


def _resolve_field(key: str) -> tuple[str, FieldType, tuple[str, ...]]:
    if key.startswith("metadata."):
        path = key[len("metadata.") :]
        if not _META_PATH.match(path):
            raise FilterError(
                f"invalid metadata path {path!r}: dotted keys of letters, digits, '_' and '-'"
            )
        return "metadata", "json", tuple(path.split("."))
    if key not in FIELDS:
        known = ", ".join(sorted(FIELDS))
        raise FilterError(f"unknown filter field {key!r}; use one of {known} or metadata.<key>")
    return key, FIELDS[key], ()


def _parse_field(key: str, spec: object) -> Node:
    name, ftype, path = _resolve_field(key)
    if not isinstance(spec, Mapping):
        spec = {"$contains": spec} if ftype == "tags" else {"$eq": spec}
    if not spec:
        raise FilterError(f"empty operator object for {key!r}")
    conds: list[Node] = []
    for op, value in spec.items():
        if op not in _OPS_BY_TYPE[ftype]:
            allowed = ", ".join(sorted(_OPS_BY_TYPE[ftype]))
            raise FilterError(f"operator {op!r} is not valid for {key!r}; use one of {allowed}")
        conds.append(Cond(name, ftype, op, _check_value(key, ftype, op, value), path))
    return conds[0] if len(conds) == 1 else And(tuple(conds))


def _check_scalar(key: str, ftype: FieldType, value: object) -> Any:
    if isinstance(value, str):
        try:
            check_unicode(value, f"filter value for {key!r}")
        except InvalidInput as exc:
            raise FilterError(str(exc)) from None
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_INT:
        raise FilterError(f"filter value for {key!r} is outside the 64-bit integer range")
    if ftype == "text":
        if not isinstance(value, str):
            raise FilterError(f"{key!r} compares with strings, got {value!r}")
        return value
    if ftype == "number":
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise FilterError(f"{key!r} compares with numbers, got {value!r}")
        return value
    if ftype == "time":
        try:
            when = parse_time(value, key)
        except InvalidInput as exc:
            raise FilterError(str(exc)) from None
        if when is None:
            raise FilterError(f"{key!r} needs a time value")
        return when.timestamp()
    if ftype == "tags":
        if not isinstance(value, str) or not value:
            raise FilterError(f"tags compare with non-empty strings, got {value!r}")
        return value
    # json (user metadata): scalars only; structures can't be compared portably
    if value is not None and not isinstance(value, str | int | float | bool):
        raise FilterError(f"{key!r} compares with a string, number, bool or null, got {value!r}")
    return value


def _check_value(key: str, ftype: FieldType, op: str, value: object) -> Any:
    if op == "$exists":
        if not isinstance(value, bool):
            raise FilterError(f"$exists on {key!r} takes true or false")
        return value
    if op in ("$in", "$nin", "$any", "$all"):
        if not isinstance(value, list | tuple) or not value or len(value) > MAX_IN_VALUES:
            raise FilterError(f"{op} on {key!r} takes a list of 1 to {MAX_IN_VALUES} values")
        return tuple(_check_scalar(key, ftype, v) for v in value)
    return _check_scalar(key, ftype, value)


# ---------------------------------------------------------------------------- full text

_WORD = re.compile(r"\w+", re.UNICODE)
# Function words that match almost every memory and only slow the text leg down.
STOPWORDS = frozenset(
    """a an and are as at be been but by can could did do does for from had has have he her him
    his how i if in into is it its me my of on or our she so than that the their them then
    there they this to was we were what when where which who whom why will with would you
    your yours about after before just also any all some ll re ve""".split()  # noqa: SIM905
)


def text_terms(query: str, max_terms: int = 32) -> list[str]:
    """The distinct content words of a query, for the full-text leg (stopwords dropped)."""
    # single letters ("s" of "alice's", "t" of "don't") match nearly everything, say nothing
    words = [w.lower() for w in _WORD.findall(query) if len(w) > 1 or w.isdigit()]
    content = [w for w in words if w not in STOPWORDS] or words
    return list(dict.fromkeys(content))[:max_terms]


# ---------------------------------------------------------------------------- fusion

RRF_K = 60
# BM25 weight of an item's conversational context column relative to its own text (1.0).
CONTEXT_WEIGHT = 0.5


def rrf_fuse(
    legs: Sequence[Sequence[str]], k: int = RRF_K, weights: Sequence[float] | None = None
) -> list[tuple[str, float]]:
    """Reciprocal rank fusion: ``score(d) = sum_i w_i / (k + rank_i(d))``, ranks from 1.

    Ranks, not raw scores, are fused, because BM25 and cosine live on incomparable scales.
    Ties are broken by the earlier leg's order, so the result is deterministic.
    """
    weights = weights or [1.0] * len(legs)
    scores: dict[str, float] = {}
    for leg, weight in zip(legs, weights, strict=True):
        for rank, doc in enumerate(leg, start=1):
            scores[doc] = scores.get(doc, 0.0) + weight / (k + rank)
    order = {doc: i for i, doc in enumerate(d for leg in legs for d in leg)}
    return sorted(scores.items(), key=lambda kv: (-kv[1], order[kv[0]]))
