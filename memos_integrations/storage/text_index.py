"""An in-memory BM25 index for the full-text leg, scored the way SQLite FTS5 scores.

Why not FTS5 itself: FTS5 computes ``bm25()`` for *every* row that matches any query term
and then sorts; a query with one common word touches a tenth of a 100k-memory cube, which
cost ~35 ms. Here each term's postings are NumPy arrays, so scoring is a few vectorised
gathers and one partial sort (well under a millisecond at 100k).

Scoring is FTS5's ``bm25(k1=1.2, b=0.75)`` with column weights: a term's frequency is the
weighted sum of its counts in the memory's text (weight 1) and its conversational context
(``CONTEXT_WEIGHT``), a document's length counts the tokens of both, and IDF is
``log((N - df + 0.5) / (df + 0.5))`` floored at 1e-6. Tokens are Unicode words, case- and
accent-folded and Porter-stemmed (FTS5's ``porter unicode61 remove_diacritics 2``).

Like :class:`VectorIndex`, the index holds no truth of its own: the store fills and syncs
it from its tables.
"""

from __future__ import annotations

import functools
import math
import re
import threading
import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import snowballstemmer

from .search import CONTEXT_WEIGHT, text_terms

K1 = 1.2
B = 0.75
_TOKEN = re.compile(r"[^\W_]+")  # letters and digits; "_" separates, as in unicode61
_stemmer = snowballstemmer.stemmer("porter")
_stem_lock = threading.Lock()  # a snowball stemmer keeps its word in instance state


@functools.lru_cache(maxsize=200_000)
def _stem(word: str) -> str:
    with _stem_lock:
        return _stemmer.stemWord(word)


def _fold(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch)).casefold()


def tokens(text: str) -> list[str]:
    """The index terms of a text, in order (repeats kept: they are term frequencies)."""
    # like FTS5's porter tokenizer, leave words of one or two characters alone
    return [_stem(w) if len(w) > 2 else w for w in _TOKEN.findall(_fold(text))]


def query_terms(query: str) -> list[str]:
    """The distinct index terms a query looks for (content words, see ``text_terms``)."""
    return list(dict.fromkeys(t for word in text_terms(query) for t in tokens(word)))


class _Growable:
    """An append-only NumPy array with amortised growth."""

    def __init__(self, dtype: type) -> None:
        self.data = np.zeros(64, dtype)
        self.size = 0

    def extend(self, values: Sequence[float] | np.ndarray) -> None:
        end = self.size + len(values)
        if end > len(self.data):
            grown = np.zeros(max(end, 2 * len(self.data)), self.data.dtype)
            grown[: self.size] = self.data[: self.size]
            self.data = grown
        self.data[self.size : end] = values
        self.size = end

    @property
    def view(self) -> np.ndarray:
        return self.data[: self.size]


@dataclass
class _Postings:
    """One term's rows and weighted frequencies; appends wait in lists until a query needs them."""

    rows: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    freqs: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    new_rows: list[int] = field(default_factory=list)
    new_freqs: list[float] = field(default_factory=list)
    # BM25's term-frequency part per row, for the rows and average length it was computed at:
    # the same until a write changes either, so read-heavy use computes it once per term.
    tf: np.ndarray | None = None
    tf_avgdl: float = 0.0

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        if self.new_rows:
            self.rows = np.concatenate([self.rows, np.asarray(self.new_rows, np.int32)])
            self.freqs = np.concatenate([self.freqs, np.asarray(self.new_freqs, np.float32)])
            self.new_rows, self.new_freqs = [], []
            self.tf = None
        return self.rows, self.freqs

    def tf_part(self, length: np.ndarray, avgdl: float) -> tuple[np.ndarray, np.ndarray]:
        """The rows and ``f (k1 + 1) / (f + k1 (1 - b + b |d| / avgdl))`` for each."""
        rows, f = self.arrays()
        if self.tf is None or self.tf_avgdl != avgdl:
            norm = K1 * (1 - B + B * length[rows] / avgdl)
            self.tf, self.tf_avgdl = f * (K1 + 1) / (f + norm), avgdl
        return rows, self.tf

    def keep(self, alive: np.ndarray) -> None:
        rows, freqs = self.arrays()
        live = alive[rows]
        self.rows, self.freqs, self.tf = rows[live], freqs[live], None


