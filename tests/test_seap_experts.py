"""Task experts in the engine (build, route, bounded loading, reopen) and ``memos prune``, on a
tiny random Llama with two generic multiple-choice JSONL tasks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from memos_integrations import InvalidInput, ModelMismatch
from memos_integrations.cli import main
from memos_integrations.models.runtime import LocalModel
from memos_integrations.models.seap.experts import ExpertSet

pytest.importorskip("torch")

FOX = ["the quick brown fox", "the lazy dog", "the brown dog jumps", "the fox jumps over"]
NUM = ["one two three", "four five six", "seven eight nine", "one two three four five"]


def _task(path: Path, prompts: list[str], choices: list[str]) -> Path:
    rows = [
        {"context": p, "choices": choices, "label": i % 2, "calibration": f"{p} {choices[i % 2]}"}
        for i, p in enumerate(prompts * 3)
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


@pytest.fixture
def tasks(tmp_path: Path) -> list[str]:
    return [
        str(_task(tmp_path / "fox.jsonl", FOX, ["jumps", "sleeps"])),
        str(_task(tmp_path / "num.jsonl", NUM, ["ten", "eleven"])),
    ]


def test_chat_routes_to_a_bounded_set_of_experts(
    tiny: LocalModel, tiny_dirs, tasks: list[str], open_mos, tmp_path: Path
) -> None:
    mos = open_mos(model=tiny)
    mos.create_user("alice")
    mos.create_cube("alice-personal", owner="alice")
    mos.add(["the fox lives in the wood"], user="alice")
    experts = mos.build_experts(
        tasks, 0.2, path=tmp_path / "experts", max_loaded=1, calibration=8, first=0, last=0
    )
    assert sorted(experts.tasks) == ["fox", "num"]
    assert experts.manifest["router_accuracy"]["accuracy"] == 100.0
    for entry in experts.manifest["experts"].values():
        assert abs(entry["real_sparsity"] - 0.2) < 0.01
        assert entry["bias"] is True  # the validated default: FLAP's bias compensation
    reply = mos.chat("the quick brown fox", user="alice", max_new_tokens=4)
    assert reply.expert == "fox" and experts.loaded == ["fox"]
    assert reply.plan.tier in ("plaintext", "none")  # KV caches belong to the base model
    reply = mos.chat("four five six", user="alice", max_new_tokens=4)
    assert reply.expert == "num" and experts.loaded == ["num"]  # the fox expert was evicted
    with pytest.raises(InvalidInput):
        mos.chat("the fox", user="alice", memory="activation")
    # the adapters' path (plan_chat + stream_chat) is answered by the same expert
    plan = mos.plan_chat("the quick brown fox", user="alice")
    assert plan.expert == "fox" and plan.activation is None
    streamed = "".join(mos.stream_chat(plan, max_new_tokens=4))
    assert experts.loaded == ["fox"]
    assert streamed == mos.chat("the quick brown fox", user="alice", max_new_tokens=4).text
    mos.use_experts(None)
    assert mos.chat("the quick brown fox", user="alice", max_new_tokens=2).expert is None
    again = mos.use_experts(tmp_path / "experts", max_loaded=2)
    assert again.route("seven eight nine") == "num"
    other = LocalModel.load(tiny_dirs[1])
    with pytest.raises(ModelMismatch):
        ExpertSet.open(tmp_path / "experts", other)
    with pytest.raises(InvalidInput):
        mos.build_experts(tasks[:1], 0.2, path=tmp_path / "one")
    # a LoRA adapter belongs to the base model: while experts answer, the plan leaves it out
    pytest.importorskip("peft")
    from memos_integrations.models.parametric import PromotionPolicy
    from memos_integrations.models.parametric_train import TrainConfig

    report = mos.promote(
        "alice-personal",
        policy=PromotionPolicy.everything(),
        config=TrainConfig(steps=2, batch_size=2, max_tokens=200, replay_batch=1),
        replay=["the quick brown fox jumps over the lazy dog"],
        progress=False,
    )
    plan = mos.plan_chat("the quick brown fox", user="alice")
    assert plan.expert == "fox" and plan.adapter is None and plan.tier == "plaintext"
    assert "experts are on" in plan.schedule.adapter.reason
    with pytest.raises(InvalidInput, match="experts are on"):
        mos.explain("the fox", user="alice", memory="parametric-only")
    mos.use_experts(None)
    plan = mos.plan_chat("the quick brown fox", user="alice")
    assert plan.adapter is not None and plan.adapter.id == report.artifact.id


def test_cli_prune_saves_a_reloadable_model(
    tiny_dirs, tasks: list[str], tmp_path: Path, home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "pruned"
    argv = ["prune", "--model", str(tiny_dirs[0]), "--task", tasks[0], "--out", str(out)]
    code = main(
        [*argv, "--method", "flap", "--sparsity", "0.3", "--calibration", "6", "--eval", "4"]
    )
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert abs(report["real_sparsity"] - 0.3) < 0.01 and report["pruned"]["acc"] >= 0
    assert report["attn_ffn_params"][1] < report["attn_ffn_params"][0]
    assert LocalModel.load(out).generate("the quick", max_new_tokens=3) is not None
    assert report["bias"] is True  # flap compensates by default; --no-bias turns it off
    assert main([*argv, "--method", "flap", "--sparsity", "0.3", "--calibration", "6",
                 "--no-bias"]) == 0  # fmt: skip
    assert json.loads(capsys.readouterr().out)["bias"] is False
    # SEAP's default schedule protects 4 + 2 layers at 20%: the 2-layer tiny model has none left
    assert main([*argv, "--method", "seap"]) == 2
    assert "none to prune" in capsys.readouterr().err
    # a schedule setting for a method without a logistic schedule is refused, not ignored
    assert main([*argv, "--method", "wanda_sp", "--first", "0"]) == 2
    assert "apply to logistic allocations, not uniform" in capsys.readouterr().err
    seq = [*argv, "--method", "seap", "--first", "0", "--last", "0", "--calibration", "6"]
    assert main([*seq, "--sequential", "--bias"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["sequential"] is True and report["bias"] is True
    assert abs(report["real_sparsity"] - 0.2) < 0.01
    assert LocalModel.load(out).generate("the quick", max_new_tokens=3) is not None
    assert main([*argv, "--method", "flap", "--sequential"]) == 2  # global: every layer first
    assert "cannot prune layer by layer" in capsys.readouterr().err
    # --speed times dense and pruned decoding in interleaved rounds (numbers, not a verdict)
    assert main([*seq, "--speed", "2"]) == 0
    speed = json.loads(capsys.readouterr().out)["speed"]
    assert speed["rounds"] == 2 and speed["dense_tok_per_s"] > 0 and speed["pruned_tok_per_s"] > 0
    assert speed["decode_speedup"] > 0 and speed["ttft_ratio"] > 0
    assert main([*seq, "--speed", "-1"]) == 2
    assert "--speed" in capsys.readouterr().err


def test_look_alike_tasks_share_one_expert_as_a_family(
    tiny: LocalModel,
    tasks: list[str],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from memos_integrations.models.seap.experts import build_experts

    twin = str(_task(tmp_path / "twin.jsonl", FOX, ["runs", "hides"]))  # fox's prompts
    kw = {"calibration": 8, "first": 0, "last": 0}
    with caplog.at_level("WARNING"):
        apart = build_experts(
            tiny,
            [tasks[0], twin, tasks[1]],
            0.2,
            tmp_path / "apart",
            join_confused=False,
            progress=False,
            **kw,
        )
    assert capsys.readouterr().err == ""  # no bar, and the advice goes to the log
    assert apart.tasks == ["fox", "twin", "num"] and apart.manifest["joined"] == []
    confusion = apart.manifest["router_accuracy"]["confusion"]
    assert confusion["fox"].get("twin", 0) + confusion["twin"].get("fox", 0) > 0
    assert "one family" in caplog.text
    family = build_experts(tiny, [[tasks[0], twin], tasks[1]], 0.2, tmp_path / "family", **kw)
    assert family.tasks == ["fox+twin", "num"] and family.manifest["joined"] == []
    entry = family.manifest["experts"]["fox+twin"]
    assert entry["tasks"] == ["fox", "twin"] and abs(entry["real_sparsity"] - 0.2) < 0.01
    assert family.manifest["router_accuracy"]["accuracy"] == 100.0
    assert family.route("the quick brown fox") == "fox+twin"
    assert family.model("fox+twin").generate("the fox", max_new_tokens=2) is not None
    # by default the look-alikes are found and joined before pruning, wherever they are listed
    caplog.clear()
    with caplog.at_level("WARNING"):
        joined = build_experts(tiny, [tasks[0], tasks[1], twin], 0.2, tmp_path / "auto", **kw)
    assert "pruning experts" in (bar := capsys.readouterr().err) and "2/2" in bar
    assert joined.tasks == ["fox+twin", "num"]
    (record,) = joined.manifest["joined"]
    assert record["tasks"] == [tasks[0], twin]
    assert all(rate < 75 for rate in record["cross_validated_accuracy"].values())
    assert "joined" in caplog.text and "one family" not in caplog.text
    assert joined.manifest["router_accuracy"]["accuracy"] == 100.0
    assert joined.route("the lazy dog") == "fox+twin"
    with pytest.raises(InvalidInput, match="twice"):
        build_experts(tiny, [[tasks[0], twin], tasks[0]], 0.2, tmp_path / "dup", **kw)
    with pytest.raises(InvalidInput, match="family"):
        build_experts(tiny, [[], tasks[1]], 0.2, tmp_path / "empty", **kw)


def test_cli_builds_experts_and_chats_with_them(
    tiny_dirs, tasks: list[str], tmp_path: Path, home: Path, embedder, monkeypatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    twin = str(_task(tmp_path / "twin.jsonl", FOX, ["runs", "hides"]))
    out = tmp_path / "experts"
    argv = ["experts", "--model", str(tiny_dirs[0]), "--tasks", f"{tasks[0]}+{twin}, {tasks[1]}"]
    small = ["--calibration", "6", "--first", "0", "--last", "0", "--no-bias"]
    assert main([*argv, "--out", str(out), *small]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["experts"] == {"fox+twin": ["fox", "twin"], "num": ["num"]}
    assert report["bias"] == {"fox+twin": False, "num": False}  # --no-bias: SEAP as published
    assert report["router_accuracy"]["accuracy"] == 100.0 and report["joined"] == []
    assert all(abs(v - 0.2) < 0.01 for v in report["real_sparsity"].values())
    db = str(tmp_path / "chat.db")
    main(["--db", db, "create-user", "alice"])
    main(["--db", db, "create-cube", "alice-notes", "--owner", "alice"])
    monkeypatch.setenv("MEMOS_MODEL", str(tiny_dirs[0]))
    chat = ["--db", db, "chat", "the quick brown fox", "--user", "alice", "--max-new-tokens", "3"]
    capsys.readouterr()
    assert main([*chat, "--experts", str(out)]) == 0
    assert "[expert: fox+twin]" in capsys.readouterr().err
    # the default protected layers leave the 2-layer model nothing to prune: a clear error
    assert main([*argv, "--calibration", "6"]) == 2
    assert "none to prune" in capsys.readouterr().err
