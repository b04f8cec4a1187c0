"""Zero-shot evaluation of a causal LM: lm-eval-style multiple choice and WikiText-2 perplexity.

Public API (torch/transformers are imported inside the functions)::

    from memos_integrations.models import evaluation as ev
    res = ev.evaluate_tasks(model, tokenizer, ["piqa", "arc_easy"], n=300, seed=0)
    res["piqa"]["acc"], res["piqa"]["acc_ci"], res["piqa"]["gold_nll"]
    ev.perplexity(model, tokenizer, window=512)        # WikiText-2 test, non-overlapping windows

Tasks are the seven files of ``$MEMOS_DATA_DIR/tasks`` (:data:`TASKS`) or any JSONL file of
``{"context": str, "choices": [str, ...], "label": int, "calibration": str (optional)}`` lines.

Scoring follows lm-evaluation-harness: the continuation is ``" " + choice``; context and
continuation are tokenised the harness way (``enc(context + continuation)`` split after
``enc(context)``), without special tokens. ``acc`` = argmax of the summed log-likelihood,
``acc_norm`` = argmax of log-likelihood / character length of the choice, ``gold_nll`` = mean
negative log-likelihood per token of the correct continuation (informative where accuracy sits
at chance). For speed the choices of one item are packed into one sequence that shares the
common token prefix once (a tree-shaped attention mask with explicit positions); scores equal
separate per-choice forwards up to float rounding (tested).
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core.config import data_dir
from ..core.errors import InvalidInput

__all__ = [
    "TASKS",
    "MCItem",
    "Task",
    "bootstrap_ci",
    "calibration_texts",
    "evaluate_task",
    "evaluate_tasks",
    "heldout_task",
    "load_task",
    "perplexity",
    "score_items",
    "summarize",
]

TASKS = (
    "arc_easy",
    "arc_challenge",
    "boolq",
    "openbookqa",
    "piqa",
    "social_iqa",
    "winogrande",
)
# Social IQa ships only its dev split: its first rows calibrate, the rest are evaluated.
_SIQA_CALIBRATION_ROWS = 300


@dataclass(frozen=True)
class MCItem:
    """One multiple-choice question: a context per choice (usually all equal) and a continuation
    per choice; ``label`` is the gold index; ``calibration`` the question + gold answer text."""

    contexts: tuple[str, ...]
    continuations: tuple[str, ...]
    label: int
    norm_lengths: tuple[int, ...]
    calibration: str | None = None

    @property
    def prompt(self) -> str:
        """The text a router sees: the (first) context, without any answer."""
        return self.contexts[0]


@dataclass
class Task:
    name: str
    items: list[MCItem]
    chance: float
    metrics: tuple[str, ...] = ("acc", "acc_norm")
    source: str = ""
    indices: list[int] = field(default_factory=list)


# ------------------------------------------------------------------------------ task formats


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        raise InvalidInput(f"task file {path} does not exist (set MEMOS_DATA_DIR?)")
    rows = []
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except ValueError as exc:
                raise InvalidInput(f"{path}:{lineno}: not JSON ({exc})") from exc
    return rows


def _mc(context: str, choices: Sequence[str], label: int, calibration: str | None) -> MCItem:
    return MCItem(
        contexts=tuple(context for _ in choices),
        continuations=tuple(" " + c for c in choices),
        label=label,
        norm_lengths=tuple(max(len(c), 1) for c in choices),
        calibration=calibration,
    )


def _lettered(row: dict[str, Any], template: str, key: str = "question") -> MCItem:
    """ARC / OpenBookQA / Social IQa rows: lettered choices, ``answerKey`` names the gold."""
    texts = list(row["choices"]["text"])
    label = list(row["choices"]["label"]).index(row["answerKey"])
    q = row[key]
    fact = row.get("fact1") or ""  # OpenBookQA's supporting fact joins its calibration text
    return _mc(template.format(q=q), texts, label, f"{fact} {q} {texts[label]}".strip())


def _arc(row: dict[str, Any]) -> MCItem:
    return _lettered(row, "Question: {q}\nAnswer:")


def _obqa(row: dict[str, Any]) -> MCItem:
    return _lettered(row, "{q}", key="question_stem")


def _siqa(row: dict[str, Any]) -> MCItem:
    return _lettered(row, "Q: {q}\nA:")


def _boolq(row: dict[str, Any]) -> MCItem:
    label = int(bool(row["answer"]))
    ctx = f"{row['passage']}\nQuestion: {row['question']}?\nAnswer:"
    calib = f"{row['passage']} {row['question']}? {'Yes' if label else 'No'}"
    return _mc(ctx, ["no", "yes"], label, calib)


def _piqa(row: dict[str, Any]) -> MCItem:
    sols = [row["sol1"], row["sol2"]]
    label = int(row["label"])
    return _mc(f"Question: {row['goal']}\nAnswer:", sols, label, f"{row['goal']} {sols[label]}")


def _winogrande(row: dict[str, Any]) -> MCItem:
    # lm-eval "partial scoring": one context per option, the shared rest is the continuation.
    sentence = row["sentence"]
    cut = sentence.index("_")
    options = [row["option1"], row["option2"]]
    target = " " + sentence[cut + 1 :].strip()
    label = int(row["answer"]) - 1
    return MCItem(
        contexts=tuple(sentence[:cut] + o for o in options),
        continuations=(target, target),
        label=label,
        norm_lengths=(max(len(target) - 1, 1),) * 2,
        calibration=sentence.replace("_", options[label], 1),
    )


def _generic(row: dict[str, Any]) -> MCItem:
    context, choices, label = row.get("context"), row.get("choices"), row.get("label")
    if not isinstance(context, str) or not isinstance(choices, list) or len(choices) < 2:
        raise InvalidInput("a generic task row needs 'context' (str) and 'choices' (>= 2 strs)")
    if not all(isinstance(c, str) and c for c in choices):
        raise InvalidInput("every choice must be a non-empty string")
    if not isinstance(label, int) or isinstance(label, bool) or not 0 <= label < len(choices):
        raise InvalidInput(f"'label' must be an index into choices, got {label!r}")
    calib = row.get("calibration")
    if calib is not None and not isinstance(calib, str):
        raise InvalidInput("'calibration' must be a string when given")
    return _mc(context, choices, label, calib or f"{context} {choices[label]}")


# name -> (eval file, train file or None, row parser, metrics)
_FORMATS: dict[str, tuple[str, str | None, Callable[[dict[str, Any]], MCItem], tuple[str, ...]]] = {
    "arc_easy": ("arc_easy.test.jsonl", "arc_easy.train.jsonl", _arc, ("acc", "acc_norm")),
    "arc_challenge": (
        "arc_challenge.test.jsonl",
        "arc_challenge.train.jsonl",
        _arc,
        ("acc", "acc_norm"),
    ),
    "boolq": ("boolq.validation.jsonl", "boolq.train.jsonl", _boolq, ("acc",)),
    "openbookqa": (
        "openbookqa.test.jsonl",
        "openbookqa.train.jsonl",
        _obqa,
        ("acc", "acc_norm"),
    ),
    "piqa": ("piqa.validation.jsonl", "piqa.train.jsonl", _piqa, ("acc", "acc_norm")),
    "social_iqa": ("social_iqa.validation.jsonl", None, _siqa, ("acc",)),
    "winogrande": (
        "winogrande.validation.jsonl",
        "winogrande_m.train.jsonl",
        _winogrande,
        ("acc",),
    ),
}


def _task_rows(name: str, split: str) -> tuple[str, list[MCItem], tuple[str, ...]]:
    """(task name, items, metrics) of a built-in task name or a generic JSONL path."""
    if split not in ("eval", "train"):
        raise InvalidInput(f"split must be 'eval' or 'train', got {split!r}")
    if name in _FORMATS:
        eval_file, train_file, parse, metrics = _FORMATS[name]
        tasks_dir = data_dir() / "tasks"
        if split == "train" and train_file is not None:
            rows = _read_jsonl(tasks_dir / train_file)
        else:
            rows = _read_jsonl(tasks_dir / eval_file)
            if train_file is None:  # Social IQa: split its only file
                cut = _SIQA_CALIBRATION_ROWS
                rows = rows[:cut] if split == "train" else rows[cut:]
        return name, [parse(r) for r in rows], metrics
    path = Path(name).expanduser()
    if path.suffix != ".jsonl" or not path.is_file():
        raise InvalidInput(
            f"unknown task {name!r}: use one of {', '.join(TASKS)} or a .jsonl file of "
            "{context, choices, label[, calibration]} rows"
        )
    items = []
    for i, row in enumerate(_read_jsonl(path)):
        try:
            items.append(_generic(row))
        except InvalidInput as exc:
            raise InvalidInput(f"{path} row {i}: {exc}") from exc
    # A generic file has one split; calibration reads its `calibration` texts.
    return path.stem, items, ("acc", "acc_norm")


def _subset(count: int, n: int | None, seed: int) -> list[int]:
    if n is None or n >= count:
        return list(range(count))
    if n < 1:
        raise InvalidInput(f"n must be >= 1, got {n}")
    return sorted(random.Random(seed).sample(range(count), n))


def load_task(name: str, n: int | None = None, seed: int = 0, split: str = "eval") -> Task:
    """A task's evaluation items: a fixed seeded subset of ``n`` (all when ``None``)."""
    task_name, items, metrics = _task_rows(name, split)
    if not items:
        raise InvalidInput(f"task {name!r} has no rows")
    idx = _subset(len(items), n, seed)
    chosen = [items[i] for i in idx]
    chance = sum(1.0 / len(it.continuations) for it in chosen) / len(chosen)
    return Task(task_name, chosen, chance, metrics, source=name, indices=idx)


