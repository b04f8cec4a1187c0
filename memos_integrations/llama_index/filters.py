"""LlamaIndex ``MetadataFilters`` in the MemOS filter language (``metadata.<key>`` paths).

Supported: ``== != > >= < <= in nin is_empty`` and ``and``/``or``/``not``, nested. The
operators on arrays and substrings (``any all contains text_match
text_match_insensitive``) have no counterpart in the filter language, which compares JSON
scalars only, so they raise :class:`FilterError` instead of being ignored.
"""

from __future__ import annotations

from typing import Any

from llama_index.core.vector_stores.types import (
    FilterCondition,
    FilterOperator,
    MetadataFilter,
    MetadataFilters,
)

from ..core.errors import FilterError

_OPS = {
    FilterOperator.EQ: "$eq",
    FilterOperator.NE: "$ne",
    FilterOperator.GT: "$gt",
    FilterOperator.GTE: "$gte",
    FilterOperator.LT: "$lt",
    FilterOperator.LTE: "$lte",
    FilterOperator.IN: "$in",
    FilterOperator.NIN: "$nin",
}
SUPPORTED = (*(op.value for op in _OPS), FilterOperator.IS_EMPTY.value)


def to_filter(filters: MetadataFilters | None) -> dict[str, Any] | None:
    """The MemOS filter for ``filters`` (``None`` when there is nothing to filter on)."""
    if filters is None or not filters.filters:
        return None
    parts = [to_filter(f) if isinstance(f, MetadataFilters) else _one(f) for f in filters.filters]
    present = [p for p in parts if p is not None]
    if not present:
        return None
    condition = filters.condition or FilterCondition.AND
    if condition == FilterCondition.AND:
        return present[0] if len(present) == 1 else {"$and": present}
    if condition == FilterCondition.OR:
        return {"$or": present}
    if condition == FilterCondition.NOT:  # none of them matches, as LlamaIndex defines it
        return {"$not": {"$or": present}}
    raise FilterError(f"unknown filter condition {condition!r}")


def _one(f: MetadataFilter) -> dict[str, Any]:
    path = f"metadata.{f.key}"
    if f.operator == FilterOperator.IS_EMPTY:  # missing, null or ""
        return {"$or": [{path: {"$eq": None}}, {path: {"$eq": ""}}]}
    op = _OPS.get(f.operator)
    if op is None:
        raise FilterError(
            f"filter operator {f.operator.value!r} on {f.key!r} is not supported by MemOS "
            f"metadata filters; use one of {', '.join(SUPPORTED)}"
        )
    return {path: {op: f.value}}
