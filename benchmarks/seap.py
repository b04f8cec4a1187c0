"""SEAP vs FLAP vs Wanda-sp on the bundled SmolLM2-135M: zero-shot accuracy, gold-answer NLL,
WikiText-2 perplexity, real sparsity, router accuracy and decode speed of the pruned models.

    python benchmarks/seap.py                       # n=300 per task, 20% and 50%
    python benchmarks/seap.py --sparsities 0.1,0.3 --out seap_more   # the 10% and 30% rows
    python benchmarks/seap.py --n 20 --tasks piqa,arc_easy --sparsities 0.2 --out seap_smoke
    python benchmarks/seap.py --methods wanda_lb,flap_lb --out seap_lb   # a subset of the rows
    python benchmarks/seap.py --sparsities 0.2 --methods seap,seapb --calib-seed 1 --out seap_seed1

Rows: dense; SEAP per task with oracle routing; SEAP with the router (the same experts, each
eval item routed by the classifier; items routed to their own task reuse the oracle score, the
others are scored by the expert the router chose); the same two with FLAP's bias
compensation in every expert (``seapb``, ``seapb_router``); ``seapb_family_router``: the
look-alike tasks of ``--families`` (ARC-Easy and ARC-Challenge) share one expert calibrated on
both and the router picks among experts, not tasks; SEAP-gen; Wanda-sp (uniform, sequential,
generic calibration); FLAP (global allocation, bias compensation, generic calibration);
``wanda_lb`` and ``flap_lb``: the same two under SEAP's schedule (every method under one
schedule). Every method removes exactly the same share of attention+FFN parameters.
``--methods`` picks rows (dense always runs). Writes benchmarks/results/<--out>.json (after
every stage, ``details.complete`` says whether it finished) and benchmarks/results/seap.png:
accuracy and NLL against sparsity over every sparsity of the files in ``PLOTTED``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import (
    RESULTS_DIR,
    code_version,
    load_average,
    machine_details,
    scoring_dtype,
    write_result,
)
from memos_integrations.core.config import data_dir
from memos_integrations.models import evaluation as ev
from memos_integrations.models.runtime import LocalModel
from memos_integrations.models.seap import methods, prune, stats
from memos_integrations.models.seap.router import TaskRouter
from memos_integrations.models.seap.speed import decode_speed

METHODS = (
    "seap",
    "seap_router",
    "seapb",
    "seapb_router",
    "seapb_family_router",
    "seapgen",
    "wanda_sp",
    "flap",
    "wanda_lb",
    "flap_lb",
)


def generic_texts(n: int) -> list[str]:
    """WikiText-2 *validation* paragraphs (never the PPL test file): the generic calibration."""
    lines = (data_dir() / "tasks" / "wikitext2.validation.v1-unk.txt").read_text().splitlines()
    paras = [ln.strip() for ln in lines if len(ln.split()) >= 20 and not ln.strip().startswith("=")]
    return paras[:n]


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        import torch

        torch.set_num_threads(args.threads)
        self.args = args
        self.want = set(args.methods)  # the rows to build
        self.start = time.perf_counter()
        self.base = LocalModel.load()
        self.tok = self.base.tokenizer
        # fp32 base for the speed runs (the runtime's dtype); calibration and scoring run on
        # a bf16 copy where the CPU has native bf16 (--dtype auto; NLL differs ~1e-3).
        self.model32 = self.base.model
        self.model = self.model32
        if args.dtype == "bf16":
            import copy

            self.model = copy.deepcopy(self.model32).to(torch.bfloat16)
        self.tasks = {t: ev.load_task(t, n=args.n, seed=0) for t in args.tasks}
        self.families = [
            f.split("+")
            for f in args.families.split(",")
            if f and set(f.split("+")) <= set(args.tasks)
        ]
        self.results: dict[str, dict[str, Any]] = {}  # row -> task -> result
        self.extra: dict[str, Any] = {"timings_s": {}, "ppl": {}, "speed": {}, "plans": {}}
        self.code = code_version()

    def lap(self, name: str, since: float) -> None:
        self.extra["timings_s"][name] = round(time.perf_counter() - since, 1)
        print(f"[{(time.perf_counter() - self.start) / 60:5.1f} min] {name}", flush=True)

    def eval_all(self, row: str, model: Any) -> None:
        t = time.perf_counter()
        self.results[row] = {
            name: ev.evaluate_task(model, self.tok, task) for name, task in self.tasks.items()
        }
        self.lap(f"eval {row}", t)

    def ppl(self, row: str, model: Any) -> None:
        a = self.args
        self.extra["ppl"][row] = ev.perplexity(
            model, self.tok, window=a.window, max_windows=a.ppl_windows
        )

    def speed(self, row: str, plan: Any = None, st: Any = None) -> None:
        """Decode speed of the fp32 model physically pruned by ``plan`` (dense when None)."""
        model = self.model32 if plan is None else prune.pruned_copy(self.model32, plan, st)
        self.extra["speed"][row] = decode_speed(model, self.tok, self.args.new_tokens, 3)

    # ---- stages

    def run(self) -> None:
        a = self.args
        self.eval_all("dense", self.model)
        self.ppl("dense", self.model)
        self.speed("dense")
        self.save(False)
        t = time.perf_counter()
        want = self.want
        calib = {
            name: stats.collect(
                self.model,
                self.tok,
                ev.calibration_texts(name, n=a.calib, seed=a.calib_seed),
                source=name,
                max_length=a.calib_tokens,
            )
            for name in self.tasks
            if any(m.startswith("seap") for m in want)  # SEAP's rows calibrate per task
        }
        generic = generic_texts(a.calib)
        generic_stats = stats.collect(
            self.model, self.tok, generic, source="wikitext2-validation", max_length=a.calib_tokens
        )
        self.extra["calibration_tokens"] = {k: v.tokens for k, v in calib.items()}
        self.extra["calibration_tokens"]["generic"] = generic_stats.tokens
        self.lap("calibration", t)
        routed: dict[str, list[str]] = {}
        families = None
        if any("router" in m for m in want):
            t = time.perf_counter()
            prompts = {n: ev.prompts(n, "train", n=a.router_train, seed=1) for n in self.tasks}
            routed, accuracy = self.route({name: name for name in self.tasks}, prompts)
            self.extra["router"] = {**accuracy, "train_prompts_per_task": a.router_train}
            self.lap("router", t)
            if self.families and "seapb_family_router" in want:
                families = self.family_router(prompts)
        for s in a.sparsities:
            self.sparsity(s, calib, generic_stats, generic, routed, families)
            self.save(False)
        self.save(True)

    def route(
        self, expert_of: dict[str, str], prompts: dict[str, list[str]]
    ) -> tuple[dict[str, list[str]], dict[str, Any]]:
        """A router over the experts (``expert_of``: task -> expert) trained on the tasks'
        train ``prompts``: each eval item's routed expert, and how often it is the task's."""
        members: dict[str, list[str]] = {}
        for name, expert in expert_of.items():
            members.setdefault(expert, []).append(name)
        router = TaskRouter.train(
            self.model,
            self.tok,
            {e: [p for n in ns for p in prompts[n]] for e, ns in members.items()},
        )
        routed = {
            name: router.predict(self.model, self.tok, [it.prompt for it in task.items])
            for name, task in self.tasks.items()
        }
        hits = sum(r == expert_of[name] for name, rs in routed.items() for r in rs)
        return routed, {
            "accuracy": 100.0 * hits / sum(len(rs) for rs in routed.values()),
            "per_task": {
                n: 100.0 * sum(r == expert_of[n] for r in rs) / len(rs) for n, rs in routed.items()
            },
        }

    def family_router(self, prompts: dict[str, list[str]]) -> dict[str, Any]:
        """Experts per family (look-alike tasks share one): their calibration statistics and
        the router over experts, with each eval item's routed expert."""
        a, t = self.args, time.perf_counter()
        expert_of = {name: name for name in self.tasks}
        for fam in self.families:
            expert_of.update({name: "+".join(fam) for name in fam})
        routed, accuracy = self.route(expert_of, prompts)
        self.extra["router_families"] = {"families": [list(f) for f in self.families], **accuracy}
        calib = {
            "+".join(fam): stats.collect(
                self.model,
                self.tok,
                [x for n in fam for x in ev.calibration_texts(n, n=a.calib, seed=a.calib_seed)],
                source="+".join(fam),
                max_length=a.calib_tokens,
            )
            for fam in self.families
        }
        self.lap("family router and calibration", t)
        return {"expert_of": expert_of, "routed": routed, "calib": calib}

    def sparsity(
        self,
        s: float,
        calib: dict,
        generic_stats: Any,
        generic: list[str],
        routed: dict,
        families: dict | None,
    ) -> None:
        pct = round(100 * s)
        plans: dict[str, Any] = {}
        want = self.want
        # SEAP experts: one per task, oracle routing, then the router's choices; as the
        # paper prunes them (seap) and with FLAP's bias compensation (seapb).
        for row, bias in (("seap", False), ("seapb", True)):
            if not any(m.startswith(row + "_") or m == row for m in want):
                continue
            t = time.perf_counter()
            experts = {}
            for name, st in calib.items():
                plan = methods.make_plan(self.model, st, "seap", s, bias=bias)
                experts[name] = prune.pruned_copy(self.model, plan, st)
                plans[f"{row}:{name}"] = plan.real_sparsity
            oracle = {
                name: ev.evaluate_task(experts[name], self.tok, task)
                for name, task in self.tasks.items()
            }
            self.results[f"{row}_{pct}"] = oracle
            self.lap(f"eval {row}_{pct}", t)
            if f"{row}_router" in want:
                t = time.perf_counter()
                self.results[f"{row}_router_{pct}"] = self.routed(oracle, experts, routed)
                self.lap(f"eval {row}_router_{pct}", t)
            if bias and families:
                t = time.perf_counter()
                own = dict(oracle)
                for expert, st in families["calib"].items():
                    plan = methods.make_plan(self.model, st, "seap", s, bias=True)
                    experts[expert] = prune.pruned_copy(self.model, plan, st)
                    plans[f"{row}:{expert}"] = plan.real_sparsity
                    for name in expert.split("+"):
                        own[name] = ev.evaluate_task(experts[expert], self.tok, self.tasks[name])
                self.results[f"{row}_family_router_{pct}"] = self.routed(
                    own, experts, families["routed"], families["expert_of"]
                )
                self.lap(f"eval {row}_family_router_{pct}", t)
            del experts
        if "seapgen" in want:
            t = time.perf_counter()
            gen_plan = methods.seap_gen_plan(self.model, list(calib.values()), generic_stats, s)
            plans["seapgen"] = gen_plan.real_sparsity
            self.lap(f"plan seapgen_{pct}", t)
            plans["measured_params_removed_seapgen"] = self.baseline(f"seapgen_{pct}", gen_plan)
        # Wanda-sp prunes as it calibrates (each layer sees the pruned ones before it)
        for name, allocation in (("wanda_sp", "uniform"), ("wanda_lb", "logistic")):
            if name in want:
                t = time.perf_counter()
                wanda, wplan = methods.wanda_sp(
                    self.model,
                    self.tok,
                    generic,
                    s,
                    allocation=allocation,
                    max_length=self.args.calib_tokens,
                )
                plans[name] = wplan.real_sparsity
                self.lap(f"plan {name}_{pct}", t)
                removed = self.baseline(f"{name}_{pct}", wplan, model=wanda)
                plans[f"measured_params_removed_{name}"] = removed
                del wanda
        for name in ("flap", "flap_lb"):
            if name in want:
                fplan = methods.make_plan(self.model, generic_stats, name, s)
                plans[name] = fplan.real_sparsity
                removed = self.baseline(f"{name}_{pct}", fplan, generic_stats)
                plans[f"measured_params_removed_{name}"] = removed
        self.extra["plans"][f"real_sparsity_{pct}"] = plans

    def baseline(self, row: str, plan: Any, st: Any = None, model: Any = None) -> float:
        """A single-model row: evaluation, perplexity, decode speed and per-layer shape;
        returns the share of attention+FFN parameters the pruned model really lost."""
        model = prune.pruned_copy(self.model, plan, st) if model is None else model
        self.eval_all(row, model)
        self.ppl(row, model)
        self.speed(row, plan, st)
        self.extra["plans"][row] = _shape(plan)
        return 1 - prune.count_params(model) / prune.count_params(self.model)

    def routed(self, own: dict, experts: dict, routed: dict, expert_of: dict | None = None) -> dict:
        """Scores with the router's expert per item: items routed to their task's own expert
        (``expert_of``, default the task's) reuse its score in ``own``."""
        out = {}
        for name, task in self.tasks.items():
            mine = expert_of[name] if expert_of else name
            items = {k: list(v) for k, v in own[name]["items"].items()}
            wrong: dict[str, list[int]] = {}
            for i, r in enumerate(routed[name]):
                if r != mine:
                    wrong.setdefault(r, []).append(i)
            for expert, idx in wrong.items():
                sub = [task.items[i] for i in idx]
                scored = ev.per_item(sub, ev.score_items(experts[expert], self.tok, sub))
                for key, values in scored.items():
                    for i, v in zip(idx, values, strict=True):
                        items[key][i] = v
            res = ev.summarize(items)
            res.update(
                chance=100.0 * task.chance, items=items, misrouted=sum(map(len, wrong.values()))
            )
            out[name] = res
        return out

    # ---- output

    def summary(self) -> dict[str, Any]:
        dense = self.results["dense"]
        signal = [t for t, r in dense.items() if r["acc"] >= r["chance"] + 5]
        out: dict[str, Any] = {
            "signal_tasks": signal,
            "dense_avg": _avg(dense, signal, "acc"),
            "dense_nll": _avg(dense, list(dense), "gold_nll"),
            "dense_ppl": self.extra["ppl"]["dense"]["ppl"],
        }
        for s in self.args.sparsities:
            pct = round(100 * s)
            for m in METHODS:
                row = self.results.get(f"{m}_{pct}")
                if row is not None:
                    out[f"{m}_avg_{pct}"] = _avg(row, signal, "acc")
                    out[f"{m}_nll_{pct}"] = _avg(row, list(row), "gold_nll")
            plans = self.extra["plans"].get(f"real_sparsity_{pct}")
            if plans:
                out[f"real_sparsity_{pct}"] = 100 * statistics.mean(
                    v for k, v in plans.items() if not k.startswith("measured")
                )
            sp = self.extra["speed"]
            if f"seapgen_{pct}" in sp:
                out[f"speedup_decode_{pct}"] = (
                    sp[f"seapgen_{pct}"]["tok_per_s"] / sp["dense"]["tok_per_s"]
                )
        if "router" in self.extra:
            out["router_accuracy"] = self.extra["router"]["accuracy"]
        if "router_families" in self.extra:
            out["router_accuracy_families"] = self.extra["router_families"]["accuracy"]
        out["minutes"] = (time.perf_counter() - self.start) / 60
        return out

    def save(self, complete: bool) -> None:
        a = self.args
        tables = {
            row: {t: {k: v for k, v in r.items() if k != "items"} for t, r in res.items()}
            for row, res in self.results.items()
        }
        details = {
            "complete": complete,
            "config": {
                "n_per_task": a.n,
                "subset": "seeded random sample (seed 0) of each eval split; indices hashed",
                "tasks": a.tasks,
                "sparsities": a.sparsities,
                "calibration_texts": a.calib,
                "calibration_seed": a.calib_seed,
                "calibration_max_tokens": a.calib_tokens,
                "generic_calibration": "WikiText-2 validation paragraphs (>= 20 words)",
                "ppl": f"WikiText-2 raw test, window {a.window}, first {a.ppl_windows} windows",
                "dtype": a.dtype,
                "threads": a.threads,
                "decode": f"fp32, batch 1 greedy, {a.new_tokens} new tokens, median of 3",
                "schedule": "logistic, x0=0.3, mean over all layers; k=5 and 4+2 protected "
                "layers above 15% up to 30%, SEAP's k=0.8 and 2+2 otherwise "
                "(plan.default_steepness)",
                "families": self.args.families,
            },
            "tables": tables,
            "per_item": {
                row: {t: r["items"] for t, r in res.items()} for row, res in self.results.items()
            },
            "load_average_end": load_average(),
            "machine": machine_details(),
            "code": self.code,
            **self.extra,
        }
        path = write_result(a.out, None, self.summary(), details)
        print(f"wrote {path}", flush=True)
        if complete and a.out in PLOTTED:
            plot([RESULTS_DIR / f"{name}.json" for name in PLOTTED], RESULTS_DIR / "seap.png")


