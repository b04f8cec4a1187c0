"""Fast-then-fine: raw turns stored first, the reader's memories later, the raw turns archived.

The engine stores every message as a ``raw_turn`` (fast mode) before anything else, so a
conversation is searchable at once and nothing depends on the LLM. Refining reads those raw
turns with the engine's reader, consolidates the extracted memories into the cube (see
:mod:`.consolidation`) and archives the raw turns it read; each memory's provenance names its
raw turns (``derived_from``) and each archiving transition names the memories. Turns whose
extraction failed stay live raw turns, and a later :meth:`MemOS.refine` retries them.
``mode="fine"`` does this before ``add`` returns; ``mode="async"`` in a background thread.
"""

from __future__ import annotations

import builtins
import logging
import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..storage.base import Scope
from ..storage.search import And, Cond
from .errors import InvalidInput, MemOSError
from .items import AuditRecord, MemoryItem, utcnow
from .lifecycle import SERVED_STATES
from .reader import ExtractionFailed, ReadResult

if TYPE_CHECKING:
    from .engine import MemOS

log = logging.getLogger(__name__)

REFINED = "refined"  # the reason recorded when a raw turn is archived after reading


@dataclass
class Refinement:
    """What one refinement did (returned by ``refine``, collected by ``wait_refinements``)."""

    read: int = 0  # raw turns given to the reader
    memories: list[MemoryItem] = field(default_factory=list)  # resulting items, in order
    actions: dict[str, int] = field(default_factory=dict)  # add / duplicate / update / merge
    archived: list[str] = field(default_factory=list)  # raw turns archived
    failed: list[str] = field(default_factory=list)  # raw turns kept: extraction failed
    errors: list[str] = field(default_factory=list)
    calls: int = 0  # LLM calls of the reader (retries included)

    def absorb(self, other: Refinement) -> None:
        self.read += other.read
        self.memories += other.memories
        for action, n in other.actions.items():
            self.actions[action] = self.actions.get(action, 0) + n
        self.archived += other.archived
        self.failed += other.failed
        self.errors += other.errors
        self.calls += other.calls


def as_message(raw: MemoryItem) -> dict[str, Any]:
    """The chat message a raw turn was stored from (its speaker prefix removed)."""
    p = raw.provenance
    speaker = p.speaker or p.role or "user"
    prefix = f"{speaker}: "
    content = raw.text[len(prefix) :] if raw.text.startswith(prefix) else raw.text
    message: dict[str, Any] = {"role": p.role or "user", "name": speaker, "content": content}
    if raw.event_time is not None:
        message["timestamp"] = raw.event_time.isoformat()
    if p.message_ids:
        message["id"] = p.message_ids[0]
    return message


