"""The full-text leg on PostgreSQL: BM25, as the SQLite store ranks (FTS5's ``bm25``).

``ts_rank`` alone knows nothing of how common a word is, nor of document length. Here each
query lexeme gets BM25's idf from the planner statistics ANALYZE keeps for ``items.tsv``
(``most_common_elems``: no per-query counting), its term frequency from ``ts_rank`` on
that lexeme alone (which weighs text 1 and context :data:`~.search.CONTEXT_WEIGHT` and
saturates with repeats), and the length norm from ``length(tsv)`` against the average.
Measured on LoCoMo, this puts the text leg level with the SQLite store's (docs/postgres.md).
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg

from .search import text_terms

Conn = psycopg.Connection[dict[str, Any]]

STATS_TTL_S = 60.0  # how long lexeme frequencies are reused before pg_stats is read again
LEXEME_CACHE = 50_000  # query words whose lexemes are remembered
_ANALYZE_LOCK = 0x6D656D6F735F6131  # "memos_a1": one ANALYZE at a time across processes


@dataclass(frozen=True)
class TextPlan:
    """The full-text leg of one query: which lexemes score, with what weight, and which
    ones find the candidates."""

    lexemes: tuple[str, ...]
    idf: tuple[float, ...]
    candidates: tuple[str, ...]
    avg_len: float | None  # mean length(tsv) of the table; None: no length norm


@dataclass(frozen=True)
class LexemeStats:
    """Document frequencies of lexemes, from the planner statistics of ``items.tsv``."""

    rows: float
    freq: dict[str, float]
    floor: float  # the lowest frequency ANALYZE kept; rarer lexemes are not listed
    avg_len: float  # mean distinct lexemes per memory

    def docs(self, lexeme: str) -> float:
        return self.rows * self.freq.get(lexeme, self.floor / 2)

    def idf(self, lexeme: str) -> float:
        """BM25's idf, floored like SQLite FTS5 does (common words weigh almost nothing)."""
        n = self.docs(lexeme)
        return max(math.log((self.rows - n + 0.5) / (n + 0.5)), 1e-6)


def plan_text(lexemes: Sequence[str], stats: LexemeStats | None, budget: int) -> TextPlan:
    """Weigh lexemes by idf; find candidates through the rarest ones.

    Ranking in PostgreSQL reads every matching row, so a word in half the memories would
    cost a scan of half the table. Candidates come from the rarest lexemes, adding more
    while their estimated matches stay within ``budget`` rows; every lexeme still scores.
    A memory matching only very common words can then be missed, where it would have
    ranked below the rare-word matches anyway.
    """
    unique = tuple(dict.fromkeys(lexemes))
    if stats is None or stats.rows <= 0:  # never analysed: plain term matching
        return TextPlan(unique, tuple(1.0 for _ in unique), unique, None)
    by_rarity = sorted(unique, key=stats.docs)
    chosen: list[str] = []
    rows = 0.0
    for lexeme in by_rarity:
        listed = lexeme in stats.freq
        if chosen and listed and rows + stats.docs(lexeme) > budget:
            break
        chosen.append(lexeme)
        rows += stats.docs(lexeme) if listed else 0.0
    return TextPlan(unique, tuple(stats.idf(lx) for lx in unique), tuple(chosen), stats.avg_len)


def tsquery(lexemes: Sequence[str]) -> str:
    """An OR query of already-normalised lexemes, each quoted (no tsquery syntax leaks)."""
    return " | ".join("'" + lx.replace("\\", "\\\\").replace("'", "''") + "'" for lx in lexemes)


