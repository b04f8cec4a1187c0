"""SQL for the PostgreSQL store: scope and filters, and hybrid search as one statement.

Values are bound parameters, always; the only things formatted into SQL text are column
names from the validated filter AST and fixed fragments of this module.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from ..core.lifecycle import SERVED_STATES
from . import sqlfilter
from .base import Scope, SearchRequest
from .pg_text import TextPlan, tsquery
from .rows import ITEM_COLUMNS
from .search import CONTEXT_WEIGHT, RRF_K, And, Cond, Node, Or
from .sqlfilter import SQL_OPS, TIME_COLUMNS, Compiled

ITEM_SELECT = ", ".join(f"items.{c}" for c in ITEM_COLUMNS)
BM25_K1, BM25_B = 1.2, 0.75  # as SQLite FTS5's bm25()
TS_RANK_ONE = math.pi**2 / 6  # ts_rank gives 6/pi^2 for one occurrence of weight 1
# rows the postings rank beyond the n kept: room for expired or others' private items
POSTINGS_SLACK = 10


# ---------------------------------------------------------------------------- filters


def compile_scope(scope: Scope, where: Node | None) -> Compiled:
    return sqlfilter.compile_scope(
        scope,
        where,
        _compile_cond,
        mark="%s",
        one_of=lambda column, values: (f"{column} = ANY(%s)", [list(values)]),
    )


def _compile_cond(c: Cond) -> Compiled:
    if c.type == "tags":
        if c.op == "$any":
            return "(items.tags && %s::text[])", [list(c.value)]
        values = [c.value] if c.op == "$contains" else list(c.value)  # $all
        return "(items.tags @> %s::text[])", values and [values]
    if c.type == "json":
        return _compile_json(c)
    column = "items." + TIME_COLUMNS.get(c.field, c.field)  # field names are whitelisted
    if c.op == "$exists":
        return f"({column} IS {'NOT ' if c.value else ''}NULL)", []
    if c.type == "time":  # values are epoch seconds
        return f"({column} {SQL_OPS[c.op]} to_timestamp(%s))", [c.value]
    if c.op in ("$in", "$nin"):
        values: list[Any] = list(c.value)
        cast = "text[]"
        if c.type == "number":
            cast = "numeric[]"
            if any(isinstance(v, float) for v in values):
                values = [float(v) for v in values]  # one element type per array
        member = f"{column} = ANY(%s::{cast})"
        if c.op == "$in":
            return f"({member})", [values]
        return f"({column} IS NULL OR NOT {member})", [values]
    if c.op == "$ne":
        return f"({column} IS NULL OR {column} <> %s)", [c.value]
    return f"({column} {SQL_OPS[c.op]} %s)", [c.value]


def _compile_json(c: Cond) -> Compiled:
    """User metadata: ``null`` and a missing key both count as "no value"; values compare
    only with values of their JSON type (``true`` is not ``1``), as in the SQLite store."""
    path = list(c.path)
    expr = "(items.metadata_q #> %s::text[])"
    absent = f"({expr} IS NULL OR {expr} = 'null'::jsonb)"
    if c.op == "$exists":
        return f"({expr} IS {'NOT ' if c.value else ''}NULL)", [path]
    if c.op in ("$gt", "$gte", "$lt", "$lte"):  # like with like: numbers, or strings
        op = SQL_OPS[c.op]
        if c.value is None:
            return "false", []
        if isinstance(c.value, bool | int | float):
            number = float(c.value) if isinstance(c.value, float) else int(c.value)
            return (
                f"coalesce(jsonb_typeof({expr}) = 'number' AND ({expr})::numeric {op} "
                "%s::numeric, false)",
                [path, path, number],
            )
        return (
            f"coalesce(jsonb_typeof({expr}) = 'string' AND "
            f'(items.metadata_q #>> %s::text[]) COLLATE "C" {op} %s, false)',
            [path, path, c.value],
        )
    values = c.value if c.op in ("$in", "$nin") else (c.value,)
    given = [v for v in values if v is not None]
    parts: list[str] = []
    params: list[Any] = []
    if None in values:
        parts.append(absent)
        params += [path, path]
    if len(given) == 1:  # containment first: the GIN index answers it, equality makes it exact
        contained: Any = given[0]
        for key in reversed(path):
            contained = {key: contained}
        parts.append(f"coalesce(items.metadata_q @> %s::jsonb AND {expr} = %s::jsonb, false)")
        params += [json.dumps(contained), path, json.dumps(given[0])]
    elif given:
        parts.append(f"coalesce({expr} = ANY(%s::jsonb[]), false)")
        params += [path, [json.dumps(v) for v in given]]
    hit = "(" + " OR ".join(parts) + ")"
    return (hit if c.op in ("$eq", "$in") else f"(NOT {hit})"), params


# ---------------------------------------------------------------------------- search


@dataclass(frozen=True)
class SearchSQL:
    sql: str
    params: list[Any]
    dense: bool  # whether the statement has a dense leg (and a _dense_n column)
    postings: bool = False  # whether its text leg ranks from item_terms (_terms_n, _sparse_n)


_EMPTY_LEG = (
    "SELECT NULL::text AS cube_id, NULL::text AS id, NULL::float8 AS score, "
    "NULL::bigint AS rank WHERE false"
)


def search_sql(
    req: SearchRequest,
    text: TextPlan | None,
    n: int,
    *,
    exact_dense: bool = False,
    postings: bool = False,
    per_word: int = 1000,
) -> SearchSQL:
    """Both legs, their reciprocal-rank fusion and the items, in one statement.

    Ranks and ties follow :func:`~.search.rrf_fuse`: dense leg first, then text leg.
    ``exact_dense`` orders the dense leg by an expression the HNSW index cannot serve, so
    PostgreSQL scans every admitted vector (the fallback when a selective filter defeats
    the index scan). ``postings`` ranks the text leg from ``item_terms`` (live items only;
    :func:`uses_postings` says when that holds), ``per_word`` postings per query lexeme at
    most, rather than through the GIN index.
    """
    where, where_params = compile_scope(req.scope, req.where)
    params: list[Any] = []
    ctes: list[str] = []
    dense = req.mode in ("hybrid", "dense") and req.vector is not None
    if dense:
        vector_scope = ""
        scope_params: list[Any] = []
        if req.scope.cube_ids is not None:  # the tenant key on the vector table itself
            vector_scope = "v.cube_id = ANY(%s) AND "
            scope_params = [list(req.scope.cube_ids)]
        leg = (
            "SELECT v.cube_id, v.item_id AS id, v.embedding <=> %b::vector AS dist "
            "FROM item_vectors v JOIN items ON items.cube_id = v.cube_id AND items.id = v.item_id "
            f"WHERE {{staged}}{vector_scope}{where} ORDER BY {{order}} LIMIT %s"
        )
        leg_params = [req.vector, *scope_params, *where_params, req.vector, n]
        if exact_dense:  # every admitted vector, graph or not
            dense_sql = leg.format(staged="", order="(v.embedding <=> %b::vector) + 0")
        else:  # the graph's nearest, and the staged vectors ranked exactly (migration 3)
            order = "v.embedding <=> %b::vector"
            graph = leg.format(staged="v.indexed AND ", order=order)
            staged = leg.format(staged="NOT v.indexed AND ", order=order)
            dense_sql = f"SELECT * FROM (({graph}) UNION ALL ({staged})) u ORDER BY dist LIMIT %s"
            leg_params = [*leg_params, *leg_params, n]
        ctes.append(f"dense AS MATERIALIZED ({dense_sql})")
        params += leg_params
        # relaxed_order returns rows a little out of order: rank them here
        ctes.append(
            "dense_r AS (SELECT cube_id, id, 1 - dist AS score, "
            "row_number() OVER (ORDER BY dist, id) AS rank FROM dense)"
        )
    else:
        ctes.append(f"dense_r AS ({_EMPTY_LEG})")
    text_leg = req.mode in ("hybrid", "text") and text is not None and bool(text.lexemes)
    postings = postings and text_leg
    if postings:
        assert text is not None
        more_ctes, more = _bm25_postings(text, req, where, where_params, n, per_word)
        ctes += more_ctes
        params += more
        ctes.append(
            "sparse_r AS (SELECT cube_id, id, score, "
            "row_number() OVER (ORDER BY score DESC, seq) AS rank FROM sparse)"
        )
    elif text_leg:
        assert text is not None
        sql, more = _bm25(text)
        ctes.append(
            f"sparse AS MATERIALIZED (SELECT items.cube_id, items.id, items.seq, {sql} "
            f"WHERE items.tsv @@ %s::tsquery AND {where} ORDER BY score DESC, items.seq LIMIT %s)"
        )
        params += [*more, tsquery(text.candidates), *where_params, n]
        ctes.append(  # ties in insertion order, as FTS5 returns them
            "sparse_r AS (SELECT cube_id, id, score, "
            "row_number() OVER (ORDER BY score DESC, seq) AS rank FROM sparse)"
        )
    else:
        ctes.append(f"sparse_r AS ({_EMPTY_LEG})")
    ctes.append(
        "fused AS (SELECT coalesce(d.cube_id, s.cube_id) AS cube_id, coalesce(d.id, s.id) AS id, "
        "coalesce(%s::float8 / (%s::float8 + d.rank), 0) "
        "+ coalesce(%s::float8 / (%s::float8 + s.rank), 0) AS score, "
        "d.score AS dense_score, s.score AS text_score, d.rank AS drank, s.rank AS srank "
        "FROM dense_r d FULL JOIN sparse_r s ON d.cube_id = s.cube_id AND d.id = s.id "
        "ORDER BY score DESC, drank NULLS LAST, srank LIMIT %s)"
    )
    params += [req.dense_weight, RRF_K, 1.0, RRF_K, req.k]
    # how many rows the dense leg found, for the completeness check (0 without one)
    dense_n = "(SELECT count(*) FROM dense)" if dense else "0"
    # and how many the postings ranked and kept (whether the filter left the text leg short)
    terms_n, sparse_n = (
        ("(SELECT count(*) FROM terms)", "(SELECT count(*) FROM sparse)")
        if postings
        else ("0", "0")
    )
    sql = (
        "WITH " + ", ".join(ctes) + " "
        f"SELECT f.score AS _score, f.dense_score AS _dense, f.text_score AS _text, "
        f"{dense_n} AS _dense_n, {terms_n} AS _terms_n, {sparse_n} AS _sparse_n, {ITEM_SELECT} "
        "FROM fused f JOIN items ON items.cube_id = f.cube_id AND items.id = f.id "
        "ORDER BY f.score DESC, f.drank NULLS LAST, f.srank"
    )
    return SearchSQL(sql, params, dense, postings)


def uses_postings(req: SearchRequest) -> bool:
    """Whether the text leg can rank from ``item_terms``: the filter is the engine's own
    (live states, not expired) and nothing else, so the postings' rows are the admitted
    ones but for an expired item or another user's private one, which the join drops."""
    parts = req.where.parts if isinstance(req.where, And) else (req.where,)
    for part in parts:
        if isinstance(part, Cond) and part.field == "state" and part.op == "$in":
            if not set(part.value) <= set(SERVED_STATES):
                return False
        elif not (isinstance(part, Or) and all(
            isinstance(c, Cond) and c.field == "expires_at" for c in part.parts
        )):  # fmt: skip
            return False
    return any(isinstance(p, Cond) and p.field == "state" for p in parts)


