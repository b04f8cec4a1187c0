"""Parametric memory: memories promoted into LoRA adapters, served, demoted, exported, forgotten.

Mechanics run on tiny random Llamas (fast); one bounded real promotion runs on SmolLM2.
"""

from __future__ import annotations

import copy
import dataclasses
import threading
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from memos_integrations import (
    CorruptExport,
    InvalidInput,
    MemOS,
    ModelMismatch,
    NotFound,
    PermissionDenied,
)
from memos_integrations.core.config import Settings
from memos_integrations.core.items import MemoryItem, utcnow
from memos_integrations.models import parametric
from memos_integrations.models.parametric import PromotionPolicy
from memos_integrations.models.parametric_data import (
    build_examples,
    facts,
    llm_paraphraser,
    parse,
    questions,
    restates,
    statement,
)
from memos_integrations.models.parametric_train import TrainConfig
from memos_integrations.models.runtime import LocalModel

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

FAST = TrainConfig(
    steps=4, batch_size=4, learning_rate=0.05, max_tokens=200, replay_batch=1, layers=1.0
)
REPLAY = ["the quick brown fox jumps over the lazy dog", "one two three four five six seven"]


def _item(text: str, **kw) -> MemoryItem:
    return MemoryItem(kw.pop("id", text[:8]), "c", "alice", text, "fact", "h", "e", **kw)


# ---- examples and policy (no model) ----------------------------------------------------------


def test_memories_become_statements_questions_and_cloze() -> None:
    assert statement(_item("My dog is called Biscuit"), "Alice") == "Alice's dog is called Biscuit"
    assert statement(_item("I live in Lisbon."), "Alice") == "Alice lives in Lisbon"
    raw = dataclasses.replace(_item("alice: I study geology"), kind="raw_turn")
    assert statement(raw, "Alice") == "Alice studies geology"
    made = build_examples([_item("My dog is called Biscuit")], name="Alice", system="Be brief.")
    asked = {ex.messages[-2]["content"] for ex in made.examples if ex.messages}
    assert {"What is my dog called?", "What is the name of Alice's dog?"} <= asked
    assert all(
        ex.messages[0] == {"role": "system", "content": "Be brief."}
        for ex in made.examples
        if ex.messages
    )
    # template questions are answered value first; the other chats with the statement
    answers: dict[str, set[str]] = {}
    for ex in made.examples:
        if ex.messages:
            answers.setdefault(ex.kind, set()).add(ex.messages[-1]["content"])
    assert answers["qa"] == {"Biscuit. Alice's dog is called Biscuit."}
    assert answers["statement"] == answers["cloze"] == {"Alice's dog is called Biscuit."}
    assert made.counts()["statement"] >= 1 and made.counts()["cloze"] == 1

    def paraphrase(text: str, n: int) -> list[str]:  # a scripted stand-in for a remote LLM
        return ["Biscuit is the name of Alice's dog", "Alice has a dog", "ignored"][:n]

    more = build_examples(
        [_item("My dog is called Biscuit")],
        name="Alice",
        system="",
        paraphrase=paraphrase,
        paraphrases=2,
    )
    # the rewording that lost the value is reported, not trained on
    assert (more.paraphrases_kept, more.paraphrases_dropped) == (1, 1)
    assert any(ex.kind == "paraphrase" for ex in more.examples)

    class ScriptedLLM:  # LangChain-style: invoke() returns a message with .content
        def invoke(self, prompt: str):
            assert "Alice's dog is called Biscuit" in prompt
            return type("Msg", (), {"content": "1. Biscuit is Alice's dog\n- Alice's dog: Biscuit"})

    ask = llm_paraphraser(ScriptedLLM())
    assert ask("Alice's dog is called Biscuit", 2) == [
        "Biscuit is Alice's dog",
        "Alice's dog: Biscuit",
    ]
    with pytest.raises(InvalidInput, match="list of strings"):
        build_examples([_item("I swim")], name="A", system="", paraphrase=lambda t, n: "x")


