"""The PostgreSQL store against langchain-postgres ``PGVectorStore`` and LangGraph's
``PostgresStore``: one server, the same memories, the same vectors, one run.

Data: ``--n`` synthetic chat memories (the generator of ``search_latency.py``) spread over
``--users`` users (1% each at the defaults), and template questions. Every side gets the
same precomputed all-MiniLM-L6-v2 vectors through a lookup embedder, so embedding time is
excluded (and reported apart); every side has an HNSW index (theirs applied as their docs
say). Each side gets a fresh database on the same server.

  * bulk ingest, searchable at the end: ours through ``mos.bulk_load`` + ``mos.ingest``
    (one cube per user); PGVectorStore ``add_embeddings`` in batches, with the index built
    after the load (as its docs do) and before it (its best is reported; its rate without
    any index apart); LangGraph ``batch([PutOp...])``.
  * steady-state single adds into the loaded store (versions and audit included for ours;
    our vectors join the HNSW graph in the background: how many were still staged after
    the last add, and how long the indexer then took, are reported).
  * search at full size, query embedding excluded: ours dense and hybrid over all cubes
    (root), theirs unfiltered, with each side's dense recall@10 against exact cosine search;
    ours also read-only (``track_access=False``: theirs do not write on search, ours counts
    accesses by default); then per-user search (1% of the rows): how often k come back.
  * LoCoMo evidence recall@10 of our hybrid search on PostgreSQL (``--locomo``).

The anchors are not dependencies of this project; install them into the benchmark
environment only:

    pip install --no-deps langchain-postgres==0.0.17 langgraph-checkpoint-postgres==3.1.2
    python benchmarks/postgres_vs_anchors.py --vector-cache /tmp/memos_vector_cache
    python benchmarks/postgres_vs_anchors.py --n 2000 --users 20 --no-locomo --out pg_quick
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import code_version, command_line, machine_details, percentiles, write_result
from _pg import fresh_database, server, server_settings
from search_latency import load_vector_cache, make_memories, make_queries, stored_texts

from memos_integrations import MemOS
from memos_integrations.core.config import Settings
from memos_integrations.embeddings import BUNDLED_MODEL_ID, default_embedder, normalize

CODE = code_version()
K = 10


class Lookup:
    """Vectors computed beforehand by the real model, served by text (ours and theirs)."""

    model_id = BUNDLED_MODEL_ID
    dim = 384

    def __init__(self, table: dict[str, np.ndarray]) -> None:
        self.table = table

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        return np.stack([self.table[t] for t in texts])

    def embed_query(self, text: str) -> np.ndarray:
        return self.table[text]

    # LangChain's Embeddings interface (lists of floats)
    def lc_documents(self, texts: list[str]) -> list[list[float]]:
        return self.embed_documents(texts).tolist()

    def lc_query(self, text: str) -> list[float]:
        return self.table[text].tolist()


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def ms(samples: list[float]) -> dict[str, float]:
    return percentiles([s * 1000 for s in samples])


def timed_searches(search: Callable[[Any], Any], queries: Sequence[Any]) -> tuple[list, list]:
    """Each query's seconds and results."""
    runs = [timed(lambda q=q: search(q)) for q in queries]
    return [dt for dt, _ in runs], [out for _, out in runs]


def recall_at_k(found: Sequence[Sequence[str]], truth: Sequence[set[str]]) -> float:
    """Mean share of each query's exact top-k texts among the texts a search returned (%)."""
    return 100 * float(
        np.mean([len(set(f) & t) / len(t) for f, t in zip(found, truth, strict=True)])
    )


def exact_top_texts(data: dict[str, Any], emb: Lookup, k: int = K) -> list[set[str]]:
    """Each query's k nearest texts by exact cosine over everything both sides hold when
    they search (the loaded memories and the single adds): the recall reference."""
    texts = list(dict.fromkeys([*data["texts"], *data["extra_texts"]]))
    matrix = normalize([emb.table[t] for t in texts])
    scores = normalize([emb.table[q] for q in data["queries"]]) @ matrix.T
    top = np.argpartition(-scores, k, axis=1)[:, :k]
    return [{texts[i] for i in row} for row in top]


# ---------------------------------------------------------------------------- ours


