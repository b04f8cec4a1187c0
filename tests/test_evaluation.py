"""The zero-shot evaluation harness: packed scoring equals per-choice forwards, metrics follow
their definitions, generic JSONL tasks load, perplexity is exp(mean NLL). Tiny random Llama."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from _data import needs_task_data

from memos_integrations import InvalidInput
from memos_integrations.models import evaluation as ev
from memos_integrations.models.runtime import LocalModel

torch = pytest.importorskip("torch")

ROWS = [
    {"context": "the quick brown", "choices": ["fox", "dog jumps", "one two"], "label": 0},
    {"context": "Paris is the capital of", "choices": ["France", "Germany"], "label": 0},
    {"context": "one two three", "choices": ["four five", "nine"], "label": 1, "calibration": "x"},
]


@pytest.fixture
def generic(tmp_path: Path) -> Path:
    path = tmp_path / "toy.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in ROWS) + "\n")
    return path


def _naive(model, tokenizer, item: ev.MCItem) -> list[float]:
    """Reference: one full forward per choice, summing log-probs of the continuation."""
    out = []
    for context, continuation in zip(item.contexts, item.continuations, strict=True):
        ctx, cont = ev._encode_pair(tokenizer, context, continuation)
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.tensor([ctx + cont])).logits[0].float(), -1)
        out.append(sum(float(logp[len(ctx) - 1 + i, t]) for i, t in enumerate(cont)))
    return out


def test_packed_scores_equal_separate_forwards(tiny: LocalModel, generic: Path) -> None:
    items = ev.load_task(str(generic)).items
    wino = ev._winogrande(
        {"sentence": "the fox saw _ jump over", "option1": "one", "option2": "two", "answer": "2"}
    )
    items = [*items, wino]
    # A small token budget forces several batches with padding.
    scores = ev.score_items(tiny.model, tiny.tokenizer, items, batch_tokens=40)
    for item, (lls, counts) in zip(items, scores, strict=True):
        assert lls == pytest.approx(_naive(tiny.model, tiny.tokenizer, item), abs=1e-4)
        assert len(counts) == len(item.continuations) and min(counts) >= 1


def test_metrics_follow_their_definitions(tiny: LocalModel, generic: Path) -> None:
    task = ev.load_task(str(generic))
    assert task.name == "toy" and task.chance == pytest.approx((1 / 3 + 1 / 2 + 1 / 2) / 3)
    assert task.items[2].calibration == "x" and task.items[0].calibration == "the quick brown fox"
    result = ev.evaluate_task(tiny.model, tiny.tokenizer, task, n_boot=200)
    scores = ev.score_items(tiny.model, tiny.tokenizer, task.items)
    acc = [
        max(range(len(s[0])), key=s[0].__getitem__) == it.label
        for it, s in zip(task.items, scores, strict=True)
    ]
    assert result["acc"] == pytest.approx(100 * sum(acc) / 3)
    gold = [-s[0][it.label] / s[1][it.label] for it, s in zip(task.items, scores, strict=True)]
    assert result["gold_nll"] == pytest.approx(sum(gold) / 3)
    lo, hi = result["acc_ci"]
    assert 0 <= lo <= result["acc"] <= hi <= 100
    assert result["n"] == 3 and len(result["items"]["correct"]) == 3


def test_long_evaluations_show_progress_unless_told_not_to(
    tiny: LocalModel, generic: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    task = ev.load_task(str(generic))
    scores = ev.evaluate_task(tiny.model, tiny.tokenizer, task, n_boot=10)
    assert "toy" in (bar := capsys.readouterr().err) and "3/3" in bar
    quiet = ev.evaluate_tasks(tiny.model, tiny.tokenizer, [str(generic)], n_boot=10, progress=False)
    assert capsys.readouterr().err == "" and quiet["toy"]["acc"] == scores["acc"]
    text = tmp_path / "t.txt"
    text.write_text("the quick brown fox jumps over the lazy dog. " * 20)
    ev.perplexity(tiny.model, tiny.tokenizer, text, window=16, max_windows=3)
    assert "perplexity t.txt" in (bar := capsys.readouterr().err) and "3/3" in bar
    ev.perplexity(tiny.model, tiny.tokenizer, text, window=16, max_windows=3, progress=False)
    assert capsys.readouterr().err == ""


def test_bootstrap_interval() -> None:
    assert ev.bootstrap_ci([1.0] * 50) == (1.0, 1.0)
    lo, hi = ev.bootstrap_ci([0.0, 1.0] * 100, seed=1)
    assert 0.4 < lo < 0.5 < hi < 0.6


def test_perplexity_is_exp_of_the_mean_nll(tiny: LocalModel, tmp_path: Path) -> None:
    text = tmp_path / "t.txt"
    text.write_text("the quick brown fox jumps over the lazy dog. " * 20)
    res = ev.perplexity(tiny.model, tiny.tokenizer, text, window=16, max_windows=3)
    assert res["windows"] == 3 and res["tokens"] == 3 * 15 and res["window"] == 16
    assert res["ppl"] == pytest.approx(math.exp(res["nll"]))
    ids = tiny.tokenizer(text.read_text(), add_special_tokens=False)["input_ids"][:16]
    with torch.no_grad():
        logp = torch.log_softmax(tiny.model(torch.tensor([ids])).logits[0], -1)
    first = -sum(float(logp[i, ids[i + 1]]) for i in range(15)) / 15
    one = ev.perplexity(tiny.model, tiny.tokenizer, text, window=16, max_windows=1)
    assert one["nll"] == pytest.approx(first, rel=1e-5)
    # the per-window sums are what a caller mixes (e.g. windows served with and without an
    # adapter) and the windows are the ones ppl_windows cuts
    assert res["window_tokens"] == [15, 15, 15]
    assert res["window_nll"][0] == pytest.approx(15 * first, rel=1e-5)
    assert sum(res["window_nll"]) / 45 == pytest.approx(res["nll"])
    assert ev.ppl_windows(tiny.tokenizer, text, 16, 3)[0] == ids


def test_bad_tasks_are_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="unknown task"):
        ev.load_task("no_such_task")
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"context": "a", "choices": ["b", "c"], "label": 2}) + "\n")
    with pytest.raises(InvalidInput, match="row 0"):
        ev.load_task(str(bad))
    with pytest.raises(InvalidInput):
        ev.perplexity(None, None, tmp_path / "missing.txt")


@needs_task_data
def test_builtin_formats_and_fixed_subsets() -> None:
    a = ev.load_task("arc_challenge", n=20, seed=0)
    b = ev.load_task("arc_challenge", n=20, seed=0)
    assert a.indices == b.indices and len(a.items) == 20
    assert a.items[0].prompt.startswith("Question: ") and a.items[0].prompt.endswith("\nAnswer:")
    boolq = ev.load_task("boolq", n=5).items[0]
    assert boolq.continuations == (" no", " yes") and boolq.prompt.endswith("?\nAnswer:")
    wino = ev.load_task("winogrande", n=5).items[0]
    assert wino.continuations[0] == wino.continuations[1] and wino.contexts[0] != wino.contexts[1]
    # Social IQa calibrates on its first 300 rows and evaluates on the rest.
    siqa_eval = [it.prompt for it in ev.load_task("social_iqa").items]
    siqa_train = ev.prompts("social_iqa", "train")
    assert len(siqa_train) == 300 and len(siqa_eval) == 1954 - 300
    assert siqa_eval[0] != siqa_train[0]
    texts = ev.calibration_texts("piqa", n=10)
    assert len(texts) == 10 and all(isinstance(t, str) and t for t in texts)
    # the same items as the scorer reads them: its prompt, then the gold answer
    as_prompt = ev.calibration_texts("piqa", n=10, as_prompt=True)
    for plain, prompt in zip(texts, as_prompt, strict=True):
        question, _, answer = prompt.partition("\nAnswer: ")
        assert question.startswith("Question: ") and plain.startswith(question[10:])
        assert plain.endswith(answer) and answer


@needs_task_data
def test_heldout_items_never_calibrate() -> None:
    calibration = set(ev.calibration_texts("social_iqa", n=200))
    held = ev.heldout_task("social_iqa", n=500, calibration=200)
    assert len(held.items) == 100  # its 300-row split minus the 200 that calibrate
    assert not calibration & {it.calibration for it in held.items}
    assert (
        ev.heldout_task("social_iqa", n=50).indices == ev.heldout_task("social_iqa", n=50).indices
    )
    with pytest.raises(InvalidInput, match="outside its calibration"):
        ev.heldout_task("social_iqa", n=5, calibration=300)
