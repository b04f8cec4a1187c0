"""Calibration statistics: per-feature sums of the inputs of every layer's ``o_proj`` (the
concatenated head outputs) and ``down_proj`` (the FFN channels), streamed over all tokens.

Each text is tokenised alone with BOS prepended; the BOS position is left out of the statistics
(its attention-sink activations dominate the means and variances of short texts). Sums and sums
of squares are accumulated in float64, so mean, variance and mean square are exact merges over
batches (no first-batch quirk as in the SEAP/FLAP code).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...core.errors import InvalidInput

MODULES = ("attn", "mlp")  # o_proj input, down_proj input


@dataclass
class LayerStats:
    """Sums over the calibration tokens of one layer: ``{module: (sum, sum of squares)}``."""

    sums: dict[str, Any]
    squares: dict[str, Any]
    count: int = 0

    def mean(self, module: str) -> Any:
        return self.sums[module] / max(self.count, 1)

    def mean_square(self, module: str) -> Any:
        return self.squares[module] / max(self.count, 1)

    def var(self, module: str) -> Any:
        n = max(self.count, 2)
        return ((self.squares[module] - self.sums[module] ** 2 / n) / (n - 1)).clamp_min(0)


@dataclass
class Stats:
    """Statistics of all layers plus what they were computed from."""

    layers: list[LayerStats]
    texts: int
    tokens: int
    source: str = ""

    def save(self, path: str | Path) -> None:
        from safetensors.torch import save_file

        tensors = {
            f"{i}.{kind}.{m}": getattr(layer, kind)[m].contiguous()
            for i, layer in enumerate(self.layers)
            for kind in ("sums", "squares")
            for m in MODULES
        }
        meta = {"texts": str(self.texts), "tokens": str(self.tokens), "source": self.source}
        meta["counts"] = ",".join(str(layer.count) for layer in self.layers)
        save_file(tensors, str(path), metadata=meta)

    @classmethod
    def load(cls, path: str | Path) -> Stats:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata()
            counts = [int(c) for c in meta["counts"].split(",")]
            layers = [
                LayerStats(
                    {m: fh.get_tensor(f"{i}.sums.{m}") for m in MODULES},
                    {m: fh.get_tensor(f"{i}.squares.{m}") for m in MODULES},
                    count,
                )
                for i, count in enumerate(counts)
            ]
        return cls(layers, int(meta["texts"]), int(meta["tokens"]), meta.get("source", ""))


def decoder_layers(model: Any) -> Any:
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else model.model
    layers = getattr(decoder, "layers", None)
    if layers is None or not len(layers):
        raise InvalidInput("pruning needs a Llama-family model (decoder.layers with self_attn/mlp)")
    for layer in layers:
        attn, mlp = getattr(layer, "self_attn", None), getattr(layer, "mlp", None)
        names = ("q_proj", "k_proj", "v_proj", "o_proj")
        if attn is None or mlp is None or not all(hasattr(attn, n) for n in names):
            raise InvalidInput("pruning needs Llama-style q/k/v/o_proj and gate/up/down_proj")
    return layers


def _targets(layer: Any) -> dict[str, Any]:
    return {"attn": layer.self_attn.o_proj, "mlp": layer.mlp.down_proj}


def _encode(tokenizer: Any, texts: Sequence[str], max_length: int) -> list[list[int]]:
    bos = tokenizer.bos_token_id
    out = []
    for text in texts:
        ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
        ids = ([bos] if bos is not None else []) + ids
        out.append(ids[:max_length])
    return [ids for ids in out if len(ids) > (1 if bos is not None else 0)]


class _Recorder:
    """Forward pre-hooks that add the valid tokens' inputs of o_proj/down_proj to the sums."""

    def __init__(self, layers: Sequence[Any], indices: Sequence[int], stats: list[LayerStats]):
        self.valid: Any = None
        self.handles = []
        for i in indices:
            for module, linear in _targets(layers[i]).items():
                self.handles.append(linear.register_forward_pre_hook(self._hook(stats[i], module)))

    def _hook(self, target: LayerStats, module: str) -> Callable[..., None]:
        import torch

        def hook(_mod: Any, args: tuple[Any, ...]) -> None:
            x = args[0][self.valid].to(torch.float64)
            target.sums[module] += x.sum(0)
            target.squares[module] += (x * x).sum(0)
            if module == "attn":
                target.count += x.shape[0]

        return hook

    def close(self) -> None:
        for h in self.handles:
            h.remove()


