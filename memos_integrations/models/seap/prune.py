"""Physical pruning: slice q/k/v/o and gate/up/down per layer, save as safetensors + a plan.

A pruned model directory holds the base ``config.json`` (dense shapes), the tokenizer,
``model.safetensors`` with the sliced tensors and ``pruning_plan.json``. Per-layer shapes do not
fit one Hugging Face config, so loading builds the dense architecture without initialising it,
slices it by the plan and loads the tensors strictly: ``LocalModel.load(dir)`` (or
:func:`load_pruned_model`) does this; nothing is pickled.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ...core.errors import InvalidInput
from .plan import PLAN_FILE, Geometry, LayerPlan, PruningPlan
from .stats import LayerStats, Stats, decoder_layers


def _rows(head_ids: list[int], width: int) -> list[int]:
    return [h * width + i for h in head_ids for i in range(width)]


def _slice(linear: Any, rows: list[int] | None = None, cols: list[int] | None = None) -> None:
    import torch

    with torch.no_grad():
        w = linear.weight
        if rows is not None:
            w = w[torch.tensor(rows)]
            if linear.bias is not None:
                linear.bias = torch.nn.Parameter(linear.bias[torch.tensor(rows)].clone())
        if cols is not None:
            w = w[:, torch.tensor(cols)]
        linear.weight = torch.nn.Parameter(w.clone().contiguous())
    linear.out_features, linear.in_features = linear.weight.shape


def _removed(total: int, kept: list[int]) -> list[int]:
    keep = set(kept)
    return [i for i in range(total) if i not in keep]


def _compensate(linear: Any, mean: Any, removed: list[int]) -> None:
    """FLAP bias compensation: b += W[:, removed] @ mean_x[removed] (adds a bias if absent)."""
    import torch

    with torch.no_grad():
        if not removed:
            delta = torch.zeros(linear.out_features, dtype=linear.weight.dtype)
        else:
            idx = torch.tensor(removed)
            delta = (linear.weight[:, idx].double() @ mean[idx].double()).to(linear.weight.dtype)
        if linear.bias is None:
            linear.bias = torch.nn.Parameter(delta)
        else:
            linear.bias.add_(delta)


def _add_zero_bias(linear: Any) -> None:
    import torch

    if linear.bias is None:
        linear.bias = torch.nn.Parameter(
            torch.zeros(linear.out_features, dtype=linear.weight.dtype)
        )


def apply_plan(model: Any, plan: PruningPlan, stats: Stats | None = None) -> Any:
    """Slice ``model`` in place to ``plan`` (and compensate biases from ``stats`` when the plan
    asks for it); returns the model."""
    geo = Geometry.of(model)
    if geo != plan.geometry:
        raise InvalidInput(f"the plan is for {plan.geometry}, the model is {geo}")
    plan.validate()
    if plan.bias and stats is None:
        raise InvalidInput("bias compensation needs the calibration statistics' means")
    for i, (layer, lp) in enumerate(zip(decoder_layers(model), plan.layers, strict=True)):
        if plan.bias and stats is not None:
            compensate_layer(layer, lp, geo, stats.layers[i])
        slice_layer(layer, lp, geo)
    return model


def compensate_layer(layer: Any, lp: LayerPlan, geo: Geometry, st: LayerStats) -> None:
    """Fold the means of the inputs ``lp`` removes into o_proj's and down_proj's biases
    (call before :func:`slice_layer`)."""
    removed_attn = _removed(geo.heads * geo.head_dim, _rows(lp.q_heads, geo.head_dim))
    _compensate(layer.self_attn.o_proj, st.mean("attn"), removed_attn)
    _compensate(layer.mlp.down_proj, st.mean("mlp"), _removed(geo.intermediate, lp.channels))


def slice_layer(layer: Any, lp: LayerPlan, geo: Geometry) -> None:
    """Keep ``lp``'s heads and channels of one decoder layer (shapes and GQA grouping)."""
    attn, mlp = layer.self_attn, layer.mlp
    q_rows = _rows(lp.q_heads, geo.head_dim)
    kv_rows = _rows(lp.kv_heads, geo.head_dim)
    _slice(attn.q_proj, rows=q_rows)
    _slice(attn.k_proj, rows=kv_rows)
    _slice(attn.v_proj, rows=kv_rows)
    _slice(attn.o_proj, cols=q_rows)
    attn.num_key_value_groups = len(lp.q_heads) // len(lp.kv_heads)
    for name, value in (("num_heads", len(lp.q_heads)), ("num_key_value_heads", len(lp.kv_heads))):
        if hasattr(attn, name):
            setattr(attn, name, value)
    _slice(mlp.gate_proj, rows=lp.channels)
    _slice(mlp.up_proj, rows=lp.channels)
    _slice(mlp.down_proj, cols=lp.channels)
    if hasattr(mlp, "intermediate_size"):
        mlp.intermediate_size = len(lp.channels)


