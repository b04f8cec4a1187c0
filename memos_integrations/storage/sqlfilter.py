"""Filter AST -> SQL, the part both SQL stores share: the boolean structure.

Each store compiles the leaves (:class:`~.search.Cond`) in its own dialect; values always
travel as bound parameters, and column names only ever come from the validated AST.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

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
