"""Decode speed of the physically pruned shapes: SEAP's schedule and a uniform one, vs dense.

Speed depends on a pruned model's shapes only (heads and FFN channels kept per layer), not on
which units were kept. ``seap.py`` times its pruned models inside a 55-minute run that other
jobs shared; this times the same shapes alone: the bundled SmolLM2-135M is sliced to the plan
each schedule gives at each sparsity (SEAP: logistic with the defaults for that sparsity,
``plan.default_steepness``, as ``seap.py``; every SEAP expert and SEAP-gen share these shapes;
uniform: Wanda-sp's) with
seeded random scores choosing the units, and each model decodes greedily at batch 1 with a
KV cache, in fp32, in interleaved rounds (``seap.speed.compare_speed``, what ``memos prune
--speed`` runs); a speedup is the median of the per-round ratios to dense (this machine's
speed drifts between minutes).

    python benchmarks/seap_speed.py
    python benchmarks/seap_speed.py --threads 2 --out seap_speed_2t
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import RunStart, command_line, write_result

from memos_integrations.models.runtime import LocalModel
from memos_integrations.models.seap import prune
from memos_integrations.models.seap.methods import plan_from_scores
from memos_integrations.models.seap.plan import Geometry
from memos_integrations.models.seap.speed import compare_speed

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
    timed = compare_speed(models, tokenizer, rounds=args.rounds, new_tokens=args.new_tokens)
    medians = timed["medians"]
    summary: dict[str, float] = {"dense_tok_per_s": medians["dense"]["tok_per_s"]}
    for row, m in medians.items():
        if row == "dense":
            continue
        summary[f"{row}_tok_per_s"] = m["tok_per_s"]
        summary[f"speedup_decode_{row}"] = timed["speedup"][row]
        summary[f"ttft_ratio_{row}"] = timed["ttft_ratio"][row]
    for row, m in medians.items():
        print(f"{row:12} {m['tok_per_s']:6.1f} tok/s  ttft {m['ttft_ms']:6.1f} ms")
    details = {
        "medians": medians,
        "runs": timed["runs"],
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