class TextIndex:
    """Per-store state of the text leg: the word -> lexeme cache and the lexeme statistics.

    Statistics are re-read at most once a minute. When the table was never analysed, or
    changed a lot since (``n_mod_since_analyze``), the reader runs ``ANALYZE items`` itself
    rather than wait for autovacuum: a fresh store would otherwise rank without idf, and
    the planner, without row counts, would skip the vector index.
    """

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self._lexemes: OrderedDict[str, tuple[str, ...]] = OrderedDict()
        self._stats: tuple[float, LexemeStats | None] = (-math.inf, None)
        self._lock = threading.Lock()

    def forget_stats(self) -> None:
        self._stats = (-math.inf, None)

    def plan(self, c: Conn, query: str | None, stats: LexemeStats | None) -> TextPlan | None:
        terms = text_terms(query or "")
        lexemes = self._lexemes_of(c, terms) if terms else []
        if not lexemes:
            return None
        return plan_text(lexemes, stats, self.budget)

    def _lexemes_of(self, c: Conn, terms: Sequence[str]) -> list[str]:
        """The query words as the ``english`` configuration indexes them (stemmed, stopwords
        dropped); cached, since that mapping never changes."""
        with self._lock:
            missing = [t for t in terms if t not in self._lexemes]
        if missing:
            rows = c.execute(
                "SELECT t, tsvector_to_array(to_tsvector('memos_english', t)) AS lx "
                "FROM unnest(%s::text[]) t",
                (missing,),
            ).fetchall()
            with self._lock:
                for r in rows:
                    self._lexemes[r["t"]] = tuple(r["lx"])
                while len(self._lexemes) > LEXEME_CACHE:
                    self._lexemes.popitem(last=False)
        with self._lock:
            return [lx for t in terms for lx in self._lexemes.get(t, ())]

    def statistics(self, c: Conn) -> LexemeStats | None:
        """The lexeme statistics, re-read once a minute; on the way, ANALYZE a table that
        was never analysed or changed a lot (the planner needs it as much as the idf does)."""
        read_at, stats = self._stats
        if time.monotonic() - read_at < STATS_TTL_S:
            return stats
        row = self._read_stats(c)
        if row is not None and _stale(row):
            with c.transaction():
                if c.execute("SELECT pg_try_advisory_xact_lock(%s) AS ok", (_ANALYZE_LOCK,)
                             ).fetchone()["ok"]:  # fmt: skip
                    c.execute("ANALYZE items")
                    c.execute("ANALYZE item_vectors")  # they grow together
            row = self._read_stats(c)
        stats = None
        if row is not None and row["elems"] and row["rows"] > 0:
            freqs = row["freqs"]  # element frequencies, then min, max and null frequency
            # a sample of ~20k rows is plenty for a mean (SYSTEM reads whole pages)
            percent = min(100.0, 100.0 * 20_000 / row["rows"])
            avg = c.execute(
                "SELECT avg(length(tsv))::float8 AS a FROM items TABLESAMPLE SYSTEM (%s)",
                (percent,),
            ).fetchone()["a"]
            stats = LexemeStats(
                float(row["rows"]),
                dict(zip(row["elems"], freqs, strict=False)),
                freqs[-3],
                avg or 1.0,
            )
        # no statistics yet (an empty table): look again soon rather than in a minute
        self._stats = (time.monotonic() - (0 if stats else STATS_TTL_S - 5), stats)
        return stats

    @staticmethod
    def _read_stats(c: Conn) -> dict[str, Any] | None:
        return c.execute(
            "SELECT s.most_common_elems::text::text[] AS elems, "
            "s.most_common_elem_freqs AS freqs, k.reltuples AS rows, "
            "t.n_mod_since_analyze AS changed, t.n_live_tup AS live FROM pg_class k "
            "JOIN pg_namespace n ON n.oid = k.relnamespace "
            "LEFT JOIN pg_stat_user_tables t ON t.relid = k.oid "
            "LEFT JOIN pg_stats s ON s.schemaname = n.nspname AND s.tablename = k.relname "
            "AND s.attname = 'tsv' WHERE k.oid = 'items'::regclass"
        ).fetchone()


def _stale(row: dict[str, Any]) -> bool:
    """Never analysed, or a fifth of the rows changed since (autovacuum waits for a tenth,
    but only looks once a minute, and the change counters it reads lag by up to a second)."""
    rows, changed = row["rows"], row["changed"] or 0
    return rows < 0 or changed > 0.2 * rows + 200
