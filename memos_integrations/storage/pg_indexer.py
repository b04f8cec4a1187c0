"""Staged vectors into the HNSW graph, off the writers' path (schema migration 3).

An add writes its vector staged: searches rank staged vectors exactly beside the graph's,
so the memory is found at once, and the add does not pay the graph insert (most of its
time at 100k rows). :class:`Indexer` is a background thread per store that moves staged
vectors into the graph in small batches, one transaction each, after every write that
staged some. Several processes may index at once: each batch skips rows another holds.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)

BATCH = 64  # vectors per transaction: ~0.3 s of graph inserts at 100k rows


class Indexer:
    """Runs ``batch`` (which indexes up to :data:`BATCH` staged vectors and returns how
    many) in a daemon thread, until a batch comes back short, whenever :meth:`poke` says
    there may be work. A failure is logged and retried after ``retry_s``: staged vectors
    stay searchable meanwhile."""

    def __init__(self, batch: Callable[[], int], *, retry_s: float = 5.0) -> None:
        self._batch = batch
        self._retry_s = retry_s
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._idle = threading.Event()
        self._idle.set()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def poke(self) -> None:
        """There may be staged vectors: index them soon."""
        with self._lock:
            if self._stop.is_set():
                return
            self._idle.clear()
            self._wake.set()
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._loop, name="memos-pg-indexer", daemon=True
                )
                self._thread.start()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until every poke so far has been worked off; False on timeout."""
        return self._idle.wait(timeout)

    def close(self, timeout: float = 30.0) -> None:
        """Stop after the batch in progress (what is left stays staged and searchable)."""
        with self._lock:
            self._stop.set()
            self._wake.set()
            thread = self._thread
        if thread is not None:
            thread.join(timeout)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait()
            self._wake.clear()
            if self._stop.is_set():
                break
            try:
                while not self._stop.is_set() and self._batch() == BATCH:
                    pass
            except Exception:  # the server went away, say: try again later
                log.warning("indexing staged vectors failed; retrying", exc_info=True)
                self._stop.wait(self._retry_s)
                self._wake.set()
                continue
            with self._lock:  # a poke meanwhile keeps it busy
                if not self._wake.is_set():
                    self._idle.set()
        self._idle.set()
