"""Filter AST -> SQL, the part both SQL stores share: the boolean structure.

Each store compiles the leaves (:class:`~.search.Cond`) in its own dialect; values always
travel as bound parameters, and column names only ever come from the validated AST.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from .base import AuditQuery, Scope
from .search import And, Cond, Node, Not, Or

Compiled = tuple[str, list[Any]]

# Comparison operators of the filter language as SQL (``$ne`` and ``$nin`` handle NULL apart).
SQL_OPS = {"$eq": "=", "$ne": "!=", "$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}
# Filter fields kept in another column: the sortable twin of the ISO ``event_time``.
TIME_COLUMNS = {"event_time": "event_ts"}


def compile_tree(node: Node, leaf: Callable[[Cond], Compiled]) -> Compiled:
    """``(sql, params)`` for a filter AST, with ``leaf`` compiling each condition."""
    if isinstance(node, And | Or):
        compiled = [compile_tree(p, leaf) for p in node.parts]
        joiner = " AND " if isinstance(node, And) else " OR "
        return "(" + joiner.join(s for s, _ in compiled) + ")", [
            p for _, ps in compiled for p in ps
        ]
    if isinstance(node, Not):
        sql, params = compile_tree(node.part, leaf)
        return f"(NOT {sql})", params
    return leaf(node)


def compile_scope(
    scope: Scope,
    where: Node | None,
    leaf: Callable[[Cond], Compiled],
    *,
    mark: str,
    one_of: Callable[[str, tuple[str, ...]], Compiled],
) -> Compiled:
    """Scope first (cubes, then private items of others), then the user's filter.

    ``mark`` is the dialect's placeholder and ``one_of(column, values)`` its membership test.
    """
    parts: list[str] = []
    params: list[Any] = []
    if scope.cube_ids is not None:
        if not scope.cube_ids:
            return "1=0", []
        sql, more = one_of("items.cube_id", scope.cube_ids)
        parts.append(sql)
        params.extend(more)
    if scope.viewer is not None:
        parts.append(f"(items.visibility <> 'private' OR items.owner = {mark})")
        params.append(scope.viewer)
    if where is not None:
        sql, more = compile_tree(where, leaf)
        parts.append(sql)
        params.extend(more)
    return (" AND ".join(parts) or "1=1"), params


def equalities(pairs: Iterable[tuple[str, Any]], mark: str) -> Compiled:
    """``col = mark AND ...`` for the pairs whose value is not None (column names are the
    caller's fixed strings)."""
    given = [(column, value) for column, value in pairs if value is not None]
    sql = " AND ".join(f"{column} = {mark}" for column, _ in given)
    return sql or "1=1", [value for _, value in given]


def compile_audit(
    q: AuditQuery,
    *,
    mark: str,
    time: Callable[[Any], Any],
    one_of: Callable[[str, tuple[str, ...]], Compiled],
) -> Compiled:
    """The WHERE clause of an audit query; ``time`` converts a datetime to the column's type."""
    exact = q.action if q.action is None or not q.action.endswith("*") else None
    sql, params = equalities(
        (("actor", q.actor), ("action", exact), ("target", q.target), ("cube_id", q.cube_id)),
        mark,
    )
    parts = [sql]
    if q.action is not None and exact is None:  # a prefix: LIKE with its wildcards escaped
        prefix = q.action[:-1].replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        parts.append(f"action LIKE {mark} ESCAPE '\\'")
        params.append(prefix + "%")
    for op, when in ((">=", q.since), ("<=", q.until)):
        if when is not None:
            parts.append(f"at {op} {mark}")
            params.append(time(when))
    if q.viewer is not None:  # what a non-admin may see: by them, about them, in their cubes
        mine = [f"actor = {mark}", f"target = {mark}"]
        params += [q.viewer, q.viewer]
        if q.viewer_cubes:
            cubes, more = one_of("cube_id", q.viewer_cubes)
            mine.append(cubes)
            params += more
        parts.append("(" + " OR ".join(mine) + ")")
    return " AND ".join(parts), params
