"""How a LangGraph store item lives in a MemOS memory, and how store filters are evaluated.

One store item ``(namespace, key, value)`` is one keyed memory of kind ``store``:

- the memory **key** is ``json.dumps([*namespace, key])`` (unique per cube, readable);
- the memory **text** is the text at the index fields (what gets embedded), or the value as
  JSON when the fields yield nothing (then the item is not indexed: it has no search score);
- the memory **metadata** holds the record ``{"lg": {"ns": {"0": label0, ...}, "depth": n,
  "key": key, "value": value, "indexed": bool, "ttl": minutes | None}}``. Namespace labels
  are keyed by position so a namespace prefix is a plain equality filter in SQL.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

from ..core.errors import FilterError, InvalidInput
from ..core.items import MAX_INT

STORE_KIND = "store"
RECORD = "lg"
_PATH_SEGMENT = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")
_MAX_PUSHDOWN_DEPTH = 5  # metadata paths have at most 8 segments; "lg.value" takes 2
COMPARISONS = ("$eq", "$ne", "$gt", "$gte", "$lt", "$lte")


def item_key(namespace: Sequence[str], key: str) -> str:
    return json.dumps([*namespace, key], ensure_ascii=False)


def record(
    namespace: Sequence[str], key: str, value: Mapping[str, Any], indexed: bool, ttl: float | None
) -> dict[str, Any]:
    return {
        RECORD: {
            "ns": {str(i): label for i, label in enumerate(namespace)},
            "depth": len(namespace),
            "key": key,
            "value": dict(value),
            "indexed": indexed,
            "ttl": ttl,
        }
    }


def read_record(metadata: Mapping[str, Any]) -> tuple[tuple[str, ...], str, dict[str, Any]]:
    """``(namespace, key, value)`` of a store memory's metadata."""
    rec = metadata[RECORD]
    namespace = tuple(rec["ns"][str(i)] for i in range(rec["depth"]))
    return namespace, rec["key"], rec["value"]


def ttl_minutes(metadata: Mapping[str, Any]) -> float | None:
    return metadata[RECORD].get("ttl")


def prefix_filter(prefix: Sequence[str]) -> dict[str, Any]:
    """MemOS filter selecting store memories whose namespace starts with ``prefix``."""
    conds: dict[str, Any] = {"kind": STORE_KIND}
    for i, label in enumerate(prefix):
        conds[f"metadata.{RECORD}.ns.{i}"] = label
    return conds


def json_text(value: Mapping[str, Any]) -> str:
    """The value as LangGraph embeds the path ``$``: sorted-key JSON."""
    try:
        return json.dumps(value, sort_keys=True, ensure_ascii=False)
    except (TypeError, ValueError) as exc:
        raise InvalidInput(
            f"a store value must be JSON (str, number, bool, None, list, dict): {exc}"
        ) from None


def texts_to_embed(value: Mapping[str, Any], paths: Sequence[str]) -> list[str]:
    """The texts LangGraph's stores would embed for ``value`` at ``paths`` (same extraction)."""
    from langgraph.store.base import get_text_at_path

    return [t for path in paths for t in get_text_at_path(value, path)]


# ---------------------------------------------------------------------------- filters


def check_filter(spec: Mapping[str, Any] | None) -> None:
    """Reject operators LangGraph stores do not define, before anything runs."""
    if spec is None:
        return
    if not isinstance(spec, Mapping):
        raise FilterError(f"a store filter must be a dict, got {type(spec).__name__}")
    for key, want in spec.items():
        if not isinstance(key, str):
            raise FilterError(f"store filter keys must be strings, got {key!r}")
        if isinstance(want, Mapping):
            ops = [k for k in want if isinstance(k, str) and k.startswith("$")]
            if ops:
                bad = [k for k in want if k not in COMPARISONS]
                if bad:
                    raise FilterError(
                        f"unsupported store filter operator {bad[0]!r} on {key!r}; use "
                        f"{', '.join(COMPARISONS)} or plain equality"
                    )
            else:
                check_filter(want)


def matches(value: Mapping[str, Any], spec: Mapping[str, Any] | None) -> bool:
    """Whether a stored value passes a store filter, with the semantics of LangGraph's stores.

    Plain values compare for equality (nested dicts key by key, lists element-wise); operator
    dicts apply ``$eq $ne $gt $gte $lt $lte``, the ordering ones numerically. A value that
    cannot be compared numerically (missing, text that is not a number) does not match.
    """
    if not spec:
        return True
    return all(_compare(value.get(k), want) for k, want in spec.items())


def _compare(actual: Any, want: Any) -> bool:
    if isinstance(want, Mapping):
        if any(isinstance(k, str) and k.startswith("$") for k in want):
            return all(_apply(actual, op, arg) for op, arg in want.items())
        return isinstance(actual, Mapping) and all(
            _compare(actual.get(k), v) for k, v in want.items()
        )
    if isinstance(want, list | tuple):
        return (
            isinstance(actual, list | tuple)
            and len(actual) == len(want)
            and all(_compare(a, w) for a, w in zip(actual, want, strict=True))
        )
    return bool(actual == want)


def _apply(actual: Any, op: str, arg: Any) -> bool:
    if op == "$eq":
        return bool(actual == arg)
    if op == "$ne":
        return bool(actual != arg)
    a, b = _number(actual), _number(arg)
    if a is None or b is None:
        return False
    return {"$gt": a > b, "$gte": a >= b, "$lt": a < b, "$lte": a <= b}[op]


def _number(value: Any) -> float | None:
    if value is None or isinstance(value, Mapping | list | tuple):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else number


def pushdown(spec: Mapping[str, Any] | None) -> dict[str, Any]:
    """The part of a store filter that SQL can check without ever dropping a match.

    Only equalities on scalars are pushed down (SQL's JSON equality is then at least as
    permissive as Python's); :func:`matches` still decides every candidate.
    """
    out: dict[str, Any] = {}
    if spec:
        _pushdown(spec, (RECORD, "value"), out)
    return out


def _pushdown(spec: Mapping[str, Any], path: tuple[str, ...], out: dict[str, Any]) -> None:
    for key, want in spec.items():
        if not (isinstance(key, str) and key and set(key) <= _PATH_SEGMENT and len(key) <= 64):
            continue
        if isinstance(want, Mapping):
            if "$eq" in want:
                want = want["$eq"]
            elif any(isinstance(k, str) and k.startswith("$") for k in want):
                continue
            elif len(path) - 2 < _MAX_PUSHDOWN_DEPTH:
                _pushdown(want, (*path, key), out)
                continue
            else:
                continue
        if _sql_scalar(want):
            out["metadata." + ".".join((*path, key))] = want


def _sql_scalar(value: Any) -> bool:
    if value is None or isinstance(value, bool):
        return True
    if isinstance(value, int):
        return abs(value) <= MAX_INT
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return False
        return "\x00" not in value
    return False


def check_value(value: object) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise InvalidInput(f"a store value must be a dict, got {type(value).__name__}")
    return value
