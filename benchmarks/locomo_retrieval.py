"""LoCoMo evidence recall@k: MemOS hybrid search against BM25 and exact dense baselines.

For each conversation a fresh embedded store is built in a temporary directory (one user,
one cube), every turn is added as a raw-turn memory (speaker as name, session date as
timestamp, ``dia_id`` as message id, ``session_N`` as session), and each question is run
through ``mos.search``. Recall@k per question = the fraction of its evidence turns found
among the top-k memories; averaged per category and overall.

Baselines, on the same turn texts and in the same run:
  * BM25: ``rank_bm25.BM25Okapi`` over lowercase ``\\w+`` tokens of the stored text;
  * dense: exact cosine over the *same* MiniLM vectors the store holds (each turn is
    embedded once; the store is fed those vectors through a caching embedder).
Our ``mode="dense"`` and ``mode="text"`` legs are reported as well, plus a few offline
diagnostics (fusion depth/weights, stopwords, speaker prefix) that explain the gaps.

    python benchmarks/locomo_retrieval.py                       # all of locomo_dev6.json
    python benchmarks/locomo_retrieval.py --limit-conversations 1 --out locomo_quick
    python benchmarks/locomo_retrieval.py --store postgres --out locomo_retrieval_postgres

``--store postgres`` builds each conversation in a fresh database on a PostgreSQL server
(``--pg-url``/``MEMOS_PG_URL``, else a private embedded one) instead of a SQLite file.
"""

from __future__ import annotations

import argparse
import json
import re
import sqlite3
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import code_version, command_line, machine_details, write_result

from memos_integrations import MemOS
from memos_integrations.core.config import Settings, data_dir
from memos_integrations.embeddings import BUNDLED_MODEL_ID, default_embedder
from memos_integrations.storage import search as search_module
from memos_integrations.storage.search import RRF_K, STOPWORDS, rrf_fuse, text_terms

CODE = code_version()  # the engine as imported at start-up

CATEGORIES = {1: "multi-hop", 2: "temporal", 3: "open-domain", 4: "single-hop", 5: "adversarial"}
KS = (1, 5, 10, 25)
_WORD = re.compile(r"\w+")
_DIA = re.compile(r"D\s*:?\s*(\d+)\s*:\s*(\d+)")
_SESSION = re.compile(r"session_(\d+)")


# ---------------------------------------------------------------------------- data


def parse_session_time(text: str) -> datetime:
    """``"1:56 pm on 8 May, 2023"`` -> ``2023-05-08 13:56`` (naive; the engine reads it as UTC)."""
    cleaned = " ".join(text.replace(",", ", ").split()).replace(" ,", ",")
    for fmt in ("%I:%M %p on %d %B, %Y", "%I:%M %p on %d %b, %Y", "%H:%M on %d %B, %Y"):
        try:
            return datetime.strptime(cleaned, fmt)
        except ValueError:
            continue
    raise ValueError(f"unparseable LoCoMo session date {text!r}")


def norm_dia(raw: str) -> str | None:
    """``"D:11:26"`` / ``"D11:026"`` -> ``"D11:26"``; ``None`` when it is not a turn id."""
    m = _DIA.fullmatch(raw.strip())
    return f"D{int(m.group(1))}:{int(m.group(2))}" if m else None


def split_evidence(entries: Sequence[str]) -> list[str]:
    """Evidence strings split on ``;``/``,``/whitespace between ids (``"D8:6; D9:17"``)."""
    out: list[str] = []
    for entry in entries:
        parts = re.split(r"[;,]|\s+(?=D)", str(entry))
        out.extend(p.strip() for p in parts if p.strip())
    return out


