"""``forget_user`` on the embedded store: erase a user with 10,000 memories in one call.

The subject owns two cubes and also wrote into another user's shared cube; many of their
memories were updated (versions), searched (accesses and transitions) and audited, and their
cube holds two artifacts (synthetic payloads of 4 MiB: only the row and blob deletion is
measured here). Another user's memories stay. The store is built once with the real bundled
MiniLM embedder, then copied for each repetition; each repetition opens the copy, runs a
search first (so the in-memory search indexes are loaded, as in a live process), then times
``mos.forget_user`` end to end (one transaction, plus dropping the items from this process's
indexes). The anchor, in the same run, is erasing one memory at a time through the engine
(``mos.delete``, MemOS's only way: 793 memories took 142 s in MemOS issue #1103), timed on
``--anchor-items`` memories and extrapolated to the full count.

    python benchmarks/forget_user.py                    # 10,000 memories, 3 repetitions
    python benchmarks/forget_user.py --items 2000 --repeats 1 --out-part forget_user_quick

Writes ``forget_user_10k_s`` (the median) into ``results/lifecycle.json`` (merged with the
other lifecycle parts).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import code_version, command_line, load_average, merge_part
from search_latency import make_memories

from memos_integrations import MemOS
from memos_integrations.core.config import Settings
from memos_integrations.core.cube import Artifact
from memos_integrations.core.items import AuditRecord
from memos_integrations.embeddings import default_embedder

CODE = code_version()
SUBJECT, KEEPER = "subject", "keeper"


def build(db: Path, n: int, others: int, emb: Any) -> dict[str, int]:
    """The store to erase from; returns what it holds for the subject."""
    settings = Settings(db_path=db, access_write_delay=0)
    memories = make_memories(n + others, seed=7)
    with MemOS.open(db, embedder=emb, settings=settings) as mos:
        for user in (SUBJECT, KEEPER):
            mos.create_user(user)
            mos.create_cube(f"{user}-personal", owner=user)
        mos.create_cube(f"{SUBJECT}-work", owner=SUBJECT)
        mos.create_cube("shared", owner=KEEPER)
        mos.grant("shared", to=SUBJECT, access="write", by=KEEPER)
        mos.grant(f"{SUBJECT}-personal", to=KEEPER, access="read", by=SUBJECT)
        mine, theirs = memories[:n], memories[n:]
        split = [(0.8, f"{SUBJECT}-personal"), (0.15, f"{SUBJECT}-work"), (0.05, "shared")]
        start, items = 0, []
        for share, cube in split:
            stop = n if cube == "shared" else start + int(n * share)
            items += mos.ingest(
                mine[start:stop], user=SUBJECT, cube=cube, session="s", progress=False
            )
            start = stop
        mos.ingest(theirs, user=KEEPER, cube=f"{KEEPER}-personal", progress=False)
        for it in items[: n // 10]:  # a tenth of them updated: a second version each
            mos.update(it.id, user=SUBJECT, text=it.text + " (corrected)")
        for it in items[: n // 50]:
            mos.search(it.text, user=SUBJECT, k=5)  # accesses, activations, audit rows
        mos.get(items[0].id, user=KEEPER)  # a foreign read, audited in the subject's cube
        rng = np.random.default_rng(0)
        for kind in ("activation", "parametric"):
            payload = rng.integers(0, 256, 4 * 2**20, dtype=np.uint8).tobytes()
            art = Artifact(
                f"{kind}-1", f"{SUBJECT}-personal", kind, f"{kind}/{SUBJECT}", payload,
                sources={it.id: it.version for it in items[:16]},
            )  # fmt: skip
            mos.store.put_artifact(art, AuditRecord(SUBJECT, f"build:{kind}", art.id, art.cube_id))
        return {"items": len(items), "keeper_items": mos.count(filter={"owner": KEEPER})}


def erase(src: Path, workdir: Path, emb: Any) -> dict[str, Any]:
    """One timed erasure on a fresh copy of the store."""
    db = workdir / "memos.db"
    shutil.copy(src, db)
    settings = Settings(db_path=db, access_write_delay=0)
    with MemOS.open(db, embedder=emb, settings=settings) as mos:
        mos.search("warm up the indexes", user=KEEPER, k=5)
        keeper_before = mos.count(user=KEEPER, filter={"owner": KEEPER})
        t0 = time.perf_counter()
        report = mos.forget_user(SUBJECT)
        seconds = time.perf_counter() - t0
        t0 = time.perf_counter()
        hits = mos.search("moved to Lisbon", user=None, k=50)
        next_search_ms = (time.perf_counter() - t0) * 1000
        leaked = [h.id for h in hits if h.item.owner == SUBJECT]
        keeper_after = mos.count(user=KEEPER, filter={"owner": KEEPER})
        left = {
            table: mos.store._conn().execute(sql, (SUBJECT,)).fetchone()[0]  # type: ignore[attr-defined]
            for table, sql in (
                ("items", "SELECT count(*) FROM items WHERE owner = ?"),
                ("cubes", "SELECT count(*) FROM cubes WHERE owner = ?"),
                ("grants", "SELECT count(*) FROM grants WHERE user_id = ?"),
                ("audit", "SELECT count(*) FROM audit WHERE actor = ?"),
            )
        }
    assert not leaked and not any(left.values()), (leaked, left)
    assert keeper_after == keeper_before  # the other user's memories stay
    return {
        "seconds": seconds,
        "removed": report,
        "next_search_ms": next_search_ms,
        "file_bytes": os.path.getsize(db),
    }


def one_by_one(src: Path, workdir: Path, emb: Any, count: int) -> float:
    """Seconds per memory when deleting through ``mos.delete`` one at a time (the anchor)."""
    db = workdir / "memos.db"
    shutil.copy(src, db)
    settings = Settings(db_path=db, access_write_delay=0)
    with MemOS.open(db, embedder=emb, settings=settings) as mos:
        ids = [it.id for it in mos.list(user=SUBJECT, limit=count)]
        t0 = time.perf_counter()
        for item_id in ids:
            mos.delete(item_id, user=SUBJECT)
        return (time.perf_counter() - t0) / len(ids)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--items", type=int, default=10_000, help="the subject's memories")
    p.add_argument("--others", type=int, default=2_000, help="another user's memories")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--anchor-items", type=int, default=300)
    p.add_argument("--out-part", default="forget_user", help="the part name in lifecycle.json")
    p.add_argument(
        "--store",
        type=Path,
        help="keep the built store here and reuse it when it exists (the build takes minutes)",
    )
    args = p.parse_args(argv)
    emb = default_embedder()
    load_before = load_average()
    with tempfile.TemporaryDirectory(prefix="memos-forget-") as tmp:
        root = Path(tmp)
        src = args.store or root / "built.db"
        t0 = time.perf_counter()
        if src.exists():  # built by an earlier run with the same arguments
            with MemOS.open(src, embedder=emb) as mos:
                held = {
                    "items": mos.count(filter={"owner": SUBJECT}),
                    "keeper_items": mos.count(filter={"owner": KEEPER}),
                }
        else:
            held = build(src, args.items, args.others, emb)
        build_s = time.perf_counter() - t0
        print(f"built {held} in {build_s:.0f} s", flush=True)
        runs = []
        for n in range(args.repeats):
            work = root / f"run{n}"
            work.mkdir()
            runs.append(erase(src, work, emb))
            print(f"run {n}: {runs[-1]['seconds']:.3f} s {runs[-1]['removed']}", flush=True)
            shutil.rmtree(work)
        work = root / "anchor"
        work.mkdir()
        per_item = one_by_one(src, work, emb, args.anchor_items)
    seconds = [r["seconds"] for r in runs]
    median = statistics.median(seconds)
    key = "forget_user_10k_s" if args.items == 10_000 else f"forget_user_{args.items}_s"
    summary = {key: median}
    details = {
        "items": held["items"],
        "other_user_items": held["keeper_items"],
        "repeats": args.repeats,
        "seconds": seconds,
        "removed": runs[0]["removed"],
        "next_search_ms": [r["next_search_ms"] for r in runs],
        "build_s": build_s,
        "anchor_delete_one_by_one_s_per_item": per_item,
        "anchor_delete_one_by_one_extrapolated_s": per_item * held["items"],
        "anchor_items_timed": args.anchor_items,
        "load_average_before": load_before,
        "code": CODE,
        "store": "embedded SQLite (WAL), bundled MiniLM vectors",
    }
    path = merge_part("lifecycle", args.out_part, command_line(), summary, details)
    print(f"{summary} -> {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