def _bm25_postings(
    text: TextPlan, req: SearchRequest, where: str, where_params: list[Any], n: int, per_word: int
) -> tuple[list[str], list[Any]]:
    """``terms`` (BM25 summed over each query lexeme's best ``per_word`` postings in
    scope) and ``sparse`` (those rows of admitted items, top ``n``); BM25 as in
    :func:`_bm25`, tf counted exactly (text 1, context CONTEXT_WEIGHT).

    A word with more postings than ``per_word`` scores only the memories where it weighs
    most (highest impact): a memory ranked by a rare word can miss a common word's small
    share of its score. Rare words, and small scopes, are scored exactly.
    """
    scope, scope_params = "", []
    if req.scope.cube_ids is not None:
        scope, scope_params = " AND t.cube_id = ANY(%s)", [list(req.scope.cube_ids)]
    if text.avg_len:
        base, per_len = BM25_K1 * (1 - BM25_B), BM25_K1 * BM25_B / text.avg_len
    else:
        base, per_len = BM25_K1, 0.0
    terms = (
        "terms AS MATERIALIZED (SELECT t.seq, "
        "sum(q.w * t.tf / (t.tf + %s::float8 + %s::float8 * t.dl)) AS score "
        "FROM unnest(%s::text[], %s::float8[]) q(lexeme, w), LATERAL (SELECT seq, tf, dl "
        f"FROM item_terms t WHERE t.lexeme = q.lexeme{scope} ORDER BY t.impact DESC LIMIT %s) t "
        "GROUP BY t.seq ORDER BY score DESC, t.seq LIMIT %s)"
    )
    sparse = (
        "sparse AS MATERIALIZED (SELECT items.cube_id, items.id, p.seq, p.score FROM terms p "
        f"JOIN items ON items.seq = p.seq WHERE {where} ORDER BY p.score DESC, p.seq LIMIT %s)"
    )
    params = [
        base,
        per_len,
        list(text.lexemes),
        [idf * (BM25_K1 + 1) for idf in text.idf],
        *scope_params,
        per_word,
        n + POSTINGS_SLACK,
        *where_params,
        n,
    ]
    return [terms, sparse], params