def load_conversation(conv: dict[str, Any], captions: bool) -> list[dict[str, Any]]:
    """The turns of one conversation in order, with the text the store will hold."""
    c = conv["conversation"]
    sessions = sorted((int(m.group(1)), k) for k in c if (m := _SESSION.fullmatch(k)))
    turns: list[dict[str, Any]] = []
    for number, key in sessions:
        when = parse_session_time(c[f"{key}_date_time"])
        for turn in c[key]:
            dia = norm_dia(turn["dia_id"])
            if dia is None:
                raise ValueError(f"turn with malformed dia_id {turn['dia_id']!r}")
            content = turn["text"]
            if captions and turn.get("blip_caption"):
                content = f"{content} [shares a photo: {turn['blip_caption']}]"
            turns.append(
                {
                    "dia_id": dia,
                    "speaker": turn["speaker"],
                    "content": content,
                    "text": f"{turn['speaker']}: {content}",  # what the engine stores for a message
                    "session": f"session_{number}",
                    "timestamp": when.isoformat(),
                }
            )
    return turns


def load_questions(conv: dict[str, Any], known: set[str], counts: dict[str, int]) -> list[dict]:
    """Questions with normalised evidence; malformed or missing ids dropped and counted."""
    out = []
    for q in conv["qa"]:
        raw = split_evidence(q.get("evidence") or [])
        evidence: list[str] = []
        for entry in raw:
            dia = norm_dia(entry)
            if dia is not None and entry.strip() != dia:
                counts["normalised_evidence"] += 1
            if dia is None or dia not in known:
                counts["dropped_evidence"] += 1
                counts.setdefault("dropped_examples", [])  # type: ignore[arg-type]
                counts["dropped_examples"].append(f"{conv['sample_id']}:{entry}")  # type: ignore[attr-defined]
                continue
            if dia not in evidence:
                evidence.append(dia)
        if len(q.get("evidence") or []) != len(raw):
            counts["packed_evidence_entries"] += 1
        if not evidence:  # excluded: nothing to find
            counts["excluded_questions"] += 1
            key = "excluded_no_evidence_in_data" if not raw else "excluded_all_evidence_dropped"
            counts[key] += 1
            continue
        out.append(
            {"question": q["question"], "category": int(q["category"]), "evidence": evidence}
        )
    return out


# ---------------------------------------------------------------------------- embedding


class CachedEmbedder:
    """The bundled MiniLM, with vectors computed once and served from a text -> vector cache.

    The store receives exactly the vectors the bundled embedder produces (same model id);
    caching only avoids embedding the same turn/question twice in one run.
    """

    model_id = BUNDLED_MODEL_ID

    def __init__(self) -> None:
        self.inner = default_embedder()
        self.dim = self.inner.dim
        self.cache: dict[str, np.ndarray] = {}
        self.misses = 0

    def warm(self, texts: Sequence[str]) -> np.ndarray:
        todo = list(dict.fromkeys(t for t in texts if t not in self.cache))
        if todo:
            for text, vec in zip(todo, self.inner.embed_documents(todo), strict=True):
                self.cache[text] = vec
        return np.stack([self.cache[t] for t in texts]) if texts else np.zeros((0, self.dim))

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        self.misses += sum(1 for t in texts if t not in self.cache)
        return self.warm(list(texts))

    def embed_query(self, text: str) -> np.ndarray:
        if text not in self.cache:
            self.misses += 1
        return self.warm([text])[0]


# ---------------------------------------------------------------------------- scoring


def tokens(text: str, stop: frozenset[str] = frozenset()) -> list[str]:
    words = [w.lower() for w in _WORD.findall(text)]
    return [w for w in words if w not in stop] or words


def recall_at(ranked: Sequence[Sequence[str]], evidence: Sequence[str], ks=KS) -> dict[int, float]:
    """``ranked``: per retrieved memory, the dia ids it stands for (usually one)."""
    gold = set(evidence)
    out = {}
    for k in ks:
        found = {d for ids in ranked[:k] for d in ids}
        out[k] = len(gold & found) / len(gold)
    return out