class Refiner:
    """The engine's refinement work (one per engine; the worker thread starts on first use)."""

    def __init__(self, mos: MemOS) -> None:
        self.mos = mos
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        self._pending: list[Future[Refinement]] = []

    # ------------------------------------------------------------------ running

    def run(self, raws: Sequence[MemoryItem], user: str | None) -> Refinement:
        """Read ``raws`` (live raw turns) session by session and store what comes out."""
        report = Refinement()
        sessions: dict[str | None, list[MemoryItem]] = {}
        for raw in raws:
            if raw.kind == "raw_turn" and raw.state in SERVED_STATES:
                sessions.setdefault(raw.provenance.session_id, []).append(raw)
        for group in sessions.values():
            report.absorb(self._run_group(group, user))
        return report

    def _run_group(self, raws: list[MemoryItem], user: str | None) -> Refinement:
        mos = self.mos
        report = Refinement(read=len(raws))
        result = self._read([as_message(r) for r in raws])
        report.calls = result.calls
        drafts = [self._draft(spec, raws) for spec in result.drafts]
        for item, action in mos.consolidator.store(mos, drafts, user):
            report.memories.append(item)
            report.actions[action] = report.actions.get(action, 0) + 1
        failed = set(result.failed)
        report.failed = [r.id for n, r in enumerate(raws) if n in failed]
        report.errors = result.errors
        done = [r.id for n, r in enumerate(raws) if n not in failed]
        if done:  # archived only after their memories are stored: a crash loses nothing
            ids = builtins.list(dict.fromkeys(it.id for it in report.memories))
            report.archived = mos.store.set_state(
                done,
                "archived",
                from_states=SERVED_STATES,
                by=user,
                reason=f"{REFINED} into {len(ids)} memories: {' '.join(ids[:20])}".strip(),
                audit=AuditRecord(
                    user,
                    "refine",
                    None,
                    raws[0].cube_id,
                    {"turns": len(done), "memories": ids[:100], "actions": report.actions},
                ),
            )
        if report.failed:
            log.warning("reader failed on %d turn(s): %s", len(report.failed), result.errors[-1])
            mos.store.add_audit(
                AuditRecord(
                    user,
                    "read_failed",
                    None,
                    raws[0].cube_id,
                    {"turns": report.failed[:100], "errors": result.errors[-5:]},
                )
            )
        return report

    def _read(self, messages: list[dict[str, Any]]) -> ReadResult:
        """The reader's result; a plain reader function that raises fails every turn."""
        reader = self.mos.reader
        if reader is None:
            raise InvalidInput("refining needs a reader: MemOS.open(..., reader=MemReader(llm))")
        read = getattr(reader, "read", None)
        if callable(read):
            return read(messages)
        try:
            drafts = reader(messages)
        except ExtractionFailed as exc:
            return exc.result
        except MemOSError:
            raise
        except Exception as exc:  # a user's reader function failing: keep the raw turns
            return ReadResult(failed=list(range(len(messages))), errors=[f"{exc!r}"], calls=1)
        if not isinstance(drafts, list) or not all(
            isinstance(d, Mapping) and "text" in d for d in drafts
        ):
            raise InvalidInput("the reader must return a list of dicts with a 'text' key")
        return ReadResult(drafts=[dict(d) for d in drafts], calls=1)

    def _draft(self, spec: dict[str, Any], raws: list[MemoryItem]) -> MemoryItem:
        """An extracted memory as an item of the raws' cube, linked to its source turns."""
        turns = spec.pop("turns", None)
        if not isinstance(turns, list) or not all(
            isinstance(n, int) and 0 <= n < len(raws) for n in turns
        ):
            turns = list(range(len(raws)))  # a reader that does not say: the whole batch
        sources = [raws[n] for n in dict.fromkeys(turns)] or raws
        given = spec.get("provenance") or {}
        if not isinstance(given, Mapping):
            raise InvalidInput("a reader draft's provenance must be a dict")
        spec["provenance"] = {
            "source": "reader",
            "extractor": "reader",
            "message_ids": [m for r in sources for m in r.provenance.message_ids],
            "timestamps": [t for r in sources for t in r.provenance.timestamps],
            **given,
            "derived_from": [r.id for r in sources],
        }
        if spec.get("event_time") is None and sources[0].event_time is not None:
            spec["event_time"] = sources[0].event_time
        first = sources[0]
        defaults = {
            "kind": None,
            "tags": tuple(dict.fromkeys(t for r in sources for t in r.tags)),
            "metadata": {},
            "priority": max(r.priority for r in sources),
            "confidence": 1.0,
            "ttl": None,
            # one private source turn makes the memory private: reading must not widen access
            "visibility": "private" if any(r.visibility == "private" for r in sources) else "cube",
        }
        item = self.mos._draft(
            spec, first.owner, first.cube_id, first.provenance.session_id, defaults, utcnow()
        )
        expiry = [r.expires_at for r in sources if r.expires_at is not None]
        return item.evolve(expires_at=max(expiry)) if expiry else item

    # ------------------------------------------------------------------ pending raw turns

    def pending(self, cube_id: str, session: str | None, limit: int) -> builtins.list[MemoryItem]:
        """Live raw turns of a cube (optionally one session), oldest first."""
        conds = [
            Cond("kind", "text", "$eq", "raw_turn"),
            Cond("state", "text", "$in", SERVED_STATES),
        ]
        if session is not None:
            conds.append(Cond("session_id", "text", "$eq", session))
        return self.mos.store.list_items(
            Scope((cube_id,), None), And(tuple(conds)), limit=limit, offset=0, order="created_asc"
        )

    # ------------------------------------------------------------------ in the background

    def submit(self, ids: Sequence[str], user: str | None) -> None:
        """Refine the raw turns ``ids`` in the worker thread (started on first use)."""
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="memos-refine")
            self._pending.append(self._pool.submit(self._job, builtins.list(ids), user))

    def _job(self, ids: list[str], user: str | None) -> Refinement:
        try:
            return self.run(self.mos.store.get_items(ids), user)
        except Exception as exc:  # reported by wait(); the raw turns stay live
            log.exception("background refinement failed")
            return Refinement(read=len(ids), failed=ids, errors=[f"{exc!r}"])

    def wait(self, timeout: float | None) -> builtins.list[Refinement]:
        """Block until the submitted refinements finish; return and forget their reports."""
        with self._lock:
            pending = builtins.list(self._pending)
        done = [f.result(timeout=timeout) for f in pending]  # a timeout leaves them pending
        with self._lock:
            self._pending = [f for f in self._pending if f not in pending]
        return done

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)
