"""Training a LoRA adapter with ``peft`` on the CPU, within a step and time budget.

The serving model is never touched: training runs on a copy (``copy.deepcopy``; 0.5 GB for
SmolLM2-135M), wrapped by peft, and only the low-rank matrices come back. Loss is the
cross-entropy of the answer tokens (the prompt is context, not target). The forgetting guard
is a KL term to the base model on replay examples: by default the base model's own answers to
unrelated questions, rendered with the chat's system message (self-distillation), and/or
general text. The adapter may change what the model says about the user, and is pulled back
towards the base distribution everywhere else, in the context it is served in.
"""

from __future__ import annotations

import contextlib
import copy
import math
import re
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from ..core.errors import InvalidInput
from .parametric_data import Example

if TYPE_CHECKING:
    import torch

    from .runtime import LocalModel

IGNORE = -100


@dataclass(frozen=True)
class TrainConfig:
    """LoRA shape and the training budget (defaults fit SmolLM2-135M on two cores)."""

    rank: int = 16
    alpha: float = 16.0
    targets: tuple[str, ...] = (
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
        "gate_proj",
        "up_proj",
        "down_proj",
    )
    layers: float = 0.5  # share of the decoder layers (the top ones) that get adapters
    steps: int = 60
    batch_size: int = 16
    learning_rate: float = 2e-3
    # wall-clock budget of the whole promotion (replay generation and set-up included): a
    # step that would end past it is not started
    max_seconds: float = 170.0
    max_tokens: int = 96  # per example
    kl_weight: float = 1.0  # forgetting guard; 0 turns it off
    # second guard (AlphaEdit's null space, for LoRA): each adapted projection reads only the
    # input directions that hold this share of its input energy on the replay text, the
    # least-used ones, so the adapter barely acts on such text; 0 (the default) turns it off.
    # On SmolLM2, 0.3 keeps ~96% of the directions (it drops the few that every token fills)
    # and lowered the perplexity cost in one benchmark run, with a worse task NLL:
    # docs/benchmarks.md
    null_space: float = 0.0
    replay_batch: int = 4  # replay examples per step
    replay_tokens: int = 128  # per replay example (a chat replay holds the system message)
    replay_top: int = 256  # base-model tokens kept per replay position for the KL
    seed: int = 0

    def __post_init__(self) -> None:
        checks = {
            "rank": self.rank >= 1,
            "alpha": self.alpha > 0,
            "layers": 0 < self.layers <= 1,
            "steps": self.steps >= 1,
            "batch_size": self.batch_size >= 1,
            "learning_rate": 0 < self.learning_rate < 1,
            "max_seconds": self.max_seconds > 0,
            "max_tokens": self.max_tokens >= 8,
            "kl_weight": self.kl_weight >= 0,
            "null_space": 0 <= self.null_space < 1,
            "replay_batch": self.replay_batch >= 1,
            "replay_tokens": self.replay_tokens >= 8,
            "replay_top": self.replay_top >= 1,
            "targets": bool(self.targets) and all(isinstance(t, str) for t in self.targets),
        }
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            raise InvalidInput(f"invalid TrainConfig field(s): {', '.join(bad)}")

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["targets"] = list(self.targets)
        return out


@dataclass
class TrainResult:
    weights: dict[str, tuple[Any, Any]]  # module name -> (A [r, in], B [out, r])
    scale: float
    metrics: dict[str, Any]


def encode(model: LocalModel, ex: Example, max_tokens: int) -> tuple[list[int], list[int]]:
    """Token ids and labels (``IGNORE`` on the prompt) of one example."""
    if ex.messages:
        *question, answer = ex.messages
        prompt = model.apply_chat_template(list(question), add_generation_prompt=True)
        full = model.apply_chat_template(list(ex.messages), add_generation_prompt=False)
        if not full.startswith(prompt):
            raise InvalidInput("this model's chat template cannot separate an answer to train on")
        head, tail = model.encode(prompt), model.encode(full[len(prompt) :])
        if not tail:
            raise InvalidInput(f"empty answer in a training example: {answer!r}")
    else:
        bos = getattr(model.tokenizer, "bos_token_id", None)
        head, tail = ([bos] if bos is not None else []), model.encode(ex.text)
    if len(head) + min(len(tail), 4) > max_tokens:
        raise InvalidInput(
            f"a training example's prompt is {len(head)} tokens, too long for "
            f"TrainConfig.max_tokens={max_tokens} (shorter instructions, or raise max_tokens)"
        )
    ids = (head + tail)[:max_tokens]
    labels = ([IGNORE] * len(head) + tail)[:max_tokens]
    return ids, labels