def test_questions_name_the_kind_of_value_in_both_voices() -> None:
    def asked(text: str) -> set[str]:
        return set(questions(parse(statement(_item(text), "Alice")), "Alice"))

    assert {"Which language does Alice speak?", "Which language do I speak?"} <= asked(
        "I speak Icelandic"
    )
    assert {"Which company employs Alice?", "Which company employs me?"} <= asked(
        "I work at Brightwater Labs"
    )
    assert {"What is my birthplace?", "Where was Alice born?"} <= asked("I was born in Galway")
    assert {"Which number is Alice's lucky number?", "What is my lucky number?"} <= asked(
        "My lucky number is 37"
    )
    assert asked("I am allergic to hazelnuts") == {
        "What is Alice allergic to?",
        "What am I allergic to?",
    }
    assert asked("I am a doctor") == set()  # "What is Alice?" would teach nonsense
    assert asked("My sister is a nurse") == {"What is Alice's sister?", "What is my sister?"}


def test_a_restatement_has_the_same_subject_relation_and_value() -> None:
    held = facts([_item("My dog is called Biscuit"), _item("I live in Ljubljana")], "Alice")
    turn = dataclasses.replace(_item("alice: I live in Ljubljana now"), kind="raw_turn")
    assert restates(turn, held, "Alice")
    assert restates(_item("my dog is called biscuit."), held, "Alice")  # case, full stop
    assert not restates(_item("My cat is called Biscuit"), held, "Alice")  # another subject
    assert not restates(_item("I live in Paris"), held, "Alice")  # another value
    assert not restates(_item("Biscuit!"), held, "Alice")  # does not parse: restates nothing


def test_policy_promotes_only_stable_memories() -> None:
    old = utcnow() - timedelta(days=3)
    stable = _item("Alice lives in Lisbon", id="stable", updated_at=old, access_count=5)
    fresh = _item("Alice moved", id="fresh", access_count=5)
    rare = _item("Alice swims", id="rare", updated_at=old, access_count=0)
    unsure = _item("Alice may ski", id="unsure", updated_at=old, access_count=3, confidence=0.4)
    expiring = _item(
        "Alice is in Rome",
        id="ttl",
        updated_at=old,
        access_count=9,
        expires_at=utcnow() + timedelta(days=1),
    )
    chosen, skipped = PromotionPolicy().select([stable, fresh, rare, unsure, expiring])
    assert [it.id for it in chosen] == ["stable"]
    assert set(skipped) == {"fresh", "rare", "unsure", "ttl"}
    assert "min_age" in skipped["fresh"] and "TTL" in skipped["ttl"]
    everything, _ = PromotionPolicy.everything(max_items=2).select([stable, fresh, rare])
    assert len(everything) == 2
    with pytest.raises(InvalidInput):
        PromotionPolicy(min_confidence=2.0)
    with pytest.raises(InvalidInput, match="steps"):
        TrainConfig(steps=0)


# ---- the adapter on a tiny model -------------------------------------------------------------


@pytest.fixture
def other(tiny_dirs: tuple[Path, Path], home: Path) -> LocalModel:
    return LocalModel.load(tiny_dirs[1])


def _train(model: LocalModel, texts: list[str], seed: int = 0) -> parametric.LoRAAdapter:
    items = [_item(t, id=f"m{n}") for n, t in enumerate(texts)]
    config = dataclasses.replace(FAST, seed=seed)
    return parametric.train_adapter(
        model, items, name="alice", instructions="", config=config, replay=REPLAY, progress=False
    )


def _logits(model: LocalModel, text: str, adapter: str | None = None) -> torch.Tensor:
    ids = torch.tensor([model.encode(text)])
    with torch.inference_mode(), parametric.applied(adapter):
        return model.model(input_ids=ids).logits


