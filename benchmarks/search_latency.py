"""Search latency and ingest throughput of the embedded store on synthetic memories.

Memories are varied sentences made from templates and word lists (fixed seed), ingested
with the real bundled MiniLM embedder through ``mos.ingest`` (so throughput includes
embedding). Latency is ``mos.search(query, user=..., k=10)`` end to end, with the query
embedding taken out: the engine gets an embedder whose ``embed_query`` returns a vector
computed beforehand by the same model (``embed_query_ms_p50`` is reported separately).

    python benchmarks/search_latency.py                       # 10k and 100k
    python benchmarks/search_latency.py --sizes 2000 --queries 50 --out latency_quick
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import random
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import datetime, timedelta
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

from memos_integrations import MemOS
from memos_integrations.core.config import Settings
from memos_integrations.embeddings import BUNDLED_MODEL_ID, default_embedder

CODE = code_version()  # the engine as imported at start-up

# ---------------------------------------------------------------------------- synthetic text

NAMES = """Alice Bob Carmen Dmitri Elena Farid Grace Hiro Ines Jamal Keiko Liam Maria Nadia Omar
Priya Quentin Rosa Sven Tariq Uma Victor Wen Xavier Yusuf Zoe Aisha Bruno Chloe Diego Emma
Felix Hana Ivan Julia Kofi Lena Mateo Nora Oscar Paula Rami Sofia Theo Ursula Vera Wiktor
Yara Anya Boris Clara Dario Esther Filip Greta Hugo Ida Jonas Kira Luca Mila""".split()  # noqa: SIM905
RELATIONS = (  # noqa: SIM905
    "sister|brother|mother|father|cousin|aunt|uncle|grandmother|grandfather|"
    "neighbour|colleague|manager|roommate|best friend|partner|son|daughter|niece|"
    "nephew|landlord"
).split("|")
CITIES = """Lisbon Porto Madrid Barcelona Paris Lyon Berlin Hamburg Munich Vienna Prague Warsaw
Krakow Budapest Rome Milan Naples Athens Istanbul Cairo Nairobi Lagos Accra Tokyo Osaka Seoul
Busan Taipei Hanoi Bangkok Singapore Jakarta Sydney Melbourne Auckland Toronto Montreal
Vancouver Chicago Boston Denver Austin Seattle Lima Bogota Santiago Quito Havana Dublin Oslo
Stockholm Helsinki Copenhagen Reykjavik Edinburgh Cardiff Zurich Geneva Brussels""".split()  # noqa: SIM905
PLACES = """the farmers market|the climbing gym|a small bakery|the public library|the old harbour|
a jazz bar|the botanical garden|the science museum|a ramen shop|the community centre|
the dog park|a pottery studio|the night market|an art gallery|the swimming pool|
the train station|a bookshop|the hospital|the city hall|a vineyard|the beach|a ski resort|
the national park|a coworking space|the concert hall|a yoga studio|the flea market""".replace(
    "\n", ""
).split("|")
ACTIVITIES = """started learning the violin|ran a half marathon|adopted a rescue cat|
adopted a beagle puppy|painted a sunset over the lake|baked sourdough bread|
planted tomatoes and basil|fixed the leaking kitchen sink|joined a chess club|
volunteered at the food bank|went camping with friends|finished reading a long novel|
learned to make fresh pasta|built a bookshelf from oak|took a pottery class|
signed up for a salsa course|started a vegetable garden|switched jobs to a startup|
got promoted to team lead|moved into a new apartment|bought a second-hand bicycle|
went scuba diving for the first time|organised a surprise birthday party|
passed the driving test|started therapy|adopted a vegetarian diet|
sold the old car|wrote a short story for a contest|recorded a podcast episode|
hiked to the top of a volcano|learned basic Japanese|repainted the living room|
lost their phone on the bus|sprained an ankle playing football|
visited an old school friend|took the kids to the aquarium|
tried rock climbing outdoors|started journaling every morning|
installed solar panels on the roof|finished a data science certificate""".replace("\n", "").split(
    "|"
)
FOODS = """spicy ramen|mushroom risotto|lemon cheesecake|black bean tacos|green curry|
grilled sardines|falafel wraps|beef pho|spinach lasagna|apple crumble|chickpea stew|
pad thai|margherita pizza|miso soup|shakshuka|pierogi|paella|sushi rolls|
banana bread|carrot cake|pumpkin soup|bibimbap|goulash|ceviche|dumplings""".replace("\n", "").split(
    "|"
)
HOBBIES = """birdwatching|knitting|board games|photography|gardening|cycling|chess|
woodworking|astronomy|calligraphy|surfing|bouldering|baking|running|origami|
karaoke|fishing|sailing|tennis|poetry|video games|salsa dancing|archery|kayaking""".replace(
    "\n", ""
).split("|")
FEELINGS = """thrilled|exhausted|nervous|proud|relieved|frustrated|grateful|anxious|
excited|calm|disappointed|overwhelmed|hopeful|curious|nostalgic""".replace("\n", "").split("|")
OBJECTS = """a blue umbrella|a vintage camera|a guitar|a laptop|a wool scarf|a painting of
a lighthouse|a cookbook|a pair of hiking boots|a telescope|a sewing machine|an electric
scooter|a record player|a fountain pen|a houseplant|a board game|a drone|a kayak|
a chess set|a coffee grinder|a bread machine""".replace("\n", " ").split("|")
WHEN = """last weekend|yesterday|two weeks ago|last summer|in March|on Friday evening|
over the holidays|this morning|a few days ago|last year|in early spring|
during the long weekend|on their birthday|after work on Tuesday|in the autumn""".replace(
    "\n", ""
).split("|")
PLANS = """visit|move to|spend a month in|run a marathon in|open a cafe in|study in|
find a job in|take the kids to|go back to|attend a conference in""".replace("\n", "").split("|")


def _pick(rng: random.Random, seq: Sequence[str]) -> str:
    return seq[rng.randrange(len(seq))]


TEMPLATES = (
    lambda r: (
        f"{_pick(r, NAMES)} {_pick(r, ACTIVITIES)} {_pick(r, WHEN)} and felt "
        f"{_pick(r, FEELINGS)} about it."
    ),
    lambda r: (
        f"{_pick(r, NAMES)}'s {_pick(r, RELATIONS)} lives in {_pick(r, CITIES)} and "
        f"works near {_pick(r, PLACES)}."
    ),
    lambda r: f"{_pick(r, NAMES)} loves {_pick(r, FOODS)} but cannot stand {_pick(r, FOODS)}.",
    lambda r: (
        f"{_pick(r, WHEN).capitalize()}, {_pick(r, NAMES)} met "
        f"{_pick(r, NAMES)} at {_pick(r, PLACES)} in {_pick(r, CITIES)}."
    ),
    lambda r: (
        f"{_pick(r, NAMES)} plans to {_pick(r, PLANS)} {_pick(r, CITIES)} "
        f"next {_pick(r, ('spring', 'summer', 'autumn', 'winter', 'year', 'month'))}."
    ),
    lambda r: (
        f"{_pick(r, NAMES)} has been into {_pick(r, HOBBIES)} for "
        f"{r.randint(2, 15)} years and goes to {_pick(r, PLACES)} every "
        f"{_pick(r, ('Monday', 'Wednesday', 'Saturday', 'Sunday', 'evening'))}."
    ),
    lambda r: (
        f"{_pick(r, NAMES)} bought {_pick(r, OBJECTS).strip()} for "
        f"{r.randint(5, 900)} euros as a gift for their {_pick(r, RELATIONS)}."
    ),
    lambda r: (
        f"I told {_pick(r, NAMES)} that my {_pick(r, RELATIONS)} cooked "
        f"{_pick(r, FOODS)} for the whole family {_pick(r, WHEN)}."
    ),
    lambda r: (
        f"{_pick(r, NAMES)} is {_pick(r, FEELINGS)} because their {_pick(r, RELATIONS)} "
        f"{_pick(r, ACTIVITIES)}."
    ),
    lambda r: (
        f"Reminder: {_pick(r, NAMES)}'s appointment at {_pick(r, PLACES)} is on "
        f"{_pick(r, ('Monday', 'Tuesday', 'Thursday', 'Friday'))} at {r.randint(7, 19)}:"
        f"{_pick(r, ('00', '15', '30', '45'))}."
    ),
)

QUESTION_TEMPLATES = (
    lambda r: f"What did {_pick(r, NAMES)} do {_pick(r, WHEN)}?",
    lambda r: f"Where does {_pick(r, NAMES)}'s {_pick(r, RELATIONS)} live?",
    lambda r: f"Which food does {_pick(r, NAMES)} love?",
    lambda r: f"Who did {_pick(r, NAMES)} meet in {_pick(r, CITIES)}?",
    lambda r: f"When is {_pick(r, NAMES)} going to {_pick(r, CITIES)}?",
    lambda r: f"How long has {_pick(r, NAMES)} been doing {_pick(r, HOBBIES)}?",
    lambda r: f"What gift did {_pick(r, NAMES)} buy?",
    lambda r: f"Who {_pick(r, ACTIVITIES)}?",
    lambda r: f"Why is {_pick(r, NAMES)} feeling {_pick(r, FEELINGS)}?",
    lambda r: f"When is the appointment at {_pick(r, PLACES)}?",
)


def make_memories(n: int, seed: int) -> list[dict[str, Any]]:
    """``n`` distinct chat messages with speakers and timestamps (deterministic)."""
    rng = random.Random(seed)
    start = datetime(2022, 1, 1)
    seen: set[str] = set()
    out: list[dict[str, Any]] = []
    while len(out) < n:
        text = TEMPLATES[rng.randrange(len(TEMPLATES))](rng)
        text = " ".join(text.split())
        if text in seen:
            continue
        seen.add(text)
        when = start + timedelta(minutes=rng.randrange(3 * 365 * 24 * 60))
        out.append(
            {
                "role": "user",
                "name": _pick(rng, NAMES),
                "content": text,
                "timestamp": when.isoformat(),
                "id": f"m{len(out)}",
            }
        )
    return out


def make_queries(n: int, seed: int) -> list[str]:
    rng = random.Random(seed + 1)
    return [
        " ".join(QUESTION_TEMPLATES[rng.randrange(len(QUESTION_TEMPLATES))](rng).split())
        for _ in range(n)
    ]


# ---------------------------------------------------------------------------- embedder


class RecordingEmbedder:
    """The bundled MiniLM; remembers document vectors, serves precomputed query vectors.

    ``cached`` (text -> vector, made earlier by the same model from the same texts) lets a
    rerun skip re-embedding; runs that use it say so and report no embedding throughput.
    """

    model_id = BUNDLED_MODEL_ID

    def __init__(self) -> None:
        self.inner = default_embedder()
        self.dim = self.inner.dim
        self.doc_vectors: list[np.ndarray] = []
        self.queries: dict[str, np.ndarray] = {}
        self.query_misses = 0
        self.cached: dict[str, np.ndarray] | None = None

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        if self.cached is not None:
            vecs = np.stack([self.cached[t] for t in texts])
        else:
            vecs = self.inner.embed_documents(texts)
        self.doc_vectors.append(vecs)
        return vecs

    def embed_query(self, text: str) -> np.ndarray:
        vec = self.queries.get(text)
        if vec is None:
            self.query_misses += 1
            vec = self.queries[text] = self.inner.embed_query(text)
        return vec


def stored_texts(memories: Sequence[dict[str, Any]]) -> list[str]:
    """The texts the engine embeds for these messages (``"<name>: <content>"``)."""
    return [f"{m['name']}: {m['content']}" for m in memories]


def _cache_paths(cache_dir: Path, n: int, seed: int) -> tuple[Path, Path]:
    stem = cache_dir / f"minilm_seed{seed}_n{n}"
    return stem.with_suffix(".npy"), stem.with_suffix(".json")


def load_vector_cache(
    cache_dir: Path | None, texts: list[str], seed: int
) -> dict[str, np.ndarray] | None:
    """Vectors for ``texts`` saved by an earlier run (any saved size covering them)."""
    if cache_dir is None:
        return None
    digest = hashlib.sha256("\n".join(texts).encode()).hexdigest()
    for meta_path in sorted(cache_dir.glob(f"minilm_seed{seed}_n*.json")):
        meta = json.loads(meta_path.read_text())
        if meta["model"] != BUNDLED_MODEL_ID or meta["n"] < len(texts):
            continue
        if meta["prefix_sha256"].get(str(len(texts))) != digest:
            continue
        vectors = np.load(meta_path.with_suffix(".npy"), mmap_mode="r")
        return {t: np.asarray(vectors[i]) for i, t in enumerate(texts)}
    return None


def save_vector_cache(
    cache_dir: Path | None, texts: list[str], vectors: np.ndarray, seed: int, sizes: list[int]
) -> None:
    if cache_dir is None:
        return
    cache_dir.mkdir(parents=True, exist_ok=True)
    npy, meta = _cache_paths(cache_dir, len(texts), seed)
    np.save(npy, vectors.astype(np.float32))
    prefixes = {
        str(m): hashlib.sha256("\n".join(texts[:m]).encode()).hexdigest()
        for m in sorted({*sizes, len(texts)})
        if m <= len(texts)
    }
    meta.write_text(
        json.dumps({"model": BUNDLED_MODEL_ID, "n": len(texts), "prefix_sha256": prefixes})
    )


# ---------------------------------------------------------------------------- measurement


def time_searches(
    mos: MemOS, queries: Sequence[str], user: str, cube: str, k: int, mode: str = "hybrid"
) -> list[float]:
    out = []
    for q in queries:
        t0 = time.perf_counter()
        mos.search(q, user=user, k=k, cubes=[cube], mode=mode)  # type: ignore[arg-type]
        out.append((time.perf_counter() - t0) * 1000)
    return out


def run_size(
    n: int, args: argparse.Namespace, queries: list[str], tmp: Path, emb: RecordingEmbedder
) -> dict[str, Any]:
    print(f"\n== {n:,} memories", flush=True)
    memories = make_memories(n, args.seed)
    db = tmp / f"latency_{n}.db"
    emb.doc_vectors = []
    texts = stored_texts(memories)
    # the first size always embeds for real (its throughput is the headline number)
    emb.cached = (
        None if n == args.sizes[0] else load_vector_cache(args.vector_cache, texts, args.seed)
    )
    result: dict[str, Any] = {
        "memories": n,
        "vectors_from_cache": emb.cached is not None,
        "load_average_before": load_average(),
    }
    # default settings (track_access=True), as MemOS.open() gives a user
    mos = MemOS.open(
        db, embedder=emb, settings=Settings(db_path=db, ivf_min_rows=args.ivf_min_rows)
    )
    user, cube = "bench", f"cube{n}"
    mos.create_user(user)
    mos.create_cube(cube, owner=user)
    gc.collect()
    t0 = time.perf_counter()
    items = mos.ingest(
        memories, user=user, cube=cube, batch_size=args.batch_size, progress=args.progress
    )
    ingest_s = time.perf_counter() - t0
    vectors = np.concatenate(emb.doc_vectors)
    emb.doc_vectors = []
    if emb.cached is None:
        save_vector_cache(args.vector_cache, texts, vectors, args.seed, args.sizes)
    emb.cached = None
    ids = [it.id for it in items]
    if len(set(ids)) != n:
        raise AssertionError(f"expected {n} distinct memories, got {len(set(ids))}")
    key = "ingest_per_s_cached_vectors" if result["vectors_from_cache"] else "ingest_per_s"
    result.update(
        {"ingest_s": round(ingest_s, 1), key: n / ingest_s, "batch_size": args.batch_size}
    )
    how = "vectors from cache" if result["vectors_from_cache"] else "embedding included"
    print(f"ingest: {ingest_s:.1f}s = {n / ingest_s:.1f} memories/s ({how})", flush=True)

    # first search: loads the vector index from the table (and trains IVF when large)
    t0 = time.perf_counter()
    mos.search(queries[0], user=user, k=10, cubes=[cube])
    result["first_search_ms"] = (time.perf_counter() - t0) * 1000
    warm = queries[: args.warmup]
    time_searches(mos, warm, user, cube, 10)
    result["hybrid_ms"] = percentiles(time_searches(mos, queries, user, cube, 10))
    result["dense_ms"] = percentiles(time_searches(mos, queries, user, cube, 10, "dense"))
    result["text_ms"] = percentiles(time_searches(mos, queries, user, cube, 10, "text"))
    mos.close()
    # the same store without access tracking (search does not write)
    mos = MemOS.open(
        db,
        embedder=emb,
        settings=Settings(db_path=db, track_access=False, ivf_min_rows=args.ivf_min_rows),
    )
    mos.search(queries[0], user=user, k=10, cubes=[cube])
    time_searches(mos, warm, user, cube, 10)
    result["hybrid_ms_no_access_tracking"] = percentiles(
        time_searches(mos, queries, user, cube, 10)
    )

    # IVF (or exact) dense top-10 against brute-force cosine top-10
    probe = queries[: args.recall_queries]
    overlaps = []
    for q in probe:
        got = [h.item.id for h in mos.search(q, user=user, k=10, cubes=[cube], mode="dense")]
        exact = np.argsort(-(vectors @ emb.queries[q]), kind="stable")[:10]
        overlaps.append(len(set(got) & {ids[i] for i in exact}) / 10)
    result["dense_recall_vs_exact"] = float(np.mean(overlaps))
    result["dense_recall_queries"] = len(probe)
    result["uses_ivf"] = n >= args.ivf_min_rows
    result["load_average_after"] = load_average()
    result["db_bytes"] = db.stat().st_size
    mos.close()
    print(
        f"hybrid search p50 {result['hybrid_ms']['p50']:.2f} ms, "
        f"p95 {result['hybrid_ms']['p95']:.2f} ms; dense recall vs exact "
        f"{result['dense_recall_vs_exact']:.3f}",
        flush=True,
    )
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    p.add_argument("--queries", type=int, default=200)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--recall-queries", type=int, default=100)
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--progress", action="store_true", help="show the ingest progress bar")
    p.add_argument(
        "--ivf-min-rows",
        type=int,
        default=Settings(db_path=Path("x")).ivf_min_rows,
        help="cube size from which dense search uses IVF (engine default)",
    )
    p.add_argument(
        "--vector-cache",
        type=Path,
        default=None,
        help="directory to save document vectors in, and reuse them from on reruns for every "
        "size but the first (those runs report ingest without embedding)",
    )
    p.add_argument("--out", default="search_latency")
    args = p.parse_args(argv)
    started = time.perf_counter()

    emb = RecordingEmbedder()
    queries = make_queries(args.queries, args.seed)
    emb.inner.embed_documents(["warm up the model"])
    for q in queries[:10]:
        emb.inner.embed_query(q)
    embed_ms = []
    for q in queries:
        t0 = time.perf_counter()
        emb.queries[q] = emb.inner.embed_query(q)
        embed_ms.append((time.perf_counter() - t0) * 1000)
    print(f"embed_query p50 {np.percentile(embed_ms, 50):.1f} ms", flush=True)

    runs: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="memos_latency_") as tmp:
        for n in args.sizes:
            runs[str(n)] = run_size(n, args, queries, Path(tmp), emb)
            gc.collect()

    def label(n: int) -> str:
        return f"{n // 1000}k" if n % 1000 == 0 else str(n)

    summary: dict[str, Any] = {}
    for n in args.sizes:
        r = runs[str(n)]
        summary[f"p50_ms_{label(n)}"] = r["hybrid_ms"]["p50"]
        summary[f"p95_ms_{label(n)}"] = r["hybrid_ms"]["p95"]
    summary["embed_query_ms_p50"] = float(np.percentile(embed_ms, 50))
    first = args.sizes[0]
    summary[f"ingest_per_s_{label(first)}"] = runs[str(first)]["ingest_per_s"]
    details: dict[str, Any] = {
        "runs": runs,
        "embed_query_ms": percentiles(embed_ms),
        "search_call": "mos.search(query, user=..., k=10, cubes=[cube]) (hybrid unless "
        "noted), wall clock, query embedding excluded (precomputed vectors "
        "served by the embedder); default Settings (track_access=True: each "
        "search also records access counts); hybrid_ms_no_access_tracking "
        "repeats it with Settings(track_access=False)",
        "ingest": f"mos.ingest(messages, batch_size={args.batch_size}), bundled "
        f"{BUNDLED_MODEL_ID} run in NumPy, embedding included (except runs with "
        "vectors_from_cache: vectors the same model made from the same texts in an earlier run, "
        "see --vector-cache), one fresh store and cube per size",
        "data": "synthetic chat messages from 10 sentence templates over word lists "
        f"(names, places, activities, foods, ...), seed {args.seed}, all distinct; "
        f"{args.queries} template questions, {args.warmup} warm-up searches before "
        "timing",
        "dense_recall_vs_exact": "mean |top-10 of mode='dense'| ∩ |exact cosine top-10| / 10 "
        f"over {args.recall_queries} queries "
        f"(IVF from {args.ivf_min_rows:,} rows per cube)",
        "query_cache_misses": emb.query_misses,
        "code": CODE,
        "minutes": round((time.perf_counter() - started) / 60, 1),
        "machine": machine_details(),
    }
    if "100000" in runs:
        details["dense_recall_vs_exact_100k"] = runs["100000"]["dense_recall_vs_exact"]
    path = write_result(
        args.out, command_line(None if argv is None else [sys.argv[0], *argv]), summary, details
    )
    print("\n" + "\n".join(f"{k:22s} {v:10.2f}" for k, v in summary.items()))
    print(f"wrote {path} in {details['minutes']} min")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
