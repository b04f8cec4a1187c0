"""Time to first token: memory injected as a KV cache vs the same memory as prompt text.

The layout of MemOS's published table: memory contexts of ~500, ~1,500 and ~3,000 tokens
(synthetic personal memories, composed into the system message exactly as ``mos.chat`` does)
and short (~20 token) and long (~300 token) queries, on the bundled SmolLM2-135M-Instruct.

* prompt: ``model.stream(full prompt)`` — the memories are prefilled with the query;
* cache:  ``model.stream(continuation, prefix=cached)`` — a fresh copy of the stored KV cache
  is injected and only the query is prefilled (the copy is part of the measured time).

TTFT is the time until the first decoded piece, median of ``--repeats`` runs. Greedy outputs
(``--check-tokens`` tokens) are compared for every cell; the one-off build time of each cache
and the decode speed are reported too.

    python benchmarks/activation_ttft.py
    python benchmarks/activation_ttft.py --contexts 500 --repeats 1 --out activation_quick
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import code_version, command_line, load_average, machine_details, write_result
from search_latency import make_memories

from memos_integrations.core.chat import DEFAULT_INSTRUCTIONS
from memos_integrations.core.items import MemoryItem, content_hash, parse_time
from memos_integrations.models import activation
from memos_integrations.models.runtime import LocalModel

SHORT_QUERY = "What did my sister cook for the family last weekend, and did everyone like it?"
LONG_TOPIC = (
    "I am planning the next few months and I would like your help to keep everything "
    "straight. My calendar is full of appointments, trips, birthdays and training plans, "
    "and I keep forgetting who lives where and what everyone likes to eat. "
)


def memory_items(target_tokens: int, model: LocalModel) -> list[MemoryItem]:
    """Synthetic memories whose composed block is about ``target_tokens`` tokens."""
    items: list[MemoryItem] = []
    for n, m in enumerate(make_memories(4 * target_tokens // 10 + 50, seed=7)):
        text = f"{m['name']}: {m['content']}"
        when = parse_time(m["timestamp"], "t")
        items.append(
            MemoryItem(
                id=f"m{n}",
                cube_id="bench",
                owner="bench",
                text=text,
                kind="raw_turn",
                content_hash=content_hash(text, when),
                embedding_model="",
                event_time=when,
            )
        )
        if model.count_tokens(activation.memory_lines(items)) >= target_tokens:
            break
    return items


def long_query(model: LocalModel, target: int = 300) -> str:
    text = LONG_TOPIC
    while model.count_tokens(text) < target - 25:
        text += LONG_TOPIC
    return text + SHORT_QUERY


def first_token_s(model: LocalModel, prompt: str, prefix: Any = None) -> float:
    start = time.perf_counter()
    pieces = model.stream(prompt, max_new_tokens=8, prefix=prefix)
    next(pieces)
    elapsed = time.perf_counter() - start
    pieces.close()
    return elapsed


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--contexts", type=int, nargs="+", default=[500, 1500, 3000])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--check-tokens", type=int, default=32)
    p.add_argument("--decode-tokens", type=int, default=64)
    p.add_argument("--model", default=None, help="model path (default: bundled SmolLM2)")
    p.add_argument("--out", default="activation_ttft")
    args = p.parse_args(argv)
    code = code_version()
    started = time.perf_counter()
    model = LocalModel.load(args.model)
    queries = {"short": SHORT_QUERY, "long": long_query(model)}
    query_tokens = {name: model.count_tokens(q) for name, q in queries.items()}
    print(f"model {model.fingerprint.id}; query tokens {query_tokens}", flush=True)
    cells: list[dict[str, Any]] = []
    builds: dict[int, dict[str, float]] = {}
    identical = True
    for target in args.contexts:
        items = memory_items(target, model)
        head = [activation.system_message(items, DEFAULT_INSTRUCTIONS)]
        prefix_text = model.apply_chat_template(head, add_generation_prompt=False)
        t0 = time.perf_counter()
        prefix = activation.build(model, prefix_text, {it.id: 1 for it in items})
        builds[target] = {
            "build_s": time.perf_counter() - t0,
            "prefix_tokens": prefix.n_tokens,
            "cache_mb": prefix.nbytes / 2**20,
            "memories": len(items),
        }
        print(
            f"~{target} tokens: {len(items)} memories, prefix {prefix.n_tokens} tokens, "
            f"built in {builds[target]['build_s']:.2f}s",
            flush=True,
        )
        for name, query in queries.items():
            _, rest = activation.split_chat(model, head, [{"role": "user", "content": query}])
            full = prefix_text + rest
            prompt_out = model.generate(full, max_new_tokens=args.check_tokens)
            cache_out = model.generate(rest, max_new_tokens=args.check_tokens, prefix=prefix)
            same = prompt_out == cache_out
            identical = identical and same
            as_prompt = [first_token_s(model, full) for _ in range(args.repeats)]
            as_cache = [first_token_s(model, rest, prefix) for _ in range(args.repeats)]
            cell = {
                "context_target": target,
                "prefix_tokens": prefix.n_tokens,
                "query": name,
                "query_tokens": query_tokens[name],
                "ttft_prompt_s": statistics.median(as_prompt),
                "ttft_cache_s": statistics.median(as_cache),
                "samples_prompt_s": as_prompt,
                "samples_cache_s": as_cache,
                "outputs_identical": same,
            }
            cell["reduction_pct"] = 100 * (1 - cell["ttft_cache_s"] / cell["ttft_prompt_s"])
            cells.append(cell)
            print(
                f"  {name:5} query: prompt {cell['ttft_prompt_s']:.3f}s, cache "
                f"{cell['ttft_cache_s']:.3f}s -> {cell['reduction_pct']:.1f}% less; "
                f"outputs identical: {same}",
                flush=True,
            )
    t0 = time.perf_counter()
    story = [{"role": "user", "content": "Tell me a long story about a lighthouse keeper."}]
    produced = model.encode(model.generate(story, max_new_tokens=args.decode_tokens))
    decode_s = time.perf_counter() - t0

    def reduction(target: int, name: str) -> float:
        return next(
            c["reduction_pct"]
            for c in cells
            if c["context_target"] == target and c["query"] == name
        )

    biggest, smallest = max(args.contexts), min(args.contexts)
    summary = {
        "ttft_reduction_pct_3k_short": reduction(biggest, "short"),
        "ttft_reduction_pct_3k_long": reduction(biggest, "long"),
        "ttft_reduction_pct_500_short": reduction(smallest, "short"),
        "build_s_3k": builds[biggest]["build_s"],
        "decode_tok_per_s": len(produced) / decode_s,
        "outputs_identical": identical,
    }
    details = {
        "model": model.fingerprint.to_dict(),
        "cells": cells,
        "builds": builds,
        "repeats": args.repeats,
        "check_tokens": args.check_tokens,
        "decode": {"tokens": len(produced), "seconds": decode_s},
        "contexts_note": "the 3k keys are the largest --contexts value, 500 the smallest",
        "machine": machine_details(),
        "load_average_after": load_average(),
        "code": code,
        "minutes": round((time.perf_counter() - started) / 60, 1),
    }
    path = write_result(
        args.out, command_line(None if argv is None else [sys.argv[0], *argv]), summary, details
    )
    print("\n" + "\n".join(f"{k:30s} {v}" for k, v in summary.items()))
    print(f"wrote {path}")
    return 0 if identical else 1


if __name__ == "__main__":
    raise SystemExit(main())
