"""SEAP / FLAP / Wanda-sp pruning: schedule accounting, GQA-valid slicing equal to masking,
reload through LocalModel.load, bias compensation, determinism, the router. Tiny random Llamas
(real transformers); one bounded test on the bundled SmolLM2 (9 query / 3 KV heads)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _data import needs_task_data

from memos_integrations import InvalidInput
from memos_integrations.models import evaluation as ev
from memos_integrations.models.runtime import LocalModel
from memos_integrations.models.seap import methods, prune, stats
from memos_integrations.models.seap import plan as pl
from memos_integrations.models.seap.router import TaskRouter

torch = pytest.importorskip("torch")

TEXTS_A = ["the quick brown fox jumps over the lazy dog"] * 3 + ["one two three four five six"]
TEXTS_B = ["Paris is the capital of France", "memory is what an assistant keeps"] * 2


@pytest.fixture(scope="module")
def gqa(tiny_dirs: tuple[Path, Path]):
    """A 6-layer tiny Llama with SmolLM2's grouping: 6 query heads over 2 KV heads."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(tiny_dirs[0])
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=48,
        intermediate_size=64,
        num_hidden_layers=6,
        num_attention_heads=6,
        num_key_value_heads=2,
        max_position_embeddings=128,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).eval()
    return model, tok


def _schedule(gqa_model) -> dict:
    return {"first": 1, "last": 1}


def _masked(model, plan: pl.PruningPlan):
    """The dense model with the removed heads' o_proj columns and channels' down columns zeroed:
    what the sliced model must compute."""
    import copy

    dense = copy.deepcopy(model)
    g = plan.geometry
    for layer, lp in zip(stats.decoder_layers(dense), plan.layers, strict=True):
        with torch.no_grad():
            for q in set(range(g.heads)) - set(lp.q_heads):
                layer.self_attn.o_proj.weight[:, q * g.head_dim : (q + 1) * g.head_dim] = 0
            for c in set(range(g.intermediate)) - set(lp.channels):
                layer.mlp.down_proj.weight[:, c] = 0
    return dense


def test_logistic_schedule_hits_the_target_over_all_layers() -> None:
    for target in (0.1, 0.2, 0.5):
        ratios = pl.logistic_ratios(30, target)
        assert sum(ratios) / 30 == pytest.approx(target, abs=1e-9)
        first = 4 if 0.15 < target <= 0.3 else 2  # the validated defaults (default_steepness)
        assert ratios[:first] == [0] * first and ratios[first] > 0 and ratios[-2:] == [0, 0]
        active = ratios[first:-2]
        assert active == sorted(active) and active[0] < active[-1]  # deeper layers lose more
    assert [pl.default_steepness(t) for t in (0.1, 0.2, 0.3, 0.5)] == [
        (0.8, 2),
        (5.0, 4),
        (5.0, 4),
        (0.8, 2),
    ]
    with pytest.raises(InvalidInput):
        pl.logistic_ratios(30, 0.95)
    with pytest.raises(InvalidInput):
        pl.logistic_ratios(4, 0.2)  # nothing left after protecting 2 + 2 layers


