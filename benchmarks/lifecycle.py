"""Memory lifecycle: replay idempotence, and fast vs fine (LLM-read) memory on LoCoMo.

Parts (``--part``, repeatable; each merges its keys into ``results/lifecycle.json``, so
parts can be run, and rerun, separately; another part is one more function in ``PARTS``):

* ``replay``: a 1,000-turn conversation (the first LoCoMo turns in order, sessions kept)
  ingested twice in fast mode into one cube; ``replay_items_first`` / ``replay_items_second``
  count every item the cube holds (all states but the deleted tombstone) after each pass.
* ``locomo``: evidence recall@10 of fast mode (every turn a raw-turn memory) against fine
  mode (the local SmolLM2-135M reads each session in chunks through ``MemReader``; the
  extracted memories are consolidated and the raw turns archived; turns whose extraction
  failed stay live). A retrieved memory stands for the dia ids of its source turns
  (``provenance.message_ids``). ``fast_items`` / ``fine_items``: live (served) items per
  conversation. Both modes run on the same conversations (``--conversations``) with the
  same questions, embedder and search (hybrid, k=10). Scoring and loading are those of
  ``locomo_retrieval.py``.

    python benchmarks/lifecycle.py --part replay
    python benchmarks/lifecycle.py --part locomo --conversations conv-30
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import RESULTS_DIR, code_version, command_line, load_average, machine_details
from _common import write_result as _write_fresh
from locomo_retrieval import CachedEmbedder, load_conversation, load_questions, recall_at

from memos_integrations import MemOS
from memos_integrations.core.config import Settings, data_dir
from memos_integrations.core.lifecycle import LISTED_STATES

CODE = code_version()
NAME = "lifecycle"
LIVE = ("generated", "activated")


# ---------------------------------------------------------------------------- results


def write_part(part: str, command: str, summary: dict[str, Any], details: dict[str, Any]) -> Path:
    """Merge one part's summary keys and details into ``results/lifecycle.json``.

    Other parts' keys stay as they were; ``details.parts[part]`` records this part's command,
    date, machine load and code version, and the top-level ``command`` lists every part's.
    """
    path = RESULTS_DIR / f"{NAME}.json"
    old = json.loads(path.read_text()) if path.exists() else {"summary": {}, "details": {}}
    parts = dict(old["details"].get("parts", {}))
    parts[part] = {
        "command": command,
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "load_average": load_average(),
        "code": CODE,
        **details,
    }
    merged_summary = {**old["summary"], **summary}
    commands = " && ".join(dict.fromkeys(p["command"] for p in parts.values()))
    return _write_fresh(
        NAME, commands, merged_summary, {"parts": parts, "machine": machine_details()}
    )


def _open(tmp: str, emb: Any, **kw: Any) -> MemOS:
    db = Path(tmp) / "memos.db"
    mos = MemOS.open(db, embedder=emb, settings=Settings(db_path=db, track_access=False), **kw)
    mos.create_user("u")
    mos.create_cube("c", owner="u")
    return mos


def _messages(turns: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """A conversation's turns as chat messages, grouped by session, in order."""
    sessions: dict[str, list[dict[str, Any]]] = {}
    for t in turns:
        sessions.setdefault(t["session"], []).append(
            {
                "role": "user",
                "name": t["speaker"],
                "content": t["content"],
                "timestamp": t["timestamp"],
                "id": t["dia_id"],
            }
        )
    return sessions


# ---------------------------------------------------------------------------- replay


def run_replay(args: argparse.Namespace, data: list[dict[str, Any]]) -> tuple[dict, dict]:
    turns: list[dict[str, Any]] = []
    for conv in data:
        for t in load_conversation(conv, captions=True):
            turns.append({**t, "session": f"{conv['sample_id']}/{t['session']}"})
    turns = turns[: args.replay_turns]
    if len(turns) < args.replay_turns:
        raise SystemExit(f"only {len(turns)} turns in the data")
    emb = CachedEmbedder()
    emb.warm([f"{t['speaker']}: {t['content']}" for t in turns])
    counts, seconds = [], []
    with tempfile.TemporaryDirectory(prefix="replay_") as tmp:
        mos = _open(tmp, emb)
        try:
            for _ in range(2):
                t0 = time.perf_counter()
                for session, messages in _messages(turns).items():
                    mos.add(messages, user="u", cube="c", session=session)
                seconds.append(time.perf_counter() - t0)
                counts.append(mos.count(user="u", cube="c", states=LISTED_STATES))
            audit = mos.audit(action="add", limit=1)[0].detail
        finally:
            mos.close()
    summary = {"replay_items_first": counts[0], "replay_items_second": counts[1]}
    details = {
        "turns": len(turns),
        "conversations": sorted({t["session"].split("/")[0] for t in turns}),
        "mode": "fast (mos.add per session, role=user, name=speaker, timestamp, id=dia_id)",
        "pass_seconds": [round(s, 2) for s in seconds],
        "last_add_audit": audit,
        "note": "items counted in every state but deleted; identical turn texts at the same "
        "session time are one memory by design (content hash), hence items <= turns",
    }
    return summary, details


