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
flap_lb    flap         logistic        generic text         ``flap`` under SEAP's schedule
wanda_lb   wanda_sp     logistic        generic text         ``wanda_sp`` under SEAP's schedule
=========  ===========  ==============  ===================  ====================================

The ``_lb`` variants change only the allocation, so that every method can be compared under
the same schedule. ``bias=True`` adds FLAP's bias compensation (the mean of each removed
o_proj/down_proj input, folded into a bias) to any method; ``flap`` and ``flap_lb`` have it by
default. ``sequential=True`` prunes any scheduled method layer by layer, as Wanda-sp does
(:func:`prune_sequential`). Schedule keywords (``k``, ``x0``, ``first``, ``last``) apply to
logistic allocations only.
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
from .prune import apply_plan, compensate_layer, slice_layer
from .stats import LayerStats, Stats, collect, decoder_layers

METHODS = ("seap", "seap_norm", "seap_gen", "flap", "wanda_sp", "flap_lb", "wanda_lb")
_SCORED = {
    "seap": ("fluct", "logistic"),
    "seap_norm": ("norm", "logistic"),
    "flap": ("flap", "global"),
    "flap_lb": ("flap", "logistic"),
}
_SEQUENTIAL = {"wanda_sp": "uniform", "wanda_lb": "logistic"}  # method -> allocation
_COMPENSATED = ("flap", "flap_lb")  # FLAP's method includes its bias compensation


def plan_from_scores(
    model: Any, scores: Scores, method: str, sparsity: float, allocation: str, **schedule: Any
) -> PruningPlan:
    geo = Geometry.of(model)
    if allocation == "global":
        _no_schedule(allocation, schedule)
        return plan_global(geo, scores, sparsity, method)
    return plan_scheduled(
        geo, scores, ratios(geo, sparsity, allocation, schedule), method, sparsity
    )


def ratios(
    geo: Geometry, sparsity: float, allocation: str, schedule: dict[str, Any]
) -> list[float]:
    """Per-layer pruning ratios of a ``logistic`` or ``uniform`` allocation."""
    if allocation == "logistic":
        return logistic_ratios(geo.layers, sparsity, **schedule)
    if allocation == "uniform":
        _no_schedule(allocation, schedule)
        return uniform_ratios(geo.layers, sparsity)
    raise InvalidInput(f"allocation must be logistic or uniform here, got {allocation!r}")


def _no_schedule(allocation: str, schedule: dict[str, Any]) -> None:
    if schedule:  # a --first the user gave would otherwise be ignored without a word
        names = ", ".join(sorted(schedule))
        raise InvalidInput(
            f"{names}: schedule settings apply to logistic allocations, not {allocation}"
        )


def make_plan(
    model: Any,
    stats: Stats,
    method: str,
    sparsity: float,
    *,
    bias: bool | None = None,
    **schedule: Any,
) -> PruningPlan:
    """The plan of a statistics-based method (all but the sequential ``wanda_*`` and
    ``seap_gen``); ``bias``: compensate the removed inputs' means (default: ``flap*`` only)."""
    if method not in _SCORED:
        raise InvalidInput(f"method must be one of {', '.join(_SCORED)} here, got {method!r}")
    metric, allocation = _SCORED[method]
    plan = plan_from_scores(
        model, compute_scores(model, stats, metric), method, sparsity, allocation, **schedule
    )
    plan.bias = method in _COMPENSATED if bias is None else bool(bias)
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
    model: Any,
    tokenizer: Any,
    texts: Sequence[str],
    sparsity: float,
    *,
    allocation: str = "uniform",
    max_length: int = 256,
    **schedule: Any,
) -> tuple[Any, PruningPlan]:
    """Wanda-sp as in FLAP's code: each layer scored on the outputs of the already pruned
    layers before it, at a uniform ratio (``allocation="logistic"``: SEAP's schedule, the
    ``wanda_lb`` variant). Returns (pruned copy, plan); ``model`` stays dense."""
    method = {a: m for m, a in _SEQUENTIAL.items()}.get(allocation)
    if method is None:
        raise InvalidInput(f"allocation must be uniform or logistic, got {allocation!r}")
    return prune_sequential(
        model,
        tokenizer,
        texts,
        method,
        sparsity,
        source="generic",
        max_length=max_length,
        **schedule,
    )


def prune_sequential(
    model: Any,
    tokenizer: Any,
    texts: Sequence[str],
    method: str,
    sparsity: float,
    *,
    bias: bool | None = None,
    source: str = "",
    max_length: int = 256,
    **schedule: Any,
) -> tuple[Any, PruningPlan]:
    """Prune while calibrating: layer ``i`` is scored (and compensated) on the outputs of the
    already pruned layers before it, so its statistics are those the pruned model really
    feeds it rather than the dense model's. Wanda-sp's own procedure; for the other
    scheduled methods an option (``prune(..., sequential=True)``). Returns (pruned copy,
    plan); ``model`` stays dense."""
    if method in _SEQUENTIAL:
        metric, allocation = "wanda_sp", _SEQUENTIAL[method]
    elif method in _SCORED and _SCORED[method][1] != "global":
        metric, allocation = _SCORED[method]
    else:  # FLAP's global allocation needs every layer's scores first
        layerwise = [*_SEQUENTIAL, *(m for m, (_, a) in _SCORED.items() if a != "global")]
        raise InvalidInput(
            f"{method} cannot prune layer by layer; methods that can: {', '.join(layerwise)}"
        )
    compensate = method in _COMPENSATED if bias is None else bool(bias)
    geo = Geometry.of(model)
    layer_ratios = ratios(geo, sparsity, allocation, schedule)
    pruned = copy.deepcopy(model)
    layers = decoder_layers(pruned)
    plans: list[Any] = []
    carry = [0.0]

    def after(i: int, st: LayerStats) -> None:
        head, chan = layer_scores(layers[i], st, metric, geo)
        lp, carry[0] = plan_layer(geo, layer_ratios[i], head, chan, carry[0])
        if compensate:
            compensate_layer(layers[i], lp, geo, st)
        slice_layer(layers[i], lp, geo)
        plans.append(lp)

    stats = collect(
        pruned, tokenizer, texts, after_layer=after, source=source, max_length=max_length
    )
    details = {"ratios": [round(r, 5) for r in layer_ratios], "sequential": True}
    plan = PruningPlan(method, sparsity, geo, plans, bias=compensate, details=details)
    plan.details.update(calibration=stats.source, texts=stats.texts, tokens=stats.tokens)
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
    sequential: bool | None = None,
    **schedule: Any,
) -> tuple[Any, PruningPlan]:
    """Calibrate on ``texts`` and return (pruned copy, plan) for one method;
    ``sequential``: prune layer by layer (always for ``wanda_*``, see :func:`prune_sequential`)."""
    if method == "seap_gen":
        raise InvalidInput("seap_gen combines several tasks: use seap_gen_plan()")
    if method in _SEQUENTIAL and sequential is False:
        raise InvalidInput(f"{method} is sequential by definition")
    if method in _SEQUENTIAL or sequential:
        return prune_sequential(
            model, tokenizer, texts, method, sparsity, bias=bias, source=source, **schedule
        )
    stats = collect(model, tokenizer, texts, source=source)
    plan = make_plan(model, stats, method, sparsity, bias=bias, **schedule)
    return apply_plan(copy.deepcopy(model), plan, stats), plan
