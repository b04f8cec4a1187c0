"""Activation memory: KV caches of hot memories, injected, stored, refused, rebuilt, evicted.

Mechanics run on tiny random Llamas (fast); behaviour on the bundled SmolLM2 (bounded).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from memos_integrations import CorruptExport, InvalidInput, MemOS, ModelMismatch, NotFound
from memos_integrations.core.config import Settings
from memos_integrations.models import activation
from memos_integrations.models.runtime import LocalModel

torch = pytest.importorskip("torch")

HEAD = [{"role": "system", "content": "memory: the quick brown fox. one two three four five."}]
TURN = [{"role": "user", "content": "the capital of France"}]


@pytest.fixture
def other(tiny_dirs: tuple[Path, Path], home: Path) -> LocalModel:
    return LocalModel.load(tiny_dirs[1])


def test_injected_cache_gives_the_same_greedy_output_as_the_prompt(tiny: LocalModel) -> None:
    prefix_text, rest = activation.split_chat(tiny, HEAD, TURN)
    full = tiny.apply_chat_template([*HEAD, *TURN])
    assert prefix_text + rest == full
    prefix = activation.build(tiny, prefix_text, {"m1": 1})
    assert prefix.n_tokens == len(tiny.encode(prefix_text)) and prefix.nbytes > 0
    expected = tiny.generate(full, max_new_tokens=24)
    assert len(expected) > 5
    assert tiny.generate(rest, max_new_tokens=24, prefix=prefix) == expected
    streamed = "".join(tiny.stream(rest, max_new_tokens=24, prefix=prefix))
    assert streamed == expected


def test_the_stored_cache_is_never_mutated(tiny: LocalModel) -> None:
    prefix_text, rest = activation.split_chat(tiny, HEAD, TURN)
    prefix = activation.build(tiny, prefix_text)
    before = [(k.clone(), v.clone()) for k, v in prefix.layers]
    first = tiny.generate(rest, max_new_tokens=16, prefix=prefix)
    second = tiny.generate(rest, max_new_tokens=16, prefix=prefix)
    assert first == second  # MemOS's stored cache grew by a turn per chat; ours does not
    for (k, v), (k0, v0) in zip(prefix.layers, before, strict=True):
        assert torch.equal(k, k0) and torch.equal(v, v0)
        assert k.shape[-2] == prefix.n_tokens


def test_artifact_round_trip_and_refusals(tiny: LocalModel, other: LocalModel) -> None:
    prefix_text, rest = activation.split_chat(tiny, HEAD, TURN)
    prefix = activation.build(tiny, prefix_text, {"m1": 3})
    art = activation.to_artifact(prefix, "cube", "hot")
    assert art.kind == "activation" and art.sources == {"m1": 3}
    assert art.fingerprint == tiny.fingerprint.to_dict()
    loaded = activation.from_artifact(art, tiny)
    assert loaded.token_ids == prefix.token_ids and loaded.text == prefix_text
    assert tiny.generate(rest, max_new_tokens=12, prefix=loaded) == tiny.generate(
        rest, max_new_tokens=12, prefix=prefix
    )
    with pytest.raises(ModelMismatch, match="refusing"):
        activation.from_artifact(art, other)
    with pytest.raises(ModelMismatch):
        other.generate(rest, max_new_tokens=4, prefix=prefix)
    with pytest.raises(CorruptExport):
        activation.from_artifact(dataclasses.replace(art, payload=art.payload[:100]), tiny)
    with pytest.raises(InvalidInput):
        activation.from_artifact(dataclasses.replace(art, kind="parametric"), tiny)
    with pytest.raises(InvalidInput, match="prompt string"):
        tiny.generate(TURN, max_new_tokens=4, prefix=prefix)


@pytest.fixture
def chat_mos(db_path: Path, embedder, tiny: LocalModel):
    m = MemOS.open(db_path, embedder=embedder, model=tiny)
    m.create_user("alice")
    m.create_cube("alice-personal", owner="alice")
    m.create_user("bob")
    m.create_cube("bob-personal", owner="bob")
    yield m
    m.close()


def _facts(mos: MemOS, user: str = "alice") -> list:
    return mos.add(
        ["one two three four five", "the quick brown fox", "Paris is the capital of France"],
        user=user,
    )


def test_chat_serves_the_hot_set_from_the_cache_and_rebuilds_when_stale(chat_mos: MemOS) -> None:
    items = _facts(chat_mos)
    reply = chat_mos.chat("the capital of France", user="alice", max_new_tokens=8)
    plan = reply.plan
    assert plan.tier.startswith("activation") and plan.activation is not None
    assert {it.id for it in plan.cached} == {it.id for it in items}
    assert not plan.in_prompt  # everything retrieved is already in the cached prefix
    [art] = chat_mos.artifacts("alice-personal", user="alice")
    assert art.kind == "activation" and not art.stale
    assert art.sources == {it.id: 1 for it in items} and art.payload == b""

    # the same plan again reuses the stored cache (no rebuild)
    again = chat_mos.plan_chat("the capital of France", user="alice")
    assert [a.id for a in chat_mos.artifacts("alice-personal", user="alice")] == [art.id]
    assert again.activation is not None and again.activation.token_ids == plan.activation.token_ids

    chat_mos.update(items[1].id, user="alice", text="the lazy dog sleeps")
    [stale] = chat_mos.artifacts("alice-personal", user="alice")
    assert stale.id == art.id and stale.stale
    rebuilt = chat_mos.plan_chat("the capital of France", user="alice")
    [fresh] = chat_mos.artifacts("alice-personal", user="alice")
    assert fresh.id != art.id and not fresh.stale
    assert any("lazy dog" in it.text for it in rebuilt.cached)

    chat_mos.delete(items[0].id, user="alice")
    assert chat_mos.artifacts("alice-personal", user="alice")[0].stale


def test_memory_modes(chat_mos: MemOS) -> None:
    _facts(chat_mos)
    plain = chat_mos.plan_chat("the capital of France", user="alice", memory="plaintext")
    assert plain.activation is None and plain.tier == "plaintext"
    assert "Paris is the capital of France" in plain.prompt
    none = chat_mos.plan_chat("the capital of France", user="alice", memory="none")
    assert none.tier == "none" and "Paris" not in none.prompt
    with pytest.raises(InvalidInput, match="memory must be"):
        chat_mos.plan_chat("x", user="alice", memory="everything")
    with pytest.raises(InvalidInput, match="no memories"):
        chat_mos.plan_chat("x", user="bob", memory="activation")
    assert chat_mos.artifacts("alice-personal", user="alice") == []  # no cache built


def test_caches_are_per_user_and_never_mix(chat_mos: MemOS) -> None:
    _facts(chat_mos)
    chat_mos.add(["bob keeps bees"], user="bob")
    alice = chat_mos.plan_chat("bees", user="alice")
    bob = chat_mos.plan_chat("bees", user="bob")
    assert all(it.owner == "alice" for it in (*alice.cached, *alice.in_prompt))
    assert [it.text for it in bob.cached] == ["bob keeps bees"]
    assert "bees" not in alice.activation.text
    with pytest.raises(NotFound):
        chat_mos.plan_chat("bees", user="alice", cube="bob-personal")


def test_least_recently_used_caches_are_evicted(db_path: Path, embedder, tiny: LocalModel):
    settings = Settings(db_path=db_path, activation_cache_bytes=1)  # room for one cache only
    with MemOS.open(db_path, embedder=embedder, model=tiny, settings=settings) as mos:
        mos.create_user("alice")
        mos.create_cube("shared", owner="alice")
        mos.create_user("carl")
        mos.grant("shared", to="carl", access="read", by="alice")
        _facts(mos)
        mos.build_activation("shared", user="alice")
        [first] = mos.artifacts("shared")
        mos.build_activation("shared", user="carl")
        [second] = mos.artifacts("shared")
        assert first.name == "hot/alice/" + tiny.fingerprint.id
        assert second.name == "hot/carl/" + tiny.fingerprint.id


def test_caches_travel_with_the_cube_and_leave_with_the_user(
    chat_mos: MemOS, tmp_path: Path, tiny: LocalModel
) -> None:
    _facts(chat_mos)
    prefix = chat_mos.build_activation("alice-personal", user="alice")
    [art] = chat_mos.artifacts("alice-personal", user="alice")
    assert prefix.n_tokens == art.metadata["tokens"]
    # building searches nothing: no memory was counted as accessed
    assert all(it.access_count == 0 for it in chat_mos.list(user="alice"))
    chat_mos.export_cube("alice-personal", tmp_path / "export", user="alice")
    chat_mos.forget_user("alice")
    assert chat_mos.store.get_artifact(art.id) is None
    chat_mos.create_user("alice")
    chat_mos.import_cube(tmp_path / "export")
    stored = chat_mos.store.get_artifact(art.id)
    assert stored is not None
    assert activation.from_artifact(stored, tiny).n_tokens == art.metadata["tokens"]


def test_smollm2_answers_from_the_kv_cache(smol_mos: MemOS) -> None:
    cached = smol_mos.chat("What is my cat called?", user="alice", max_new_tokens=12)
    assert cached.plan.tier == "activation" and "Miso" in cached.text
    # the same conversation with the memories as prompt text answers identically
    prompt = cached.plan.activation.text + cached.plan.prompt
    assert smol_mos.model.generate(prompt, max_new_tokens=12) == cached.text