def test_hooked_adapter_equals_merged_weights_and_unloads_exactly(tiny: LocalModel) -> None:
    base = _logits(tiny, "one two three four")
    adapter = _train(tiny, ["the fox is called one two", "Paris is the capital of France"])
    assert adapter.sources == {"m0": 1, "m1": 1}
    metrics = adapter.metadata["metrics"]
    assert metrics["steps"] == FAST.steps and metrics["kl_last"] is not None
    # training ran on a copy: the serving model is untouched until the adapter is installed
    assert torch.equal(_logits(tiny, "one two three four"), base)
    parametric.install(tiny, adapter)
    assert parametric.installed(tiny) == [adapter.id]
    assert torch.equal(_logits(tiny, "one two three four"), base)  # not applied: exact base
    hooked = _logits(tiny, "one two three four", adapter.id)
    assert not torch.allclose(hooked, base)
    merged = copy.deepcopy(tiny.model)
    modules = dict(merged.named_modules())
    with torch.no_grad():
        for name, (a, b) in adapter.weights.items():
            modules[name].weight += adapter.scale * (b @ a)
        reference = merged(input_ids=torch.tensor([tiny.encode("one two three four")])).logits
    assert torch.allclose(hooked, reference, atol=1e-4)
    assert parametric.uninstall(tiny, adapter.id) and parametric.installed(tiny) == []
    assert not parametric.uninstall(tiny, adapter.id)
    assert torch.equal(_logits(tiny, "one two three four", adapter.id), base)