def run_ours(url: str, data: dict[str, Any], emb: Lookup, args: argparse.Namespace) -> dict:
    db = fresh_database(url, "bench_ours")
    mos = MemOS.open(db, embedder=emb, settings=Settings(db_path=Path("unused")))
    out: dict[str, Any] = {}
    try:
        for u in data["users"]:
            mos.create_user(u)
            mos.create_cube(f"{u}-cube", owner=u)
        t0 = time.perf_counter()
        with mos.bulk_load(len(data["texts"])):
            for u in data["users"]:
                mos.ingest(
                    data["messages_by_user"][u],
                    user=u,
                    cube=f"{u}-cube",
                    batch_size=args.batch_size,
                    progress=False,
                )
            committed = time.perf_counter()
        done = time.perf_counter()
        n = len(data["texts"])
        out["bulk"] = {
            "seconds": done - t0,
            "rows_per_s": n / (done - t0),
            "rows_committed_s": committed - t0,
            "index_build_s": done - committed,  # postings fill + HNSW build
            "postings_fill_s": mos.store.last_bulk_load.get("postings_s"),
            "hnsw_build_s": mos.store.last_bulk_load.get("vector_index_s"),
            "rows_per_s_before_index": n / (committed - t0),
            "vector_index": mos.stats()["vector_index"],
        }
        adds = []
        for i, msg in enumerate(data["extra"]):
            u = data["users"][i % len(data["users"])]
            dt, _ = timed(lambda msg=msg, u=u: mos.add(msg, user=u, cube=f"{u}-cube"))
            adds.append(dt)
        out["single_add_ms"] = ms(adds)
        # the adds' vectors wait staged (searched exactly) for the background indexer:
        # how many it had left, and how long it took to take them into the graph
        staged = mos.stats()["vectors_staged"]
        t0 = time.perf_counter()
        mos.store.raw.index_staged(wait=600)
        out["single_add_indexing"] = {
            "staged_after_adds": staged,
            "catch_up_s": time.perf_counter() - t0,
        }
        for mode in ("dense", "hybrid"):
            for q in data["queries"][: args.warmup]:
                mos.search(q, user=None, k=K, mode=mode)
            seconds, hits = timed_searches(
                lambda q, mode=mode: mos.search(q, user=None, k=K, mode=mode), data["queries"]
            )
            out[f"search_{mode}_ms"] = ms(seconds)
            if mode == "dense":
                found = [[h.item.text for h in hs] for hs in hits]
                out["dense_recall_at_10"] = recall_at_k(found, data["truth"])
        # the same searches read-only, as the anchors' are (no access counting)
        quiet = MemOS.open(
            db, embedder=emb, settings=Settings(db_path=Path("unused"), track_access=False)
        )
        try:
            for mode in ("dense", "hybrid"):
                out[f"search_{mode}_ms_read_only"] = ms(
                    [timed(lambda q=q, mode=mode: quiet.search(q, user=None, k=K, mode=mode))[0]
                     for q in data["queries"]]
                )  # fmt: skip
        finally:
            quiet.close()
        full, times = 0, []
        for i, q in enumerate(data["queries"]):
            u = data["users"][i % len(data["users"])]
            dt, hits = timed(lambda q=q, u=u: mos.search(q, user=u, k=K, mode="dense"))
            times.append(dt)
            full += len(hits) == K and all(h.item.owner == u for h in hits)
        out["filtered"] = {"full_k_fraction": 100 * full / len(data["queries"]), "ms": ms(times)}
    finally:
        mos.close()
    return out


# ---------------------------------------------------------------------------- PGVectorStore