def calibration_texts(
    name: str, n: int | None = 200, seed: int = 0, as_prompt: bool = False
) -> list[str]:
    """Question + gold answer texts from a task's train split (SEAP's calibration corpus);
    ``as_prompt``: the same items as the scorer reads them (gold context + gold answer)."""
    _, items, _ = _task_rows(name, "train")
    chosen = [it for it in items if it.calibration]
    chosen = [chosen[i] for i in _subset(len(chosen), n, seed)]
    if as_prompt:
        return [it.contexts[it.label] + it.continuations[it.label] for it in chosen]
    return [str(it.calibration) for it in chosen]


def heldout_task(name: str, n: int, calibration: int | Sequence[int] = 200, seed: int = 5) -> Task:
    """``n`` train-split items that :func:`calibration_texts` (``calibration`` texts, seed 0;
    or each of several counts) never returns: validation data for choosing settings without
    touching the eval split."""
    task_name, items, metrics = _task_rows(name, "train")
    with_text = [i for i, it in enumerate(items) if it.calibration]
    counts = [calibration] if isinstance(calibration, int) else list(calibration)
    calibrated = {with_text[i] for c in counts for i in _subset(len(with_text), c, 0)}
    rest = [i for i in range(len(items)) if i not in calibrated]
    if not rest:
        raise InvalidInput(f"task {name!r} has no train items outside its calibration texts")
    idx = [rest[i] for i in _subset(len(rest), n, seed)]
    chosen = [items[i] for i in idx]
    chance = sum(1.0 / len(it.continuations) for it in chosen) / len(chosen)
    return Task(task_name, chosen, chance, metrics, source=name, indices=idx)