def aggregate(rows: list[dict[str, Any]], method: str) -> dict[str, Any]:
    """Per-category and overall mean recall (0-100) for one method."""
    table: dict[str, Any] = {}
    by_cat: dict[int, list[dict[int, float]]] = defaultdict(list)
    for row in rows:
        by_cat[row["category"]].append(row[method])
    for cat in sorted(by_cat):
        vals = by_cat[cat]
        table[f"{cat} {CATEGORIES[cat]}"] = {
            **{f"r@{k}": 100 * float(np.mean([v[k] for v in vals])) for k in KS},
            "questions": len(vals),
        }
    table["overall"] = {
        **{f"r@{k}": 100 * float(np.mean([r[method][k] for r in rows])) for k in KS},
        "questions": len(rows),
    }
    return table


# ---------------------------------------------------------------------------- main loop


def _context(turns: list[dict[str, Any]], offset: int) -> list[str]:
    """The text of the turn ``offset`` away in the same session ('' at session edges)."""
    out = []
    for i, t in enumerate(turns):
        j = i + offset
        same = 0 <= j < len(turns) and turns[j]["session"] == t["session"]
        out.append(turns[j]["text"] if same else "")
    return out


class ContextFTS:
    """An in-memory FTS5 table shaped like a *proposed* index: the turn plus its neighbours.

    Same tokenizer and same query construction (``text_terms`` ORed) as the engine's text
    leg; ``bm25(items_fts, w_text, w_prev, w_next)`` ranks. Used only for what-if rows.
    """

    def __init__(self, texts: list[str], prev: list[str], nxt: list[str]) -> None:
        self.db = sqlite3.connect(":memory:")
        self.db.execute(
            "CREATE VIRTUAL TABLE f USING fts5(text, prev, nxt, "
            "tokenize='porter unicode61 remove_diacritics 2')"
        )
        self.db.executemany(
            "INSERT INTO f(rowid, text, prev, nxt) VALUES (?,?,?,?)",
            [(i, *row) for i, row in enumerate(zip(texts, prev, nxt, strict=True))],
        )

    def search(self, query: str, weights: tuple[float, float, float], n: int) -> list[int]:
        terms = text_terms(query)
        if not terms:
            return []
        cols = [c for c, w in zip(("text", "prev", "nxt"), weights, strict=True) if w > 0]
        match = "{" + " ".join(cols) + "}: (" + " OR ".join(f'"{t}"' for t in terms) + ")"
        w = ", ".join(str(x) for x in weights)
        rows = self.db.execute(
            f"SELECT rowid FROM f WHERE f MATCH ? ORDER BY bm25(f, {w}) LIMIT ?", (match, n)
        )
        return [r[0] for r in rows]


