"""Which tasks ``build_experts`` joins into one expert (``join_confused``), and how well the
router then routes: the seven tasks of ``seap.py`` with the bundled model.

1. The router's cross-validated accuracy per task on its 300 training prompts a task (the
   prompts ``build_experts`` and ``seap.py`` train it on), and the joins it decides
   (``experts.join_confused_families``, the library's own function).
2. The router over the joined experts and the router with one expert per task, both trained
   on those prompts and scored on ``seap.py``'s eval prompts (300 a task, seed 0): the first is
   what a user who lists the seven tasks gets, the second what ``join_confused=False`` gives.
3. Whether the prompt's text separates the ARC pair where embeddings do not: word and
   character n-grams (TF-IDF, logistic regression, scikit-learn's defaults) trained on every
   train prompt of the two tasks, scored on the same eval prompts.

    python benchmarks/router_join.py
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
from memos_integrations.models.seap.experts import CONFUSED, join_confused_families
from memos_integrations.models.seap.router import TaskRouter

PAIR = ("arc_easy", "arc_challenge")


def routed(
    base: Any, train: dict[str, list[str]], test: dict[str, list[str]], families: list[list[str]]
) -> dict[str, Any]:
    """Router over ``families`` trained on ``train``; its accuracy on ``test`` per task (a
    task's prompt is routed right when it reaches its family's expert)."""
    expert_of = {t: "+".join(f) for f in families for t in f}
    by_expert = {"+".join(f): [p for t in f for p in train[t]] for f in families}
    router = TaskRouter.train(base.model, base.tokenizer, by_expert)
    per = {}
    for task, prompts in test.items():
        got = router.predict(base.model, base.tokenizer, prompts)
        per[task] = 100.0 * got.count(expert_of[task]) / len(got)
    return {"accuracy": sum(per.values()) / len(per), "per_task": per}


def text_ngrams(test: dict[str, list[str]]) -> dict[str, float]:
    """ARC-Easy vs ARC-Challenge accuracy (%) of n-gram classifiers on the prompts' text."""
    import numpy as np
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    train = {t: ev.prompts(t, "train") for t in PAIR}
    x_train = [p for t in PAIR for p in train[t]]
    y_train = np.concatenate([np.full(len(train[t]), i) for i, t in enumerate(PAIR)])
    x_test = [p for t in PAIR for p in test[t]]
    y_test = np.concatenate([np.full(len(test[t]), i) for i, t in enumerate(PAIR)])
    out = {}
    for name, analyzer, ngrams in (("word_1_2", "word", (1, 2)), ("char_2_5", "char_wb", (2, 5))):
        vec = TfidfVectorizer(analyzer=analyzer, ngram_range=ngrams, min_df=2, sublinear_tf=True)
        clf = LogisticRegression(max_iter=2000, class_weight="balanced")
        clf.fit(vec.fit_transform(x_train), y_train)
        got = clf.predict(vec.transform(x_test))
        # per task, then averaged: the same balanced reading as the routers' rows
        out[name] = float(
            np.mean([100.0 * (got[y_test == i] == i).mean() for i in range(len(PAIR))])
        )
    out["train_prompts"] = {t: len(train[t]) for t in PAIR}
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--train", type=int, default=300, help="router prompts per task (the default)")
    p.add_argument("--n", type=int, default=300, help="eval prompts per task (seap.py's subsets)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default="router_join")
    args = p.parse_args(argv)
    start, run = time.perf_counter(), RunStart()
    base = LocalModel.load(None, threads=args.threads)
    train = {t: ev.prompts(t, "train", n=args.train, seed=1) for t in ev.TASKS}
    test = {t: [it.prompt for it in ev.load_task(t, n=args.n, seed=0).items] for t in ev.TASKS}
    cross = TaskRouter.cross_validate(base.model, base.tokenizer, train)
    families, joined = join_confused_families(base, [[t] for t in ev.TASKS], train)
    per_task = routed(base, train, test, [[t] for t in ev.TASKS])
    with_joins = routed(base, train, test, families)
    ngrams = text_ngrams(test)
    for task in ev.TASKS:
        print(
            f"{task:14} cv {cross['per_task'][task]:5.1f}  eval per task "
            f"{per_task['per_task'][task]:5.1f}  joined {with_joins['per_task'][task]:5.1f}"
        )
    print(f"families: {families}")
    print(f"ARC pair from the text: {ngrams}")
    summary = {
        "cv_accuracy_per_task": cross["accuracy"],
        "router_accuracy_per_task": per_task["accuracy"],
        "router_accuracy_joined": with_joins["accuracy"],
        "experts": len(families),
        "arc_pair_word_ngrams": ngrams["word_1_2"],
        "arc_pair_char_ngrams": ngrams["char_2_5"],
        "minutes": (time.perf_counter() - start) / 60,
    }
    details = {
        "families": families,
        "joined": joined,
        "confused_below_pct": CONFUSED,
        "cross_validated": cross,
        "eval_per_task_router": per_task,
        "eval_joined_router": with_joins,
        "arc_pair_text": ngrams,
        "train_prompts_per_task": args.train,
        "eval_prompts_per_task": args.n,
        "threads": args.threads,
        **run.details(),
    }
    print(f"wrote {write_result(args.out, None, summary, details)}")


if __name__ == "__main__":
    main()
