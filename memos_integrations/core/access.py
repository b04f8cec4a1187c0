"""Access bookkeeping written behind the read path.

A search counts an access on every hit and activates ``generated`` items. Writing that in
the search's own transaction cost about a sixth of a search's time, so searches queue the
events here and return; a writer thread stores them in one transaction per batch, at most
``delay`` seconds later. Anything that reads the bookkeeping back through the engine
(get, list, count, stats, export, ...) calls :meth:`AccessLog.flush` first, so a process
always sees its own accesses; other processes see them within ``delay``.

Nothing is dropped: a failed write keeps its events queued and the next :meth:`flush`
from a caller raises the error. Events still queued at a crash are lost, like the last
transactions of ``synchronous=NORMAL``; they are counters, never memories.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from datetime import datetime

from ..storage.base import Served, Store

MAX_QUEUED = 512  # a burst of searches is written at once beyond this many events


class AccessLog:
    def __init__(self, store: Store, delay: float) -> None:
        self._store = store
        self._delay = delay
        self._queue: list[Served] = []
        self._lock = threading.Lock()  # guards _queue and _error
        self._write_lock = threading.Lock()  # one batch written at a time, in order
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None

    def record(self, ids: Sequence[str], at: datetime, by: str | None, reason: str) -> None:
        if not ids:
            return
        if self._delay <= 0:  # synchronous bookkeeping, as configured
            self._store.mark_served([Served(tuple(ids), at, by, reason)])
            return
        with self._lock:
            self._queue.append(Served(tuple(ids), at, by, reason))
            full = len(self._queue) >= MAX_QUEUED
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="memos-access-log", daemon=True
                )
                self._thread.start()
        if full:
            self.flush()
        else:
            self._wake.set()

    def flush(self) -> None:
        """Write every queued event now; raise the error of a failed background write."""
        self._write()
        with self._lock:
            error, self._error = self._error, None
        if error is not None:
            self._write()  # a retry: raises again if the store still refuses
            raise error

    def close(self) -> None:
        """Write what is queued and stop the writer thread."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
        self.flush()

    def _write(self) -> None:
        with self._write_lock:
            with self._lock:
                batch, self._queue = self._queue, []
            if not batch:
                return
            try:
                self._store.mark_served(batch)
            except BaseException:
                with self._lock:  # keep them, in order, for the next attempt
                    self._queue[:0] = batch
                raise

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait()
            self._wake.clear()
            if self._stop.wait(self._delay):  # a burst of searches shares one write
                return  # close() writes the rest
            try:
                self._write()
            except Exception as exc:  # surfaced by the next flush() from a caller
                with self._lock:
                    self._error = exc