def run_conversation(
    conv: dict[str, Any],
    args: argparse.Namespace,
    emb: CachedEmbedder,
    counts: dict[str, Any],
    timings: dict[str, float],
) -> list[dict[str, Any]]:
    from rank_bm25 import BM25Okapi

    turns = load_conversation(conv, captions=not args.no_captions)
    known = {t["dia_id"] for t in turns}
    questions = load_questions(conv, known, counts)
    dias = [t["dia_id"] for t in turns]
    texts = [t["text"] for t in turns]
    prev, nxt = _context(turns, -1), _context(turns, +1)

    t0 = time.perf_counter()
    doc_vecs = emb.warm(texts)
    q_vecs = emb.warm([q["question"] for q in questions])
    extra_vecs: dict[str, np.ndarray] = {}
    if args.diagnostics:
        extra_vecs["no_speaker"] = emb.warm([t["content"] for t in turns])
        windows = [f"{p} {t}".strip() for p, t in zip(prev, texts, strict=True)]
        extra_vecs["prev_context"] = emb.warm(windows)
    timings["embed_s"] += time.perf_counter() - t0

    rows: list[dict[str, Any]] = []
    k_max, depth = args.k_max, DIAG_DEPTH
    with tempfile.TemporaryDirectory(prefix="locomo_") as tmp:
        db = Path(tmp) / "memos.db"
        settings = Settings(db_path=db, track_access=False)
        target: str | Path = db
        if args.pg_server is not None:
            from _pg import fresh_database

            target = fresh_database(args.pg_server, f"locomo_{conv['sample_id']}".lower())
        mos = MemOS.open(target, embedder=emb, settings=settings)
        try:
            user, cube = "u", "c"
            mos.create_user(user)
            mos.create_cube(cube, owner=user)
            item_dias: dict[str, list[str]] = defaultdict(list)
            t0 = time.perf_counter()
            by_session: dict[str, list[dict[str, Any]]] = defaultdict(list)
            for t in turns:
                by_session[t["session"]].append(t)
            for session, group in by_session.items():
                messages = [
                    {
                        "role": "user",
                        "name": t["speaker"],
                        "content": t["content"],
                        "timestamp": t["timestamp"],
                        "id": t["dia_id"],
                    }
                    for t in group
                ]
                items = mos.add(messages, user=user, cube=cube, session=session)
                for t, item in zip(group, items, strict=True):
                    if item.text != t["text"]:
                        raise AssertionError(f"stored text differs: {item.text!r} vs {t['text']!r}")
                    ids = item_dias[item.id]
                    for d in (*item.provenance.message_ids, t["dia_id"]):
                        if d not in ids:
                            ids.append(d)
            timings["ingest_s"] += time.perf_counter() - t0
            counts["turns"] += len(turns)
            counts["memories"] += len(item_dias)
            counts["deduplicated_turns"] += len(turns) - len(item_dias)

            bm25 = BM25Okapi([tokens(t) for t in texts])
            if args.diagnostics:
                bm25_stop = BM25Okapi([tokens(t, STOPWORDS) for t in texts])
                bm25_nospk = BM25Okapi([tokens(t["content"]) for t in turns])
                ctx = ContextFTS(texts, prev, nxt)

            def as_ranked(idx: Sequence[int]) -> list[list[str]]:
                return [[dias[i]] for i in idx]

            t0 = time.perf_counter()
            for q, qv in zip(questions, q_vecs, strict=True):
                ev = q["evidence"]
                row: dict[str, Any] = {"category": q["category"], "n_evidence": len(ev)}
                legs: dict[str, list[str]] = {}
                hits = mos.search(q["question"], user=user, k=k_max, cubes=[cube], mode="hybrid")
                row["ours_hybrid"] = recall_at([item_dias[h.item.id] for h in hits], ev)
                # the single legs, fetched DIAG_DEPTH deep (their order does not depend on k)
                for mode in ("dense", "text"):
                    hits = mos.search(q["question"], user=user, k=depth, cubes=[cube], mode=mode)
                    legs[mode] = [item_dias[h.item.id][0] for h in hits]
                    row[f"ours_{mode}"] = recall_at([[d] for d in legs[mode]], ev)
                counts["searches"] += 3
                # exact baselines over turns
                dense_rank = np.argsort(-(doc_vecs @ qv), kind="stable")
                bm_rank = np.argsort(-bm25.get_scores(tokens(q["question"])), kind="stable")
                row["bm25"] = recall_at(as_ranked(bm_rank[:k_max]), ev)
                row["dense"] = recall_at(as_ranked(dense_rank[:k_max]), ev)
                if args.diagnostics:
                    _diagnose(
                        row,
                        q["question"],
                        qv,
                        ev,
                        legs,
                        extra_vecs,
                        bm25_stop,
                        bm25_nospk,
                        ctx,
                        as_ranked,
                        dias,
                        k_max,
                    )
                rows.append(row)
            timings["search_s"] += time.perf_counter() - t0
        finally:
            mos.close()
    return rows


def engine_settings() -> dict[str, Any]:
    """The retrieval knobs of the engine being measured (read, not set)."""
    defaults = Settings(db_path=Path("unused"))
    return {
        "rrf_k": RRF_K,
        "dense_weight": getattr(defaults, "dense_weight", 1.0),
        "context_turns": getattr(defaults, "context_turns", 0),
        "context_weight": getattr(search_module, "CONTEXT_WEIGHT", None),
        "stopwords_in_text_leg": len(STOPWORDS),
    }


