"""How long pgvector takes to build an HNSW index over the same vectors, several ways.

The bulk-ingest goal of the PostgreSQL issue (10x PGVectorStore) is bounded by one HNSW
build that every side pays. This measures that build alone: the ``--n`` MiniLM vectors of
``postgres_vs_anchors.py`` are copied into a bare ``(id, embedding)`` table, and the cosine
HNSW index (m=16, ef_construction=64) is built and dropped in turn:

  * ``vector``: full-precision vectors, as our store and both anchors index them;
  * ``halfvec``: an expression index on ``embedding::halfvec`` (half the graph's memory);

each with no parallel workers and with ``--workers`` of them, at ``maintenance_work_mem`` =
``1GB`` (the graph fits: our store's default) and at the server's stock ``64MB`` (what an
index built without raising it gets, PGVectorStore's ``apply_vector_index`` included).

    python benchmarks/pg_index_build.py --vector-cache /tmp/memos_vector_cache
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psycopg
from _common import RunStart, command_line, write_result
from _pg import fresh_database, server, server_settings
from pgvector.psycopg import register_vector
from postgres_vs_anchors import prepare

VARIANTS = {
    "vector": "embedding vector_cosine_ops",
    "halfvec": "(embedding::halfvec({dim})) halfvec_cosine_ops",
}


def build_seconds(conn: psycopg.Connection, expr: str, workers: int, memory: str) -> float:
    conn.execute(f"SET max_parallel_maintenance_workers = {int(workers)}")
    conn.execute("SELECT set_config('maintenance_work_mem', %s, false)", (memory,))
    conn.execute("DROP INDEX IF EXISTS probe_hnsw")
    start = time.perf_counter()
    conn.execute(f"CREATE INDEX probe_hnsw ON probe USING hnsw ({expr})")
    seconds = time.perf_counter() - start
    conn.execute("DROP INDEX probe_hnsw")
    return seconds


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--n", type=int, default=100_000)
    p.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    p.add_argument("--memory", nargs="+", default=["1GB", "64MB"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--vector-cache", type=Path, default=None)
    p.add_argument("--pg-url", help="server to use (default MEMOS_PG_URL, else embedded)")
    p.add_argument("--out", default="pg_index_build")
    args = p.parse_args(argv)
    args.users, args.queries, args.single_adds = 100, 1, 0
    data, _, _ = prepare(args)
    vectors = data["vectors"]
    dim = int(vectors.shape[1])
    run = RunStart()
    runs: list[dict[str, Any]] = []
    with server(args.pg_url) as url:
        db = fresh_database(url, "bench_index")
        with psycopg.connect(db, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
            register_vector(conn)
            conn.execute(f"CREATE TABLE probe (id bigint PRIMARY KEY, embedding vector({dim}))")
            start = time.perf_counter()
            with conn.cursor().copy("COPY probe (id, embedding) FROM STDIN (FORMAT BINARY)") as cp:
                cp.set_types(["int8", "vector"])
                for i, v in enumerate(vectors):
                    cp.write_row((i, v))
            copy_s = time.perf_counter() - start
            conn.execute("VACUUM ANALYZE probe")
            for memory in args.memory:
                for name, expr in VARIANTS.items():
                    for workers in (0, args.workers):
                        s = build_seconds(conn, expr.format(dim=dim), workers, memory)
                        runs.append(
                            {"index": name, "workers": workers, "memory": memory, "seconds": s}
                        )
                        print(f"{name:8} workers={workers} memory={memory:5} {s:6.1f} s")
        settings = server_settings(url)

    def best(name: str, memory: str) -> float:
        return min(r["seconds"] for r in runs if r["index"] == name and r["memory"] == memory)

    top = args.memory[0]
    summary = {
        "copy_rows_per_s": args.n / copy_s,
        **{f"{r['index']}_w{r['workers']}_{r['memory']}_s": r["seconds"] for r in runs},
        "best_vector_build_s": best("vector", top),
        "best_halfvec_build_s": best("halfvec", top),
    }
    details = {
        "n": args.n,
        "dim": dim,
        "hnsw": "m=16, ef_construction=64 (pgvector defaults), cosine",
        "runs": runs,
        "copy_seconds": copy_s,
        "server": settings,
        **run.details(),
    }
    path = write_result(args.out, command_line(), summary, details)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