def _bm25(text: TextPlan) -> Compiled:
    """``<score> AS score FROM items CROSS JOIN LATERAL (...)``: BM25 of each memory, as
    SQLite FTS5's ``bm25(items_fts, 1.0, CONTEXT_WEIGHT)`` computes it.

    score = sum over lexemes of idf * tf * (k1 + 1) / (tf + k1 * (1 - b + b * len / avg)),
    where tf = ts_rank of the lexeme alone, scaled so that one occurrence in the text
    counts 1 and one in the context CONTEXT_WEIGHT (repeats add a little less than 1
    each); len is the number of distinct lexemes (``length(tsv)``, kept in the tsvector).
    """
    terms, tfs, params, tf_params = [], [], [], []
    weights = [0.0, 0.0, CONTEXT_WEIGHT, 1.0]  # labels D, C, B (context), A (text)
    for n, (lexeme, idf) in enumerate(zip(text.lexemes, text.idf, strict=True)):
        terms.append(f"%s::float8 * r.tf{n} / (r.tf{n} + %s::float8 * r.norm)")
        params += [idf * (BM25_K1 + 1), BM25_K1]
        tfs.append(f"%s::float8 * ts_rank(%s::float4[], items.tsv, %s::tsquery) AS tf{n}")
        tf_params += [TS_RANK_ONE, weights, tsquery([lexeme])]
    norm = [1 - BM25_B, BM25_B / text.avg_len] if text.avg_len else [1.0, 0.0]
    sql = (
        f"({' + '.join(terms)}) AS score FROM items CROSS JOIN LATERAL "
        f"(SELECT {', '.join(tfs)}, %s::float8 + %s::float8 * length(items.tsv) AS norm) r"
    )
    return sql, [*params, *tf_params, *norm]


def admitted_vectors_sql(req: SearchRequest, limit: int) -> Compiled:
    """How many vectors (up to ``limit``) the scope and filter admit."""
    where, params = compile_scope(req.scope, req.where)
    return (
        "SELECT count(*) FROM (SELECT 1 FROM item_vectors v JOIN items "
        f"ON items.cube_id = v.cube_id AND items.id = v.item_id WHERE {where} LIMIT %s) x",
        [*params, limit],
    )