def prompts(name: str, split: str = "train", n: int | None = None, seed: int = 0) -> list[str]:
    """The prompts (contexts without answers) of a task split, e.g. to train a router."""
    _, items, _ = _task_rows(name, split)
    return [items[i].prompt for i in _subset(len(items), n, seed)]


# ------------------------------------------------------------------------------ scoring


@dataclass
class _Packed:
    """One item as a packed token tree: a shared prefix, then one branch per choice."""

    item: int
    tokens: list[int]
    positions: list[int]
    branch_of: list[int]  # -1 for the shared prefix, else the choice index
    # per choice: (packed indices whose logits predict the continuation, the target tokens)
    targets: list[tuple[list[int], list[int]]]


def _encode_pair(tokenizer: Any, context: str, continuation: str) -> tuple[list[int], list[int]]:
    # lm-eval moves trailing spaces of the context onto the continuation, then splits enc(whole).
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces:
        continuation = context[-n_spaces:] + continuation
        context = context[:-n_spaces]
    whole = tokenizer(context + continuation, add_special_tokens=False)["input_ids"]
    ctx = tokenizer(context, add_special_tokens=False)["input_ids"]
    if not ctx:  # an empty context is scored after BOS/EOS, as the harness does
        start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else 0
        return [start], list(whole)
    return list(ctx), list(whole[len(ctx) :])


