"""Settings: a few knobs with good defaults; environment variables are read only here."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


def memos_home() -> Path:
    """Where the embedded store, model caches and exports live (``MEMOS_HOME``)."""
    return Path(os.environ.get("MEMOS_HOME") or Path.home() / ".memos").expanduser()


def data_dir() -> Path:
    """Evaluation data (``MEMOS_DATA_DIR``), by default ``../shared/data`` beside the repo."""
    env = os.environ.get("MEMOS_DATA_DIR")
    if env:
        return Path(env).expanduser()
    return Path(__file__).resolve().parents[3] / "shared" / "data"


@dataclass(frozen=True)
class Settings:
    """Engine settings. Construct directly, or use :meth:`from_env` for the defaults."""

    db_path: Path
    track_access: bool = True  # count search hits and activate served items
    # Searches queue that bookkeeping and a writer thread stores it this many seconds later,
    # in one transaction per batch (see core/access.py); 0 writes it inside each search.
    access_write_delay: float = 0.05
    ivf_min_rows: int = 20_000  # cube size from which dense search uses the IVF index
    # Raw turns keep the preceding turns of their session as retrieval context (indexed as a
    # second, lower-weighted full-text column): a reply like "I went hiking" is then found by
    # "what did she do last weekend?". See docs/benchmarks.md for the measurement.
    context_turns: int = 2
    # Reciprocal-rank-fusion weight of the dense leg (the full-text leg weighs 1.0). With the
    # small bundled MiniLM the full-text leg is the stronger one on conversations; measured
    # on LoCoMo (docs/benchmarks.md), 0.25 beats both legs alone at R@10 and R@25.
    dense_weight: float = 0.25
    # A PostgreSQL URL (``MEMOS_PG_URL``): MemOS.open() without a target opens it instead of
    # the embedded SQLite file.
    pg_url: str | None = None
    # Activation tier: the hot set cached as a KV prefix (most accessed memories, bounded) and
    # the bytes of KV caches a cube may hold before the least recently used are evicted.
    activation_items: int = 16
    activation_tokens: int = 1024
    activation_cache_bytes: int = 256 * 2**20

    @classmethod
    def from_env(cls) -> Settings:
        return cls(db_path=memos_home() / "memos.db", pg_url=os.environ.get("MEMOS_PG_URL") or None)