def run_pgvectorstore(
    url: str, data: dict[str, Any], emb: Lookup, args: argparse.Namespace
) -> dict:
    from langchain_core.embeddings import Embeddings
    from langchain_postgres import Column, PGEngine, PGVectorStore
    from langchain_postgres.v2.indexes import HNSWIndex

    class LC(Embeddings):
        def embed_documents(self, texts: list[str]) -> list[list[float]]:
            return emb.lc_documents(texts)

        def embed_query(self, text: str) -> list[float]:
            return emb.lc_query(text)

    out: dict[str, Any] = {}
    n = len(data["texts"])
    for config in args.pgvs_configs:
        db = fresh_database(url, "bench_pgvs")
        engine = PGEngine.from_connection_string(
            url=db.replace("postgresql://", "postgresql+psycopg://", 1)
        )
        engine.init_vectorstore_table(
            table_name="memories", vector_size=emb.dim, metadata_columns=[Column("owner", "TEXT")]
        )
        store = PGVectorStore.create_sync(
            engine, embedding_service=LC(), table_name="memories", metadata_columns=["owner"]
        )
        if config == "index_before_load":
            store.apply_vector_index(HNSWIndex())
        vectors = data["vectors"]
        t0 = time.perf_counter()
        for s in range(0, n, args.batch_size):
            rows = range(s, min(n, s + args.batch_size))
            store.add_embeddings(
                [data["texts"][i] for i in rows],
                [vectors[i].tolist() for i in rows],
                metadatas=[{"owner": data["owner"][i]} for i in rows],
                ids=[str(uuid.uuid4()) for _ in rows],
            )
        loaded = time.perf_counter()
        if config == "index_after_load":
            store.apply_vector_index(HNSWIndex())
        done = time.perf_counter()
        out[config] = {
            "seconds": done - t0,
            "rows_per_s": n / (done - t0),
            "rows_committed_s": loaded - t0,
            "rows_per_s_before_index": n / (loaded - t0),
        }
        if config == args.pgvs_configs[-1]:  # the rest on the last indexed, loaded store
            out.update(_pgvs_queries(store, data, emb, args))
            out["queries_on"] = config
        engine._run_as_sync(engine.close())  # its sync API has no close of its own
    # its best configuration with an HNSW index, searchable at the end (the index built
    # after the load, as its docs do, or before it); without any index (exact scans) apart
    configs = {c: out[c]["rows_per_s"] for c in args.pgvs_configs}
    best = max(configs, key=configs.__getitem__)
    out["bulk"] = {"rows_per_s": configs[best], "config": best, "all": configs}
    if "index_after_load" in out:
        out["bulk"]["no_index_rows_per_s"] = out["index_after_load"]["rows_per_s_before_index"]
    return out


def _pgvs_queries(
    store: Any, data: dict[str, Any], emb: Lookup, args: argparse.Namespace
) -> dict[str, Any]:
    """Single adds and searches on a loaded, indexed PGVectorStore."""
    out: dict[str, Any] = {}
    out["single_add_ms"] = ms(
        [timed(lambda t=t: store.add_texts([t]))[0] for t in data["extra_texts"]]
    )
    qv = [emb.lc_query(q) for q in data["queries"]]
    for v in qv[: args.warmup]:
        store.similarity_search_by_vector(v, k=K)
    seconds, docs = timed_searches(lambda v: store.similarity_search_by_vector(v, k=K), qv)
    out["search_ms"] = ms(seconds)
    out["dense_recall_at_10"] = recall_at_k(
        [[d.page_content for d in ds] for ds in docs], data["truth"]
    )
    full, times = 0, []
    for i, v in enumerate(qv):
        u = data["users"][i % len(data["users"])]
        dt, docs = timed(
            lambda v=v, u=u: store.similarity_search_by_vector(v, k=K, filter={"owner": u})
        )
        times.append(dt)
        full += len(docs) == K
    out["filtered"] = {"full_k_fraction": 100 * full / len(qv), "ms": ms(times)}
    return out


# ---------------------------------------------------------------------------- LangGraph store


def run_lgstore(url: str, data: dict[str, Any], emb: Lookup, args: argparse.Namespace) -> dict:
    from langgraph.store.base import PutOp
    from langgraph.store.postgres import PostgresStore

    out: dict[str, Any] = {}
    index = {"dims": emb.dim, "embed": emb.lc_documents, "fields": ["text"]}
    with PostgresStore.from_conn_string(fresh_database(url, "bench_lg"), index=index) as store:
        store.setup()  # tables and the HNSW index (its default ann_index_config)
        n = len(data["texts"])
        t0 = time.perf_counter()
        for s in range(0, n, args.batch_size):
            store.batch(
                [
                    PutOp(("memories", data["owner"][i]), f"m{i}", {"text": data["texts"][i]})
                    for i in range(s, min(n, s + args.batch_size))
                ]
            )
        done = time.perf_counter()
        out["bulk"] = {"seconds": done - t0, "rows_per_s": n / (done - t0)}
        out["single_add_ms"] = ms(
            [
                timed(
                    lambda i=i, t=t: store.put(("memories", data["users"][0]), f"x{i}", {"text": t})
                )[0]
                for i, t in enumerate(data["extra_texts"])
            ]
        )
        for q in data["queries"][: args.warmup]:
            store.search(("memories",), query=q, limit=K)
        seconds, hits = timed_searches(
            lambda q: store.search(("memories",), query=q, limit=K), data["queries"]
        )
        out["search_ms"] = ms(seconds)
        out["dense_recall_at_10"] = recall_at_k(
            [[h.value["text"] for h in hs] for hs in hits], data["truth"]
        )
        full, times = 0, []
        for i, q in enumerate(data["queries"]):
            u = data["users"][i % len(data["users"])]
            dt, hits = timed(lambda q=q, u=u: store.search(("memories", u), query=q, limit=K))
            times.append(dt)
            full += len(hits) == K
        out["filtered"] = {"full_k_fraction": 100 * full / len(data["queries"]), "ms": ms(times)}
    return out


