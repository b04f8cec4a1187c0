"""Task experts: one SEAP-pruned model per task plus a router, on disk; a bounded set loaded.

Layout of an expert set directory (written to a temp dir and renamed into place)::

    experts.json            base fingerprint, tasks, sparsity, method, router accuracy
    router/                 router.safetensors + router.json
    <task>/                 a pruned model (LocalModel.load(<task>) reloads it)
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ...core.errors import InvalidInput, ModelMismatch
from .. import evaluation as ev
from . import methods, prune, stats
from .router import TaskRouter

MANIFEST = "experts.json"


def build_experts(
    base: Any,
    tasks: Sequence[str],
    sparsity: float,
    out_dir: str | Path,
    *,
    method: str = "seap",
    calibration: int = 200,
    router_prompts: int = 300,
    max_loaded: int = 2,
    bias: bool = False,
    **schedule: Any,
) -> ExpertSet:
    """Prune ``base`` (a LocalModel) once per task and train the router on the tasks' train
    prompts; ``tasks`` are built-in task names or generic JSONL files. ``bias``: FLAP's bias
    compensation in every expert."""
    if method not in ("seap", "seap_norm"):
        raise InvalidInput(f"experts are per-task SEAP models (seap, seap_norm), not {method!r}")
    names = list(dict.fromkeys(tasks))
    if len(names) < 2:
        raise InvalidInput("give at least two tasks (one expert each, a router between them)")
    out = Path(out_dir).expanduser()
    if out.exists() and not (out / MANIFEST).is_file():
        raise InvalidInput(f"{out} exists and is not an expert set")
    from ..runtime import _atomic_dir

    with _atomic_dir(out) as tmp:
        entries = {}
        prompts: dict[str, list[str]] = {}
        for name in names:
            task = ev.load_task(name, n=1)  # validates the name / file early
            texts = ev.calibration_texts(name, n=calibration)
            st = stats.collect(base.model, base.tokenizer, texts, source=task.name)
            plan = methods.make_plan(base.model, st, method, sparsity, bias=bias, **schedule)
            plan.details["base"] = base.fingerprint.to_dict()
            expert = prune.pruned_copy(base.model, plan, st)
            prune.save_pruned(expert, base.tokenizer, plan, tmp / task.name)
            del expert
            entries[task.name] = {"source": name, "real_sparsity": plan.real_sparsity}
            prompts[task.name] = ev.prompts(name, "train", n=router_prompts, seed=1)
        router = TaskRouter.train(base.model, base.tokenizer, prompts)
        held_out = {
            t: [it.prompt for it in ev.load_task(e["source"], n=100, seed=2).items]
            for t, e in entries.items()
        }
        accuracy = router.accuracy(base.model, base.tokenizer, held_out)
        router.save(tmp / "router")
        manifest = {
            "format": 1,
            "base": base.fingerprint.to_dict(),
            "method": method,
            "sparsity": sparsity,
            "experts": entries,
            "router_accuracy": accuracy,
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1))
    return ExpertSet.open(out, base, max_loaded=max_loaded)


class ExpertSet:
    """Route queries to task experts; at most ``max_loaded`` pruned models stay in memory."""

    def __init__(
        self, root: Path, manifest: dict[str, Any], router: TaskRouter, base: Any, max_loaded: int
    ) -> None:
        if max_loaded < 1:
            raise InvalidInput(f"max_loaded must be >= 1, got {max_loaded}")
        self.root, self.manifest, self.router, self.base = root, manifest, router, base
        self.max_loaded = max_loaded
        self._loaded: OrderedDict[str, Any] = OrderedDict()
        self._lock = threading.Lock()

    @classmethod
    def open(cls, root: str | Path, base: Any, *, max_loaded: int = 2) -> ExpertSet:
        path = Path(root).expanduser()
        try:
            manifest = json.loads((path / MANIFEST).read_text())
        except (OSError, ValueError) as exc:
            raise InvalidInput(f"{path} is not an expert set: {exc}") from exc
        if manifest.get("base") != base.fingerprint.to_dict():
            raise ModelMismatch(f"the experts in {path} were pruned from another model")
        return cls(path, manifest, TaskRouter.load(path / "router"), base, max_loaded)

    @property
    def tasks(self) -> list[str]:
        return list(self.manifest["experts"])

    @property
    def loaded(self) -> list[str]:
        """Tasks whose experts are in memory, least recently used first."""
        return list(self._loaded)

    def route(self, query: str) -> str:
        return self.router.predict(self.base.model, self.base.tokenizer, [query])[0]

    def model(self, task: str) -> Any:
        """The task's expert (a LocalModel), loaded on demand; evicts the least recently used."""
        from ..runtime import LocalModel

        if task not in self.manifest["experts"]:
            raise InvalidInput(f"no expert for {task!r}; experts: {', '.join(self.tasks)}")
        with self._lock:
            if task in self._loaded:
                self._loaded.move_to_end(task)
                return self._loaded[task]
            expert = LocalModel.load(self.root / task)
            self._loaded[task] = expert
            while len(self._loaded) > self.max_loaded:
                self._loaded.popitem(last=False)
            return expert