def pruned_copy(model: Any, plan: PruningPlan, stats: Stats | None = None) -> Any:
    """A sliced deep copy of ``model`` (the base stays dense)."""
    import copy

    return apply_plan(copy.deepcopy(model), plan, stats)


def count_params(model: Any) -> int:
    """Attention + FFN Linear weights actually present (what real sparsity is measured on)."""
    total = 0
    for layer in decoder_layers(model):
        for lin in (*_attn_linears(layer), layer.mlp.gate_proj, layer.mlp.up_proj):
            total += lin.weight.numel()
        total += layer.mlp.down_proj.weight.numel()
    return total


def _attn_linears(layer: Any) -> tuple[Any, ...]:
    a = layer.self_attn
    return (a.q_proj, a.k_proj, a.v_proj, a.o_proj)


# ---------------------------------------------------------------------------------- files


def save_pruned(model: Any, tokenizer: Any, plan: PruningPlan, out_dir: str | Path) -> Path:
    """Write a reloadable pruned model directory atomically (see the module docstring)."""
    from safetensors.torch import save_file

    from ..runtime import _atomic_dir

    out = Path(out_dir).expanduser()
    if out.exists() and not (out / PLAN_FILE).is_file():
        raise InvalidInput(f"{out} exists and is not a pruned model directory")
    with _atomic_dir(out) as tmp:
        state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
        if getattr(model.config, "tie_word_embeddings", False):
            state.pop("lm_head.weight", None)  # tied: rebuilt from the embeddings on load
        save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        model.config.save_pretrained(tmp)
        if getattr(model, "generation_config", None) is not None:
            model.generation_config.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        plan.save(tmp / PLAN_FILE)
    return out


def load_pruned_model(model_dir: str | Path, dtype: Any = None) -> Any:
    """The pruned model saved by :func:`save_pruned` (a transformers model, eval mode)."""
    import torch
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoModelForCausalLM

    from ..runtime import _no_init_weights

    path = Path(model_dir).expanduser()
    plan = PruningPlan.load(path / PLAN_FILE)
    config = AutoConfig.from_pretrained(str(path), local_files_only=True)
    with _no_init_weights():
        model = AutoModelForCausalLM.from_config(config)
    model.to(dtype or torch.float32)
    for layer, lp in zip(decoder_layers(model), plan.layers, strict=True):
        slice_layer(layer, lp, plan.geometry)
        if plan.bias:
            _add_zero_bias(layer.self_attn.o_proj)
            _add_zero_bias(layer.mlp.down_proj)
    state = load_file(str(path / "model.safetensors"))
    tied = getattr(config, "tie_word_embeddings", False)
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shape mismatches
        raise InvalidInput(f"{path} does not match its pruning plan: {exc}") from exc
    missing = [k for k in missing if not (tied and k == "lm_head.weight")]
    if missing or unexpected:
        raise InvalidInput(
            f"{path} does not match its pruning plan: missing {missing[:3]}, "
            f"unexpected {unexpected[:3]}"
        )
    if tied:
        model.tie_weights()
    model.eval()
    return model
