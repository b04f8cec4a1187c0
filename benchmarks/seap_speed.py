"""Decode speed of the physically pruned shapes: SEAP's schedule and a uniform one, vs dense.

Speed depends on a pruned model's shapes only (heads and FFN channels kept per layer), not on
which units were kept. ``seap.py`` times its pruned models inside a 55-minute run that other
jobs shared; this times the same shapes alone: the bundled SmolLM2-135M is sliced to the plan
each schedule gives at each sparsity (SEAP: logistic with the defaults for that sparsity,
``plan.default_steepness``, as ``seap.py``; every SEAP expert and SEAP-gen share these shapes;
uniform: Wanda-sp's) with
seeded random scores choosing the units, and each model decodes greedily at batch 1 with a
KV cache (``seap.decode_speed``), in fp32, in interleaved rounds; a speedup is the median of
the per-round ratios to dense (this machine's speed drifts between minutes).

    python benchmarks/seap_speed.py
    python benchmarks/seap_speed.py --threads 2 --out seap_speed_2t
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import RunStart, command_line, write_result
from seap import decode_speed

from memos_integrations.models.runtime import LocalModel
from memos_integrations.models.seap import prune
from memos_integrations.models.seap.methods import plan_from_scores
from memos_integrations.models.seap.plan import Geometry

SCHEDULES = {"seap": "logistic", "uniform": "uniform"}


def random_scores(geo: Geometry, seed: int) -> list[tuple[Any, Any]]:
    import torch

    gen = torch.Generator().manual_seed(seed)
    return [
        (torch.rand(geo.heads, generator=gen), torch.rand(geo.intermediate, generator=gen))
        for _ in range(geo.layers)
    ]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--sparsities", default="0.2,0.5")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--new-tokens", type=int, default=48)
    p.add_argument("--rounds", type=int, default=15, help="interleaved rounds; medians reported")
    p.add_argument("--out", default="seap_speed")
    args = p.parse_args(argv)
    run = RunStart()
    base = LocalModel.load(os.environ.get("MEMOS_MODEL"), threads=args.threads)
    model, tokenizer = base.model.float(), base.tokenizer
    geo = Geometry.of(model)
    scores = random_scores(geo, 0)
    models: dict[str, Any] = {"dense": model}
    real: dict[str, float] = {}
    for sparsity in (float(s) for s in args.sparsities.split(",")):
        for name, allocation in SCHEDULES.items():
            plan = plan_from_scores(model, scores, name, sparsity, allocation)
            row = f"{name}_{round(100 * sparsity)}"
            models[row] = prune.pruned_copy(model, plan).eval()
            real[row] = plan.real_sparsity
    runs: dict[str, list[dict[str, float]]] = {row: [] for row in models}
    for _ in range(args.rounds):
        for row, m in models.items():
            runs[row].append(decode_speed(m, tokenizer, args.new_tokens, reps=1))
    medians = {
        row: {k: statistics.median(r[k] for r in rs) for k in ("tok_per_s", "ttft_ms")}
        for row, rs in runs.items()
    }

    # a speedup is the median over rounds of the ratio to dense *in the same round*: this
    # machine's speed drifts by 10-20% between minutes, far more than within one round
    def ratio(row: str, key: str, inverse: bool = False) -> float:
        pairs = zip(runs[row], runs["dense"], strict=True)
        return statistics.median(d[key] / r[key] if inverse else r[key] / d[key] for r, d in pairs)

    summary: dict[str, float] = {"dense_tok_per_s": medians["dense"]["tok_per_s"]}
    for row, m in medians.items():
        if row == "dense":
            continue
        summary[f"{row}_tok_per_s"] = m["tok_per_s"]
        summary[f"speedup_decode_{row}"] = ratio(row, "tok_per_s")
        summary[f"ttft_ratio_{row}"] = ratio(row, "ttft_ms", inverse=True)
    for row, m in medians.items():
        print(f"{row:12} {m['tok_per_s']:6.1f} tok/s  ttft {m['ttft_ms']:6.1f} ms")
    details = {
        "medians": medians,
        "runs": runs,
        "real_sparsity": real,
        "params": {row: prune.count_params(m) for row, m in models.items()},
        "threads": args.threads,
        "new_tokens": args.new_tokens,
        "rounds": args.rounds,
        "dtype": "float32",
        "schedule": "seap: logistic, k=5 and 4+2 protected layers above 15% up to 30%, k=0.8 "
        "and 2+2 otherwise (plan.default_steepness); uniform: every layer",
        **run.details(),
    }
    path = write_result(args.out, command_line(), summary, details)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
