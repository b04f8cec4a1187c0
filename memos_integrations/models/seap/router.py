"""Route a query to its task expert: multinomial logistic regression on the mean-pooled input
token embeddings of the prompt (SEAP's classifier; no forward pass needed), trained in torch
with L-BFGS. Saved as ``router.safetensors`` + ``router.json``; nothing is pickled."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ...core.errors import InvalidInput


def _features(model: Any, tokenizer: Any, texts: Sequence[str]) -> Any:
    import torch

    emb = model.get_input_embeddings().weight.detach().float()
    rows = []
    for text in texts:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"] or [0]
        rows.append(emb[torch.tensor(ids)].mean(0))
    return torch.stack(rows)


def _tally(got_by_task: dict[str, list[str]]) -> dict[str, Any]:
    """Accuracy overall and per task (percent) and the confusion of routed labels per task."""
    per, confusion, hits, total = {}, {}, 0, 0
    for task, got in got_by_task.items():
        confusion[task] = {t: got.count(t) for t in sorted(set(got))}
        ok = got.count(task)
        per[task] = 100.0 * ok / max(len(got), 1)
        hits, total = hits + ok, total + len(got)
    return {
        "accuracy": 100.0 * hits / max(total, 1),
        "per_task": per,
        "confusion": confusion,
        "n": total,
    }


class TaskRouter:
    def __init__(self, tasks: Sequence[str], weight: Any, bias: Any, mean: Any, std: Any):
        self.tasks = list(tasks)
        self.weight, self.bias, self.mean, self.std = weight, bias, mean, std

    @classmethod
    def train(
        cls,
        model: Any,
        tokenizer: Any,
        texts_by_task: dict[str, Sequence[str]],
        *,
        l2: float = 1e-3,
        steps: int = 200,
    ) -> TaskRouter:
        if len(texts_by_task) < 2 or any(not texts for texts in texts_by_task.values()):
            raise InvalidInput("a router needs texts for at least two tasks")
        features = {t: _features(model, tokenizer, x) for t, x in texts_by_task.items()}
        return cls.fit(features, l2=l2, steps=steps)

    @classmethod
    def fit(
        cls, features_by_task: dict[str, Any], *, l2: float = 1e-3, steps: int = 200
    ) -> TaskRouter:
        """Multinomial logistic regression (L-BFGS) on standardised feature rows per task, any
        features (``benchmarks/router_features.py`` compares hidden states with the default)."""
        import torch

        tasks = sorted(features_by_task)
        x = torch.cat([features_by_task[t] for t in tasks])
        y = torch.cat(
            [
                torch.full((len(features_by_task[t]),), i, dtype=torch.long)
                for i, t in enumerate(tasks)
            ]
        )
        mean, std = x.mean(0), x.std(0).clamp_min(1e-6)
        z = (x - mean) / std
        w = torch.zeros(z.shape[1], len(tasks), requires_grad=True)
        b = torch.zeros(len(tasks), requires_grad=True)
        opt = torch.optim.LBFGS([w, b], max_iter=steps, line_search_fn="strong_wolfe")

        def closure() -> Any:
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(z @ w + b, y) + l2 * (w * w).sum()
            loss.backward()
            return loss

        with torch.enable_grad():
            opt.step(closure)
        return cls(tasks, w.detach(), b.detach(), mean, std)

    def predict(self, model: Any, tokenizer: Any, texts: Sequence[str]) -> list[str]:
        import torch

        with torch.no_grad():
            return self.classify(_features(model, tokenizer, texts))

    def classify(self, features: Any) -> list[str]:
        """The task of each feature row (features as :meth:`fit` was given)."""
        z = (features - self.mean) / self.std
        return [self.tasks[i] for i in (z @ self.weight + self.bias).argmax(1).tolist()]

    def accuracy(self, model: Any, tokenizer: Any, texts_by_task: dict[str, Sequence[str]]) -> dict:
        """Overall and per-task accuracy (percent) on labelled prompts, and the confusion:
        per task, how many of its prompts went to each task."""
        return _tally(
            {task: self.predict(model, tokenizer, texts) for task, texts in texts_by_task.items()}
        )

    @classmethod
    def cross_validate(
        cls,
        model: Any,
        tokenizer: Any,
        texts_by_task: dict[str, Sequence[str]],
        *,
        folds: int = 5,
        l2: float = 1e-3,
    ) -> dict:
        """:meth:`accuracy` of routers trained on these texts, each text classified by the
        router that did not see it (text ``j`` of a task is in fold ``j % folds``): how well
        the tasks can be told apart, from training texts alone."""
        import torch

        if len(texts_by_task) < 2 or min(len(x) for x in texts_by_task.values()) < 2:
            raise InvalidInput("cross-validation needs at least two texts for two tasks")
        folds = max(2, min(folds, *(len(x) for x in texts_by_task.values())))
        features = {t: _features(model, tokenizer, x) for t, x in texts_by_task.items()}
        got: dict[str, list[str]] = {t: [""] * len(x) for t, x in features.items()}
        for fold in range(folds):
            held = {t: torch.arange(len(x)) % folds == fold for t, x in features.items()}
            router = cls.fit({t: x[~held[t]] for t, x in features.items()}, l2=l2)
            for t, x in features.items():
                rows = held[t].nonzero().flatten().tolist()
                for row, task in zip(rows, router.classify(x[held[t]]), strict=True):
                    got[t][row] = task
        return _tally(got)

    def save(self, directory: str | Path) -> None:
        from safetensors.torch import save_file

        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        tensors = {"weight": self.weight, "bias": self.bias, "mean": self.mean, "std": self.std}
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(d / "router.safetensors"))
        meta = {"tasks": self.tasks, "features": "mean input embedding"}
        (d / "router.json").write_text(json.dumps(meta))

    @classmethod
    def load(cls, directory: str | Path) -> TaskRouter:
        from safetensors.torch import load_file

        d = Path(directory)
        try:
            meta = json.loads((d / "router.json").read_text())
            t = load_file(str(d / "router.safetensors"))
        except (OSError, ValueError) as exc:
            raise InvalidInput(f"no router in {d}: {exc}") from exc
        return cls(meta["tasks"], t["weight"], t["bias"], t["mean"], t["std"])
