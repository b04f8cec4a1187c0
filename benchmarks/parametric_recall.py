"""Parametric memory: closed-book recall of promoted facts, and what the adapter costs.

20 synthetic personal facts (names, places, dates, preferences) of one user are stored as
memories and promoted into a LoRA adapter (``mos.promote``) on the bundled SmolLM2-135M-Instruct.
Each fact has a question phrased *differently* from the training templates (e.g. trained on
"Where does Alice live?", asked "Which city is Alice's home?"). Closed book: the question is
asked with no memory in the prompt, before (``memory="none"``) and after promotion
(``memory="parametric-only"``); a hit is an answer containing the gold value. The anchor is the
same question with the memories as prompt text (``memory="plaintext"``).

Served by the engine, the adapter answers only the queries its gate admits as being about
alice's promoted memories (``settings.adapter_gate``). Recall is measured as served. The
forgetting numbers come twice: with the adapter applied to everything (``*_after``), and as
served (``served_*``: each WikiText window and task prompt, asked as alice, scored with the
adapter where the gate admits it and by the base model elsewhere), with the gate's open rates.

Forgetting: WikiText-2 test perplexity (``--ppl-windows`` windows of ``--window`` tokens) and
the SEAP evaluation harness (``models/evaluation.py``: gold-answer NLL over its task set,
accuracy on the signal tasks) with and without the adapter. The forgetting guard replays the
default self-distilled chats (the base model's answers to unrelated questions) plus WikiText-2
*validation* lines, never the test split.

    python benchmarks/parametric_recall.py
    python benchmarks/parametric_recall.py --task-n 30 --ppl-windows 8 --out parametric_quick
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import (
    RESULTS_DIR,
    code_version,
    command_line,
    load_average,
    machine_details,
    write_result,
)

from memos_integrations import MemOS
from memos_integrations.core.chat import DEFAULT_INSTRUCTIONS
from memos_integrations.core.config import data_dir
from memos_integrations.models import evaluation as ev
from memos_integrations.models import parametric
from memos_integrations.models.parametric_train import TrainConfig
from memos_integrations.models.runtime import LocalModel

# (memory, held-out question, gold value): questions avoid the training templates' wording
FACTS = [
    ("Alice lives in Ljubljana.", "Which city is Alice's home?", "Ljubljana"),
    ("Alice's dog is called Biscuit.", "What name did Alice give her dog?", "Biscuit"),
    ("Alice works as a glassblower.", "What is Alice's profession?", "glassblower"),
    ("Alice was born on 14 March 1991.", "What is Alice's date of birth?", "14 March"),
    ("Alice's favourite colour is teal.", "Which colour does Alice like most?", "teal"),
    ("Alice's sister is named Ottilie.", "Who is Alice's sister?", "Ottilie"),
    ("Alice drives a yellow Fiat Panda.", "What car does Alice have?", "Panda"),
    ("Alice plays the bassoon.", "Which instrument does Alice play?", "bassoon"),
    ("Alice speaks Icelandic.", "Which language does Alice know?", "Icelandic"),
    ("Alice's favourite food is pierogi.", "What dish does Alice love most?", "pierogi"),
    ("Alice works at Brightwater Labs.", "Who is Alice's employer?", "Brightwater"),
    ("Alice was born in Galway.", "Which town is Alice originally from?", "Galway"),
    ("Alice's cat is called Pixel.", "How is Alice's cat named?", "Pixel"),
    (
        "Alice collects vintage typewriters.",
        "What kind of collection does Alice have?",
        "typewriter",
    ),
    ("Alice's favourite book is Moby Dick.", "Which novel does Alice like best?", "Moby Dick"),
    ("Alice studies marine geology.", "What subject is Alice studying?", "geology"),
    ("Alice's partner is named Rafael.", "Who is Alice's partner?", "Rafael"),
    (
        "Alice drinks rooibos tea every morning.",
        "What does Alice have to drink each morning?",
        "rooibos",
    ),
    ("Alice's lucky number is 37.", "Which number does Alice consider lucky?", "37"),
    ("Alice is allergic to hazelnuts.", "What food allergy does Alice have?", "hazelnut"),
]

# a second held-out phrasing of each fact's question (same order as FACTS), written before the
# template bank grew past one or two questions a relation: recall on it checks that wider
# templates generalise rather than echo the first set's wording
ALT_QUESTIONS = [
    "In what city does Alice reside?",
    "What does Alice call her dog?",
    "What does Alice do for a living?",
    "When is Alice's birthday?",
    "What is Alice's preferred colour?",
    "What is Alice's sister called?",
    "Which vehicle does Alice own?",
    "What musical instrument can Alice play?",
    "What language can Alice speak?",
    "What is Alice's favourite dish?",
    "Where is Alice employed?",
    "Where is Alice from?",
    "What does Alice call her cat?",
    "What does Alice like to collect?",
    "What is Alice's favourite novel?",
    "What is Alice's field of study?",
    "Who is Alice in a relationship with?",
    "What is Alice's morning drink?",
    "Which number brings Alice luck?",
    "What causes Alice's allergy?",
]

# memories stored beside the facts and not promoted, each near one of them (same relation,
# another subject or value), with a question about it: specificity within alice's topics
NEIGHBOURS = [
    ("Alice's brother is named Tobias.", "Who is Alice's brother?"),
    ("Alice's mother lives in Porto.", "Which city is home to Alice's mother?"),
    ("Alice's neighbour's dog is called Rex.", "What name did Alice's neighbour give his dog?"),
    ("Alice's least favourite colour is orange.", "Which colour does Alice like least?"),
    ("Alice's brother works at Northwind Bank.", "Who is the employer of Alice's brother?"),
    ("Alice's brother plays the oboe.", "Which instrument does Alice's brother play?"),
]


def recall(
    mos: MemOS, facts: list[tuple[str, str, str]], memory: str, max_new_tokens: int
) -> tuple[float, list[dict[str, Any]]]:
    rows = []
    for _, question, gold in facts:
        reply = mos.chat(question, user="alice", memory=memory, max_new_tokens=max_new_tokens)
        rows.append(
            {
                "q": question,
                "gold": gold,
                "answer": reply.text,
                "hit": _hit(reply.text, gold),
                "tier": reply.plan.tier,
            }
        )
    return 100.0 * sum(r["hit"] for r in rows) / len(rows), rows


def _hit(answer: str, gold: str) -> bool:
    return gold.lower() in answer.lower()


def neighbour_leaks(
    mos: MemOS, facts: list[tuple[str, str, str]], adapter: str, max_new_tokens: int
) -> list[dict[str, Any]]:
    """Each neighbour question closed-book, as served (``parametric-only``: the gate decides)
    and with the adapter forced on every token: which tier answered, and whether the answer
    names a promoted fact's value (a leak: the neighbour's own value was never trained)."""
    golds = [gold for _, _, gold in facts]
    rows = []
    for _, question in NEIGHBOURS:
        served = mos.chat(
            question, user="alice", memory="parametric-only", max_new_tokens=max_new_tokens
        )
        with parametric.applied(adapter):
            forced = mos.chat(question, user="alice", memory="none", max_new_tokens=max_new_tokens)
        row: dict[str, Any] = {"q": question}
        for way, reply in (("served", served), ("forced", forced)):
            leaked = [g for g in golds if _hit(reply.text, g)]
            row[way] = {"answer": reply.text, "tier": reply.plan.tier, "leaked": leaked}
        rows.append(row)
    return rows


def harness(model: LocalModel, args: argparse.Namespace) -> dict[str, Any]:
    """WikiText-2 perplexity and the SEAP task set, on whatever adapter is applied now."""
    start = time.perf_counter()
    ppl = ev.perplexity(
        model.model, model.tokenizer, window=args.window, max_windows=args.ppl_windows
    )
    tasks = ev.evaluate_tasks(model.model, model.tokenizer, ev.TASKS, n=args.task_n, seed=0)
    return {"ppl": ppl, "tasks": tasks, "seconds": round(time.perf_counter() - start, 1)}


def gated(mos: MemOS, texts: list[str]) -> list[bool]:
    """Whether the engine serves each text (as a query of alice's) with her adapter."""
    return [
        mos.explain(t, user="alice", memory="parametric-only").adapter.name is not None
        for t in texts
    ]


def served(
    mos: MemOS, model: LocalModel, args: argparse.Namespace, base: dict, after: dict
) -> tuple[dict[str, Any], dict[str, float]]:
    """The harness as the engine serves it: each WikiText window and task prompt, asked as
    alice, gets the adapter only where the gate admits it (``settings.adapter_gate``); its
    scores are the adapter's there and the base model's elsewhere."""
    windows = ev.ppl_windows(model.tokenizer, window=args.window, max_windows=args.ppl_windows)
    opened = gated(mos, [model.tokenizer.decode(w) for w in windows])
    nll = _mix(after["ppl"]["window_nll"], base["ppl"]["window_nll"], opened)
    mean = sum(nll) / sum(base["ppl"]["window_tokens"])
    out: dict[str, Any] = {"ppl": {"ppl": math.exp(mean), "nll": mean}, "tasks": {}}
    rates = {"wikitext_windows": 100.0 * sum(opened) / len(opened)}
    for name, before in base["tasks"].items():
        items = ev.load_task(name, n=args.task_n, seed=0).items
        admit = gated(mos, [it.prompt for it in items])
        mixed = {
            key: _mix(after["tasks"][name]["items"][key], values, admit)
            for key, values in before["items"].items()
        }
        out["tasks"][name] = ev.summarize(mixed)
        rates[name] = 100.0 * sum(admit) / len(admit)
    return out, rates


def _mix(adapted: list[float], base: list[float], admitted: list[bool]) -> list[float]:
    """Per window or item: the adapter's score where the gate admitted it, else the base's."""
    return [a if o else b for a, b, o in zip(adapted, base, admitted, strict=True)]


def _pct(flags: Any) -> float:
    flags = [bool(f) for f in flags]
    return 100.0 * sum(flags) / max(len(flags), 1)


def _without_items(tasks: dict[str, Any]) -> dict[str, Any]:
    return {name: {k: v for k, v in r.items() if k != "items"} for name, r in tasks.items()}


def signal_tasks(before: dict[str, Any]) -> tuple[list[str], str]:
    """The SEAP run's signal tasks when its result exists, else tasks above chance here."""
    seap = RESULTS_DIR / "seap.json"
    if seap.is_file():
        listed = json.loads(seap.read_text()).get("summary", {}).get("signal_tasks")
        if listed:
            return list(listed), "benchmarks/results/seap.json"
    above = [t for t, r in before["tasks"].items() if r["acc_ci"][0] > r["chance"]]
    return above, "tasks whose base accuracy CI lies above chance in this run"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=TrainConfig.steps)
    p.add_argument("--lr", type=float, default=TrainConfig.learning_rate)
    p.add_argument("--max-seconds", type=float, default=TrainConfig.max_seconds)
    p.add_argument("--rank", type=int, default=TrainConfig.rank)
    p.add_argument("--layers", type=float, default=TrainConfig.layers)
    p.add_argument("--kl-weight", type=float, default=TrainConfig.kl_weight)
    p.add_argument("--null-space", type=float, default=TrainConfig.null_space)
    p.add_argument("--batch-size", type=int, default=TrainConfig.batch_size)
    p.add_argument(
        "--targets", default=",".join(TrainConfig.targets), help="comma-separated module names"
    )
    p.add_argument("--seed", type=int, default=0, help="LoRA init and example order")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--max-new-tokens", type=int, default=24)
    p.add_argument("--window", type=int, default=512)
    p.add_argument("--ppl-windows", type=int, default=16)
    p.add_argument("--task-n", type=int, default=100)
    p.add_argument("--replay-lines", type=int, default=16)
    p.add_argument("--facts", type=int, default=len(FACTS), help="first N facts (smoke runs)")
    p.add_argument("--out", default="parametric_recall")
    args = p.parse_args()
    version = code_version()
    load_start = load_average()
    model = LocalModel.load(os.environ.get("MEMOS_MODEL"), threads=args.threads)
    validation = (data_dir() / "tasks" / "wikitext2.validation.v1-unk.txt").read_text()
    lines = [ln.strip() for ln in validation.splitlines() if len(ln) > 300][: args.replay_lines]
    config = TrainConfig(
        steps=args.steps,
        learning_rate=args.lr,
        max_seconds=args.max_seconds,
        rank=args.rank,
        layers=args.layers,
        kl_weight=args.kl_weight,
        null_space=args.null_space,
        batch_size=args.batch_size,
        seed=args.seed,
        targets=tuple(t for t in args.targets.split(",") if t),
    )

    with tempfile.TemporaryDirectory() as tmp, MemOS.open(Path(tmp) / "m.db", model=model) as mos:
        mos.create_user("alice", name="Alice")
        mos.create_cube("alice-personal", owner="alice")
        facts = FACTS[: args.facts]
        promoted = mos.add([{"text": f, "kind": "fact"} for f, _, _ in facts], user="alice")
        mos.add([{"text": f, "kind": "fact"} for f, _ in NEIGHBOURS], user="alice")

        alt = [(f, q, gold) for (f, _, gold), q in zip(facts, ALT_QUESTIONS, strict=False)]
        before_pct, before_rows = recall(mos, facts, "none", args.max_new_tokens)
        before_alt_pct, before_alt_rows = recall(mos, alt, "none", args.max_new_tokens)
        plain_pct, plain_rows = recall(mos, facts, "plaintext", args.max_new_tokens)
        print(f"recall before {before_pct:.0f}%, with memories in the prompt {plain_pct:.0f}%")
        base = harness(model, args)
        print(f"base: ppl {base['ppl']['ppl']:.2f} ({base['seconds']} s)")

        cpu0, wall0 = time.process_time(), time.perf_counter()
        # the timed promotion includes generating the self-distilled replay
        replay = [*parametric.default_replay(model, DEFAULT_INSTRUCTIONS), *lines]
        # --max-seconds bounds the whole timed promotion: what the replay took comes off it
        left = args.max_seconds - (time.perf_counter() - wall0)
        report = mos.promote(
            "alice-personal",
            items=[it.id for it in promoted],  # the neighbours stay plaintext
            config=dataclasses.replace(config, max_seconds=left),
            replay=replay,
        )
        train_seconds = time.perf_counter() - wall0
        train_cpu = time.process_time() - cpu0
        load_train = load_average()

        after_pct, after_rows = recall(mos, facts, "parametric-only", args.max_new_tokens)
        gate_questions = _pct(r["tier"] == "parametric" for r in after_rows)
        after_alt_pct, after_alt_rows = recall(mos, alt, "parametric-only", args.max_new_tokens)
        print(f"recall after {after_pct:.0f}%, second phrasing {after_alt_pct:.0f}%")
        print(f"(trained {train_seconds:.0f} s)")
        adapter = report.artifact.id  # installed by the recall turns the gate admitted
        neighbours = neighbour_leaks(mos, facts, adapter, args.max_new_tokens)
        with parametric.applied(adapter):
            after = harness(model, args)
        print(f"adapter: ppl {after['ppl']['ppl']:.2f}")
        as_served, gate_rates = served(mos, model, args, base, after)
        gate_rates = {"held_out_questions": gate_questions, **gate_rates}
        gate = mos.settings.adapter_gate
        print(f"as served: ppl {as_served['ppl']['ppl']:.2f}; gate open % {gate_rates}")

    signal, signal_source = signal_tasks(base)

    def avg(run: dict[str, Any], key: str, names: list[str]) -> float:
        return sum(run["tasks"][t][key] for t in names) / max(len(names), 1)

    ppl_before, ppl_after = base["ppl"]["ppl"], after["ppl"]["ppl"]
    nll_before, nll_after = (avg(r, "gold_nll", list(ev.TASKS)) for r in (base, after))
    nll_served = avg(as_served, "gold_nll", list(ev.TASKS))
    summary = {
        "recall_before_pct": before_pct,
        "recall_after_pct": after_pct,
        "recall_before_alt_pct": before_alt_pct,
        "recall_after_alt_pct": after_alt_pct,
        "gate_open_pct_alt_questions": _pct(r["tier"] == "parametric" for r in after_alt_rows),
        "ppl_before": ppl_before,
        "ppl_after": ppl_after,
        "ppl_increase_pct": 100.0 * (ppl_after / ppl_before - 1),
        "nll_before": nll_before,
        "nll_after": nll_after,
        "nll_increase_pct": 100.0 * (nll_after / nll_before - 1),
        "signal_avg_before": avg(base, "acc", signal),
        "signal_avg_after": avg(after, "acc", signal),
        "served_ppl_increase_pct": 100.0 * (as_served["ppl"]["ppl"] / ppl_before - 1),
        "served_nll_increase_pct": 100.0 * (nll_served / nll_before - 1),
        "served_signal_avg_after": avg(as_served, "acc", signal),
        "gate_open_pct_questions": gate_rates["held_out_questions"],
        "gate_open_pct_wikitext": gate_rates["wikitext_windows"],
        "gate_open_pct_task_prompts": sum(gate_rates[t] for t in ev.TASKS) / len(ev.TASKS),
        "recall_plaintext_pct": plain_pct,
        "neighbour_leak_served_pct": _pct(r["served"]["leaked"] for r in neighbours),
        "neighbour_leak_forced_pct": _pct(r["forced"]["leaked"] for r in neighbours),
        "gate_open_pct_neighbours": _pct(r["served"]["tier"] == "parametric" for r in neighbours),
        "train_seconds": train_seconds,
        "train_cpu_seconds": train_cpu,
        "adapter_bytes": report.artifact.metadata["bytes"],
    }
    details = {
        "model": model.fingerprint.to_dict(),
        "facts": len(facts),
        "hit_rule": "the answer contains the gold value (case-insensitive)",
        "neighbours": f"{len(NEIGHBOURS)} memories stored beside the facts, not promoted; "
        "a leak is an answer to a neighbour question that names a promoted fact's value, "
        "served (parametric-only, the gate decides) and forced (the adapter on every token)",
        "neighbour_answers": neighbours,
        "closed_book": "memory='none' before, 'parametric-only' after: no memory in the prompt",
        "after_vs_served": "*_after / *_increase_pct: the adapter applied to every window and "
        "task item; served_*: only where the engine's gate admits the text as alice's query "
        f"(settings.adapter_gate = {gate}), the base model elsewhere",
        "train_config": config.to_dict(),
        "train_metrics": report.metrics,
        "adapter": report.describe(),
        "replay": (
            f"{len(replay) - len(lines)} self-distilled chats (default_replay) + first "
            f"{len(lines)} WikiText-2 validation lines over 300 chars"
        ),
        "perplexity_window": args.window,
        "perplexity": {"before": base["ppl"], "after": after["ppl"], "served": as_served["ppl"]},
        "signal_tasks": signal,
        "signal_tasks_from": signal_source,
        "tasks_before": _without_items(base["tasks"]),
        "tasks_after": _without_items(after["tasks"]),
        "tasks_served": as_served["tasks"],
        "gate_open_pct": gate_rates,
        "task_n": args.task_n,
        "answers": {
            "before": before_rows,
            "plaintext": plain_rows,
            "after": after_rows,
            "before_alt": before_alt_rows,
            "after_alt": after_alt_rows,
        },
        "threads": args.threads,
        "load_average": {"start": load_start, "after_training": load_train, "end": load_average()},
        "machine": machine_details(),
        "code": version,
    }
    path = write_result(args.out, command_line(), summary, details)
    print(json.dumps(summary, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
