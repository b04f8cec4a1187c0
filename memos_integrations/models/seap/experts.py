"""Task experts: one SEAP-pruned model per task (or family of tasks) plus a router, on disk;
a bounded set loaded.

Layout of an expert set directory (written to a temp dir and renamed into place)::

    experts.json            base fingerprint, experts and their tasks, sparsity, method,
                            router accuracy and confusion on held-out prompts
    router/                 router.safetensors + router.json
    <expert>/               a pruned model (LocalModel.load(<expert>) reloads it)

A family (``["arc_easy", "arc_challenge"]``) shares one expert, calibrated on all its tasks and
named ``arc_easy+arc_challenge``: for tasks whose prompts no router can tell apart, where a
per-task choice between their experts is a coin toss. ``build_experts`` finds such tasks itself
(``join_confused``): before pruning, it cross-validates the router on its training prompts and
joins an expert it routes correctly less than ``CONFUSED`` % of the time with the expert it
mistakes it for most, so a user who lists ARC-Easy and ARC-Challenge gets one ARC expert.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ...core.config import memos_home
from ...core.errors import InvalidInput, ModelMismatch
from .. import evaluation as ev
from . import methods, prune, stats
from .router import TaskRouter

MANIFEST = "experts.json"
CONFUSED = 75.0  # routing accuracy (%) below which build_experts joins (or suggests) a family
log = logging.getLogger(__name__)


def build_experts(
    base: Any,
    tasks: Sequence[str | Sequence[str]],
    sparsity: float,
    out_dir: str | Path,
    *,
    method: str = "seap",
    calibration: int = 200,
    router_prompts: int = 300,
    max_loaded: int = 2,
    bias: bool = True,
    join_confused: bool = True,
    progress: bool = True,
    **schedule: Any,
) -> ExpertSet:
    """Prune ``base`` (a LocalModel) once per task and train the router on the tasks' train
    prompts. ``tasks``: built-in task names or generic JSONL files; a list of them is a family
    with one expert calibrated on all of them. ``bias``: FLAP's bias compensation in every
    expert (on by default: on held-out items it kept accuracy and cut the gold-answer NLL at
    20% and 50%, ``benchmarks/results/seap_bias.json``). ``join_confused``: first join the
    tasks the router cannot tell apart into families (:func:`join_confused_families`; logged,
    and listed under ``joined`` in the manifest). An expert the router still confuses with
    another on held-out prompts is logged with the advice to make them a family. A progress
    bar counts the experts unless ``progress`` is False."""
    if method not in ("seap", "seap_norm"):
        raise InvalidInput(f"experts are per-task SEAP models (seap, seap_norm), not {method!r}")
    families = [_family(t) for t in tasks]
    sources = [s for f in families for s in f]
    if len(set(sources)) < len(sources):
        raise InvalidInput("a task appears twice in tasks")
    if len(families) < 2:
        raise InvalidInput("give at least two experts (tasks or families), a router between them")
    out = Path(out_dir).expanduser()
    if out.exists() and not (out / MANIFEST).is_file():
        raise InvalidInput(f"{out} exists and is not an expert set")
    from tqdm.auto import tqdm

    from ..runtime import _atomic_dir

    # the router's training prompts per task (reading them validates names and files early)
    train = {s: ev.prompts(s, "train", n=router_prompts, seed=1) for s in sources}
    joined: list[dict[str, Any]] = []
    if join_confused:
        families, joined = join_confused_families(base, families, train)
    bar = tqdm(total=len(families), desc="pruning experts", unit="expert", disable=not progress)
    with _atomic_dir(out) as tmp, bar:
        entries: dict[str, dict[str, Any]] = {}
        prompts: dict[str, list[str]] = {}
        held_out: dict[str, list[str]] = {}
        for family in families:
            held = [ev.load_task(s, n=100, seed=2) for s in family]  # the router's check
            names = [task.name for task in held]
            expert_name = "+".join(names)
            bar.set_postfix_str(expert_name)
            texts = [t for s in family for t in ev.calibration_texts(s, n=calibration)]
            st = stats.collect(base.model, base.tokenizer, texts, source=expert_name)
            plan = methods.make_plan(base.model, st, method, sparsity, bias=bias, **schedule)
            plan.details["base"] = base.fingerprint.to_dict()
            expert = prune.pruned_copy(base.model, plan, st)
            prune.save_pruned(expert, base.tokenizer, plan, tmp / expert_name)
            del expert
            entries[expert_name] = {
                "tasks": names,
                "sources": family,
                "real_sparsity": plan.real_sparsity,
                "bias": plan.bias,
            }
            prompts[expert_name] = [p for s in family for p in train[s]]
            held_out[expert_name] = [it.prompt for task in held for it in task.items]
            bar.update()
        router = TaskRouter.train(base.model, base.tokenizer, prompts)
        accuracy = router.accuracy(base.model, base.tokenizer, held_out)
        _advise(accuracy)
        router.save(tmp / "router")
        manifest = {
            "format": 1,
            "base": base.fingerprint.to_dict(),
            "method": method,
            "sparsity": sparsity,
            "experts": entries,
            "router_accuracy": accuracy,
            "joined": joined,
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1))
    return ExpertSet.open(out, base, max_loaded=max_loaded)


def default_dir(model_id: str, method: str, sparsity: float, bias: bool = False) -> Path:
    """``$MEMOS_HOME/experts/<model>-<method>[-bias]-<pct>``: where built experts live."""
    tag = f"{method}-bias" if bias else method
    return memos_home() / "experts" / f"{model_id}-{tag}-{round(100 * sparsity)}"


def _family(task: str | Sequence[str]) -> list[str]:
    family = [task] if isinstance(task, str) else list(task)
    if not family or not all(isinstance(t, str) and t for t in family):
        raise InvalidInput(f"a task is a name or file, a family a list of them; got {task!r}")
    return family


def join_confused_families(
    base: Any, families: list[list[str]], prompts: dict[str, list[str]]
) -> tuple[list[list[str]], list[dict[str, Any]]]:
    """Join, one pair at a time, the family the router routes worst (cross-validated on
    ``prompts``, the router's training prompts per task) with the family it mistakes it for
    most, while that accuracy is below ``CONFUSED`` % and more than two families remain (a
    router needs two). Returns the families (a joined one where its first member was) and a
    record per join: the tasks joined and the accuracies that decided it."""
    families = [list(f) for f in families]
    joined: list[dict[str, Any]] = []
    while len(families) > 2:
        keys = ["+".join(f) for f in families]  # labels only
        texts = {k: [p for s in f for p in prompts[s]] for k, f in zip(keys, families, strict=True)}
        if min(len(x) for x in texts.values()) < 2:
            break  # too few prompts to cross-validate: nothing to decide on
        cv = TaskRouter.cross_validate(base.model, base.tokenizer, texts)
        worst = min(keys, key=cv["per_task"].__getitem__)
        wrong = {k: v for k, v in cv["confusion"][worst].items() if k != worst}
        if cv["per_task"][worst] >= CONFUSED or not wrong:
            break
        i, j = sorted((keys.index(worst), keys.index(max(wrong, key=wrong.__getitem__))))
        rates = {keys[x]: round(cv["per_task"][keys[x]], 1) for x in (i, j)}
        log.warning(
            "joined %s and %s into one expert: the router sends only %.0f%% / %.0f%% of "
            "their prompts to their own expert (cross-validated on its training prompts); "
            "join_confused=False keeps them apart",
            keys[i],
            keys[j],
            *rates.values(),
        )
        families[i] += families.pop(j)
        joined.append({"tasks": list(families[i]), "cross_validated_accuracy": rates})
    return families, joined


def _advise(accuracy: dict[str, Any]) -> None:
    """Log each expert that the router sends elsewhere too often, and where it goes."""
    for expert, rate in accuracy["per_task"].items():
        wrong = {k: v for k, v in accuracy["confusion"][expert].items() if k != expert}
        if rate < CONFUSED and wrong:
            other = max(wrong, key=wrong.__getitem__)
            log.warning(
                "the router sends only %.0f%% of %s's held-out prompts to it (most others "
                "to %s); if their prompts look alike, build them as one family: [%r, %r]",
                rate,
                expert,
                other,
                expert,
                other,
            )


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
        """The experts' names (a family's is its tasks joined by ``+``)."""
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
