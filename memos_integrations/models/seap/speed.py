"""Decode speed of pruned models against their dense base: batch-1 greedy decoding with a KV
cache, as a chat decodes.

Machines drift by 10-20% between minutes, far more than within one round, so
:func:`compare_speed` times the models in interleaved rounds and reports, per model, the median
of its per-round ratios to the baseline measured in the same round.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

from ...core.errors import InvalidInput

PROMPT = "Question: How do you make a cup of tea quickly in the morning?\nAnswer:"


def decode_speed(
    model: Any, tokenizer: Any, new_tokens: int = 48, reps: int = 1
) -> dict[str, float]:
    """Median time to first token (ms) and decode tokens/s over ``reps`` greedy runs."""
    import torch

    from ..runtime import LocalModel, ModelFingerprint

    lm = LocalModel(model, tokenizer, ModelFingerprint("llama", "speed", "speed", "float32"))
    ids = torch.tensor([lm.encode(PROMPT)])
    ttfts, rates = [], []
    for _ in range(reps):
        with torch.inference_mode():
            t0 = time.perf_counter()
            out = lm.forward(ids, None)
            ttfts.append(time.perf_counter() - t0)
            past = getattr(out, lm._cache_kw)
            token = out.logits[:, -1:].argmax(-1)
            t1 = time.perf_counter()
            for _ in range(new_tokens):
                out = lm.forward(token, past)
                past = getattr(out, lm._cache_kw)
                token = out.logits[:, -1:].argmax(-1)
            rates.append(new_tokens / (time.perf_counter() - t1))
    return {"ttft_ms": 1000 * statistics.median(ttfts), "tok_per_s": statistics.median(rates)}


def compare_speed(
    models: dict[str, Any],
    tokenizer: Any,
    *,
    baseline: str = "dense",
    rounds: int = 5,
    new_tokens: int = 48,
) -> dict[str, Any]:
    """Time every model once per round, ``rounds`` times, in turn. Returns the per-model
    ``medians`` (tok/s, TTFT ms), every round's ``runs``, and per non-baseline model
    ``speedup`` (decode tok/s over the baseline's) and ``ttft_ratio`` (baseline TTFT over its),
    each the median of the per-round ratios."""
    if baseline not in models or len(models) < 2:
        raise InvalidInput(f"compare_speed needs {baseline!r} and at least one other model")
    if rounds < 1 or new_tokens < 1:
        raise InvalidInput("rounds and new_tokens must be >= 1")
    runs: dict[str, list[dict[str, float]]] = {row: [] for row in models}
    for _ in range(rounds):
        for row, model in models.items():
            runs[row].append(decode_speed(model, tokenizer, new_tokens))
    medians = {
        row: {k: statistics.median(r[k] for r in rs) for k in ("tok_per_s", "ttft_ms")}
        for row, rs in runs.items()
    }

    def ratio(row: str, key: str, inverse: bool) -> float:
        pairs = zip(runs[row], runs[baseline], strict=True)
        return statistics.median(d[key] / r[key] if inverse else r[key] / d[key] for r, d in pairs)

    others = [row for row in models if row != baseline]
    return {
        "medians": medians,
        "runs": runs,
        "speedup": {row: ratio(row, "tok_per_s", False) for row in others},
        "ttft_ratio": {row: ratio(row, "ttft_ms", True) for row in others},
        "rounds": rounds,
        "new_tokens": new_tokens,
    }
