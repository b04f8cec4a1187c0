"""`make demo`'s main job runs end to end and shows what it promises."""

from __future__ import annotations

from memos_integrations.demo import run


def test_demo_runs_and_answers_from_memory(tmp_path, monkeypatch, capsys, smol_cache) -> None:
    cache, _, _ = smol_cache
    monkeypatch.setenv("MEMOS_MODEL", str(cache))  # reuse the session's converted SmolLM2
    run(tmp_path)
    out = capsys.readouterr().out
    assert "local model unavailable" not in out
    assert "answer (SmolLM2-135M, a tiny local model)" in out
    assert "replaying a turn stores nothing new" in out
    assert "v2 (update): alice: In October 2024 I moved from Lisbon to Porto." in out
    assert "alice asks: What is the name of alice's cat?" in out
    # retrieval is scoped: bob's question about alice only ever shows bob's memories
    bob_part = out.split("bob asks: Where does alice live?")[1].split("== 4.")[0]
    assert "said by bob" in bob_part and "said by alice" not in bob_part
    assert "Pixel" in out.split("alice asks: What is the name of alice's cat?")[1]
    assert "[served by activation:" in out  # the hot set answered from its KV cache
    assert "rollback to v1 wrote v3" in out
    assert "activated -> archived" in out
    assert "forget_user('bob') removed" in out
    assert (tmp_path / "demo-export" / "manifest.json").is_file()