# ---------------------------------------------------------------------------- LoCoMo


def _ingest_and_score(
    mos: MemOS, turns: list[dict[str, Any]], questions: list[dict], mode: str
) -> dict[str, Any]:
    t0 = time.perf_counter()
    for session, messages in _messages(turns).items():
        mos.add(messages, user="u", cube="c", session=session, mode=mode)
        if mode == "fine":  # progress: fine mode is slow on a CPU
            print(f"  {session}: {time.perf_counter() - t0:.0f}s", flush=True)
    ingest_s = time.perf_counter() - t0
    live = mos.list(user="u", cube="c", states=LIVE, limit=100_000)
    recalls, covered = [], []
    for q in questions:
        hits = mos.search(q["question"], user="u", k=10, cubes=["c"])
        ranked = [list(h.item.provenance.message_ids) for h in hits]
        covered.append(sum(len(r) for r in ranked))
        recalls.append(recall_at(ranked, q["evidence"], ks=(10,))[10])
    return {
        "r@10": 100 * float(np.mean(recalls)),
        "items": len(live),
        "extracted": sum(1 for it in live if it.kind != "raw_turn"),
        "raw_live": sum(1 for it in live if it.kind == "raw_turn"),
        "turns_per_top10": float(np.mean(covered)),
        "ingest_s": round(ingest_s, 1),
        "questions": len(questions),
    }


def run_locomo(args: argparse.Namespace, data: list[dict[str, Any]]) -> tuple[dict, dict]:
    import torch

    from memos_integrations.core.reader import MemReader
    from memos_integrations.models.runtime import LocalModel

    torch.set_num_threads(args.threads)
    chosen = (
        [c for c in data if c["sample_id"] in args.conversations] if args.conversations else data
    )
    model = LocalModel.load()
    emb = CachedEmbedder()
    per_conv: dict[str, Any] = {}
    counts: dict[str, Any] = {"normalised_evidence": 0, "dropped_evidence": 0}
    counts.update(packed_evidence_entries=0, excluded_questions=0)
    counts.update(excluded_no_evidence_in_data=0, excluded_all_evidence_dropped=0)
    for conv in chosen:
        turns = load_conversation(conv, captions=True)
        questions = load_questions(conv, {t["dia_id"] for t in turns}, counts)
        if args.sessions:  # a prefix of the conversation, and the questions it answers
            keep = {f"session_{n}" for n in range(1, args.sessions + 1)}
            turns = [t for t in turns if t["session"] in keep]
            known = {t["dia_id"] for t in turns}
            questions = [q for q in questions if set(q["evidence"]) <= known]
        row: dict[str, Any] = {"turns": len(turns), "sessions": args.sessions or "all"}
        with tempfile.TemporaryDirectory(prefix="fast_") as tmp:
            mos = _open(tmp, emb)
            try:
                row["fast"] = _ingest_and_score(mos, turns, questions, "fast")
            finally:
                mos.close()
        reader = MemReader(
            model,
            chunk_turns=args.chunk_turns,
            retries=args.retries,
            max_new_tokens=args.max_new_tokens,
        )
        with tempfile.TemporaryDirectory(prefix="fine_") as tmp:
            mos = _open(tmp, emb, reader=reader)
            try:
                calls = _count_calls(reader)
                row["fine"] = _ingest_and_score(mos, turns, questions, "fine")
                row["fine"]["llm_calls"] = calls()
                failures = mos.audit(action="read_failed", limit=100_000)
                row["fine"]["failed_turns"] = sum(len(a.detail["turns"]) for a in failures)
                row["fine"]["error_examples"] = [a.detail["errors"][-1] for a in failures[:5]]
                actions: dict[str, int] = {}
                for a in mos.audit(action="refine", limit=100_000):
                    for k, v in a.detail["actions"].items():
                        actions[k] = actions.get(k, 0) + v
                row["fine"]["consolidation"] = actions
                samples = mos.list(user="u", cube="c", states=LIVE, kinds=list(_KINDS), limit=8)
                row["fine"]["examples"] = [s.text for s in samples]
                if args.fine_replay:  # it reads every chunk again: twice the model calls
                    before = mos.count(user="u", cube="c", states=LISTED_STATES)
                    t0 = time.perf_counter()
                    for session, messages in _messages(turns).items():
                        mos.add(messages, user="u", cube="c", session=session, mode="fine")
                    row["fine_replay"] = {
                        "items_added": mos.count(user="u", cube="c", states=LISTED_STATES) - before,
                        "llm_calls": calls() - row["fine"]["llm_calls"],
                        "seconds": round(time.perf_counter() - t0, 1),
                    }
            finally:
                mos.close()
        per_conv[conv["sample_id"]] = row
        print(
            conv["sample_id"], json.dumps({m: row[m]["r@10"] for m in ("fast", "fine")}), flush=True
        )

    def mean(mode: str, key: str) -> float:
        return float(np.mean([r[mode][key] for r in per_conv.values()]))

    n_questions = sum(r["fast"]["questions"] for r in per_conv.values())

    def pooled(mode: str) -> float:  # question-weighted, as locomo_retrieval reports
        return sum(r[mode]["r@10"] * r[mode]["questions"] for r in per_conv.values()) / n_questions

    summary = {
        "fast_r@10": pooled("fast"),
        "fine_r@10": pooled("fine"),
        "fast_items": mean("fast", "items"),
        "fine_items": mean("fine", "items"),
    }
    details = {
        "data": str(args.data),
        "conversations": list(per_conv),
        "subset_note": "fine mode reads with SmolLM2-135M on CPU; the conversations listed "
        "are the subset that fits the time budget (see docs/benchmarks.md)",
        "questions": n_questions,
        "metric": "evidence recall@10 over all 5 categories: |evidence ∩ source dia ids of "
        "the top-10 memories| / |evidence|, question-weighted; items = live items "
        "(generated/activated) per conversation, averaged",
        "reader": {
            "model": model.fingerprint.id,
            "chunk_turns": args.chunk_turns,
            "retries": args.retries,
            "max_new_tokens": args.max_new_tokens,
            "torch_threads": args.threads,
            "consolidation": "rules (no LLM judge): cosine >= 0.92 duplicate, >= 0.8 same "
            "kind and newer -> new version",
        },
        "per_conversation": per_conv,
        "evidence_counts": counts,
        "search": "mos.search(question, k=10, cubes=[cube]) (hybrid, engine defaults)",
    }
    return summary, details