def _pack(index: int, item: MCItem, tokenizer: Any, max_length: int) -> _Packed:
    pairs = [
        _encode_pair(tokenizer, c, x)
        for c, x in zip(item.contexts, item.continuations, strict=True)
    ]
    fulls = [ctx + cont for ctx, cont in pairs]
    # Left-truncate over-long sequences (the harness keeps the end of the context).
    fulls = [f[-max_length:] for f in fulls]
    conts = [min(len(cont), len(f) - 1) for (_, cont), f in zip(pairs, fulls, strict=True)]
    # Share the longest common token prefix that stays inside every context.
    limit = min(len(f) - c for f, c in zip(fulls, conts, strict=True))
    shared = 0
    while shared < limit and all(f[shared] == fulls[0][shared] for f in fulls):
        shared += 1
    tokens = list(fulls[0][:shared])
    positions = list(range(shared))
    branch_of = [-1] * shared
    targets = []
    for b, (full, n_cont) in enumerate(zip(fulls, conts, strict=True)):
        offset = len(tokens)
        tokens.extend(full[shared:])
        positions.extend(range(shared, len(full)))
        branch_of.extend([b] * (len(full) - shared))

        def packed(logical: int, offset: int = offset) -> int:
            return logical if logical < shared else offset + logical - shared

        start = len(full) - n_cont
        targets.append(([packed(p - 1) for p in range(start, len(full))], full[start:]))
    return _Packed(index, tokens, positions, branch_of, targets)


def _batches(packed: list[_Packed], batch_tokens: int) -> Iterable[list[_Packed]]:
    order = sorted(packed, key=lambda p: len(p.tokens), reverse=True)
    batch: list[_Packed] = []
    for p in order:
        width = len(batch[0].tokens) if batch else len(p.tokens)
        if batch and width * (len(batch) + 1) > batch_tokens:
            yield batch
            batch = []
        batch.append(p)
    if batch:
        yield batch


def _forward_hidden(model: Any, input_ids: Any, mask: Any, positions: Any) -> Any:
    """Last hidden states of the decoder (the LM head runs only where a score is needed)."""
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else model.model
    out = decoder(input_ids=input_ids, attention_mask=mask, position_ids=positions, use_cache=False)
    return out.last_hidden_state


def score_items(
    model: Any,
    tokenizer: Any,
    items: Sequence[MCItem],
    *,
    batch_tokens: int = 4096,
    on_batch: Callable[[int], Any] | None = None,
) -> list[tuple[list[float], list[int]]]:
    """Per item: (summed log-likelihood per choice, continuation token count per choice);
    ``on_batch(k)`` after each batch of ``k`` items (a progress bar's ``update``)."""
    import torch

    max_length = int(getattr(model.config, "max_position_embeddings", 2048) or 2048)
    packed = [_pack(i, it, tokenizer, max_length) for i, it in enumerate(items)]
    out: list[tuple[list[float], list[int]]] = [([], []) for _ in items]
    head = model.get_output_embeddings()
    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    with torch.inference_mode():
        for batch in _batches(packed, batch_tokens):
            width = max(len(p.tokens) for p in batch)
            ids = torch.full((len(batch), width), pad, dtype=torch.long)
            pos = torch.zeros((len(batch), width), dtype=torch.long)
            allowed = torch.zeros((len(batch), 1, width, width), dtype=torch.bool)
            for row, p in enumerate(batch):
                n = len(p.tokens)
                ids[row, :n] = torch.tensor(p.tokens)
                pos[row, :n] = torch.tensor(p.positions)
                br = torch.tensor(p.branch_of)
                causal = torch.ones(n, n, dtype=torch.bool).tril()
                # a token sees the shared prefix and its own branch, causally
                same = (br[None, :] == -1) | (br[None, :] == br[:, None])
                allowed[row, 0, :n, :n] = causal & same
                allowed[row, 0, n:, n:] = torch.eye(width - n, dtype=torch.bool)  # padding
            mask = torch.zeros(allowed.shape, dtype=dtype).masked_fill(~allowed, float("-inf"))
            hidden = _forward_hidden(model, ids.to(device), mask.to(device), pos.to(device))
            rows, cols, tgts, owners = [], [], [], []
            for row, p in enumerate(batch):
                for choice, (where, target) in enumerate(p.targets):
                    rows.extend([row] * len(where))
                    cols.extend(where)
                    tgts.extend(target)
                    owners.extend([(p.item, choice)] * len(where))
            logits = head(hidden[torch.tensor(rows), torch.tensor(cols)]).float()
            logp = torch.log_softmax(logits, dim=-1)
            picked = logp[torch.arange(len(tgts)), torch.tensor(tgts, device=logp.device)].tolist()
            sums: dict[tuple[int, int], list[float]] = {}
            for owner, value in zip(owners, picked, strict=True):
                sums.setdefault(owner, []).append(value)
            for p in batch:
                lls = [math.fsum(sums[(p.item, c)]) for c in range(len(p.targets))]
                out[p.item] = (lls, [len(t) for _, t in p.targets])
            if on_batch is not None:
                on_batch(len(batch))
    return out