@pytest.mark.parametrize("method", ["seap", "flap", "flap_lb", "seap_norm"])
@pytest.mark.parametrize("sparsity", [0.2, 0.5])
def test_real_sparsity_equals_the_target_and_slicing_equals_masking(gqa, method, sparsity):
    model, tok = gqa
    st = stats.collect(model, tok, TEXTS_A)
    schedule = {} if method == "flap" else _schedule(model)  # flap: global allocation
    plan = methods.make_plan(model, st, method, sparsity, **schedule)
    geo = plan.geometry
    assert abs(plan.removed_params() - sparsity * geo.total_params) <= geo.channel_params
    plan.validate()
    for lp in plan.layers:  # GQA: whole groups, equal query heads per kept group
        per = len(lp.q_heads) // len(lp.kv_heads)
        assert len(lp.q_heads) == per * len(lp.kv_heads)
        assert all(q // geo.group in lp.kv_heads for q in lp.q_heads)
    sliced = prune.pruned_copy(model, plan, st)
    assert 1 - prune.count_params(sliced) / prune.count_params(model) == pytest.approx(
        plan.real_sparsity
    )
    x = torch.tensor([tok("the quick brown fox jumps")["input_ids"]])
    with torch.no_grad():
        got = sliced(x).logits
        if not plan.bias:  # FLAP's compensation adds a bias masking does not
            assert torch.allclose(got, _masked(model, plan)(x).logits, atol=1e-4)
        assert torch.isfinite(got).all()
    out = sliced.generate(x, max_new_tokens=4, do_sample=False)  # the KV cache copes too
    assert out.shape[1] == x.shape[1] + 4


def test_bias_compensation_is_an_option_of_every_scored_method(gqa) -> None:
    """FLAP's compensation on a SEAP plan: the same units are kept, and the removed inputs'
    means move into o_proj/down_proj biases (a plan without it adds none)."""
    model, tok = gqa
    st = stats.collect(model, tok, TEXTS_A)
    plain = methods.make_plan(model, st, "seap_norm", 0.5, first=0, last=0)
    comp = methods.make_plan(model, st, "seap_norm", 0.5, bias=True, first=0, last=0)
    assert (plain.bias, comp.bias) == (False, True)
    assert methods.make_plan(model, st, "flap", 0.5, bias=False).bias is False
    a, b = prune.pruned_copy(model, plain, st), prune.pruned_copy(model, comp, st)
    down_a, down_b = a.model.layers[0].mlp.down_proj, b.model.layers[0].mlp.down_proj
    assert down_a.bias is None and down_b.bias is not None and down_b.bias.abs().sum() > 0
    assert torch.equal(down_a.weight, down_b.weight)  # the same units kept


def test_saved_expert_reloads_with_a_plain_load(gqa, tmp_path: Path, home: Path) -> None:
    model, tok = gqa
    st = stats.collect(model, tok, TEXTS_A)
    plan = methods.make_plan(model, st, "flap", 0.5)  # global allocation + bias compensation
    sliced = prune.pruned_copy(model, plan, st)
    out = prune.save_pruned(sliced, tok, plan, tmp_path / "expert")
    saved = json.loads((out / pl.PLAN_FILE).read_text())
    assert saved["real_sparsity"] == pytest.approx(0.5, abs=0.01) and saved["bias"] is True
    loaded = LocalModel.load(out)
    x = torch.tensor([tok("Paris is the capital")["input_ids"]])
    with torch.no_grad():
        assert torch.equal(loaded.model(x).logits, sliced(x).logits)
    assert loaded.fingerprint.weights_hash != ""
    assert isinstance(loaded.generate("the quick", max_new_tokens=5), str)
    # a plan that does not match the tensors is refused, not silently loaded
    bad = json.loads((out / pl.PLAN_FILE).read_text())
    bad["layers"][3]["channels"] = bad["layers"][3]["channels"][:-1]
    (out / pl.PLAN_FILE).write_text(json.dumps(bad))
    with pytest.raises(InvalidInput):
        prune.load_pruned_model(out)
    with pytest.raises(InvalidInput, match="not a pruned model"):
        prune.save_pruned(sliced, tok, plan, tmp_path)  # a foreign, non-empty directory


def test_bias_compensation_is_exact_at_the_calibration_mean() -> None:
    lin = torch.nn.Linear(8, 5, bias=False)
    mean = torch.randn(8, dtype=torch.float64)
    dense = lin(mean.float())
    removed = [1, 4, 6]
    kept = [i for i in range(8) if i not in removed]
    prune._compensate(lin, mean, removed)
    prune._slice(lin, cols=kept)
    assert torch.allclose(lin(mean.float()[kept]), dense, atol=1e-5)


def test_masks_are_deterministic_and_follow_the_calibration(gqa) -> None:
    model, tok = gqa
    a1 = methods.make_plan(model, stats.collect(model, tok, TEXTS_A), "seap", 0.5, first=1, last=1)
    a2 = methods.make_plan(model, stats.collect(model, tok, TEXTS_A), "seap", 0.5, first=1, last=1)
    b = methods.make_plan(model, stats.collect(model, tok, TEXTS_B), "seap", 0.5, first=1, last=1)
    assert a1.to_dict() == a2.to_dict()
    assert [lp.channels for lp in a1.layers] != [lp.channels for lp in b.layers]
    gen = methods.seap_gen_plan(
        model,
        [stats.collect(model, tok, TEXTS_A), stats.collect(model, tok, TEXTS_B)],
        None,
        0.5,
        first=1,
        last=1,
    )
    assert abs(gen.real_sparsity - 0.5) < 0.01


def test_wanda_sp_is_sequential_and_uniform(gqa) -> None:
    model, tok = gqa
    pruned, plan = methods.wanda_sp(model, tok, TEXTS_A, 0.2)
    assert abs(plan.real_sparsity - 0.2) < 0.01
    assert all(len(lp.channels) < 64 for lp in plan.layers)  # every layer pruned (uniform)
    x = torch.tensor([tok("one two three")["input_ids"]])
    with torch.no_grad():  # the returned model is the plan applied to the dense weights
        assert torch.allclose(pruned(x).logits, prune.pruned_copy(model, plan)(x).logits)
        assert not torch.allclose(pruned(x).logits, model(x).logits)


def test_lb_variants_change_only_the_allocation(gqa) -> None:
    """``wanda_lb`` is Wanda-sp (sequential, no compensation) and ``flap_lb`` FLAP (with its
    compensation), each under SEAP's logistic schedule: every method under one schedule."""
    model, tok = gqa
    pruned, plan = methods.prune(model, tok, TEXTS_A, "wanda_lb", 0.5, first=1, last=1)
    expected = pl.logistic_ratios(6, 0.5, first=1, last=1)
    assert plan.method == "wanda_lb" and plan.details["ratios"] == [round(r, 5) for r in expected]
    assert plan.bias is False and abs(plan.real_sparsity - 0.5) < 0.05
    assert 1 - prune.count_params(pruned) / prune.count_params(model) == pytest.approx(
        plan.real_sparsity
    )
    full = pl.full_layer(plan.geometry)
    assert plan.layers[0] == full and plan.layers[-1] == full  # protected layers stay dense
    assert len(plan.layers[-2].channels) < len(plan.layers[1].channels)  # deeper loses more
    _, uniform = methods.wanda_sp(model, tok, TEXTS_A, 0.5)
    assert uniform.layers[0] != full  # the published Wanda-sp prunes every layer
    st = stats.collect(model, tok, TEXTS_A)
    flap_lb = methods.make_plan(model, st, "flap_lb", 0.5, first=1, last=1)
    assert flap_lb.bias is True and flap_lb.details["ratios"] == plan.details["ratios"]


def test_schedule_settings_are_refused_where_no_logistic_schedule_runs(gqa) -> None:
    model, tok = gqa
    st = stats.collect(model, tok, TEXTS_A)
    with pytest.raises(InvalidInput, match="first: schedule settings apply to logistic"):
        methods.make_plan(model, st, "flap", 0.2, first=1)  # global allocation
    with pytest.raises(InvalidInput, match="uniform"):
        methods.prune(model, tok, TEXTS_A, "wanda_sp", 0.2, last=1)
    with pytest.raises(InvalidInput, match="wanda_lb is sequential by definition"):
        methods.prune(model, tok, TEXTS_A, "wanda_lb", 0.2, sequential=False)
    with pytest.raises(InvalidInput, match="flap cannot prune layer by layer"):
        methods.prune(model, tok, TEXTS_A, "flap", 0.2, sequential=True)


def test_sequential_pruning_scores_each_layer_on_the_pruned_layers_outputs(
    gqa, tmp_path: Path, home: Path
) -> None:
    """``sequential=True``: layer i's statistics come from the model whose layers before i are
    already pruned (and compensated), so the first pruned layer chooses as the one-pass plan
    does and later layers may choose otherwise; the result saves and reloads like any expert."""
    model, tok = gqa
    sched = {"first": 1, "last": 1}
    pruned, plan = methods.prune(
        model, tok, TEXTS_A, "seap", 0.5, sequential=True, bias=True, **sched
    )
    assert plan.details["sequential"] is True and plan.bias is True
    assert abs(plan.real_sparsity - 0.5) < 0.05
    st = stats.collect(model, tok, TEXTS_A)
    one_pass = methods.make_plan(model, st, "seap", 0.5, bias=True, **sched)
    assert plan.details["ratios"] == one_pass.details["ratios"]
    assert plan.layers[:2] == one_pass.layers[:2]  # layer 1 sees the dense layer 0 either way
    assert plan.layers[2:] != one_pass.layers[2:]  # later layers see the pruned ones
    # what it computes is its plan on the dense weights, compensated with the means of the
    # pruned model's own inputs: layer 1's (still the dense model's) must agree
    layer1 = pruned.model.layers[1].mlp.down_proj
    ref = prune.pruned_copy(model, one_pass, st).model.layers[1].mlp.down_proj
    assert torch.allclose(layer1.bias, ref.bias, atol=1e-6)
    out = prune.save_pruned(pruned, tok, plan, tmp_path / "seq")
    x = torch.tensor([tok("one two three")["input_ids"]])
    with torch.no_grad():
        assert torch.equal(LocalModel.load(out).model(x).logits, pruned(x).logits)
    _, with_bias = methods.prune(model, tok, TEXTS_A, "wanda_sp", 0.2, bias=True)
    assert with_bias.bias is True  # compensation now composes with Wanda-sp's procedure too


def test_statistics_round_trip(gqa, tmp_path: Path) -> None:
    model, tok = gqa
    st = stats.collect(model, tok, TEXTS_B, source="b")
    st.save(tmp_path / "s.safetensors")
    back = stats.Stats.load(tmp_path / "s.safetensors")
    assert back.tokens == st.tokens and back.source == "b"
    assert torch.equal(back.layers[2].var("mlp"), st.layers[2].var("mlp"))
    # BOS is excluded: every text contributes its length in tokens, not + 1
    expected = sum(len(tok(t, add_special_tokens=False)["input_ids"]) for t in TEXTS_B)
    assert st.tokens == expected == st.layers[0].count


def test_router_separates_tasks_and_round_trips(gqa, tmp_path: Path) -> None:
    model, tok = gqa
    train = {"fox": [f"the quick brown fox {i}" for i in range(6)], "num": ["one two three"] * 6}
    router = TaskRouter.train(model, tok, train)
    assert router.accuracy(model, tok, train)["accuracy"] == 100.0
    router.save(tmp_path / "r")
    again = TaskRouter.load(tmp_path / "r")
    assert again.predict(model, tok, ["the lazy brown fox", "one two three four"]) == ["fox", "num"]
    with pytest.raises(InvalidInput):
        TaskRouter.train(model, tok, {"only": ["x"]})


def test_cross_validation_scores_each_text_by_a_router_that_did_not_see_it(gqa) -> None:
    model, tok = gqa
    apart = {"fox": [f"the quick brown fox {i}" for i in range(6)], "num": ["one two three"] * 7}
    cv = TaskRouter.cross_validate(model, tok, apart)
    assert cv["accuracy"] == 100.0 and cv["n"] == 13
    assert cv["confusion"] == {"fox": {"fox": 6}, "num": {"num": 7}}
    # one prompt in both tasks: a router cannot tell them apart, and says so
    same = {"a": ["the quick brown fox"] * 6, "b": ["the quick brown fox"] * 6}
    cv = TaskRouter.cross_validate(model, tok, same)
    assert cv["accuracy"] == 50.0 and sum(cv["confusion"]["a"].values()) == 6
    with pytest.raises(InvalidInput, match="two texts"):
        TaskRouter.cross_validate(model, tok, {"a": ["x"], "b": ["y", "z"]})


def test_speed_is_compared_in_interleaved_rounds(gqa) -> None:
    from memos_integrations.models.seap.speed import compare_speed

    model, tok = gqa
    st = stats.collect(model, tok, TEXTS_A)
    pruned = prune.pruned_copy(model, methods.make_plan(model, st, "seap", 0.5, first=1, last=1))
    timed = compare_speed({"dense": model, "pruned": pruned}, tok, rounds=3, new_tokens=4)
    assert [len(r) for r in timed["runs"].values()] == [3, 3]
    assert set(timed["speedup"]) == set(timed["ttft_ratio"]) == {"pruned"}
    # a speedup is the median of the per-round ratios, not the ratio of the medians
    runs = zip(timed["runs"]["pruned"], timed["runs"]["dense"], strict=True)
    ratios = [p["tok_per_s"] / d["tok_per_s"] for p, d in runs]
    assert timed["speedup"]["pruned"] == sorted(ratios)[1] > 0
    with pytest.raises(InvalidInput, match="dense"):
        compare_speed({"pruned": pruned, "other": model}, tok)
    with pytest.raises(InvalidInput, match=">= 1"):
        compare_speed({"dense": model, "pruned": pruned}, tok, rounds=0)


def test_bad_requests_are_refused(gqa, tiny: LocalModel) -> None:
    model, tok = gqa
    st = stats.collect(model, tok, TEXTS_A)
    with pytest.raises(InvalidInput):
        methods.make_plan(model, st, "seap", 1.2)
    with pytest.raises(InvalidInput):
        methods.make_plan(model, st, "nope", 0.2)
    with pytest.raises(InvalidInput):
        stats.collect(model, tok, [])
    plan = methods.make_plan(model, st, "seap", 0.2, first=1, last=1)
    with pytest.raises(InvalidInput, match="plan is for"):
        prune.apply_plan(tiny.model, plan)


@needs_task_data
def test_real_smollm2_expert(smol_cache, tmp_path: Path) -> None:
    """Bounded: 16 PIQA calibration texts, 24 eval items; SmolLM2's 9/3 GQA heads."""
    _, base, _ = smol_cache
    torch.set_num_threads(1)
    texts = ev.calibration_texts("piqa", n=16)
    expert, plan = methods.prune(base.model, base.tokenizer, texts, "seap", 0.2, source="piqa")
    assert abs(plan.real_sparsity - 0.2) < 1e-4
    assert {len(lp.q_heads) for lp in plan.layers} <= {3, 6, 9}
    task = ev.load_task("piqa", n=24, seed=3)
    dense = ev.evaluate_task(base.model, base.tokenizer, task, n_boot=100)
    pruned = ev.evaluate_task(expert, base.tokenizer, task, n_boot=100)
    # 20% of the weights gone costs some likelihood, but far from a collapse to chance
    assert dense["gold_nll"] < pruned["gold_nll"] < dense["gold_nll"] + 1.5
    out = prune.save_pruned(expert, base.tokenizer, plan, tmp_path / "piqa")
    again = LocalModel.load(out)
    assert again.fingerprint.id != base.fingerprint.id
    x = torch.tensor([base.encode("Question: how do I boil an egg?\nAnswer:")])
    with torch.no_grad():
        assert torch.equal(again.model(x).logits, expert(x).logits)


@needs_task_data
def test_real_router_joins_exactly_the_arc_pair(smol_cache) -> None:
    """build_experts's default on the bundled tasks and model: the router cannot tell ARC-Easy
    from ARC-Challenge on its own training prompts, and tells every other task apart."""
    from memos_integrations.models.seap.experts import join_confused_families

    _, base, _ = smol_cache
    train = {t: ev.prompts(t, "train", n=300, seed=1) for t in ev.TASKS}
    families, joined = join_confused_families(base, [[t] for t in ev.TASKS], train)
    assert ["arc_easy", "arc_challenge"] in families and len(families) == len(ev.TASKS) - 1
    (record,) = joined
    assert max(record["cross_validated_accuracy"].values()) < 60