def _empty(layers: Sequence[Any]) -> list[LayerStats]:
    import torch

    out = []
    for layer in layers:
        widths = {m: lin.in_features for m, lin in _targets(layer).items()}
        out.append(
            LayerStats(
                {m: torch.zeros(w, dtype=torch.float64) for m, w in widths.items()},
                {m: torch.zeros(w, dtype=torch.float64) for m, w in widths.items()},
            )
        )
    return out


def _batches(encoded: list[list[int]], batch_size: int, pad: int) -> list[tuple[Any, Any, Any]]:
    """(input_ids, attention_mask, valid-for-statistics mask) per batch, right-padded."""
    import torch

    out = []
    for start in range(0, len(encoded), batch_size):
        group = encoded[start : start + batch_size]
        width = max(len(g) for g in group)
        ids = torch.full((len(group), width), pad, dtype=torch.long)
        attention = torch.zeros((len(group), width), dtype=torch.long)
        for row, g in enumerate(group):
            ids[row, : len(g)] = torch.tensor(g)
            attention[row, : len(g)] = 1
        valid = attention.bool().clone()
        valid[:, 0] = False  # BOS
        out.append((ids, attention, valid))
    return out


def collect(
    model: Any,
    tokenizer: Any,
    texts: Sequence[str],
    *,
    max_length: int = 256,
    batch_size: int = 8,
    source: str = "",
    after_layer: Callable[[int, LayerStats], None] | None = None,
) -> Stats:
    """Statistics of ``texts`` on ``model``.

    Without ``after_layer`` one dense forward per batch feeds every layer. With it the pass is
    *sequential* (Wanda-sp, FLAP's code): layer ``i``'s statistics are gathered, then
    ``after_layer(i, stats)`` may prune that layer in place, and the next layer sees the pruned
    layer's outputs.
    """
    import torch

    if not texts:
        raise InvalidInput("calibration needs at least one text")
    layers = decoder_layers(model)
    encoded = _encode(tokenizer, texts, max_length)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    batches = _batches(encoded, batch_size, pad)
    stats = _empty(layers)
    tokens = int(sum(v.sum() for _, _, v in batches))
    with torch.inference_mode():
        if after_layer is None:
            rec = _Recorder(layers, range(len(layers)), stats)
            try:
                for ids, attention, valid in batches:
                    rec.valid = valid
                    model.model(input_ids=ids, attention_mask=attention, use_cache=False)
            finally:
                rec.close()
        else:
            _sequential(model, layers, batches, stats, after_layer)
    return Stats(stats, len(encoded), tokens, source)


class _Caught(Exception):
    pass


def _sequential(
    model: Any,
    layers: Any,
    batches: list[tuple[Any, Any, Any]],
    stats: list[LayerStats],
    after_layer: Callable[[int, LayerStats], None],
) -> None:
    # Catch the first layer's inputs (hidden states plus the mask/rotary kwargs the model
    # computed), then drive the layers one by one with them.
    caught: list[tuple[Any, dict[str, Any]]] = []

    def catch(_mod: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        hidden = args[0] if args else kwargs.pop("hidden_states")
        caught.append((hidden, dict(kwargs)))
        raise _Caught

    handle = layers[0].register_forward_pre_hook(catch, with_kwargs=True)
    try:
        for ids, attention, _ in batches:
            with contextlib.suppress(_Caught):
                model.model(input_ids=ids, attention_mask=attention, use_cache=False)
    finally:
        handle.remove()
    hidden = [h for h, _ in caught]
    for i, layer in enumerate(layers):
        rec = _Recorder(layers, [i], stats)
        try:
            for b, (_, _, valid) in enumerate(batches):
                rec.valid = valid
                layer(hidden[b], **caught[b][1])
        finally:
            rec.close()
        after_layer(i, stats[i])
        for b in range(len(batches)):
            out = layer(hidden[b], **caught[b][1])
            hidden[b] = out[0] if isinstance(out, tuple) else out