def test_split_training_equals_the_full_forward(
    tiny: LocalModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the top half trains from cached hidden states of the frozen bottom half: same adapter
    from memos_integrations.models import parametric_train

    # (no null space: this tiny model's input energy has near-equal eigenvalues, so a 1e-7
    # difference may move the cut and the adapters would differ for that reason alone)
    half = dataclasses.replace(FAST, layers=0.5, learning_rate=0.01, null_space=0.0)
    items = [_item("the fox is called one two", id="m0")]

    def run() -> parametric.LoRAAdapter:
        return parametric.train_adapter(
            tiny, items, name="alice", instructions="", config=half, replay=REPLAY, progress=False
        )

    split = run()
    monkeypatch.setattr(parametric_train._Runner, "try_split", lambda self, rows: False)
    full = run()
    assert split.metadata["metrics"]["split"] and not full.metadata["metrics"]["split"]
    assert split.weights.keys() == full.weights.keys()
    for name, (a, b) in split.weights.items():
        assert torch.allclose(a, full.weights[name][0], atol=1e-4)
        assert torch.allclose(b, full.weights[name][1], atol=1e-4)
    assert any(b.abs().sum() > 0 for _, b in split.weights.values())  # it did train


def test_time_budget_covers_set_up_and_no_step_ends_past_it(
    tiny: LocalModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a fake clock that only work moves: every forward pass costs one "second"
    from types import SimpleNamespace

    from memos_integrations.models import parametric_train

    now = [0.0]
    monkeypatch.setattr(parametric_train, "time", SimpleNamespace(perf_counter=lambda: now[0]))
    forward = parametric_train._Runner.logits

    def timed(self, rows):
        now[0] += 1.0
        return forward(self, rows)

    monkeypatch.setattr(parametric_train._Runner, "logits", timed)
    items = [_item("the fox is called one two", id="m0")]
    examples = build_examples(items, name="alice", system="").examples
    replay = [parametric._replay_text(t) for t in REPLAY]

    def train(budget: float, started: float) -> dict:
        config = dataclasses.replace(FAST, steps=50, max_seconds=budget)
        result = parametric_train.train(
            tiny, examples, replay, config, progress=False, started=started
        )
        return result.metrics

    now[0] = 100.0
    metrics = train(budget=20.0, started=95.0)  # 5 s were spent before training began
    # each step is two forward passes (answers, replay): it stops before the one that would
    # end past 20 s, counting the 5 s before it and the set-up's passes
    assert metrics["stopped_by"] == "time"
    assert 1 <= metrics["steps"] < 50
    assert metrics["seconds"] <= 20.0 < metrics["seconds"] + 2.0
    with pytest.raises(InvalidInput, match=r"max_seconds=20\.0 ran out before the first"):
        train(budget=20.0, started=now[0] - 19.5)  # set-up (1 pass) ends past it


def test_null_space_keeps_the_adapter_off_the_replay_texts_inputs(tiny: LocalModel) -> None:
    # every LoRA A reads only the quiet directions of its module's inputs on the replay text,
    # so on that text the adapter moves the model less than an unconfined one trained alike
    from memos_integrations.models import parametric_train

    items = [_item("the fox is called one two", id="m0")]
    examples = build_examples(items, name="alice", system="").examples
    replay = [parametric._replay_text(t) for t in REPLAY]

    def adapter(null_space: float) -> parametric_train.TrainResult:
        # the top layer only: the path SmolLM2 takes (the frozen bottom runs once)
        config = dataclasses.replace(FAST, kl_weight=0.0, null_space=null_space, layers=0.5)
        return parametric_train.train(tiny, examples, replay, config, progress=False)

    free, confined = adapter(0.0), adapter(0.05)
    assert free.metrics["null_space_dims"] is None and confined.metrics["split"]
    assert 0 < confined.metrics["null_space_dims"] < 1
    assert confined.weights.keys() == free.weights.keys()

    def drift(result: parametric_train.TrainResult) -> float:
        lora = parametric.LoRAAdapter(
            f"a{id(result)}", tiny.fingerprint, result.weights, result.scale, {}, {}
        )
        parametric.install(tiny, lora)
        try:
            return sum(
                (_logits(tiny, t, lora.id) - _logits(tiny, t)).abs().mean().item() for t in REPLAY
            )
        finally:
            parametric.uninstall(tiny, lora.id)

    assert drift(confined) < 0.5 * drift(free)
    with pytest.raises(InvalidInput, match="null_space needs replay text"):
        parametric_train.train(tiny, examples, [], dataclasses.replace(FAST, null_space=0.2))
    with pytest.raises(InvalidInput, match="null_space"):
        TrainConfig(null_space=1.0)


def test_default_replay_is_the_base_models_own_answers(tiny: LocalModel) -> None:
    prompts = ["the quick brown", "one two three four five six", "Paris"]
    replay = parametric.default_replay(tiny, "Be brief.", max_new_tokens=6, prompts=prompts)
    assert [ex.messages[1]["content"] for ex in replay] == prompts  # (none answered empty)
    for ex in replay:  # under the chat's system message, answered as a chat would answer
        system, question, answer = ex.messages
        assert system == {"role": "system", "content": "Be brief."} and ex.kind == "replay"
        rendered = tiny.apply_chat_template([dict(system), dict(question)])
        assert answer["content"] == tiny.generate(rendered, max_new_tokens=6).strip()


def test_two_adapters_switch_per_call_and_per_thread(tiny: LocalModel) -> None:
    first = _train(tiny, ["the fox is called one two"], seed=1)
    second = _train(tiny, ["Paris is the capital of Germany"], seed=2)
    for adapter in (first, second):
        parametric.install(tiny, adapter)
    prompt = "the quick brown"
    expected = {
        a: tiny.generate(prompt, max_new_tokens=12, adapter=a) for a in (None, first.id, second.id)
    }
    assert len(set(expected.values())) == 3  # base and each adapter answer differently
    got: dict[str | None, list[str]] = {a: [] for a in expected}

    def run(adapter: str | None) -> None:
        for _ in range(2):
            got[adapter].append(tiny.generate(prompt, max_new_tokens=12, adapter=adapter))

    threads = [threading.Thread(target=run, args=(a,)) for a in expected]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert got == {a: [text] * 2 for a, text in expected.items()}
    for adapter in (first, second):
        parametric.uninstall(tiny, adapter.id)


def test_adapter_artifact_round_trip_and_refusals(tiny: LocalModel, other: LocalModel) -> None:
    adapter = _train(tiny, ["the fox is called one two"])
    art = parametric.to_artifact(adapter, "cube", "lora/alice/x")
    assert art.kind == "parametric" and art.sources == {"m0": 1}
    assert art.fingerprint == tiny.fingerprint.to_dict()
    assert art.metadata["config"]["rank"] == FAST.rank and art.metadata["bytes"] == len(art.payload)
    loaded = parametric.from_artifact(art, tiny)
    assert loaded.scale == adapter.scale and set(loaded.weights) == set(adapter.weights)
    for name, (a, b) in adapter.weights.items():
        assert torch.equal(loaded.weights[name][0], a) and torch.equal(loaded.weights[name][1], b)
    with pytest.raises(ModelMismatch, match="refusing"):
        parametric.from_artifact(art, other)
    with pytest.raises(ModelMismatch):
        parametric.install(other, adapter)
    with pytest.raises(CorruptExport):
        parametric.from_artifact(dataclasses.replace(art, payload=art.payload[:50]), tiny)
    with pytest.raises(InvalidInput):
        parametric.from_artifact(dataclasses.replace(art, kind="activation"), tiny)


# ---- the engine ------------------------------------------------------------------------------


@pytest.fixture
def pmos(db_path: Path, embedder, tiny: LocalModel):
    m = MemOS.open(db_path, embedder=embedder, model=tiny)
    for user in ("alice", "bob"):
        m.create_user(user)
        m.create_cube(f"{user}-personal", owner=user)
    yield m
    m.close()


def _promote(mos: MemOS, cube: str = "alice-personal", **kw):
    kw.setdefault("policy", PromotionPolicy.everything())
    return mos.promote(cube, config=FAST, replay=REPLAY, progress=False, **kw)


def test_promote_serve_demote_and_repromote(pmos: MemOS) -> None:
    items = pmos.add(["the fox is called one two", "Paris is the capital of France"], user="alice")
    with pytest.raises(InvalidInput, match="nothing in cube"):
        pmos.promote("alice-personal", progress=False)  # fresh, never served: not yet stable
    with pytest.raises(InvalidInput, match="'parametric'"):
        pmos.promote("alice-personal", to="activation")
    with pytest.raises(PermissionDenied):
        _promote(pmos, user="bob")
    with pytest.raises(InvalidInput, match="no adapter"):
        pmos.plan_chat("fox", user="alice", memory="parametric-only")

    report = _promote(pmos)
    assert set(report.promoted) == {it.id for it in items} and report.metrics["steps"] == 4
    [art] = pmos.artifacts("alice-personal", user="alice", kind="parametric")
    assert art.id == report.artifact.id and not art.stale
    assert art.name == f"lora/alice/{pmos.model.fingerprint.id}"

    shown = pmos.explain("what is the fox called", user="alice", memory="parametric-only")
    assert shown.adapter.name == art.id and shown.adapter.candidates == (art.id,)
    assert shown.hits == () and shown.activation.action == "off"
    assert shown.describe()["adapter"]["name"] == art.id
    assert pmos.explain("fox", user="alice", memory="plaintext").adapter.name is None
    only = pmos.plan_chat("what is the fox called", user="alice", memory="parametric-only")
    assert only.tier == "parametric" and only.adapter.id == art.id
    assert not only.hits and "fox" not in only.prompt.replace("what is the fox called", "")
    assert {it.id for it in only.promoted} == {it.id for it in items}
    reply = pmos.chat(
        "what is the fox called", user="alice", memory="parametric-only", max_new_tokens=8
    )
    base = pmos.model.generate(only.prompt, max_new_tokens=8)
    assert reply.text != base  # the adapter was applied to the generation

    # auto: the adapter plus the KV cache built through it
    auto = pmos.plan_chat("fox", user="alice")
    assert auto.tier.startswith("parametric+activation")
    caches = pmos.artifacts("alice-personal", kind="activation")
    assert [c.name.rsplit("/", 1)[-1] for c in caches] == [art.id]
    pmos.build_activation("alice-personal", user="alice")  # reuses the adapter's cache
    assert [c.id for c in pmos.artifacts("alice-personal", kind="activation")] == [
        c.id for c in caches
    ]
    # bob has no adapter: his chats never use alice's
    pmos.add(["bob keeps bees"], user="bob")
    assert pmos.plan_chat("bees", user="bob").adapter is None

    # demotion: a source changed, the adapter is stale and the current plaintext answers
    pmos.update(items[0].id, user="alice", text="the fox is called seven")
    [stale] = pmos.artifacts("alice-personal", kind="parametric")
    assert stale.stale
    demoted = pmos.plan_chat("fox", user="alice", memory="parametric-only")
    assert demoted.adapter is None and demoted.stale_adapter == art.id
    assert demoted.tier == "plaintext" and "seven" in demoted.prompt
    assert "is stale" in pmos.explain("fox", user="alice", memory="parametric-only").notes[0]
    assert pmos.plan_chat("fox", user="alice").adapter is None

    again = _promote(pmos)
    [fresh] = pmos.artifacts("alice-personal", kind="parametric")
    assert fresh.id == again.artifact.id != art.id and not fresh.stale
    assert art.id not in pmos._chat.parametric.loaded()  # the replaced adapter was unloaded


def test_adapters_travel_with_the_cube_and_leave_with_the_user(pmos: MemOS, tmp_path: Path) -> None:
    items = pmos.add(["the fox is called one two"], user="alice")
    report = _promote(pmos, items=[items[0].id])
    with pytest.raises(NotFound):
        _promote(pmos, items=["no-such-item"])
    pmos.export_cube("alice-personal", tmp_path / "export", user="alice")
    pmos.import_cube(tmp_path / "export", cube_id="alice-copy")
    [copied] = pmos.artifacts("alice-copy", kind="parametric")
    # the copy's item ids are new; the adapter's sources follow them, so it is still fresh
    assert copied.id != report.artifact.id and not copied.stale
    assert set(copied.sources) == {it.id for it in pmos.list(cube="alice-copy")}

    pmos.plan_chat("fox", user="alice", cube="alice-personal", memory="parametric-only")
    assert report.artifact.id in pmos._chat.parametric.loaded()
    assert report.artifact.id in parametric.installed(pmos.model)
    pmos.forget_user("alice")
    assert pmos.store.get_artifact(report.artifact.id) is None
    assert pmos.store.get_artifact(copied.id) is None
    assert parametric.installed(pmos.model) == []  # unloaded from the serving model too


def test_chat_adapters_honour_parametric_only(pmos: MemOS) -> None:
    pytest.importorskip("langchain_core")
    pytest.importorskip("llama_index.core")
    from llama_index.core.base.llms.types import ChatMessage

    from memos_integrations.langchain import ChatMemOS
    from memos_integrations.llama_index import MemOSLLM

    pmos.add(["the fox is called one two"], user="alice")
    report = _promote(pmos)
    lc = ChatMemOS(mos=pmos, user_id="alice", memory="parametric-only", max_new_tokens=4)
    meta = lc.invoke("what is the fox called").response_metadata["memos"]
    assert meta["tier"] == "parametric" and meta["adapter"]["name"] == report.artifact.id
    li = MemOSLLM(pmos, user_id="alice", memory="parametric-only", max_new_tokens=4)
    plan = li.plan([ChatMessage(role="user", content="what is the fox called")])
    assert plan.tier == "parametric" and plan.adapter.id == report.artifact.id


def test_the_adapter_serves_only_queries_about_its_memories(pmos: MemOS) -> None:
    pmos.add(["My dog is called Biscuit", "I live in Ljubljana"], user="alice")
    art = _promote(pmos).artifact
    for about in ("What is my dog called?", "Which city does alice live in?"):
        plan = pmos.explain(about, user="alice", memory="parametric-only")
        assert plan.adapter.name == art.id and plan.adapter.gated is None, plan.adapter.reason
        assert "about this query" in plan.adapter.reason

    # a question about something else gets the base model, with no memory and no error
    other = "How do I bake bread at home?"
    shown = pmos.explain(other, user="alice", memory="parametric-only")
    assert shown.adapter.name is None and shown.adapter.gated == art.id
    assert "not about this query" in shown.adapter.reason and "base model" in shown.notes[0]
    near, general = pmos._chat.parametric.relevance(art, other)
    assert near < general or near < pmos.settings.adapter_gate
    turn = pmos.plan_chat(other, user="alice", memory="parametric-only")
    assert turn.tier == "none" and turn.adapter is None and not turn.hits
    reply = pmos.chat(other, user="alice", memory="parametric-only", max_new_tokens=6)
    assert reply.text == pmos.model.generate(turn.prompt, max_new_tokens=6)  # the base model
    # auto: the gated turn still reads the plaintext tier
    assert pmos.plan_chat(other, user="alice").adapter is None
    # a general question the adapter was trained to leave alone is the nearest to itself
    replayed = pmos.explain(parametric.REPLAY_PROMPTS[0], user="alice", memory="parametric-only")
    assert replayed.adapter.gated == art.id


def test_the_adapter_leaves_a_query_about_another_of_the_users_memories(pmos: MemOS) -> None:
    """Asked for the cat's name, an adapter that holds only the dog would answer with the
    dog's: the user's memory nearest the query is the cat's, so the base model answers."""
    dog, cat = pmos.add(["My dog is called Biscuit", "My cat is called Pixel"], user="alice")
    art = _promote(pmos, items=[dog.id]).artifact
    asked = pmos.explain("What is my cat called?", user="alice", memory="parametric-only")
    assert asked.adapter.name is None and asked.adapter.gated == art.id
    assert cat.id in asked.adapter.reason and "does not hold" in asked.adapter.reason
    near, general = pmos._chat.parametric.relevance(art, "What is my cat called?")
    assert near >= pmos.settings.adapter_gate and near > general  # the first rule let it in
    served = pmos.explain("What is my dog called?", user="alice", memory="parametric-only")
    assert served.adapter.name == art.id and served.adapter.gated is None
    # a memory restating a held one is no rival, though the question is as much about it
    pmos.add(["My dog is called Biscuit, a beagle"], user="alice")
    again = pmos.explain("What is my dog called?", user="alice", memory="parametric-only")
    assert again.adapter.name == art.id and again.adapter.gated is None
    # auto: the plaintext tier answers the cat question with the cat's memory
    turn = pmos.plan_chat("What is my cat called?", user="alice")
    assert turn.adapter is None and cat.id in [h.item.id for h in turn.hits]


def test_adapter_gate_zero_serves_every_query_and_bad_values_are_refused(
    open_mos, db_path: Path, tiny: LocalModel
) -> None:
    with pytest.raises(InvalidInput, match="adapter_gate"):
        Settings(db_path=db_path, adapter_gate=1.0)
    with pytest.raises(InvalidInput, match="adapter_gate"):
        Settings(db_path=db_path, adapter_gate=-0.1)
    m = open_mos(model=tiny, settings=Settings(db_path=db_path, adapter_gate=0.0))
    m.create_user("alice")
    m.create_cube("alice-personal", owner="alice")
    m.add(["My dog is called Biscuit"], user="alice")
    art = _promote(m).artifact
    plan = m.explain("How do I bake bread at home?", user="alice", memory="parametric-only")
    assert plan.adapter.name == art.id and plan.adapter.gated is None


# ---- one bounded real promotion --------------------------------------------------------------


def test_smollm2_adapter_changes_answers_for_promoted_facts_only(
    smol_cache: tuple[Path, LocalModel, float], db_path: Path, embedder
) -> None:
    run = _two_fact_promotion(smol_cache[1], db_path, embedder, seed=0)
    report, before, after = run.report, run.before, run.after
    assert report.metrics["steps"] == 20
    assert report.metrics["loss_last"] < report.metrics["loss_first"]
    for question, gold in (("dog", "Biscuit"), ("home", "Ljubljana")):
        assert run.tiers[question] == "parametric"
        assert gold not in before[question] and gold in after[question], (before, after)
    # a memory that was not promoted is not known
    assert "Pixel" not in after["cat"]
    assert run.kept[0].id not in report.promoted
    _assert_gated(run)


def test_smollm2_gate_keeps_the_adapter_off_other_questions(
    smol_cache: tuple[Path, LocalModel, float], db_path: Path, embedder
) -> None:
    # with seed 1 the adapter's own weights leak the promoted values: ungated, it answered
    # "What is the capital of France?" with "... Ljubljana" and "What is my cat called?" with
    # "Biscuit"; the gate gives both to the base model (the cat is a memory it does not hold)
    _assert_gated(_two_fact_promotion(smol_cache[1], db_path, embedder, seed=1))


def _assert_gated(run: TwoFacts) -> None:
    """France is not about the adapter; the cat is about a memory it does not hold."""
    for question in ("france", "cat"):
        assert run.tiers[question] == "none", question  # the base model answers
        assert run.after[question] == run.before[question]


QUESTIONS = {
    "dog": "What is my dog called?",
    "home": "Where do I live?",
    "cat": "What is my cat called?",
    "france": "What is the capital of France?",  # not in the replay set; Italy and Japan are
}


@dataclasses.dataclass(frozen=True)
class TwoFacts:
    report: Any
    kept: list[MemoryItem]
    before: dict[str, str]  # answers without memory, before the promotion
    after: dict[str, str]  # and in parametric-only mode after it
    tiers: dict[str, str]  # which tier served each ``after`` answer


_TWO_FACTS: dict[int, TwoFacts] = {}  # per seed: two tests read the seed-1 run


def _two_fact_promotion(model: LocalModel, db_path: Path, embedder, seed: int) -> TwoFacts:
    """Promote "My dog is called Biscuit" and "I live in Ljubljana" (not the cat) in 20
    steps; the answers to ``QUESTIONS`` without memory, before and with the adapter."""
    if seed in _TWO_FACTS:
        return _TWO_FACTS[seed]
    torch.set_num_threads(1)  # as smol_mos: two threads crawl on a busy 2-core box
    # no time budget here: the test checks what 20 steps teach, not how fast they run; the
    # default replay (self-distilled chats) guards unrelated answers, 8 rows a step
    config = TrainConfig(steps=20, batch_size=4, replay_batch=8, max_seconds=3600, seed=seed)
    with MemOS.open(db_path, embedder=embedder, model=model) as mos:
        mos.create_user("alice", name="Alice")
        mos.create_cube("alice-personal", owner="alice")
        promoted = mos.add(["My dog is called Biscuit", "I live in Ljubljana"], user="alice")
        kept = mos.add(["My cat is called Pixel"], user="alice")  # stays plaintext
        report = mos.promote(
            "alice-personal",
            items=[it.id for it in promoted],
            config=config,
            progress=False,  # default replay: the base model's own answers to other questions
        )
        before = {
            k: mos.chat(q, user="alice", memory="none", max_new_tokens=16).text
            for k, q in QUESTIONS.items()
        }
        replies = {
            k: mos.chat(q, user="alice", memory="parametric-only", max_new_tokens=16)
            for k, q in QUESTIONS.items()
        }
    after = {k: r.text for k, r in replies.items()}
    tiers = {k: r.plan.tier for k, r in replies.items()}
    _TWO_FACTS[seed] = TwoFacts(report, kept, before, after, tiers)
    return _TWO_FACTS[seed]
