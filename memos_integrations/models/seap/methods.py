"""The pruning methods, each as published plus the variants of a fair comparison.

=========  ===========  ==============  ===================  ====================================
method     score        allocation      calibration          notes
=========  ===========  ==============  ===================  ====================================
seap       fluct (s_F)  logistic (LB)   the task's texts     per-task expert
seap_norm  norm (s_W)   logistic        the task's texts
seap_gen   sum of fluct logistic        3 x generic + 2 x    one general mask
                                        each task
flap       flap         global (AL-AM)  generic text         + bias compensation
wanda_sp   wanda_sp     uniform (UL)    generic text         sequential (pruned layers feed on)
flap_lb    flap         logistic        generic text         FLAP scores under SEAP's schedule
wanda_lb   wanda_sp     logistic        generic text         dense statistics
=========  ===========  ==============  ===================  ====================================

``bias=True`` adds FLAP's bias compensation (the mean of each removed o_proj/down_proj input,
folded into a bias) to any statistics-based method; ``flap`` has it by default.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

from ...core.errors import InvalidInput
from .plan import (
    Geometry,
    PruningPlan,
    Scores,
    combine_scores,
    compute_scores,
    layer_scores,
    logistic_ratios,
    plan_global,
    plan_layer,
    plan_scheduled,
    uniform_ratios,
)
from .prune import apply_plan, slice_layer
from .stats import LayerStats, Stats, collect, decoder_layers

METHODS = ("seap", "seap_norm", "seap_gen", "flap", "wanda_sp", "flap_lb", "wanda_lb")
_SCORED = {
    "seap": ("fluct", "logistic"),
    "seap_norm": ("norm", "logistic"),
    "flap": ("flap", "global"),
    "flap_lb": ("flap", "logistic"),
    "wanda_lb": ("wanda_sp", "logistic"),
}


def plan_from_scores(
    model: Any, scores: Scores, method: str, sparsity: float, allocation: str, **schedule: Any
) -> PruningPlan:
    geo = Geometry.of(model)
    if allocation == "global":
        return plan_global(geo, scores, sparsity, method)
    if allocation == "logistic":
        ratios = logistic_ratios(geo.layers, sparsity, **schedule)
    elif allocation == "uniform":
        ratios = uniform_ratios(geo.layers, sparsity)
    else:
        raise InvalidInput(f"allocation must be logistic, uniform or global, got {allocation!r}")
    return plan_scheduled(geo, scores, ratios, method, sparsity)


def make_plan(
    model: Any,
    stats: Stats,
    method: str,
    sparsity: float,
    *,
    bias: bool | None = None,
    **schedule: Any,
) -> PruningPlan:
    """The plan of a statistics-based method (all but ``wanda_sp`` and ``seap_gen``);
    ``bias``: compensate the removed inputs' means (default: only for ``flap``)."""
    if method not in _SCORED:
        raise InvalidInput(f"method must be one of {', '.join(_SCORED)} here, got {method!r}")
    metric, allocation = _SCORED[method]
    plan = plan_from_scores(
        model, compute_scores(model, stats, metric), method, sparsity, allocation, **schedule
    )
    plan.bias = method == "flap" if bias is None else bool(bias)
    plan.details.update(calibration=stats.source, texts=stats.texts, tokens=stats.tokens)
    return plan


def seap_gen_plan(
    model: Any,
    task_stats: Sequence[Stats],
    generic: Stats | None,
    sparsity: float,
    *,
    generic_weight: float = 3.0,
    task_weight: float = 2.0,
    **schedule: Any,
) -> PruningPlan:
    """SEAP-gen: one mask from the weighted sum of raw fluctuation scores."""
    weighted = [(task_weight, compute_scores(model, s, "fluct")) for s in task_stats]
    if generic is not None:
        weighted.append((generic_weight, compute_scores(model, generic, "fluct")))
    plan = plan_from_scores(
        model, combine_scores(weighted), "seap_gen", sparsity, "logistic", **schedule
    )
    plan.details.update(calibration=[s.source for s in task_stats] + ["generic"])
    return plan


def wanda_sp(
    model: Any, tokenizer: Any, texts: Sequence[str], sparsity: float, **collect_kw: Any
) -> tuple[Any, PruningPlan]:
    """Wanda-sp as in FLAP's code: uniform ratio, each layer scored on the outputs of the
    already pruned layers before it. Returns (pruned copy, plan); ``model`` stays dense."""
    geo = Geometry.of(model)
    ratios = uniform_ratios(geo.layers, sparsity)
    pruned = copy.deepcopy(model)
    layers = decoder_layers(pruned)
    plans: list[Any] = []
    carry = [0.0]

    def after(i: int, st: LayerStats) -> None:
        head, chan = layer_scores(layers[i], st, "wanda_sp", geo)
        lp, carry[0] = plan_layer(geo, ratios[i], head, chan, carry[0])
        slice_layer(layers[i], lp, geo)
        plans.append(lp)

    stats = collect(pruned, tokenizer, texts, after_layer=after, source="generic", **collect_kw)
    plan = PruningPlan("wanda_sp", sparsity, geo, plans)
    plan.details.update(calibration="generic", texts=stats.texts, tokens=stats.tokens)
    return pruned, plan


def prune(
    model: Any,
    tokenizer: Any,
    texts: Sequence[str],
    method: str = "seap",
    sparsity: float = 0.2,
    *,
    source: str = "",
    bias: bool | None = None,
    **schedule: Any,
) -> tuple[Any, PruningPlan]:
    """Calibrate on ``texts`` and return (pruned copy, plan) for one method."""
    import copy as _copy

    if method == "wanda_sp":
        if bias:
            raise InvalidInput("wanda_sp prunes layer by layer without bias compensation")
        return wanda_sp(model, tokenizer, texts, sparsity)
    if method == "seap_gen":
        raise InvalidInput("seap_gen combines several tasks: use seap_gen_plan()")
    stats = collect(model, tokenizer, texts, source=source)
    plan = make_plan(model, stats, method, sparsity, bias=bias, **schedule)
    return apply_plan(_copy.deepcopy(model), plan, stats), plan