# ---------------------------------------------------------------------------- main


def prepare(args: argparse.Namespace) -> tuple[dict[str, Any], Lookup, dict[str, Any]]:
    memories = make_memories(args.n + args.single_adds, args.seed)
    main_, extra = memories[: args.n], memories[args.n :]
    texts, extra_texts = stored_texts(main_), stored_texts(extra)
    queries = make_queries(args.queries, args.seed)
    users = [f"u{i:03d}" for i in range(args.users)]
    owner = [users[i % len(users)] for i in range(args.n)]
    model = default_embedder()
    timing: dict[str, Any] = {}
    cached = load_vector_cache(args.vector_cache, texts, args.seed)
    t0 = time.perf_counter()
    vectors = (
        np.stack([cached[t] for t in texts]) if cached is not None else model.embed_documents(texts)
    )
    timing["embed_documents_s"] = None if cached is not None else time.perf_counter() - t0
    timing["vectors_from_cache"] = cached is not None
    extra_vectors = model.embed_documents(extra_texts)
    query_ms = []
    qvecs = []
    for q in queries:
        dt, v = timed(lambda q=q: model.embed_query(q))
        query_ms.append(dt)
        qvecs.append(v)
    timing["embed_query_ms"] = ms(query_ms)
    table = {
        **dict(zip(texts, vectors, strict=True)),
        **dict(zip(extra_texts, extra_vectors, strict=True)),
        **dict(zip(queries, qvecs, strict=True)),
    }
    by_user: dict[str, list[dict[str, Any]]] = {u: [] for u in users}
    for m, o in zip(main_, owner, strict=True):
        by_user[o].append(m)
    data = {
        "texts": texts,
        "vectors": vectors,
        "owner": owner,
        "users": users,
        "messages_by_user": by_user,
        "extra": extra,
        "extra_texts": extra_texts,
        "queries": queries,
    }
    lookup = Lookup(table)
    data["truth"] = exact_top_texts(data, lookup)
    return data, lookup, timing


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--n", type=int, default=100_000)
    p.add_argument("--users", type=int, default=100)
    p.add_argument("--queries", type=int, default=200)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--single-adds", type=int, default=200)
    p.add_argument("--batch-size", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--vector-cache",
        type=Path,
        default=None,
        help="reuse MiniLM vectors saved by search_latency.py --vector-cache",
    )
    p.add_argument("--pg-url", help="server to use (default MEMOS_PG_URL, else embedded)")
    p.add_argument("--anchors", nargs="*", default=["pgvectorstore", "lgstore"])
    p.add_argument(
        "--pgvs-configs",
        nargs="+",
        choices=["index_after_load", "index_before_load"],
        default=["index_after_load", "index_before_load"],
        help="PGVectorStore loads timed (its searches run on the last one)",
    )
    p.add_argument("--no-locomo", dest="locomo", action="store_false")
    p.add_argument("--out", default="postgres_vs_anchors")
    args = p.parse_args(argv)
    started = time.perf_counter()
    data, emb, timing = prepare(args)
    results: dict[str, Any] = {}
    skipped: dict[str, str] = {}
    runners = {"pgvectorstore": run_pgvectorstore, "lgstore": run_lgstore}
    with server(args.pg_url) as url:
        settings = server_settings(url)
        for name in ["ours", *args.anchors]:
            print(f"== {name}", flush=True)
            try:
                run = run_ours if name == "ours" else runners[name]
                results[name] = run(url, data, emb, args)
            except ImportError as exc:  # an anchor not installed here
                skipped[name] = f"not installed: {exc}"
                print(f"   skipped ({skipped[name]})", flush=True)
                continue
            print(f"   bulk {results[name]['bulk']['rows_per_s']:.0f} rows/s", flush=True)
        if args.locomo:
            from locomo_retrieval import main as locomo

            locomo(
                [
                    "--store",
                    "postgres",
                    "--pg-url",
                    url,
                    "--no-diagnostics",
                    "--out",
                    f"{args.out}_locomo",
                ]
            )
    summary = _summary(results, args)
    if args.locomo:
        import json

        from _common import RESULTS_DIR

        locomo_result = json.loads((RESULTS_DIR / f"{args.out}_locomo.json").read_text())
        summary["ours_locomo_r@10"] = locomo_result["summary"]["ours_r@10"]
    details = {
        "results": results,
        "skipped": skipped,
        "timing": timing,
        "n": args.n,
        "users": args.users,
        "k": K,
        "server": settings,
        "data": "search_latency.make_memories / make_queries, seed "
        f"{args.seed}; text = '<name>: <content>'",
        "minutes": round((time.perf_counter() - started) / 60, 1),
        "code": CODE,
        "machine": machine_details(),
    }
    path = write_result(
        args.out, command_line(None if argv is None else [sys.argv[0], *argv]), summary, details
    )
    print("\n" + "\n".join(f"{k:40s} {v}" for k, v in summary.items()))
    print(f"wrote {path}")
    return 0


