"""The PostgreSQL text leg: postings (``item_terms``) against the GIN path, and against
exact BM25, at one size.

The same ``--n`` synthetic memories as ``postgres_vs_anchors.py`` (the ``search_latency.py``
generator, one cube per user, loaded through ``mos.bulk_load``), text-only searches over all
cubes (k=10) three ways on the same database:

  * ``postings``: the default store (``text_budget`` postings per query word, best first);
  * ``gin``: the same store with a filter that admits every memory (``kinds`` = all kinds
    present), which sends the leg through the GIN index and its candidate rule;
  * ``exact``: postings with an unbounded budget, i.e. BM25 over every posting.

Quality is tie-aware: a hit counts when its exact BM25 score reaches the exact 10th score
(the synthetic texts tie often, so plain id overlap would punish equal-score swaps).

    python benchmarks/pg_text_leg.py --vector-cache /tmp/memos_vector_cache
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import (
    code_version,
    command_line,
    load_average,
    machine_details,
    percentiles,
    write_result,
)
from _pg import fresh_database, server, server_settings
from postgres_vs_anchors import prepare

from memos_integrations import MemOS
from memos_integrations.core.config import Settings

K = 10
EXACT_BUDGET = 10**9


def _open(db: str, emb: Any, budget: int) -> MemOS:
    from memos_integrations.storage.postgres import PostgresStore

    store = PostgresStore(db, text_budget=budget)
    settings = Settings(db_path=Path("unused"), track_access=False)
    return MemOS(store, embedder=emb, settings=settings)


def _run(
    mos: MemOS, queries: list[str], k: int = K, **kw: Any
) -> tuple[dict[str, list], list[float]]:
    for q in queries[:20]:  # warm-up: prepared statements, caches
        mos.search(q, user=None, k=k, **kw)
    hits, seconds = {}, []
    for q in queries:
        t0 = time.perf_counter()
        hits[q] = mos.search(q, user=None, k=k, **kw)
        seconds.append(time.perf_counter() - t0)
    return hits, seconds


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--n", type=int, default=100_000)
    p.add_argument("--users", type=int, default=100)
    p.add_argument("--queries", type=int, default=200)
    p.add_argument("--budget", type=int, default=2_000, help="text_budget of the default store")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--vector-cache", type=Path, default=None)
    p.add_argument("--pg-url", help="server to use (default MEMOS_PG_URL, else embedded)")
    p.add_argument("--out", default="pg_text_leg")
    args = p.parse_args(argv)
    args.single_adds, args.batch_size = 0, 1000
    started = time.perf_counter()
    data, emb, _ = prepare(args)
    queries = data["queries"]
    with server(args.pg_url) as url:
        db = fresh_database(url, "bench_text")
        mos = _open(db, emb, args.budget)
        for u in data["users"]:
            mos.create_user(u)
            mos.create_cube(f"{u}-cube", owner=u)
        with mos.bulk_load(len(data["texts"])):
            for u in data["users"]:
                mos.ingest(data["messages_by_user"][u], user=u, cube=f"{u}-cube",
                           batch_size=args.batch_size, progress=False)  # fmt: skip
        kinds = sorted({it.kind for it in mos.list(user=None, limit=1000)})
        exact_mos = _open(db, emb, EXACT_BUDGET)
        runs: dict[str, Any] = {}
        try:
            # k=50: the exact scores of more than the top 10, to judge the others' hits
            runs["exact"] = _run(exact_mos, queries, k=5 * K, mode="text")
            runs["postings"] = _run(mos, queries, mode="text")
            runs["gin"] = _run(mos, queries, mode="text", kinds=kinds)
            runs["hybrid_postings"] = _run(mos, queries)
            runs["hybrid_gin"] = _run(mos, queries, kinds=kinds)
            settings = server_settings(url)
        finally:
            exact_mos.close()
            mos.close()
    exact_hits = runs["exact"][0]
    summary: dict[str, float] = {}
    details: dict[str, Any] = {"ms": {}}
    for name in ("postings", "gin"):
        agree = []
        for q in queries:
            ref = exact_hits[q][:K]
            if not ref:
                continue
            exact_score = {h.id: h.text_score for h in exact_hits[q]}  # the exact top 50
            bar = ref[-1].text_score - 1e-9
            got = runs[name][0][q]
            agree.append(sum(exact_score.get(h.id, -1.0) >= bar for h in got) / len(ref))
        summary[f"{name}_top10_agreement_pct"] = 100 * float(np.mean(agree))
    for name, (_, seconds) in runs.items():
        ms = percentiles([s * 1000 for s in seconds])
        details["ms"][name] = ms
        summary[f"{name}_p50_ms"] = ms["p50"]
        summary[f"{name}_p95_ms"] = ms["p95"]
    details.update(
        n=args.n,
        users=args.users,
        queries=len(queries),
        budget=args.budget,
        kinds_filter=kinds,
        server=settings,
        load_average=load_average(),
        minutes=round((time.perf_counter() - started) / 60, 1),
        code=code_version(),
        machine=machine_details(),
        note="tie-aware agreement: share of the exact top 10 matched by hits whose exact "
        "BM25 score reaches the exact 10th score (hits outside the exact top 50 count as "
        "misses); exact_* timings are at k=50",
    )
    path = write_result(
        args.out, command_line(None if argv is None else [sys.argv[0], *argv]), summary, details
    )
    print("\n".join(f"{k:36s} {v:.2f}" for k, v in summary.items()))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