_KINDS = ("fact", "preference", "event", "plan", "relationship", "opinion")


def _count_calls(reader: Any) -> Callable[[], int]:
    """Wrap the reader's LLM function to count calls (retries included)."""
    count = [0]
    inner = reader.chat

    def chat(messages: list[dict[str, str]]) -> str:
        count[0] += 1
        return inner(messages)

    reader.chat = chat
    return lambda: count[0]


PARTS: dict[str, Callable[[argparse.Namespace, list[dict[str, Any]]], tuple[dict, dict]]] = {
    "replay": run_replay,
    "locomo": run_locomo,
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--part", action="append", choices=list(PARTS), help="default: all parts")
    p.add_argument("--data", type=Path, default=data_dir() / "locomo" / "locomo_dev6.json")
    p.add_argument("--replay-turns", type=int, default=1000)
    p.add_argument("--conversations", nargs="*", help="LoCoMo sample ids (default: all)")
    p.add_argument("--sessions", type=int, help="only the first N sessions of each conversation")
    p.add_argument("--chunk-turns", type=int, default=8)
    p.add_argument("--retries", type=int, default=1)
    p.add_argument("--max-new-tokens", type=int, default=96)
    p.add_argument("--threads", type=int, default=2, help="torch threads for the reader")
    p.add_argument(
        "--no-fine-replay",
        dest="fine_replay",
        action="store_false",
        help="skip reading each conversation a second time in fine mode (the replay check)",
    )
    args = p.parse_args(argv)
    data = json.loads(args.data.read_text())
    for part in args.part or list(PARTS):
        started = time.perf_counter()
        summary, details = PARTS[part](args, data)
        details["seconds"] = round(time.perf_counter() - started, 1)
        cmd = command_line(None if argv is None else [sys.argv[0], *argv])
        if args.part is None:  # each part's command reruns that part alone
            cmd = f"{cmd} --part {part}"
        path = write_part(part, cmd, summary, details)
        print(f"{part}: {json.dumps(summary)} -> {path}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