def _summary(results: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    size = f"{args.n // 1000}k" if args.n % 1000 == 0 else str(args.n)
    ours = results["ours"]
    out: dict[str, Any] = {
        f"ours_bulk_ingest_per_s_{size}": ours["bulk"]["rows_per_s"],
        f"ours_bulk_ingest_before_index_per_s_{size}": ours["bulk"]["rows_per_s_before_index"],
        "ours_add_p50_ms": ours["single_add_ms"]["p50"],
        "ours_add_p95_ms": ours["single_add_ms"]["p95"],
        "ours_adds_left_staged": ours["single_add_indexing"]["staged_after_adds"],
        "ours_adds_index_catch_up_s": ours["single_add_indexing"]["catch_up_s"],
        f"ours_dense_p50_ms_{size}": ours["search_dense_ms"]["p50"],
        f"ours_dense_p95_ms_{size}": ours["search_dense_ms"]["p95"],
        "ours_dense_recall_at_10": ours["dense_recall_at_10"],
        f"ours_hybrid_p50_ms_{size}": ours["search_hybrid_ms"]["p50"],
        f"ours_hybrid_p95_ms_{size}": ours["search_hybrid_ms"]["p95"],
        f"ours_dense_read_only_p50_ms_{size}": ours["search_dense_ms_read_only"]["p50"],
        f"ours_hybrid_read_only_p50_ms_{size}": ours["search_hybrid_ms_read_only"]["p50"],
        "ours_full_k_fraction": ours["filtered"]["full_k_fraction"],
    }
    for name in ("pgvectorstore", "lgstore"):
        if name in results:
            r = results[name]
            out[f"{name}_bulk_ingest_per_s_{size}"] = r["bulk"]["rows_per_s"]
            out[f"{name}_add_p50_ms"] = r["single_add_ms"]["p50"]
            out[f"{name}_add_p95_ms"] = r["single_add_ms"]["p95"]
            out[f"{name}_p50_ms_{size}"] = r["search_ms"]["p50"]
            out[f"{name}_p95_ms_{size}"] = r["search_ms"]["p95"]
            if "dense_recall_at_10" in r:
                out[f"{name}_dense_recall_at_10"] = r["dense_recall_at_10"]
            out[f"{name}_full_k_fraction"] = r["filtered"]["full_k_fraction"]
            # ours against it, in this run (>1: ours faster or more)
            out[f"bulk_ratio_vs_{name}"] = ours["bulk"]["rows_per_s"] / r["bulk"]["rows_per_s"]
            out[f"dense_p50_ratio_vs_{name}"] = (
                r["search_ms"]["p50"] / ours["search_dense_ms"]["p50"]
            )
            out[f"add_p50_ratio_vs_{name}"] = (
                r["single_add_ms"]["p50"] / ours["single_add_ms"]["p50"]
            )
    if "pgvectorstore" in results and "no_index_rows_per_s" in results["pgvectorstore"]["bulk"]:
        out[f"pgvectorstore_no_index_ingest_per_s_{size}"] = results["pgvectorstore"]["bulk"][
            "no_index_rows_per_s"
        ]
    out["ours_filtered_p50_ms"] = ours["filtered"]["ms"]["p50"]
    return out


if __name__ == "__main__":
    raise SystemExit(main())