class TextIndex:
    """BM25 top-k over memories' text and context, safe to share between threads."""

    def __init__(self, context_weight: float = CONTEXT_WEIGHT) -> None:
        self.context_weight = context_weight
        self._postings: dict[str, _Postings] = {}
        self._df: Counter[str] = Counter()  # live rows per term
        self._ids: list[str] = []  # row -> item id
        self._row: dict[str, int] = {}  # item id -> live row
        self._terms: list[tuple[str, ...]] = []  # row -> its distinct terms (for removal)
        self._cube_codes: dict[str, int] = {}
        self._cube = _Growable(np.int32)  # row -> cube code
        self._length = _Growable(np.float32)  # row -> tokens in text and context
        self._alive = _Growable(np.bool_)
        self._live_length = 0.0
        self._dead = 0  # rows removed since the postings were last compacted
        self._lock = threading.RLock()

    def __len__(self) -> int:
        return len(self._row)

    def __contains__(self, item_id: str) -> bool:
        return item_id in self._row

    def add(self, entries: Iterable[tuple[str, str, str, str]]) -> None:
        """Add or replace ``(item id, cube id, text, context)`` entries."""
        with self._lock:
            for item_id, cube_id, text, context in entries:
                self.remove([item_id])
                words, around = tokens(text), tokens(context)
                freq: Counter[str] = Counter(words)
                for term in around:
                    freq[term] += self.context_weight
                row = len(self._ids)
                self._ids.append(item_id)
                self._row[item_id] = row
                self._terms.append(tuple(freq))
                code = self._cube_codes.setdefault(cube_id, len(self._cube_codes))
                self._cube.extend([code])
                self._length.extend([len(words) + len(around)])
                self._alive.extend([True])
                self._live_length += len(words) + len(around)
                for term, f in freq.items():
                    p = self._postings.get(term) or self._postings.setdefault(term, _Postings())
                    p.new_rows.append(row)
                    p.new_freqs.append(f)
                self._df.update(freq.keys())

    def remove(self, ids: Iterable[str]) -> None:
        with self._lock:
            for item_id in ids:
                row = self._row.pop(item_id, None)
                if row is None:
                    continue
                self._alive.data[row] = False
                self._live_length -= float(self._length.data[row])
                self._df.subtract(self._terms[row])
                self._terms[row] = ()
                self._dead += 1
            if self._dead > max(1_000, len(self._row)):  # drop dead rows from the postings
                for p in self._postings.values():
                    p.keep(self._alive.view)
                self._dead = 0

    def search(
        self,
        query: str,
        k: int,
        cube_ids: Iterable[str] | None = None,
        only: set[str] | None = None,
    ) -> list[tuple[str, float]]:
        """Every live match in the given cubes (all when None), best first, at most ``k``.

        ``only`` restricts the ranking to those ids (used for selective filters).
        """
        terms = query_terms(query)
        with self._lock:
            n_live = len(self._row)
            if not terms or n_live == 0:
                return []
            avgdl = max(self._live_length / n_live, 1e-9)
            length = self._length.view
            parts: list[np.ndarray] = []
            weights: list[np.ndarray] = []
            for term in terms:
                p = self._postings.get(term)
                df = self._df.get(term, 0)
                if p is None or df <= 0:
                    continue
                idf = max(math.log((n_live - df + 0.5) / (df + 0.5)), 1e-6)
                rows, tf = p.tf_part(length, avgdl)
                parts.append(rows)
                weights.append(idf * tf)
            if not parts:
                return []
            # a term's rows are distinct, so summing per row is BM25's sum over terms
            matched = np.concatenate(parts)
            scores = np.bincount(matched, np.concatenate(weights), minlength=len(self._ids))
            hit = np.zeros(len(self._ids), np.bool_)
            hit[matched] = True
            rows = np.flatnonzero(hit)  # 6x faster on booleans than on the float scores
            rows = rows[self._alive.view[rows]]
            if cube_ids is not None:
                codes = {self._cube_codes[c] for c in cube_ids if c in self._cube_codes}
                if len(codes) < len(self._cube_codes):  # all cubes: nothing to filter
                    rows = rows[np.isin(self._cube.view[rows], list(codes))]
            if only is not None:
                allowed = np.zeros(len(self._ids), np.bool_)
                allowed[[self._row[i] for i in only if i in self._row]] = True
                rows = rows[allowed[rows]]
            if len(rows) > k:
                rows = rows[np.argpartition(-scores[rows], k - 1)[:k]]
            rows = rows[np.lexsort((rows, -scores[rows]))]  # best first, ties by age
            return [(self._ids[r], float(scores[r])) for r in rows]