DIAG_DEPTH = 50  # = the engine's per-leg candidate depth max(2k, 50) for k <= 25


def _diagnose(
    row: dict[str, Any],
    question: str,
    qv: np.ndarray,
    ev: list[str],
    legs: dict[str, list[str]],
    extra_vecs: dict[str, np.ndarray],
    bm25_stop: Any,
    bm25_nospk: Any,
    ctx: ContextFTS,
    as_ranked: Callable[[Sequence[int]], list[list[str]]],
    dias: list[str],
    k_max: int,
) -> None:
    """What-if rows: other fusion settings over the engine's own legs, stopwords, speaker
    prefix and context indexing (the turn plus its neighbours), all on the same turns."""
    depth = DIAG_DEPTH

    def fuse(rank_lists: list[list[str]], k: int, weights: list[float]) -> list[list[str]]:
        return [[d] for d, _ in rrf_fuse([r[:depth] for r in rank_lists], k=k, weights=weights)][
            :k_max
        ]

    row["bm25_stopwords"] = recall_at(
        as_ranked(
            np.argsort(-bm25_stop.get_scores(tokens(question, STOPWORDS)), kind="stable")[:k_max]
        ),
        ev,
    )
    row["bm25_no_speaker"] = recall_at(
        as_ranked(np.argsort(-bm25_nospk.get_scores(tokens(question)), kind="stable")[:k_max]), ev
    )
    row["dense_no_speaker"] = recall_at(
        as_ranked(np.argsort(-(extra_vecs["no_speaker"] @ qv), kind="stable")[:k_max]), ev
    )
    dense_ctx = [
        dias[i] for i in np.argsort(-(extra_vecs["prev_context"] @ qv), kind="stable")[:depth]
    ]
    row["dense_prev_context"] = recall_at([[d] for d in dense_ctx], ev)
    # fusion of the engine's dense and text legs with other RRF settings
    # (weights written dense:text; the first row reproduces mode="hybrid" as configured)
    settings = engine_settings()
    dw = settings["dense_weight"]
    row[f"rrf_ours_k{RRF_K}_w{dw:g}:1 (= engine hybrid)"] = recall_at(
        fuse([legs["dense"], legs["text"]], RRF_K, [dw, 1.0]), ev
    )
    for k, w in ((60, 1.0), (10, 1.0), (10, 1.5), (10, 2.0), (5, 1.5), (20, 2.0)):
        row[f"rrf_ours_k{k}_w1:{w:g}"] = recall_at(
            fuse([legs["dense"], legs["text"]], k, [1, w]), ev
        )
    # context indexing: FTS over (turn, previous turn, next turn) with column weights
    for name, weights in (
        ("fts_ctx_prev0.5", (1.0, 0.5, 0.0)),
        ("fts_ctx_prev0.5_next0.25", (1.0, 0.5, 0.25)),
    ):
        found = [dias[i] for i in ctx.search(question, weights, depth)]
        row[name] = recall_at([[d] for d in found[:k_max]], ev)
        row[f"rrf_ours_dense+{name}_k10_w1:2"] = recall_at(
            fuse([legs["dense"], found], 10, [1, 2]), ev
        )
        row[f"rrf_dense_prev_context+{name}_k10_w1:2"] = recall_at(
            fuse([dense_ctx, found], 10, [1, 2]), ev
        )
    found = [dias[i] for i in ctx.search(question, (1.0, 0.5, 0.25), depth)]
    row["rrf_3legs[ours_dense,dense_prev_context,fts_ctx_prev0.5_next0.25]_k10_w.5:.5:1.5"] = (
        recall_at(fuse([legs["dense"], dense_ctx, found], 10, [0.5, 0.5, 1.5]), ev)
    )