# ------------------------------------------------------------------------------ metrics


def bootstrap_ci(values: Sequence[float], n_boot: int = 1000, seed: int = 0) -> tuple[float, float]:
    """Percentile 95% interval of the mean, resampling items with replacement."""
    import numpy as np

    arr = np.asarray(values, dtype=np.float64)
    if arr.size == 0:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    means = arr[rng.integers(0, arr.size, size=(n_boot, arr.size))].mean(axis=1)
    return (float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5)))


def per_item(items: Sequence[MCItem], scores: Sequence[tuple[list[float], list[int]]]) -> dict:
    """Per-item correctness (acc, acc_norm) and gold NLL per token, as plain lists."""
    correct, correct_norm, gold_nll = [], [], []
    for item, (lls, counts) in zip(items, scores, strict=True):
        normed = [ll / n for ll, n in zip(lls, item.norm_lengths, strict=True)]
        correct.append(float(max(range(len(lls)), key=lls.__getitem__) == item.label))
        correct_norm.append(float(max(range(len(normed)), key=normed.__getitem__) == item.label))
        gold_nll.append(-lls[item.label] / max(counts[item.label], 1))
    return {"correct": correct, "correct_norm": correct_norm, "gold_nll": gold_nll}


def summarize(items: dict[str, list[float]], n_boot: int = 1000, seed: int = 0) -> dict:
    """acc / acc_norm (0-100) and gold NLL with bootstrap 95% CIs from :func:`per_item` lists."""
    out: dict[str, Any] = {"n": len(items["correct"])}
    for key, values, scale in (
        ("acc", items["correct"], 100.0),
        ("acc_norm", items["correct_norm"], 100.0),
        ("gold_nll", items["gold_nll"], 1.0),
    ):
        lo, hi = bootstrap_ci(values, n_boot, seed)
        out[key] = scale * math.fsum(values) / max(len(values), 1)
        out[f"{key}_ci"] = [scale * lo, scale * hi]
    return out


def evaluate_task(
    model: Any,
    tokenizer: Any,
    task: Task,
    *,
    batch_tokens: int = 4096,
    n_boot: int = 1000,
    progress: bool = True,
) -> dict[str, Any]:
    """Score one loaded :class:`Task` (a progress bar over its items unless ``progress`` is
    False); the result keeps the per-item lists under ``items``."""
    from tqdm.auto import tqdm

    with tqdm(total=len(task.items), desc=task.name, unit="item", disable=not progress) as bar:
        scores = score_items(
            model, tokenizer, task.items, batch_tokens=batch_tokens, on_batch=bar.update
        )
    items = per_item(task.items, scores)
    out = summarize(items, n_boot=n_boot)
    digest = hashlib.sha256(json.dumps(task.indices).encode()).hexdigest()[:12]
    out.update(
        chance=100.0 * task.chance, metrics=list(task.metrics), subset_sha=digest, items=items
    )
    return out