def _shape(plan: Any) -> dict[str, Any]:
    """Per-layer kept query heads, KV heads and FFN channels (the indices stay out: size)."""
    return {
        "q_heads": [len(lp.q_heads) for lp in plan.layers],
        "kv_heads": [len(lp.kv_heads) for lp in plan.layers],
        "channels": [len(lp.channels) for lp in plan.layers],
        "ratios": plan.details.get("ratios"),
    }


def _avg(row: dict, tasks: list[str], key: str) -> float:
    vals = [row[t][key] for t in tasks if t in row]
    return statistics.mean(vals) if vals else float("nan")


PLOTTED = ("seap", "seap_more")  # the result files seap.png draws from


def plot(results: list[Path], path: Path) -> None:
    """Signal-task accuracy and gold NLL against real sparsity, every sparsity of every
    result file that exists (their dense rows are the same model on the same items)."""
    import json

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary: dict[str, Any] = {}
    for result in results:
        if result.is_file():
            summary = {**json.loads(result.read_text())["summary"], **summary}
    xs = [0, *sorted({int(k.rsplit("_", 1)[1]) for k in summary if k.startswith("seap_avg_")})]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for m in METHODS:
        points = [(x, summary.get(f"{m}_avg_{x}"), summary.get(f"{m}_nll_{x}")) for x in xs[1:]]
        points = [(0, summary["dense_avg"], summary["dense_nll"])] + [
            p for p in points if p[1] is not None
        ]
        axes[0].plot([p[0] for p in points], [p[1] for p in points], marker="o", label=m)
        axes[1].plot([p[0] for p in points], [p[2] for p in points], marker="o", label=m)
    axes[0].set(xlabel="real sparsity (% of attention+FFN params)", ylabel="signal-task acc (%)")
    axes[1].set(xlabel="real sparsity (% of attention+FFN params)", ylabel="gold-answer NLL")
    axes[0].set_title(
        f"SmolLM2-135M, signal tasks: {', '.join(summary['signal_tasks'])}", fontsize=8
    )
    axes[1].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--n", type=int, default=300, help="eval items per task (fixed seeded subset)")
    p.add_argument("--tasks", default=",".join(ev.TASKS))
    p.add_argument("--sparsities", default="0.2,0.5")
    p.add_argument("--calib", type=int, default=200, help="calibration texts per task / generic")
    p.add_argument("--calib-tokens", type=int, default=128)
    p.add_argument(
        "--calib-seed", type=int, default=0, help="which train texts calibrate each task"
    )
    p.add_argument("--router-train", type=int, default=300)
    p.add_argument(
        "--families",
        default="arc_easy+arc_challenge",
        help="look-alike tasks sharing one expert, '+'-joined, comma-separated ('' for none)",
    )
    p.add_argument("--ppl-windows", type=int, default=8)
    p.add_argument("--window", type=int, default=512)
    p.add_argument("--new-tokens", type=int, default=48)
    # 1 thread: on a shared, oversubscribed 2-core box 2 threads ran 5-9x slower (spin waits)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument(
        "--dtype",
        choices=["auto", "fp32", "bf16"],
        default="auto",
        help="scoring dtype; auto: bf16 on CPUs with native bf16, else fp32",
    )
    p.add_argument(
        "--methods", default=",".join(METHODS), help=f"rows to build (default all: {METHODS})"
    )
    p.add_argument("--out", default="seap", help="result name (seap.png plots PLOTTED's files)")
    args = p.parse_args(argv)
    args.dtype = scoring_dtype(args.dtype)
    args.tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    args.sparsities = [float(s) for s in args.sparsities.split(",")]
    args.methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if unknown := set(args.methods) - set(METHODS):
        p.error(f"unknown methods {sorted(unknown)}; choose from {', '.join(METHODS)}")
    Bench(args).run()


if __name__ == "__main__":
    main()
