"""Choosing SEAP's layer schedule on validation items, never on the evaluation subsets.

Validation items are each task's train-split items outside its 200 calibration texts (Social
IQa: the 100 rows of its calibration split that calibration does not use); ``seap.py``
evaluates on the eval splits. Each candidate schedule prunes one bias-compensated SEAP expert
per task (as ``seapb`` in ``seap.py``; the ``_nobias`` candidates leave compensation out, as
``seap``) and is scored on the validation items of the tasks
where dense is >= 5 points above chance there: their mean accuracy and gold-answer NLL
(dense's too, over the same tasks).
The defaults in ``plan.default_steepness`` come from this table.

    python benchmarks/seap_schedule.py                 # 400 items per task, 20% and 50%
    python benchmarks/seap_schedule.py --n 50 --sparsities 0.2 --tasks piqa,arc_easy
    python benchmarks/seap_schedule.py --candidates k5_first4,k5_first4_nobias --out seap_bias
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import RunStart, scoring_dtype, write_result
from memos_integrations.models import evaluation as ev
from memos_integrations.models.runtime import LocalModel
from memos_integrations.models.seap import methods, prune, stats

CALIBRATION = 200  # texts per task, as seap.py and build_experts
CANDIDATES: dict[str, dict[str, Any]] = {
    "seap_k0.8_first2": {"k": 0.8, "first": 2},  # the SEAP paper's
    "k5_first2": {"k": 5.0, "first": 2},
    "k5_first4": {"k": 5.0, "first": 4},
    "k8_first2": {"k": 8.0, "first": 2},
    # the same two schedules without bias compensation: does compensation earn its place?
    "seap_k0.8_first2_nobias": {"k": 0.8, "first": 2, "bias": False},
    "k5_first4_nobias": {"k": 5.0, "first": 4, "bias": False},
    # pruned layer by layer: each layer scored on what the pruned layers before it feed it
    "k5_first4_seq": {"k": 5.0, "first": 4, "sequential": True},
    "seap_k0.8_first2_seq": {"k": 0.8, "first": 2, "sequential": True},
    # calibrated on the same items in the scorer's prompt format ("Q: ...\nA: answer")
    "k5_first4_prompt": {"k": 5.0, "first": 4, "as_prompt": True},
    "seap_k0.8_first2_prompt": {"k": 0.8, "first": 2, "as_prompt": True},
    # more calibration texts per task (capped so that 100 train items stay for validation)
    "k5_first4_calib800": {"k": 5.0, "first": 4, "calib": 800},
}
# candidate keys that are not schedule settings
OPTIONS = ("bias", "sequential", "as_prompt", "calib")
VALIDATION_FLOOR = 100  # train items per task that no candidate's calibration may take


def main(argv: list[str] | None = None) -> None:
    import copy

    import torch

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--n", type=int, default=400, help="validation items per task (at most)")
    p.add_argument("--tasks", default=",".join(ev.TASKS))
    p.add_argument("--sparsities", default="0.2,0.5")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--candidates", default=",".join(CANDIDATES), help="names, comma-separated")
    p.add_argument("--dtype", choices=["auto", "fp32", "bf16"], default="auto", help="as seap.py's")
    p.add_argument("--out", default="seap_schedule")
    args = p.parse_args(argv)
    args.dtype = scoring_dtype(args.dtype)
    candidates = {c: CANDIDATES[c] for c in args.candidates.split(",") if c}
    start, run = time.perf_counter(), RunStart()
    base = LocalModel.load(None, threads=args.threads)
    tok = base.tokenizer
    model = base.model
    if args.dtype == "bf16":  # as seap.py scores where the CPU has native bf16
        model = copy.deepcopy(model).to(torch.bfloat16)
    names = [t for t in args.tasks.split(",") if t]
    # a candidate's calibration texts per task: its ``calib`` (default 200), capped so that
    # VALIDATION_FLOOR train items are left to validate on
    cap = {t: len(ev.calibration_texts(t, n=None)) - VALIDATION_FLOOR for t in names}
    counts = {
        t: {
            c: max(1, min(cap[t], spec.get("calib", CALIBRATION))) for c, spec in candidates.items()
        }
        for t in names
    }
    tasks = {t: ev.heldout_task(t, args.n, set(counts[t].values())) for t in names}
    dense = {t: ev.evaluate_task(model, tok, task) for t, task in tasks.items()}
    signal = [t for t, r in dense.items() if r["acc"] >= r["chance"] + 5]
    print(f"signal tasks on validation: {signal}", flush=True)

    # calibration texts per (task, format, count); one-pass statistics only where a candidate
    # uses them
    def key_of(t: str, name: str) -> tuple[str, bool, int]:
        return t, bool(candidates[name].get("as_prompt")), counts[t][name]

    keys = {key_of(t, c) for t in signal for c in candidates}
    texts = {key: ev.calibration_texts(key[0], key[2], as_prompt=key[1]) for key in keys}
    one_pass = [c for c, candidate in candidates.items() if not candidate.get("sequential")]
    calib = {
        key: stats.collect(model, tok, texts[key], source=key[0], max_length=128)
        for key in {key_of(t, c) for t in signal for c in one_pass}
    }
    table: dict[str, dict[str, Any]] = {"dense": _row({t: dense[t] for t in signal})}
    summary: dict[str, Any] = {"signal_tasks": signal, "dense_avg": table["dense"]["avg"]}
    summary["dense_nll"] = table["dense"]["nll"]
    for s in (float(x) for x in args.sparsities.split(",")):
        pct = round(100 * s)
        for name, candidate in candidates.items():
            schedule = {k: v for k, v in candidate.items() if k not in OPTIONS}
            bias = candidate.get("bias", True)
            res = {}
            for t in signal:
                key = key_of(t, name)
                if candidate.get("sequential"):
                    expert, _ = methods.prune_sequential(
                        model, tok, texts[key], "seap", s, bias=bias, max_length=128, **schedule
                    )
                else:
                    plan = methods.make_plan(model, calib[key], "seap", s, bias=bias, **schedule)
                    expert = prune.pruned_copy(model, plan, calib[key])
                res[t] = ev.evaluate_task(expert, tok, tasks[t])
            row = table[f"{name}_{pct}"] = _row(res)
            summary[f"{name}_avg_{pct}"] = row["avg"]
            summary[f"{name}_nll_{pct}"] = row["nll"]
            print(f"{pct}% {name:18} avg {row['avg']:5.1f} nll {row['nll']:.3f}", flush=True)
    summary["minutes"] = (time.perf_counter() - start) / 60
    details = {
        "validation": "train-split items outside every candidate's calibration texts, seed 5",
        "calibration_texts": counts,
        "items": {t: len(task.items) for t, task in tasks.items()},
        "candidates": candidates,
        "method": "seap, x0=0.3, 2 last protected layers; with bias compensation (seapb) "
        "unless a candidate says bias=False; sequential=True: pruned layer by layer",
        "dense_all_tasks": {
            t: {"acc": r["acc"], "gold_nll": r["gold_nll"], "chance": r["chance"]}
            for t, r in dense.items()
        },
        "table": table,
        "threads": args.threads,
        "dtype": args.dtype,
        **run.details(),
    }
    print(f"wrote {write_result(args.out, None, summary, details)}")


def _row(results: dict[str, Any]) -> dict[str, Any]:
    per = {t: {"acc": r["acc"], "gold_nll": r["gold_nll"]} for t, r in results.items()}
    return {
        "avg": statistics.mean(r["acc"] for r in per.values()),
        "nll": statistics.mean(r["gold_nll"] for r in per.values()),
        "tasks": per,
    }


if __name__ == "__main__":
    main()
