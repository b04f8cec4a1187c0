"""Access bookkeeping written behind the read path.

A search counts an access on every hit and activates ``generated`` items. Writing that in
the search's own transaction cost about a sixth of a search's time, so searches queue the
events here and return; a writer thread stores them in one transaction per batch, at most
``delay`` seconds later. The engine reaches its store through :class:`FlushedStore`, which
writes the queue before every call but a search, so whatever the engine reads back (get,
list, count, stats, export, policies, the scheduler's rankings) or changes comes after every
search so far: a process always sees its own accesses, with no call site to remember. Other
processes see them within ``delay``.

Nothing is dropped: a failed write keeps its events queued and the next :meth:`flush`
from a caller raises the error. Events still queued at a crash are lost, like the last
transactions of ``synchronous=NORMAL``; they are counters, never memories.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Sequence
from datetime import datetime
from typing import Any

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
        event = Served(tuple(ids), at, by, reason)
        if self._delay <= 0:  # synchronous bookkeeping, as configured
            self._store.mark_served([event])
            return
        with self._lock:
            self._queue.append(event)
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
        if error is not None:  # the events it kept were written just above
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


class FlushedStore:
    """The store as the engine uses it: every call first writes the access log's queue,
    except the calls that neither read nor change what the log writes: searches (the hot
    path; they admit generated and activated items alike), audit appends and the log's own
    write. Everything else (attributes, private helpers) passes through unchanged, and
    attributes set on it are set on the store."""

    __slots__ = ("_log", "_store")
    _AS_IS = frozenset({"search", "add_audit", "mark_served"})

    def __init__(self, store: Store, log: AccessLog) -> None:
        object.__setattr__(self, "_store", store)
        object.__setattr__(self, "_log", log)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._store, name, value)

    @property
    def raw(self) -> Store:
        """The wrapped store itself."""
        return self._store

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._store, name)
        if name in self._AS_IS or name.startswith("_") or not callable(attr):
            return attr

        @functools.wraps(attr)
        def after_flush(*args: Any, **kwargs: Any) -> Any:
            self._log.flush()
            return attr(*args, **kwargs)

        return after_flush