def print_tables(methods: dict[str, dict[str, Any]], main: Sequence[str]) -> None:
    width = max(len(n) for n in methods) + 2
    print()
    print(f"{'method (* = main rows)':{width}s} " + " ".join(f"{'R@' + str(k):>7s}" for k in KS))
    for name, table in methods.items():
        o = table["overall"]
        mark = "*" if name in main else " "
        print(f"{mark}{name:{width - 1}s} " + " ".join(f"{o[f'r@{k}']:7.1f}" for k in KS))
    print()
    cats = [c for c in next(iter(methods.values())) if c != "overall"]
    print("R@10 per category")
    print(f"{'method':24s} " + " ".join(f"{c:>14s}" for c in cats) + f" {'overall':>9s}")
    for name in main:
        t = methods[name]
        print(
            f"{name:24s} "
            + " ".join(f"{t[c]['r@10']:14.1f}" for c in cats)
            + f" {t['overall']['r@10']:9.1f}"
        )
    print(
        "questions per category: "
        + ", ".join(f"{c}={methods[main[0]][c]['questions']}" for c in cats)
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--data", type=Path, default=data_dir() / "locomo" / "locomo_dev6.json")
    p.add_argument("--k-max", type=int, default=25)
    p.add_argument("--limit-conversations", type=int, default=None)
    p.add_argument(
        "--no-captions",
        action="store_true",
        help="do not append '[shares a photo: <blip_caption>]' to turns",
    )
    p.add_argument(
        "--no-diagnostics",
        dest="diagnostics",
        action="store_false",
        help="skip the what-if rows (they embed every turn twice more)",
    )
    p.add_argument("--store", choices=["sqlite", "postgres"], default="sqlite")
    p.add_argument(
        "--pg-url",
        help="PostgreSQL server for --store postgres (default: "
        "MEMOS_PG_URL, else a private embedded server)",
    )
    p.add_argument("--out", default="locomo_retrieval")
    args = p.parse_args(argv)
    if args.k_max < max(KS):
        p.error(f"--k-max must be at least {max(KS)}")
    if args.store == "postgres":
        from _pg import server

        with server(args.pg_url) as url:
            args.pg_server = url
            return _run(args, argv)
    args.pg_server = None
    return _run(args, argv)


def _run(args: argparse.Namespace, argv: list[str] | None) -> int:
    started = time.perf_counter()
    data = json.loads(args.data.read_text())
    if args.limit_conversations:
        data = data[: args.limit_conversations]
    emb = CachedEmbedder()
    counts: dict[str, Any] = defaultdict(int)
    timings: dict[str, float] = defaultdict(float)
    rows: list[dict[str, Any]] = []
    per_conv: dict[str, Any] = {}
    for conv in data:
        t0 = time.perf_counter()
        conv_rows = run_conversation(conv, args, emb, counts, timings)
        rows.extend(conv_rows)
        per_conv[conv["sample_id"]] = {
            "questions": len(conv_rows),
            **{
                f"{m}_r@10": 100 * float(np.mean([r[m][10] for r in conv_rows]))
                for m in ("ours_hybrid", "bm25", "dense")
            },
        }
        print(
            f"{conv['sample_id']}: {len(conv_rows)} questions, "
            f"hybrid R@10 {per_conv[conv['sample_id']]['ours_hybrid_r@10']:.1f} "
            f"({time.perf_counter() - t0:.0f}s)",
            flush=True,
        )

    method_names = [k for k in rows[0] if isinstance(rows[0][k], dict)]
    methods = {m: aggregate(rows, m) for m in method_names}
    main_methods = ["ours_hybrid", "ours_dense", "ours_text", "bm25", "dense"]
    print_tables(methods, main_methods)

    o = {m: methods[m]["overall"] for m in method_names}
    summary = {
        **{f"ours_r@{k}": o["ours_hybrid"][f"r@{k}"] for k in KS},
        "bm25_r@10": o["bm25"]["r@10"],
        "dense_r@10": o["dense"]["r@10"],
        "questions": len(rows),
        "dropped_evidence": counts["dropped_evidence"],
        "ours_dense_r@10": o["ours_dense"]["r@10"],
        "ours_text_r@10": o["ours_text"]["r@10"],
        "bm25_r@5": o["bm25"]["r@5"],
        "bm25_r@25": o["bm25"]["r@25"],
        "dense_r@5": o["dense"]["r@5"],
        "dense_r@25": o["dense"]["r@25"],
    }
    elapsed = time.perf_counter() - started
    details = {
        "data": str(args.data),
        "conversations": [c["sample_id"] for c in data],
        "metric": "evidence recall@k: per question |evidence ∩ dia ids of top-k memories| / "
        "|evidence|, averaged per category and overall (all 5 categories; category 5 "
        "is asked with its question, its adversarial_answer is unused)",
        "categories": {str(k): v for k, v in CATEGORIES.items()},
        "memory_text": "'<speaker>: <text>'"
        + (
            ""
            if args.no_captions
            else " + ' [shares a photo: <blip_caption>]' when the turn has an image"
        ),
        "ingest": "mos.add per session: role=user, name=speaker, timestamp=session date_time "
        "(parsed, naive -> UTC), id=dia_id, session='session_N'; "
        f"Settings(track_access=False); one fresh {args.store} store per conversation",
        "search": f"mos.search(question, k={args.k_max}, cubes=[cube], mode='hybrid'); "
        f"mode='dense' and mode='text' with k={DIAG_DEPTH} (a single leg's order does "
        "not depend on k); R@1/5/10 are prefixes of the ranked list (the engine's "
        "per-leg candidate depth max(2k, 50) is 50 for every k <= 25, so prefixes "
        "equal separate runs at each k)",
        "baselines": {
            "bm25": "rank_bm25.BM25Okapi (k1=1.5, b=0.75) over lowercase \\w+ tokens of the "
            "stored text (speaker prefix included), no stopwords",
            "dense": "exact cosine over the same bundled all-MiniLM-L6-v2 vectors the store holds",
        },
        "anchors_all_10_conversations": {
            "bm25_r@10": 59.2,
            "dragon_r@10": 66.2,
            "bm25_r@5/10/25/50": [52.3, 59.2, 67.1, 72.0],
            "dragon_r@5/10/25/50": [56.7, 66.2, 76.7, 82.7],
        },
        "goal": "overall R@10 >= 75",
        "counts": dict(counts),
        "methods": methods,
        "diagnostics_note": (
            "what-if rows, same turns and questions, nothing changed in the engine: "
            "bm25_stopwords = BM25 without storage.search.STOPWORDS; bm25_no_speaker / "
            "dense_no_speaker = without the 'Speaker: ' prefix; dense_prev_context = exact "
            "cosine over '<previous turn of the session> <turn>' vectors; rrf_ours_kK_w1:W = "
            "RRF of the engine's own dense and text legs (top 50 each, from mode='dense'/'text') "
            "with RRF constant K and weights dense:text (the '(= engine hybrid)' row uses the "
            "engine's own RRF_K and dense_weight and reproduces mode='hybrid'); "
            "fts_ctx_* = an in-memory FTS5 table (same tokenizer and query terms as the engine) "
            "with columns (turn, previous turn, next turn) of the same session ranked by "
            "bm25(f, 1, 0.5[, 0.25]), i.e. a proposed context column in items_fts"
        )
        if args.diagnostics
        else "diagnostics skipped (--no-diagnostics)",
        "engine_settings": engine_settings(),
        "code": CODE,
        "per_conversation": per_conv,
        "embedder": BUNDLED_MODEL_ID,
        "embedder_cache_misses": emb.misses,
        "timings_s": {**{k: round(v, 1) for k, v in timings.items()}, "total": round(elapsed, 1)},
        "machine": machine_details(),
    }
    path = write_result(
        args.out, command_line(None if argv is None else [sys.argv[0], *argv]), summary, details
    )
    print(f"\nwrote {path} in {elapsed:.0f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