def evaluate_tasks(
    model: Any,
    tokenizer: Any,
    tasks: Sequence[str],
    n: int | None = 300,
    seed: int = 0,
    *,
    batch_tokens: int = 4096,
    n_boot: int = 1000,
    progress: bool = True,
) -> dict[str, dict[str, Any]]:
    """``{task: {acc, acc_ci, acc_norm, acc_norm_ci, gold_nll, gold_nll_ci, chance, n, items}}``
    on fixed seeded subsets of ``n`` items (accuracies in percent, 0-100); a progress bar per
    task unless ``progress`` is False."""
    if not tasks:
        raise InvalidInput("give at least one task")
    return {
        (task := load_task(name, n=n, seed=seed)).name: evaluate_task(
            model, tokenizer, task, batch_tokens=batch_tokens, n_boot=n_boot, progress=progress
        )
        for name in tasks
    }


# ------------------------------------------------------------------------------ perplexity


def ppl_windows(
    tokenizer: Any,
    path: str | Path | None = None,
    window: int = 512,
    max_windows: int | None = None,
) -> list[list[int]]:
    """A text file (default WikiText-2 raw test) read as one string, tokenised once and cut
    into non-overlapping windows of ``window`` tokens: what :func:`perplexity` scores."""
    if window < 2:
        raise InvalidInput(f"window must be >= 2, got {window}")
    src = Path(path) if path is not None else data_dir() / "tasks" / "wikitext2.test.raw"
    if not src.is_file():
        raise InvalidInput(f"perplexity text {src} does not exist")
    ids = tokenizer(src.read_text(encoding="utf-8"), add_special_tokens=False)["input_ids"]
    chunks = [ids[i : i + window] for i in range(0, len(ids), window)]
    chunks = [c for c in chunks if len(c) >= 2]
    return chunks[:max_windows] if max_windows is not None else chunks


def perplexity(
    model: Any,
    tokenizer: Any,
    path: str | Path | None = None,
    window: int = 512,
    *,
    max_windows: int | None = None,
    batch_size: int = 4,
    progress: bool = True,
) -> dict[str, Any]:
    """Perplexity of a text file (default WikiText-2 raw test) read as one string, tokenised
    once and scored in non-overlapping windows of ``window`` tokens (stride = window; the first
    token of each window is context only). ``max_windows`` scores only the first windows.
    ``window_nll`` / ``window_tokens``: each window's summed NLL and scored tokens. A progress
    bar over the windows unless ``progress`` is False."""
    import torch
    from tqdm.auto import tqdm

    chunks = ppl_windows(tokenizer, path, window, max_windows)
    name = Path(path).name if path is not None else "wikitext2.test.raw"
    device = next(model.parameters()).device
    sums: list[float] = []
    counts: list[int] = []
    bar = tqdm(total=len(chunks), desc=f"perplexity {name}", unit="window", disable=not progress)
    with torch.inference_mode(), bar:
        for start in range(0, len(chunks), batch_size):
            group = chunks[start : start + batch_size]
            width = max(len(c) for c in group)
            x = torch.zeros((len(group), width), dtype=torch.long)
            valid = torch.zeros((len(group), width), dtype=torch.long)
            for row, c in enumerate(group):
                x[row, : len(c)] = torch.tensor(c)
                valid[row, : len(c)] = 1
            logits = model(input_ids=x.to(device), attention_mask=valid.to(device)).logits.float()
            logp = torch.log_softmax(logits[:, :-1], dim=-1)
            nll = -logp.gather(-1, x[:, 1:, None].to(device))[..., 0]
            keep = valid[:, 1:].to(device).bool()
            sums += [float(nll[row][keep[row]].sum()) for row in range(len(group))]
            counts += [int(keep[row].sum()) for row in range(len(group))]
            bar.update(len(group))
    mean = math.fsum(sums) / max(sum(counts), 1)
    return {
        "ppl": math.exp(mean),
        "nll": mean,
        "tokens": sum(counts),
        "windows": len(chunks),
        "window": window,
        "file": name,
        "window_nll": sums,
        "window_tokens": counts,
    }
