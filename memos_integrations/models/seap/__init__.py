"""SEAP: task-specific expert pruning (heads and FFN channels), with FLAP and Wanda-sp.

Pipeline: :func:`stats.collect` (hooks on o_proj/down_proj inputs) -> :mod:`plan` (scores,
logistic schedule, GQA-valid units, exact parameter accounting) -> :mod:`prune` (physical
slicing, safetensors + ``pruning_plan.json``) ; :mod:`router` picks a task's expert;
:mod:`experts` builds and serves a bounded set of them. See docs/architecture.md.
"""

from __future__ import annotations

from .plan import PLAN_FILE, Geometry, LayerPlan, PruningPlan, logistic_ratios

__all__ = ["PLAN_FILE", "Geometry", "LayerPlan", "PruningPlan", "logistic_ratios"]
