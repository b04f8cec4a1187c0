"""Which features can tell the seven tasks' prompts apart? The shipped router (mean input token
embedding, ``seap/router.py``) against mean-pooled hidden states of the dense model at several
layers, all through the same logistic regression (``TaskRouter.fit``), trained on the same
train-split prompts as ``seap.py``'s router and scored on ``seap.py``'s eval subsets.

Reports overall accuracy, per task, and how well ARC-Easy and ARC-Challenge prompts are told
apart (accuracy on those two tasks' prompts of a router trained on just the pair).

    python benchmarks/router_features.py                 # 300 train prompts a task, as seap.py
    python benchmarks/router_features.py --train 100 --n 50 --layers 0,8   # a quick look
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import RunStart, write_result
from memos_integrations.models import evaluation as ev
from memos_integrations.models.runtime import LocalModel
from memos_integrations.models.seap.router import TaskRouter

PAIR = ("arc_easy", "arc_challenge")


def hidden_means(model: Any, tok: Any, texts: list[str], layers: list[int]) -> Any:
    """Per text, the mean over its tokens of the hidden states after each of ``layers``
    (0: the input embeddings, as the shipped router), concatenated layer after layer."""
    import torch

    out = []
    with torch.no_grad():
        for i in range(0, len(texts), 16):
            enc = tok(
                texts[i : i + 16],
                add_special_tokens=False,
                return_tensors="pt",
                padding=True,
                truncation=True,
                max_length=256,
            )
            states = model(**enc, output_hidden_states=True).hidden_states
            mask = enc["attention_mask"].unsqueeze(-1).float()
            out.append(torch.cat([(states[j] * mask).sum(1) / mask.sum(1) for j in layers], 1))
    return torch.cat(out)


def score(train: dict[str, Any], test: dict[str, Any], l2: float) -> dict[str, Any]:
    """Fit on ``train`` (task -> features), return accuracy on ``test`` overall and per task."""
    router = TaskRouter.fit(train, l2=l2)
    per = {}
    for task, features in test.items():
        got = router.classify(features)
        per[task] = 100.0 * got.count(task) / len(got)
    return {"accuracy": sum(per.values()) / len(per), "per_task": per}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--train", type=int, default=300, help="train prompts per task (seap.py's)")
    p.add_argument("--n", type=int, default=300, help="eval prompts per task (seap.py's subsets)")
    p.add_argument("--layers", default="0,4,8,12,16,20,24,30")
    p.add_argument("--l2", type=float, default=1e-3, help="the shipped router's")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default="router_features")
    args = p.parse_args(argv)
    start, run = time.perf_counter(), RunStart()
    base = LocalModel.load(None, threads=args.threads)
    model, tok = base.model.float().eval(), base.tokenizer
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "right"
    layers = [int(x) for x in args.layers.split(",")]
    train = {t: ev.prompts(t, "train", n=args.train, seed=1) for t in ev.TASKS}
    test = {t: [it.prompt for it in ev.load_task(t, n=args.n, seed=0).items] for t in ev.TASKS}
    feats = {
        "train": {t: hidden_means(model, tok, x, layers) for t, x in train.items()},
        "test": {t: hidden_means(model, tok, x, layers) for t, x in test.items()},
    }
    width = model.config.hidden_size
    table: dict[str, Any] = {}
    for j, layer in enumerate([*layers, None]):
        cols = slice(None) if layer is None else slice(j * width, (j + 1) * width)
        name = "all layers" if layer is None else ("input embedding" if layer == 0 else layer)
        split = {k: {t: x[:, cols] for t, x in v.items()} for k, v in feats.items()}
        row = score(split["train"], split["test"], args.l2)
        pair = score(*({t: split[k][t] for t in PAIR} for k in ("train", "test")), args.l2)
        row["arc_pair_accuracy"] = pair["accuracy"]
        table[str(name)] = row
        print(f"{name!s:16} all {row['accuracy']:5.1f}  ARC pair {pair['accuracy']:5.1f}")
    best = max(table, key=lambda k: table[k]["accuracy"])
    summary = {
        "input_embedding_accuracy": table["input embedding"]["accuracy"],
        "best_features": best,
        "best_accuracy": table[best]["accuracy"],
        "arc_pair_accuracy_best": max(r["arc_pair_accuracy"] for r in table.values()),
        "arc_pair_accuracy_input_embedding": table["input embedding"]["arc_pair_accuracy"],
        "minutes": (time.perf_counter() - start) / 60,
    }
    details = {
        "train_prompts_per_task": args.train,
        "eval_prompts_per_task": args.n,
        "features": "mean over prompt tokens of the hidden states after each layer "
        "(0 = input embeddings), standardised, multinomial logistic regression (L-BFGS)",
        "l2": args.l2,
        "table": table,
        "threads": args.threads,
        **run.details(),
    }
    print(f"wrote {write_result(args.out, None, summary, details)}")


if __name__ == "__main__":
    main()
