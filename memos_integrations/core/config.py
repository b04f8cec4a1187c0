"""Settings: a few knobs with good defaults; environment variables are read only here."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
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
    # Scheduler: memories a session's working memory keeps (ranked, see core/scheduler.py).
    working_memory_items: int = 20
    # Lifecycle policies run by maintain() (core/policies.py). A cube holding more served
    # items than ``cube_capacity`` archives the least important (None: no limit).
    cube_capacity: int | None = None
    importance_half_life: timedelta = timedelta(days=30)
    hot_min_accesses: int = 3  # accesses that make a memory hot (activation candidate)
    stable_min_accesses: int = 10  # and a stable one (parametric candidate) ...
    stable_min_age: timedelta = timedelta(days=7)  # ... when unchanged this long
    artifact_idle: timedelta = timedelta(days=30)  # a KV cache unused this long is dropped
    # Parametric tier: a user's LoRA adapter serves a query only when the query is about what
    # it was trained on: nearer (embedder cosine) to one of its memories or their questions
    # than to every general question of the default replay, and at least this near. Other
    # queries get the base model, which the adapter could only make worse (docs/architecture.md,
    # *The adapter gate*). 0 applies the adapter to every query of its owner.
    adapter_gate: float = 0.35
    # Redaction of personal data before anything is stored: pattern names from
    # core/governance.py ("email", "card", "phone"); () stores text as given. MEMOS_REDACT
    # takes a comma-separated list, or "all".
    redact: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not 0.0 <= self.adapter_gate < 1.0:
            from .errors import InvalidInput

            raise InvalidInput(f"adapter_gate must be in [0, 1), got {self.adapter_gate!r}")

    @classmethod
    def from_env(cls) -> Settings:
        return cls(
            db_path=memos_home() / "memos.db",
            pg_url=os.environ.get("MEMOS_PG_URL") or None,
            redact=_redact_env(os.environ.get("MEMOS_REDACT", "")),
        )


def _redact_env(value: str) -> tuple[str, ...]:
    from .governance import DEFAULT_REDACT

    names = tuple(n.strip() for n in value.split(",") if n.strip())
    return DEFAULT_REDACT if names == ("all",) else names