def _pad(rows: Sequence[tuple[list[int], list[int]]], pad: int) -> tuple[Any, Any, Any]:
    import torch

    width = max(len(ids) for ids, _ in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for n, (i, lab) in enumerate(rows):
        ids[n, : len(i)] = torch.tensor(i)
        labels[n, : len(lab)] = torch.tensor(lab)
        mask[n, : len(i)] = 1
    return ids, labels, mask


def _logits_at(net: Any, ids: Any, mask: Any, where: Any) -> torch.Tensor:
    """Logits at the positions ``where`` marks: the LM head runs on those rows only."""
    decoder = getattr(net, "get_decoder", lambda: None)()
    head = net.get_output_embeddings()
    if decoder is None or head is None:
        return net(input_ids=ids, attention_mask=mask).logits[where]
    hidden = decoder(input_ids=ids, attention_mask=mask).last_hidden_state
    return head(hidden[where])


class _Reached(Exception):
    """Raised by a hook to end a forward pass at the layer whose input it wanted."""


class _Runner:
    """Rows (token ids, labels) -> logits at their answer positions, for one network.

    With a *split* the frozen layers below the first adapted one run once per row, before
    training (their output cannot change), and every step runs only the adapted top layers
    from those cached hidden states: about half of a step's forward pass saved. The split is
    used only after it reproduced the full forward pass on a training row.
    """

    def __init__(self, net: Any, first: int, pad: int) -> None:
        self.net, self.first, self.pad = net, first, pad
        self.decoder = getattr(net, "get_decoder", lambda: None)()
        self.head = net.get_output_embeddings()
        self.split = False
        self.hidden: dict[int, Any] = {}  # id(row ids list) -> cached hidden [len - 1, d]
        self.fed: Any = None  # the last call's input positions that have a real next token

    def logits(self, rows: Sequence[tuple[list[int], list[int]]]) -> tuple[Any, Any]:
        """``(logits, target ids)`` at the answer positions of ``rows``, row-major."""
        ids, labels, mask = _pad(rows, self.pad)
        where = labels[:, 1:] != IGNORE
        self.fed = mask[:, 1:].bool()  # positions that predict a real token
        if self.split:
            hidden = _stack([self.hidden[id(r[0])] for r in rows], ids.shape[1] - 1)
            out = self._top(hidden, mask[:, :-1], where)
        else:
            out = _logits_at(self.net, ids[:, :-1], mask[:, :-1], where)
        return out, labels[:, 1:][where]

    def try_split(self, rows: Sequence[tuple[list[int], list[int]]]) -> bool:
        """Cache the frozen bottom's hidden states of ``rows`` and switch to the split, if
        this network has a plain layer stack and the split reproduces the full logits."""
        import torch

        layers = getattr(self.decoder, "layers", None)
        plain = isinstance(layers, torch.nn.ModuleList) and len(layers) > self.first
        if self.first < 1 or self.head is None or not plain:
            return False
        caught: list[Any] = []

        def catch(_module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            # the input of the first adapted layer is all we need: stop the forward there
            caught.append(args[0] if args else kwargs["hidden_states"])
            raise _Reached

        hook = layers[self.first].register_forward_pre_hook(catch, with_kwargs=True)
        try:
            with torch.no_grad():
                for start in range(0, len(rows), 8):
                    group = rows[start : start + 8]
                    ids, _, mask = _pad(group, self.pad)
                    inputs = {"input_ids": ids[:, :-1], "attention_mask": mask[:, :-1]}
                    caught.clear()
                    with contextlib.suppress(_Reached):
                        self.decoder(**inputs, use_cache=False)
                    if not caught:
                        self.hidden = {}
                        return False
                    for n, (row_ids, _) in enumerate(group):
                        self.hidden[id(row_ids)] = caught[0][n, : len(row_ids) - 1].clone()
        finally:
            hook.remove()
        with torch.no_grad():
            full, _ = self.logits(rows[:1])
            self.split = True
            split, _ = self.logits(rows[:1])
        if not torch.allclose(full, split, rtol=1e-3, atol=1e-3):
            self.split, self.hidden = False, {}
        return self.split

    def _top(self, hidden: Any, mask: Any, where: Any) -> Any:
        import torch

        layers = self.decoder.layers
        self.decoder.layers = torch.nn.ModuleList(list(layers)[self.first :])
        try:  # the stack runs from the given hidden states (inputs_embeds) upwards
            out = self.decoder(inputs_embeds=hidden, attention_mask=mask, use_cache=False)
        finally:
            self.decoder.layers = layers
        return self.head(out.last_hidden_state[where])


def _stack(hidden: Sequence[Any], width: int) -> Any:

    out = hidden[0].new_zeros((len(hidden), width, hidden[0].shape[-1]))
    for n, h in enumerate(hidden):
        out[n, : h.shape[0]] = h
    return out


def _base_targets(
    runner: _Runner, rows: Sequence[tuple[list[int], list[int]]], top: int
) -> list[tuple[Any, Any]]:
    """Per replay row: the base model's ``top`` most likely next tokens (ids, renormalised
    log-probabilities) at each answer position. Top-k keeps the targets small (the full
    distribution is 49k floats per position) and holds nearly all of the probability mass."""
    import torch

    out = []
    with torch.no_grad():
        for start in range(0, len(rows), 8):
            group = rows[start : start + 8]
            logits, _ = runner.logits(group)
            logp = torch.log_softmax(logits.float(), -1)
            values, index = logp.topk(min(top, logp.shape[-1]), dim=-1)
            values = torch.log_softmax(values, dim=-1)
            counts = [sum(lab != IGNORE for lab in labels[1:]) for _, labels in group]
            for v, i in zip(values.split(counts), index.split(counts), strict=True):
                out.append((i, v))
    return out


def self_answers(model: LocalModel, prompts: Sequence[str], max_new_tokens: int) -> list[str]:
    """The model's greedy answers to rendered chat ``prompts``, in one padded batch."""
    import torch

    tokenizer = model.tokenizer
    pad = getattr(tokenizer, "pad_token_id", None)
    pad = pad if pad is not None else tokenizer.eos_token_id
    encoded = [model.encode(p) for p in prompts]
    width = max(len(e) for e in encoded)
    ids = torch.full((len(encoded), width), pad, dtype=torch.long)
    mask = torch.zeros((len(encoded), width), dtype=torch.long)
    for n, e in enumerate(encoded):  # left padding: every answer starts at the same column
        ids[n, width - len(e) :] = torch.tensor(e)
        mask[n, width - len(e) :] = 1
    with torch.inference_mode():
        out = model.model.generate(
            input_ids=ids,
            attention_mask=mask,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=pad,
        )
    return [tokenizer.decode(row[width:], skip_special_tokens=True).strip() for row in out.tolist()]


def train(
    model: LocalModel,
    examples: Sequence[Example],
    replay: Sequence[Example],
    config: TrainConfig,
    *,
    progress: bool = True,
    started: float | None = None,
) -> TrainResult:
    """Train a LoRA adapter on ``examples``; ``replay`` examples anchor the base behaviour
    (the KL runs on their answer positions: all of a plain text, the answer of a chat).
    ``started``: the ``time.perf_counter()`` at which ``config.max_seconds`` began (default:
    now), so that work done before training counts against the budget."""
    import torch
    from peft import LoraConfig, get_peft_model
    from tqdm.auto import tqdm

    if not examples:
        raise InvalidInput("no training examples")
    start = time.perf_counter() if started is None else started
    pad = getattr(model.tokenizer, "pad_token_id", None) or 0
    rows = [encode(model, ex, config.max_tokens) for ex in examples]
    replay_rows = [encode(model, ex, config.replay_tokens) for ex in replay]
    replay_rows = [r for r in replay_rows if sum(lab != IGNORE for lab in r[1][1:]) >= 1]
    use_kl = config.kl_weight > 0 and bool(replay_rows)
    if config.null_space and not replay_rows:
        raise InvalidInput("TrainConfig.null_space needs replay text to measure input energy on")

    net = copy.deepcopy(model.model)  # the serving model keeps answering meanwhile
    net.requires_grad_(False)
    net.eval()  # no dropout: the adapter's effect is deterministic
    n_layers = int(getattr(net.config, "num_hidden_layers", 0) or 0)
    if n_layers < 1:
        raise InvalidInput("the model config does not say how many decoder layers it has")
    first = n_layers - max(1, round(n_layers * config.layers))
    runner = _Runner(net, first, pad)
    runner.try_split([*rows, *replay_rows])
    present = {name.rsplit(".", 1)[-1] for name, _ in net.named_modules()}
    targets = [t for t in config.targets if t in present]
    if not targets:
        raise InvalidInput(f"none of the LoRA targets {list(config.targets)} are in this model")
    adapted = {
        name
        for name, _ in net.named_modules()
        if name.rsplit(".", 1)[-1] in targets and _layer_of(name) >= first
    }
    with _input_energy(runner, adapted if config.null_space else set()) as energy:
        # one pass over the replay rows gives the KL's targets and the inputs' energy
        measure = use_kl or config.null_space > 0
        base = _base_targets(runner, replay_rows, config.replay_top) if measure else []
    quiet = {name: _quiet_directions(e, config.null_space) for name, e in energy.items()}
    lora = LoraConfig(
        r=config.rank,
        lora_alpha=config.alpha,
        target_modules=targets,
        layers_to_transform=list(range(first, n_layers)),
        lora_dropout=0.0,
        bias="none",
    )
    with torch.random.fork_rng():  # LoRA's random init from the seed, not the global RNG
        torch.manual_seed(config.seed)
        peft_model = get_peft_model(net, lora)
    confined = _confinements(peft_model, quiet)
    _confine(confined)
    trainable = [p for p in peft_model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=config.learning_rate, weight_decay=0.0)
    warmup = max(1, config.steps // 10)

    def lr_at(step: int) -> float:  # linear warm-up, cosine decay to a tenth
        if step < warmup:
            return (step + 1) / warmup
        t = (step - warmup) / max(1, config.steps - warmup)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_at)
    gen = torch.Generator().manual_seed(config.seed)
    order: list[int] = []
    replay_order: list[int] = []
    losses: list[float] = []
    kls: list[float] = []
    step, step_seconds = 0, 0.0  # the slowest step so far predicts the next one
    with tqdm(total=config.steps, desc="training adapter", disable=not progress) as bar:
        while step < config.steps:
            step_start = time.perf_counter()
            if step_start - start + step_seconds > config.max_seconds:
                break
            if len(order) < config.batch_size:
                order += torch.randperm(len(rows), generator=gen).tolist()
            batch, order = order[: config.batch_size], order[config.batch_size :]
            logits, target = runner.logits([rows[i] for i in batch])
            loss = torch.nn.functional.cross_entropy(logits.float(), target)
            losses.append(loss.item())
            if use_kl:
                if len(replay_order) < config.replay_batch:
                    replay_order += torch.randperm(len(replay_rows), generator=gen).tolist()
                picks = replay_order[: config.replay_batch]
                replay_order = replay_order[config.replay_batch :]
                kl = _kl(runner, [replay_rows[i] for i in picks], [base[i] for i in picks])
                kls.append(kl.item())
                loss = loss + config.kl_weight * kl
            if not torch.isfinite(loss):
                raise InvalidInput(
                    f"adapter training diverged at step {step} (loss {loss.item()}); "
                    "lower TrainConfig.learning_rate"
                )
            loss.backward()
            torch.nn.utils.clip_grad_norm_(trainable, 1.0)
            optimizer.step()
            _confine(confined)
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            step_seconds = max(step_seconds, time.perf_counter() - step_start)
            bar.update(1)
            bar.set_postfix(loss=f"{losses[-1]:.3f}")
    if not step:
        raise InvalidInput(
            f"TrainConfig.max_seconds={config.max_seconds} ran out before the first training "
            f"step ({time.perf_counter() - start:.0f} s of set-up): raise it"
        )
    weights, scale = _extract(peft_model)
    tail = max(1, min(5, len(losses)))
    metrics = {
        "steps": step,
        "stopped_by": "steps" if step >= config.steps else "time",
        "seconds": round(time.perf_counter() - start, 2),
        "examples": len(rows),
        "loss_first": round(losses[0], 4),
        "loss_last": round(sum(losses[-tail:]) / tail, 4),
        "kl_last": round(sum(kls[-tail:]) / tail, 5) if kls else None,
        "replay_examples": len(replay_rows),
        "trainable_params": sum(p.numel() for p in trainable),
        "layers": [first, n_layers],
        "split": runner.split,
        "targets": targets,
        "null_space_dims": (
            round(sum(v.shape[1] / v.shape[0] for v in quiet.values()) / len(quiet), 3)
            if quiet
            else None
        ),
    }
    return TrainResult(weights, scale, metrics)


def _layer_of(name: str) -> int:
    """The decoder layer a module belongs to (``model.layers.12.mlp.up_proj`` -> 12), or -1."""
    found = re.search(r"\.layers\.(\d+)\.", f".{name}")
    return int(found.group(1)) if found else -1


@contextlib.contextmanager
def _input_energy(runner: _Runner, names: set[str]) -> Iterator[dict[str, Any]]:
    """``sum x x^T`` over the inputs of the modules ``names`` at the real (unpadded)
    positions of whatever ``runner`` runs while the block runs."""
    sums: dict[str, Any] = {}

    def recorder(name: str) -> Any:
        def record(_module: Any, args: tuple[Any, ...]) -> None:
            x = args[0].detach()
            x = x[runner.fed].float() if x.shape[:-1] == runner.fed.shape else x.flatten(0, -2)
            sums[name] = sums[name] + x.T @ x if name in sums else x.T @ x

        return record

    modules = dict(runner.net.named_modules())
    handles = [modules[n].register_forward_pre_hook(recorder(n)) for n in sorted(names)]
    try:
        yield sums
    finally:
        for handle in handles:
            handle.remove()


def _quiet_directions(energy: Any, share: float) -> Any:
    """Orthonormal columns spanning the least-used input directions that together hold
    ``share`` of the input energy: a LoRA reading only these barely acts on such inputs."""
    import torch

    values, vectors = torch.linalg.eigh(energy)  # ascending
    values = values.clamp(min=0)
    held = values.cumsum(0) / values.sum().clamp(min=1e-30)
    return vectors[:, : int((held <= share).sum())].contiguous()


def _confinements(peft_model: Any, quiet: dict[str, Any]) -> list[tuple[Any, Any]]:
    """(LoRA ``A`` weight, its module's quiet directions V) for every confined module."""
    prefix = "base_model.model."
    pairs = []
    for name, module in peft_model.named_modules():
        lora_a = getattr(module, "lora_A", None)
        v = quiet.get(name.removeprefix(prefix))
        if lora_a is not None and "default" in lora_a and v is not None:
            pairs.append((lora_a["default"].weight, v))
    return pairs


def _confine(pairs: Sequence[tuple[Any, Any]]) -> None:
    """Project every LoRA ``A`` onto its quiet directions (``A <- A V V^T``): after the
    initialisation and after each optimizer step."""
    import torch

    with torch.no_grad():
        for weight, v in pairs:
            weight.copy_((weight @ v) @ v.T)


def _kl(
    runner: _Runner, rows: Sequence[tuple[list[int], list[int]]], base: Sequence[tuple[Any, Any]]
) -> torch.Tensor:
    """KL(base top-k || adapted) per answer token over a batch of replay rows (one forward)."""
    import torch

    logits, _ = runner.logits(rows)
    logp = torch.log_softmax(logits.float(), dim=-1)
    index = torch.cat([i for i, _ in base])
    target = torch.cat([v for _, v in base])
    return (target.exp() * (target - logp.gather(-1, index))).sum(-1).mean()


def _extract(peft_model: Any) -> tuple[dict[str, tuple[Any, Any]], float]:
    """The trained low-rank matrices by the *base* model's module names, and their scale."""
    weights: dict[str, tuple[Any, Any]] = {}
    scales = set()
    prefix = "base_model.model."
    for name, module in peft_model.named_modules():
        lora_a = getattr(module, "lora_A", None)
        if lora_a is None or "default" not in lora_a:
            continue
        a = lora_a["default"].weight.detach().clone().contiguous()
        b = module.lora_B["default"].weight.detach().clone().contiguous()
        weights[name.removeprefix(prefix)] = (a, b)
        scales.add(float(module.scaling["default"]))
    if len(scales) != 1:
        raise InvalidInput(f"expected one LoRA scale, found {sorted(scales)}")
    return weights, scales.pop()
