"""The in-memory BM25 index ranks and scores like SQLite FTS5's bm25() (which it replaced)."""

from __future__ import annotations

import random
import sqlite3

import pytest

from memos_integrations.storage.search import CONTEXT_WEIGHT
from memos_integrations.storage.text_index import TextIndex, query_terms, tokens

WORDS = (  # noqa: SIM905
    "alice bob lisbon porto moved bakery bread running marathon cello garden tomato basil "
    "violin chess museum harbour train coffee tea rain summer winter sister brother"
).split()


def _corpus(n: int, seed: int) -> list[tuple[str, str, str]]:
    rng = random.Random(seed)
    return [
        (
            f"m{i}",
            " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 12))),
            " ".join(rng.choice(WORDS) for _ in range(rng.randint(0, 6))),
        )
        for i in range(n)
    ]


def _fts5(corpus: list[tuple[str, str, str]]) -> sqlite3.Connection:
    db = sqlite3.connect(":memory:")
    db.execute(
        "CREATE VIRTUAL TABLE f USING fts5(id UNINDEXED, text, context, "
        "tokenize='porter unicode61 remove_diacritics 2')"
    )
    db.executemany("INSERT INTO f(id, text, context) VALUES (?,?,?)", corpus)
    return db


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_scores_match_fts5_bm25(seed: int) -> None:
    corpus = _corpus(300, seed)
    index = TextIndex()
    index.add((i, "cube", text, context) for i, text, context in corpus)
    db = _fts5(corpus)
    rng = random.Random(seed + 100)
    for _ in range(40):
        query = " ".join(rng.sample(WORDS, rng.randint(1, 4)))
        match = " OR ".join(f'"{t}"' for t in query.split())
        expected = {
            i: -score
            for i, score in db.execute(
                f"SELECT id, bm25(f, 0.0, 1.0, {CONTEXT_WEIGHT}) FROM f WHERE f MATCH ?", (match,)
            )
        }
        got = dict(index.search(query, 1000))
        assert got.keys() == expected.keys(), query
        for i, score in expected.items():
            assert got[i] == pytest.approx(score, rel=1e-4, abs=1e-6), (query, i)


def test_removed_and_replaced_rows_leave_the_statistics() -> None:
    corpus = _corpus(200, 7)
    index = TextIndex()
    index.add((i, "cube", text, context) for i, text, context in corpus)
    # replace half, remove a quarter; the result must equal an index built from the survivors
    survivors = {i: (text, context) for i, text, context in corpus}
    for i, _, _ in corpus[:100]:
        survivors[i] = ("alice moved to lisbon", "")
        index.add([(i, "cube", "alice moved to lisbon", "")])
    removed = [i for i, _, _ in corpus[150:]]
    index.remove(removed)
    for i in removed:
        del survivors[i]
    fresh = TextIndex()
    fresh.add((i, "cube", t, c) for i, (t, c) in survivors.items())
    for query in ("alice lisbon", "marathon cello", "rain"):
        assert dict(index.search(query, 500)) == pytest.approx(dict(fresh.search(query, 500)))
    assert not set(removed) & {i for i, _ in index.search("alice bob rain tea", 500)}


def test_cubes_and_only_restrict_the_ranking() -> None:
    index = TextIndex()
    index.add(
        [
            ("a1", "a", "alice plays chess", ""),
            ("a2", "a", "chess club on friday", ""),
            ("b1", "b", "bob plays chess", ""),
        ]
    )
    assert {i for i, _ in index.search("chess", 10, ["a"])} == {"a1", "a2"}
    assert [i for i, _ in index.search("chess", 10, ["b", "nope"])] == ["b1"]
    assert [i for i, _ in index.search("chess", 10, only={"a2", "zzz"})] == ["a2"]
    assert index.search("chess", 10, []) == []
    assert len(index.search("chess", 2)) == 2


def test_tokens_fold_case_accents_and_stem() -> None:
    assert tokens("Café RUNNING, naïve_user's") == ["cafe", "run", "naiv", "user", "s"]
    assert query_terms("Where does Alice's sister live? living") == ["alic", "sister", "live"]
