"""The MemOS engine: users, cubes and the plaintext memory tier, over any :class:`Store`.

Synchronous and thread-safe at its core; every public method has an ``a``-prefixed async
twin that runs it in a worker thread, so an event loop is never blocked.

``user`` arguments name the *acting* user; every read and write is checked against that
user's cubes and grants. Omitting ``user`` (``None``) acts as the application itself,
the root principal, which passes every check: adapters always pass the end user's id.
"""

from __future__ import annotations

import asyncio
import builtins
import dataclasses
import functools
import inspect
import os
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

if TYPE_CHECKING:
    from ..models.activation import KVPrefix
    from ..models.parametric import PromotionPolicy
    from ..models.parametric_data import Paraphraser
    from ..models.parametric_train import TrainConfig
    from ..models.runtime import LocalModel

from ..embeddings import Embedder, as_embedder
from ..storage.base import AuditQuery, Scope, SearchMode, SearchRequest, Store
from ..storage.search import And, Cond, Node, Or, combine, parse_filter
from .access import AccessLog, FlushedStore
from .chat import Chat, ChatPlan, ChatReply, _instructions, digest
from .config import Settings, memos_home
from .consolidation import Consolidator
from .cube import Artifact, MemCube
from .errors import (
    BackendUnavailable,
    EmbedderMismatch,
    InvalidInput,
    NotFound,
    PermissionDenied,
)
from .governance import ROLES, Governance, Hidden, as_redactor, redact_value
from .items import (
    AuditRecord,
    Grant,
    ItemVersion,
    MemoryItem,
    SearchHit,
    Transition,
    User,
    check_confidence,
    check_id,
    check_key,
    check_kind,
    check_metadata,
    check_priority,
    check_provenance,
    check_tags,
    check_text,
    check_visibility,
    content_hash,
    new_id,
    parse_time,
    parse_ttl,
    utcnow,
)
from .lifecycle import (
    ALLOWED,
    LISTED_STATES,
    SERVED_STATES,
    STATES,
    check_state,
    check_transition,
)
from .parametric import PromotionReport
from .policies import MaintenanceReport
from .refine import Refinement, Refiner
from .scheduler import Clock, QueryPlan, Scheduler, WorkingEntry, WorkingMemory

T = TypeVar("T")
MemoryInput = str | Mapping[str, Any]
# A fine-mode reader turns messages into memory drafts (dicts with at least "text"), e.g. a
# core.reader.MemReader over an LLM.
Reader = Callable[[list[dict[str, Any]]], list[dict[str, Any]]]
ADD_MODES = ("fast", "fine", "async")

MAX_K = 1000
_PG_SCHEMES = ("postgres://", "postgresql://")
MAX_DENSE_WEIGHT = 1000.0
_MAX_CONTEXT_CHARS = 4000
_MESSAGE_TIME_KEYS = ("timestamp", "time", "created_at", "date")


def _threaded(method: Callable[..., T]) -> Callable[..., Any]:
    """The async twin of a sync engine method: same arguments, runs in a worker thread."""

    @functools.wraps(method)
    async def twin(self: MemOS, *args: Any, **kwargs: Any) -> T:
        # through the instance: the governed (denial-auditing) method, not the raw function
        return await asyncio.to_thread(getattr(self, method.__name__), *args, **kwargs)

    twin.__name__ = twin.__qualname__ = "a" + method.__name__
    twin.__doc__ = f"Async twin of :meth:`MemOS.{method.__name__}` (runs in a worker thread)."
    return twin


def _as_inputs(memories: object) -> builtins.list[Any]:
    """One memory or an iterable of them, as a list; anything else is a clear error."""
    if isinstance(memories, str | Mapping):
        return [memories]
    if isinstance(memories, bytes | bytearray) or not isinstance(memories, Iterable):
        raise InvalidInput(
            f"cannot store a {type(memories).__name__}: pass a string, a message or memory "
            "dict, or a list of those"
        )
    return builtins.list(memories)


def _as_message(raw: object) -> Mapping[str, Any]:
    """A fine/async-mode input as a chat message (the reader reads conversations)."""
    if isinstance(raw, str):
        return {"role": "user", "content": raw}
    if isinstance(raw, Mapping) and "content" in raw and "text" not in raw:
        return raw
    raise InvalidInput(
        "mode='fine' reads chat messages: pass strings or {'role', 'content', ...} dicts "
        "(add memory dicts with 'text' in fast mode)"
    )


def _postgres(url: str, **options: Any) -> Store:
    try:
        from ..storage.postgres import PostgresStore
    except ImportError:
        raise BackendUnavailable(
            "the PostgreSQL backend needs the postgres extra: "
            "pip install 'memos-integrations[postgres]'"
        ) from None
    return PostgresStore(url, **options)


def _cube_id(cube: MemCube | str) -> str:
    return cube.id if isinstance(cube, MemCube) else check_id(cube, "cube")


class MemOS:
    """A memory operating system instance over one store.

    >>> mos = MemOS.open()                        # the embedded SQLite store in MEMOS_HOME
    >>> mos.create_user("alice")
    >>> cube = mos.create_cube("alice-personal", owner="alice")
    >>> mos.add("Alice moved to Lisbon in March 2024", user="alice", cube=cube)
    >>> mos.search("where does alice live?", user="alice", k=5)
    """

    def __init__(
        self,
        store: Store,
        *,
        embedder: Any = None,
        reader: Reader | None = None,
        settings: Settings | None = None,
        model: Any = None,
        redact: Any = None,
        clock: Clock | None = None,
    ) -> None:
        self.embedder: Embedder = as_embedder(embedder)
        self.reader = reader
        self.settings = settings or Settings.from_env()
        self._accesses = AccessLog(store, self.settings.access_write_delay)
        # reads and changes see every search so far (see core/access.py)
        self.store: Store = FlushedStore(store, self._accesses)  # type: ignore[assignment]
        self.gov = Governance(store)  # users and grants: nothing the access log writes
        # what every memory, note and reason passes through before it is stored
        self.redact = as_redactor(redact if redact is not None else self.settings.redact or None)
        # "now" for TTLs, access times and the lifecycle policies (tests pass a fake clock)
        self.clock: Clock = clock or utcnow
        self.scheduler = Scheduler(
            self, WorkingMemory(self.settings.working_memory_items, self.clock)
        )
        self._model = model  # a LocalModel, a model path, or None for the default (lazy)
        self._model_lock = threading.Lock()
        self._experts: Any = None  # an ExpertSet once build_experts/use_experts ran
        self._chat = Chat(self)
        # the scheduler's adapter slot: the querying user's own fresh LoRA adapter
        self.scheduler.adapter_selector = self._chat.parametric.select
        # how memories the reader extracts join the cube; set a Consolidator(judge=llm) to
        # let an LLM judge near-duplicates and contradictions instead of the rules
        self.consolidator = Consolidator()
        self._refiner = Refiner(self)
        self._local = threading.local()  # per-thread call state (dry runs, denial auditing)
        self._pinned_dim: str | None = None  # the store's vector dimension, once checked
        self._closed = False
        recorded = store.get_meta("embedding_model")
        if recorded is not None and recorded != self.embedder.model_id:
            raise EmbedderMismatch(
                f"this store was built with embedding model {recorded!r}, but "
                f"{self.embedder.model_id!r} was given; open it with the same model, or "
                "export the cubes and import them into a store for the new model "
                "(import re-embeds)"
            )

    # ------------------------------------------------------------------ opening

    @classmethod
    def open(
        cls,
        target: str | Path | None = None,
        *,
        embedder: Any = None,
        reader: Reader | None = None,
        settings: Settings | None = None,
        model: Any = None,
        redact: Any = None,
        clock: Clock | None = None,
    ) -> MemOS:
        """Open a store: a file path or ``sqlite:///path`` (the embedded SQLite store), or a
        ``postgresql://`` URL. ``None`` opens ``MEMOS_PG_URL`` when set, else the SQLite file
        in ``MEMOS_HOME``.

        ``model`` is the local chat model (a ``LocalModel`` or a model path); by default the
        bundled SmolLM2 (or ``MEMOS_MODEL``) is loaded on the first chat. ``redact`` masks
        personal data before it is stored (``True``: e-mail, card and phone patterns; see
        :class:`~memos_integrations.core.governance.Redactor`); ``clock`` replaces "now".
        """
        settings = settings or Settings.from_env()
        options = {"embedder": embedder, "reader": reader, "model": model}
        options |= {"redact": redact, "clock": clock}
        text = str(target) if target is not None else settings.pg_url
        if text is not None and text.startswith(_PG_SCHEMES):
            return cls._over(_postgres(text), settings, options)
        if target is not None:
            path = Path(str(target).removeprefix("sqlite:///")).expanduser()
            settings = dataclasses.replace(settings, db_path=path)
        from ..storage.sqlite import SQLiteStore

        store = SQLiteStore(settings.db_path, ivf_min_rows=settings.ivf_min_rows)
        return cls._over(store, settings, options)

    @classmethod
    def open_embedded_postgres(
        cls,
        path: str | Path | None = None,
        *,
        embedder: Any = None,
        reader: Reader | None = None,
        settings: Settings | None = None,
        model: Any = None,
        redact: Any = None,
        clock: Clock | None = None,
    ) -> MemOS:
        """Start (or join) a private PostgreSQL with pgvector whose data lives in ``path``
        (default ``$MEMOS_HOME/postgres``) and open it; it stops with the last handle."""
        from ..storage import pg_embedded

        settings = settings or Settings.from_env()
        url, release = pg_embedded.start(path or memos_home() / "postgres")
        try:
            store = _postgres(url, on_close=release)
        except BaseException:
            release()
            raise
        options = {"embedder": embedder, "reader": reader, "model": model}
        return cls._over(store, settings, options | {"redact": redact, "clock": clock})

    @classmethod
    def _over(cls, store: Store, settings: Settings, options: dict[str, Any]) -> MemOS:
        """An engine over a store just opened; the store is closed if the engine refuses it."""
        try:
            return cls(store, settings=settings, **options)
        except BaseException:
            store.close()
            raise

    def close(self) -> None:
        try:
            self._refiner.close()  # background refinements finish before the store closes
            self._accesses.close()
        finally:
            self.store.close()
        self._closed = True

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called (adapters then reopen the store by its URL)."""
        return self._closed

    def __enter__(self) -> MemOS:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ users and cubes

    def create_user(
        self, user_id: str, *, role: str = "user", name: str | None = None, by: str | None = None
    ) -> User:
        """Register a user (the application or an admin). Roles: ``admin`` (passes every
        check), ``user`` (owns cubes, reads and writes by grant), ``guest`` (read-only)."""
        self.gov.require_super(self.gov.user(by), "create users")
        check_id(user_id, "user")
        if role not in ROLES:
            raise InvalidInput(f"role must be one of {', '.join(ROLES)}, got {role!r}")
        user = User(user_id, role, name)  # type: ignore[arg-type]
        self.store.put_user(user, AuditRecord(by, "create_user", user_id, detail={"role": role}))
        return user

    def get_user(self, user_id: str, *, user: str | None = None) -> User:
        """A user record; users other than root and admins may only look themselves up."""
        actor = self.gov.user(user)
        if not self.gov.is_super(actor) and user_id != user:
            raise PermissionDenied(f"{user!r} may only look up their own user record")
        found = self.gov.user(check_id(user_id, "user"))
        assert found is not None
        return found

    def list_users(self, *, user: str | None = None) -> builtins.list[User]:
        """Every user (root and admins); a plain user or guest sees only themselves."""
        actor = self.gov.user(user)
        if self.gov.is_super(actor):
            return self.store.list_users()
        return [actor]  # type: ignore[list-item]

    def create_cube(
        self,
        name: str,
        *,
        owner: str,
        cube_id: str | None = None,
        description: str = "",
        metadata: Mapping[str, Any] | None = None,
        by: str | None = None,
    ) -> MemCube:
        """Create a cube owned by ``owner``; its id is ``cube_id`` or, by default, ``name``.

        ``by`` (default: the application) must be the owner or an admin; guests own no cubes.
        """
        actor = self.gov.user(by)
        owning = self.gov.user(check_id(owner, "user"))
        if not (self.gov.is_super(actor) or by == owner):
            raise PermissionDenied(f"{by!r} may only create cubes for themselves")
        self.gov.require_can_own(owning)  # type: ignore[arg-type]
        cube = MemCube(
            id=check_id(cube_id or name, "cube"),
            name=check_text(name, "cube name"),
            owner=owner,
            description=description,
            metadata=check_metadata(metadata),
        )
        self.store.put_cube(cube, AuditRecord(by or owner, "create_cube", cube.id, cube.id))
        return cube

    def get_cube(self, cube: MemCube | str, *, user: str | None = None) -> MemCube:
        found = self.gov.cube(_cube_id(cube))
        self.gov.require_read(self.gov.user(user), found)
        return found

    def list_cubes(self, *, user: str | None = None) -> builtins.list[MemCube]:
        """Cubes the user can read (every cube for the root principal)."""
        scope = self.gov.readable(self.gov.user(user))
        cubes = self.store.list_cubes()
        return cubes if scope.cube_ids is None else [c for c in cubes if c.id in scope.cube_ids]

    def grant(
        self, cube: MemCube | str, *, to: str, access: str = "read", by: str | None = None
    ) -> Grant:
        """Share a cube: give user ``to`` read or write access (owner or admin only)."""
        if access not in ("read", "write"):
            raise InvalidInput(f"access must be 'read' or 'write', got {access!r}")
        found = self.gov.cube(_cube_id(cube))
        self.gov.require_owner(self.gov.user(by), found)
        grantee = self.gov.user(check_id(to, "user"))
        if access == "write" and grantee.role == "guest":  # type: ignore[union-attr]
            raise InvalidInput(f"{to!r} is a guest: guests hold read grants only")
        if to == found.owner:
            raise InvalidInput(f"{to!r} owns cube {found.id!r} already")
        grant = Grant(found.id, to, access, by)  # type: ignore[arg-type]
        self.store.set_grant(grant, AuditRecord(by, "grant", to, found.id, {"access": access}))
        return grant

    def revoke(self, cube: MemCube | str, *, user: str, by: str | None = None) -> bool:
        found = self.gov.cube(_cube_id(cube))
        self.gov.require_owner(self.gov.user(by), found)
        return self.store.remove_grant(found.id, user, AuditRecord(by, "revoke", user, found.id))

    def grants(self, cube: MemCube | str, *, user: str | None = None) -> builtins.list[Grant]:
        found = self.get_cube(cube, user=user)
        return self.store.list_grants(cube_id=found.id)

    # ------------------------------------------------------------------ writing memories

    def add(
        self,
        memories: MemoryInput | Iterable[MemoryInput],
        *,
        user: str,
        cube: MemCube | str | None = None,
        session: str | None = None,
        mode: str = "fast",
        kind: str | None = None,
        tags: Iterable[str] | None = None,
        metadata: Mapping[str, Any] | None = None,
        priority: int = 0,
        confidence: float = 1.0,
        ttl: float | timedelta | None = None,
        visibility: str = "cube",
    ) -> builtins.list[MemoryItem]:
        """Store memories in one transaction and return them (existing ones for duplicates).

        ``memories`` is a text, a chat message (``{"role", "content", "timestamp"?, "name"?,
        "id"?}``), a memory dict (``{"text", "kind"?, "tags"?, "metadata"?, "event_time"?,
        ...}``) or a list of those. Fast mode stores each message as a ``raw_turn`` memory
        with its timestamp as event time. ``mode="fine"`` stores the raw turns, then has the
        engine's reader extract memories from the new ones, consolidates them into the cube
        and archives the raw turns it read (see :meth:`refine`); it returns the resulting
        memories, plus the raw turns whose extraction failed (they stay live).
        ``mode="async"`` returns the raw turns at once and refines them in a background
        thread (:meth:`wait_refinements`).
        Re-adding the same content (same text and event time) into a cube is a no-op.
        A memory dict may carry ``"key"``, the caller's own id for it (unique per cube among
        live items): re-adding a key rewrites that memory as a new version when anything
        changed, and keyed memories are told apart by key rather than by content.
        """
        actor = self.gov.user(check_id(user, "user"))
        target = self.gov.cube(_cube_id(cube) if cube is not None else self._default_cube(user))
        self.gov.require_write(actor, target)
        inputs = _as_inputs(memories)
        if mode not in ADD_MODES:
            raise InvalidInput(f"mode must be 'fast', 'fine' or 'async', got {mode!r}")
        if mode != "fast":
            if self.reader is None:
                raise BackendUnavailable(
                    f"mode={mode!r} needs a reader: MemOS.open(..., reader=MemReader(llm)), "
                    "or a function that turns messages into memory drafts"
                )
            inputs = [_as_message(x) for x in inputs]
        if not inputs:
            return []
        defaults = {
            "kind": check_kind(kind) if kind is not None else None,
            "tags": check_tags(tags),
            "metadata": check_metadata(metadata),
            "priority": check_priority(priority),
            "confidence": check_confidence(confidence),
            "ttl": parse_ttl(ttl),
            "visibility": check_visibility(visibility),
        }
        session = check_text(session, "session") if session is not None else None
        now = self.clock()
        items = [
            self._scrubbed(self._draft(x, user, target.id, session, defaults, now)) for x in inputs
        ]
        keys = [it.key for it in items if it.key is not None]
        if len(keys) != len(set(keys)):
            raise InvalidInput("a key appears twice in one add call; each key names one memory")
        items = self._with_context(items, target.id, session)
        vectors = self.embedder.embed_documents([it.text for it in items])
        self._record_embedder(vectors)
        results = self.store.add_items(
            items, vectors, AuditRecord(user, "add", None, target.id, {"mode": mode})
        )
        stored = self._as_stored(items, results)
        if mode == "fast":
            return stored
        # unread raw turns only: a replayed conversation finds its turns archived already
        unread = [it for it in stored if it.kind == "raw_turn" and it.state in SERVED_STATES]
        if mode == "async":
            if unread:
                self._refiner.submit([it.id for it in unread], user)
            return stored
        report = self._refiner.run(unread, user)
        kept = set(report.failed)
        out = {it.id: it for it in report.memories}
        out.update((it.id, it) for it in stored if it.id in kept)
        return builtins.list(out.values())

    def refine(
        self,
        *,
        user: str,
        cube: MemCube | str | None = None,
        session: str | None = None,
        limit: int = 10_000,
    ) -> Refinement:
        """Read the cube's live raw turns (oldest first, at most ``limit``; one ``session``
        if given) with the engine's reader: the extracted memories are consolidated into the
        cube, each linked to its source turns (``provenance.derived_from``), and the turns
        read are archived. Turns whose extraction fails stay live for a later call.
        """
        actor = self.gov.user(check_id(user, "user"))
        target = self.gov.cube(_cube_id(cube) if cube is not None else self._default_cube(user))
        self.gov.require_write(actor, target)
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise InvalidInput("limit must be a positive integer")
        if self.reader is None:
            raise BackendUnavailable("refine needs a reader: MemOS.open(..., reader=...)")
        session = check_text(session, "session") if session is not None else None
        return self._refiner.run(self._refiner.pending(target.id, session, limit), user)

    def wait_refinements(self, timeout: float | None = None) -> builtins.list[Refinement]:
        """Wait for the refinements ``mode="async"`` started; returns their reports."""
        return self._refiner.wait(timeout)

    def _scrubbed(self, item: MemoryItem) -> MemoryItem:
        """The item with personal data redacted from its text, tags, metadata and speaker
        (ids and keys are identifiers and stay as given)."""
        if self.redact is None:
            return item
        text = check_text(self.redact(item.text))
        speaker = item.provenance.speaker
        return item.evolve(
            text=text,
            content_hash=content_hash(text, item.event_time),
            tags=check_tags(self.redact(t) for t in item.tags),
            metadata=redact_value(self.redact, item.metadata),
            provenance=dataclasses.replace(
                item.provenance, speaker=self.redact(speaker) if speaker else speaker
            ),
        )

    def _scrub(self, value: T) -> T:
        """A caller's free text or JSON value, redacted (note, reason, metadata)."""
        return redact_value(self.redact, value)  # type: ignore[no-any-return]

    def _scrub_dump(self, dump: Any) -> bool:
        """Redact an import in place (items, versions, reasons); True if any text changed
        (its vectors are then recomputed)."""
        if self.redact is None:
            return False
        items = [self._scrubbed(it) for it in dump.items]
        changed = any(a.text != b.text for a, b in zip(items, dump.items, strict=True))
        dump.items = items
        dump.versions = [
            dataclasses.replace(
                v,
                text=self.redact(v.text),
                content_hash=content_hash(self.redact(v.text), v.event_time),
                tags=check_tags(self.redact(t) for t in v.tags),
                metadata=self._scrub(v.metadata),
                note=self._scrub(v.note),
            )
            for v in dump.versions
        ]
        dump.transitions = [
            dataclasses.replace(t, reason=self._scrub(t.reason)) for t in dump.transitions
        ]
        return changed

    def _default_cube(self, user: str) -> str:
        owned = self.store.list_cubes(owner=user)
        if len(owned) == 1:
            return owned[0].id
        raise InvalidInput(
            f"user {user!r} owns {len(owned)} cubes; pass cube= to say where to write"
            if owned
            else f"user {user!r} owns no cube yet; create one with mos.create_cube()"
        )

    def _with_context(
        self, items: builtins.list[MemoryItem], cube_id: str, session: str | None
    ) -> builtins.list[MemoryItem]:
        """Give each conversation turn the preceding turns of its session as retrieval context.

        The context is indexed for full-text search only (see docs/architecture.md); the
        memory's text, content hash and vector stay its own.
        """
        n = self.settings.context_turns
        if n <= 0 or not any(it.provenance.source == "conversation" for it in items):
            return items
        history: builtins.list[str] = []
        if session is not None:  # turns stored by earlier add calls of this session
            where = And(
                (
                    Cond("session_id", "text", "$eq", session),
                    Cond("kind", "text", "$eq", "raw_turn"),
                )
            )
            prior = self.store.list_items(
                Scope((cube_id,), None), where, limit=n, offset=0, order="created"
            )
            history = [it.text for it in reversed(prior)]
        out = []
        for it in items:
            if it.provenance.source == "conversation":
                context = " ".join(history[-n:])[-_MAX_CONTEXT_CHARS:]
                out.append(it.evolve(context=context))
                history.append(it.text)
            else:
                out.append(it)
        return out

    def _draft(
        self,
        raw: MemoryInput,
        owner: str,
        cube_id: str,
        session: str | None,
        defaults: dict[str, Any],
        now: datetime,
    ) -> MemoryItem:
        """Validate one input and build the item to insert (nothing is written here)."""
        if isinstance(raw, str):
            spec: Mapping[str, Any] = {"text": raw}
        elif isinstance(raw, Mapping):
            spec = raw
        else:
            raise InvalidInput(
                f"cannot store a {type(raw).__name__}: pass a string, a message dict with "
                "'content', or a memory dict with 'text'"
            )
        if "content" in spec and "text" not in spec:  # a chat message: one raw turn
            content = check_text(spec["content"], "message content")
            role = str(spec.get("role") or "user")
            # A raw turn records who said it; the adding user speaks the "user" turns.
            speaker = (
                spec.get("name")
                or spec.get("speaker")
                or (owner if role in ("user", "human") else role)
            )
            text = f"{speaker}: {content}"
            stamp = next((spec[k] for k in _MESSAGE_TIME_KEYS if spec.get(k) is not None), None)
            event_time = parse_time(stamp, "message timestamp")
            provenance = check_provenance(
                {
                    "source": "conversation",
                    "session_id": session,
                    "message_ids": [str(spec["id"])] if spec.get("id") is not None else [],
                    "role": role,
                    "speaker": str(speaker),
                    "timestamps": [event_time.isoformat()] if event_time else [],
                    "extractor": "fast",
                }
            )
            kind = defaults["kind"] or "raw_turn"
            extra: Mapping[str, Any] = {}
        elif "text" in spec:
            text = check_text(spec["text"])
            event_time = parse_time(spec.get("event_time"), "event_time")
            given = spec.get("provenance") or {}
            if not isinstance(given, Mapping):
                raise InvalidInput("provenance must be a dict")
            provenance = check_provenance({"source": "api", "session_id": session, **given})
            kind = check_kind(spec["kind"]) if "kind" in spec else defaults["kind"] or "fact"
            extra = spec
        else:
            raise InvalidInput("a memory dict needs 'text' (or 'content' for a chat message)")
        check_text(text)
        key = check_key(spec["key"]) if spec.get("key") is not None else None
        ttl = parse_ttl(extra["ttl"]) if "ttl" in extra else defaults["ttl"]
        return MemoryItem(
            id=new_id(),
            cube_id=cube_id,
            owner=owner,
            text=text,
            kind=kind,
            key=key,
            content_hash=content_hash(text, event_time),
            embedding_model=self.embedder.model_id,
            tags=check_tags(extra["tags"]) if "tags" in extra else defaults["tags"],
            metadata=(
                check_metadata(extra["metadata"])
                if "metadata" in extra
                else check_metadata(spec.get("metadata")) or defaults["metadata"]
            ),
            provenance=provenance,
            event_time=event_time,
            created_at=now,
            updated_at=now,
            priority=(
                check_priority(extra["priority"]) if "priority" in extra else defaults["priority"]
            ),
            confidence=(
                check_confidence(extra["confidence"])
                if "confidence" in extra
                else defaults["confidence"]
            ),
            expires_at=now + ttl if ttl else None,
            visibility=(
                check_visibility(extra["visibility"])
                if "visibility" in extra
                else defaults["visibility"]
            ),
        )

    def _as_stored(
        self, drafts: builtins.list[MemoryItem], results: builtins.list[tuple[str, bool]]
    ) -> builtins.list[MemoryItem]:
        """The items an add call stored, in input order: a draft the store created is the
        row as written; one that met a live item (same content or key) is read back."""
        by_id = {it.id: it for it in drafts}
        met = [item_id for item_id, created in results if not created or item_id not in by_id]
        found = {it.id: it for it in self.store.get_items(met)} if met else {}
        return [found[i] if i in found else by_id[i] for i, _ in results]

    def _record_embedder(self, vectors: np.ndarray) -> None:
        """Pin the store to this embedder on first write; refuse another dimension later."""
        dim = str(vectors.shape[1])
        if dim == self._pinned_dim:  # a store's dimension never changes once recorded
            return
        recorded = self.store.get_meta("embedding_dim")
        if recorded is None:
            self.store.set_meta("embedding_model", self.embedder.model_id)
            self.store.set_meta("embedding_dim", dim)
        elif recorded != dim:
            raise EmbedderMismatch(
                f"the store holds {recorded}-dimensional vectors; the embedder gave {dim}"
            )
        self._pinned_dim = dim

    def ingest(
        self,
        memories: Iterable[MemoryInput],
        *,
        user: str,
        cube: MemCube | str | None = None,
        batch_size: int = 256,
        progress: bool = True,
        **options: Any,
    ) -> builtins.list[MemoryItem]:
        """Bulk :meth:`add` with a progress bar: one transaction per batch of ``batch_size``.

        Runs inside :meth:`bulk_load`, so a large ingest on PostgreSQL builds its vector
        index once at the end instead of row by row.
        """
        from tqdm.auto import tqdm

        pending = _as_inputs(memories)
        out: builtins.list[MemoryItem] = []
        with (
            self.bulk_load(len(pending)),
            tqdm(total=len(pending), desc="ingest", unit="mem", disable=not progress) as bar,
        ):
            for start in range(0, len(pending), batch_size):
                batch = pending[start : start + batch_size]
                out.extend(self.add(batch, user=user, cube=cube, **options))
                bar.update(len(batch))
        return out

    def bulk_load(self, expected: int) -> AbstractContextManager[None]:
        """A context for loading about ``expected`` memories through many calls (several
        cubes, several :meth:`ingest` runs): index upkeep the store can defer is done once
        when it closes. Every add inside is still its own transaction and searchable at once.

        >>> with mos.bulk_load(100_000):
        ...     for user, turns in histories.items():
        ...         mos.ingest(turns, user=user, cube=f"{user}-personal", progress=False)
        """
        if isinstance(expected, bool) or not isinstance(expected, int) or expected < 0:
            raise InvalidInput("expected must be a non-negative number of memories")
        return self.store.bulk_load(expected)

    # ------------------------------------------------------------------ reading memories

    def search(
        self,
        query: str,
        *,
        user: str | None,
        k: int = 10,
        cubes: Sequence[MemCube | str] | None = None,
        filter: Mapping[str, Any] | None = None,
        kinds: Sequence[str] | None = None,
        tags: Sequence[str] | None = None,
        session: str | None = None,
        since: Any = None,
        until: Any = None,
        states: Sequence[str] | None = None,
        mode: SearchMode = "hybrid",
        dense_weight: float | None = None,
    ) -> builtins.list[SearchHit]:
        """Hybrid search (dense + full text, fused by reciprocal rank) in what ``user`` may read.

        Filters narrow the search in SQL: ``cubes``, ``kinds``, ``tags`` (any of), ``session``,
        ``since``/``until`` (event time), ``states`` (default: generated and activated) and
        ``filter`` in the filter language (see :mod:`memos_integrations.storage.search`).
        Expired items are never returned. Hits count as accesses and activate their items.
        ``dense_weight`` overrides the settings' fusion weight of the dense leg for this search
        (the full-text leg weighs 1.0).
        """
        check_text(query, "query")
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_K:
            raise InvalidInput(f"k must be an integer from 1 to {MAX_K}")
        if mode not in ("hybrid", "dense", "text"):
            raise InvalidInput(f"mode must be 'hybrid', 'dense' or 'text', got {mode!r}")
        if dense_weight is None:
            dense_weight = self.settings.dense_weight
        elif (
            isinstance(dense_weight, bool)
            or not isinstance(dense_weight, int | float)
            or not 0 < dense_weight <= MAX_DENSE_WEIGHT
        ):
            raise InvalidInput(f"dense_weight must be a number in (0, {MAX_DENSE_WEIGHT}]")
        actor = self.gov.user(user)
        scope = self.gov.readable(actor, None if cubes is None else [_cube_id(c) for c in cubes])
        where = self._where(
            filter,
            kinds,
            tags,
            session,
            since,
            until,
            states if states is not None else SERVED_STATES,
            live_only=True,
        )
        vector = self.embedder.embed_query(query) if mode != "text" else None
        hits = self.store.search(
            SearchRequest(scope, k, query, vector, where, mode, float(dense_weight))
        )
        if self._serving:
            self._served([h.item for h in hits], user, "search")
        return hits

    def _search_for(
        self, query: str, *, user: str, k: int, serve: bool
    ) -> builtins.list[SearchHit]:
        """The scheduler's retrieval: :meth:`search`, with (chat) or without (explain) the
        bookkeeping of served memories; a dry run still audits reads of others' cubes."""
        if serve:
            return self.search(query, user=user, k=k)
        self._local.dry = True
        try:
            hits = self.search(query, user=user, k=k)
        finally:
            self._local.dry = False
        self._audit_foreign_reads([h.item for h in hits], user, "explain")
        return hits

    @property
    def _serving(self) -> bool:
        return not getattr(self._local, "dry", False)

    def _where(
        self,
        filter: Mapping[str, Any] | None,
        kinds: Sequence[str] | None,
        tags: Sequence[str] | None,
        session: str | None,
        since: Any,
        until: Any,
        states: Sequence[str] | None,
        live_only: bool,
    ) -> Node | None:
        """The convenience arguments as one validated filter AST."""
        conds: builtins.list[Node | None] = [parse_filter(filter)]
        if kinds:
            conds.append(Cond("kind", "text", "$in", tuple(check_kind(k) for k in kinds)))
        if tags:
            conds.append(Cond("tags", "tags", "$any", check_tags(tags)))
        if session is not None:
            conds.append(Cond("session_id", "text", "$eq", check_text(session, "session")))
        for op, value in (("$gte", since), ("$lte", until)):
            when = parse_time(value, "since/until")
            if when is not None:
                conds.append(Cond("event_time", "time", op, when.timestamp()))
        if states is not None:
            conds.append(Cond("state", "text", "$in", tuple(check_state(s) for s in states)))
        if live_only:  # TTL: items past expires_at are not served, even before maintenance
            conds.append(
                Or(
                    (
                        Cond("expires_at", "time", "$exists", False),
                        Cond("expires_at", "time", "$gt", self.clock().timestamp()),
                    )
                )
            )
        return combine(*conds)

    def _served(self, items: builtins.list[MemoryItem], user: str | None, op: str) -> None:
        """Bookkeeping for memories handed to a caller: access counts, activation, audit."""
        if not items:
            return
        if self.settings.track_access:
            self._accesses.record([it.id for it in items], self.clock(), user, f"served by {op}")
        self._audit_foreign_reads(items, user, op)

    def _audit_foreign_reads(self, items: Iterable[MemoryItem], user: str | None, op: str) -> None:
        """Record every read of another user's cube (who, what, when)."""
        if user is None:
            return
        by_cube: dict[str, builtins.list[str]] = {}
        for it in items:
            by_cube.setdefault(it.cube_id, []).append(it.id)
        for cube_id, ids in by_cube.items():
            if self.gov.cube(cube_id).owner != user:
                self.store.add_audit(
                    AuditRecord(
                        user, f"read:{op}", None, cube_id, {"items": ids[:100], "count": len(ids)}
                    )
                )

    def get(self, item_id: str, *, user: str | None = None) -> MemoryItem:
        """One item as it is now (any state). Not visible and missing look the same."""
        item = self._visible_item(item_id, user)
        self._audit_foreign_reads([item], user, "get")
        return item

    def _visible_item(self, item_id: str, user: str | None) -> MemoryItem:
        found = self.store.get_items([check_id(item_id, "item")])
        if not found:
            raise NotFound(f"no memory {item_id!r} visible to {user or 'root'!r}")
        if not self.gov.visible(self.gov.user(user), found[0]):  # same words as missing
            raise Hidden(f"no memory {item_id!r} visible to {user or 'root'!r}")
        return found[0]

    def history(self, item_id: str, *, user: str | None = None) -> builtins.list[ItemVersion]:
        """Every version of an item, oldest first (version 1 is the original)."""
        item = self._visible_item(item_id, user)
        self._audit_foreign_reads([item], user, "history")
        return self.store.versions(item.id)

    def transitions(self, item_id: str, *, user: str | None = None) -> builtins.list[Transition]:
        """Every lifecycle transition of an item, oldest first."""
        item = self._visible_item(item_id, user)
        return self.store.transitions(item.id)

    def count(
        self,
        *,
        user: str | None = None,
        cube: MemCube | str | None = None,
        filter: Mapping[str, Any] | None = None,
        states: Sequence[str] | None = None,
    ) -> int:
        scope = self.gov.readable(self.gov.user(user), None if cube is None else [_cube_id(cube)])
        where = self._where(
            filter,
            None,
            None,
            None,
            None,
            None,
            states or LISTED_STATES,
            live_only=False,
        )
        return self.store.count_items(scope, where)

    # ------------------------------------------------------------------ changing memories

    def update(
        self,
        item_id: str,
        *,
        user: str | None = None,
        text: str | None = None,
        kind: str | None = None,
        tags: Iterable[str] | None = None,
        metadata: Mapping[str, Any] | None = None,
        priority: int | None = None,
        confidence: float | None = None,
        ttl: float | timedelta | None = None,
        visibility: str | None = None,
        event_time: Any = None,
        note: str | None = None,
    ) -> MemoryItem:
        """Change an item: a new version is written, the old one stays in :meth:`history`."""
        item = self._writable_item(item_id, user)
        changes: dict[str, Any] = {}
        if text is not None:
            changes["text"] = check_text(text)
        if kind is not None:
            changes["kind"] = check_kind(kind)
        if tags is not None:
            changes["tags"] = check_tags(tags)
        if metadata is not None:
            changes["metadata"] = check_metadata(metadata)
        if priority is not None:
            changes["priority"] = check_priority(priority)
        if confidence is not None:
            changes["confidence"] = check_confidence(confidence)
        if ttl is not None:
            changes["expires_at"] = self.clock() + parse_ttl(ttl)  # type: ignore[operator]
        if visibility is not None:
            changes["visibility"] = check_visibility(visibility)
        if event_time is not None:
            changes["event_time"] = parse_time(event_time, "event_time")
        if not changes:
            raise InvalidInput("nothing to update: pass text, tags, metadata, ... to change")
        return self._write_version(item, changes, user, "update", note)

    def _writable_item(self, item_id: str, user: str | None) -> MemoryItem:
        item = self._visible_item(item_id, user)
        self.gov.require_write(self.gov.user(user), self.gov.cube(item.cube_id))
        if item.state == "deleted":
            raise InvalidInput(f"memory {item_id!r} is deleted; add it again instead")
        return item

    def _write_version(
        self,
        item: MemoryItem,
        changes: dict[str, Any],
        user: str | None,
        change: str,
        note: str | None,
    ) -> MemoryItem:
        for name in ("text", "metadata"):
            if name in changes:
                changes[name] = self._scrub(changes[name])
        if "tags" in changes:
            changes["tags"] = check_tags(self._scrub(list(changes["tags"])))
        note = self._scrub(note)
        new = item.evolve(**changes, version=item.version + 1, updated_at=self.clock())
        new = new.evolve(
            content_hash=content_hash(new.text, new.event_time),
            embedding_model=self.embedder.model_id,
        )
        vector = None
        if new.text != item.text:
            vector = self.embedder.embed_documents([new.text])
            self._record_embedder(vector)
            vector = vector[0]
        self.store.update_item(
            new,
            expected_version=item.version,
            change=change,
            by=user,
            vector=vector,
            audit=AuditRecord(
                user, change, item.id, item.cube_id, {"version": new.version, "note": note}
            ),
        )
        return self.store.get_items([item.id])[0]

    def rollback(self, item_id: str, version: int, *, user: str | None = None) -> MemoryItem:
        """Restore the content of ``version`` as a *new* version (history is never rewritten)."""
        item = self._writable_item(item_id, user)
        old = next((v for v in self.store.versions(item.id) if v.version == version), None)
        if old is None:
            raise NotFound(f"memory {item_id!r} has no version {version}")
        changes = {
            "text": old.text,
            "kind": old.kind,
            "tags": old.tags,
            "metadata": old.metadata,
            "priority": old.priority,
            "confidence": old.confidence,
            "visibility": old.visibility,
            "expires_at": old.expires_at,
            "event_time": old.event_time,
        }
        return self._write_version(item, changes, user, "rollback", f"rollback to v{version}")

    def set_state(
        self, item_id: str, state: str, *, user: str | None = None, reason: str | None = None
    ) -> MemoryItem:
        """Move an item through its lifecycle (e.g. ``archived``); the transition is recorded."""
        item = self._visible_item(item_id, user)
        self.gov.require_write(self.gov.user(user), self.gov.cube(item.cube_id))
        check_transition(item.state, state)
        reason = self._scrub(reason)
        changed = self.store.set_state(
            [item.id],
            state,
            from_states=(item.state,),
            by=user,
            reason=reason,
            audit=AuditRecord(user, f"state:{state}", item.id, item.cube_id, {"reason": reason}),
        )
        if not changed:
            raise NotFound(f"memory {item_id!r} changed state concurrently; fetch it again")
        return self.store.get_items([item.id])[0]

    def delete(self, item_id: str, *, user: str | None = None, reason: str | None = None) -> None:
        """Tombstone an item (state ``deleted``): hidden everywhere, history kept."""
        self.set_state(item_id, "deleted", user=user, reason=reason or "deleted")

    def delete_many(
        self, item_ids: Sequence[str], *, user: str | None = None, reason: str | None = None
    ) -> int:
        """Tombstone several items in one transaction; returns how many were live."""
        return self.set_state_many(item_ids, "deleted", user=user, reason=reason or "deleted")

    def set_state_many(
        self,
        item_ids: Sequence[str],
        state: str,
        *,
        user: str | None = None,
        reason: str | None = None,
    ) -> int:
        """Move several items to ``state`` in one transaction; returns how many moved.

        All or nothing: an id that is missing or not writable for ``user`` raises before
        anything changes. Items that cannot make the transition (already in ``state``, or
        e.g. ``merged`` -> ``archived``) are left as they are and not counted.
        """
        check_state(state)
        reason = self._scrub(reason)
        ids = builtins.list(dict.fromkeys(check_id(i, "item") for i in item_ids))
        if not ids:
            return 0
        actor = self.gov.user(user)
        stored = self.store.get_items(ids)
        found = {it.id: it for it in stored if self.gov.visible(actor, it)}
        missing = [i for i in ids if i not in found]
        if missing:
            hidden = len(found) < len(stored)  # some exist but are not the caller's to see
            raise (Hidden if hidden else NotFound)(
                f"no memory {missing[0]!r} visible to {user or 'root'!r}"
            )
        for cube_id in {it.cube_id for it in found.values()}:
            self.gov.require_write(actor, self.gov.cube(cube_id))
        return len(
            self.store.set_state(
                ids,
                state,
                from_states=tuple(s for s in STATES if state in ALLOWED[s]),
                by=user,
                reason=reason,
                audit=AuditRecord(
                    user, f"state:{state}", None, None, {"items": ids[:100], "count": len(ids)}
                ),
            )
        )

    def expire_due(self, *, user: str | None = None) -> int:
        """Move items whose TTL has passed to ``expired`` (in the cubes ``user`` may write);
        returns how many moved. One set-based statement per state in the store."""
        scope = self.gov.writable(self.gov.user(user))
        return len(
            self.store.expire_due(
                scope, self.clock(), by=user, audit=AuditRecord(user, "expire", at=self.clock())
            )
        )

    # ------------------------------------------------------------------ scheduling

    def explain(
        self,
        query: str,
        *,
        user: str,
        cube: MemCube | str | None = None,
        k: int = 5,
        memory: str = "auto",
        session: str | None = None,
        instructions: str | None = None,
    ) -> QueryPlan:
        """What a chat turn for ``query`` would use, without running it: the retrieved and
        working-memory items, whether the stored KV cache covers the hot set, and the LoRA
        adapter and task expert. Nothing is counted as an access, built or generated; the
        local model is consulted only if it is already loaded (``plan.notes`` says so)."""
        from .chat import MEMORY_MODES, _instructions

        check_text(query, "query")
        if memory not in MEMORY_MODES:
            raise InvalidInput(f"memory must be one of {', '.join(MEMORY_MODES)}, got {memory!r}")
        actor, home = self._chat_scope(user, cube)
        model = self._model if _is_loaded(self._model) else None
        return self.scheduler.decide(
            query,
            user=actor,
            cube=home,
            k=k,
            memory=memory,
            session=check_text(session, "session") if session is not None else None,
            instructions=_instructions(instructions),
            model=model,
            serve=False,
        )

    def working_memory(self, session: str, *, user: str) -> builtins.list[WorkingEntry]:
        """The session's working memory, best first (relevance, recency, accesses, priority).

        Filled by chat turns planned with ``session=``; in-process, bounded by
        ``Settings.working_memory_items``.
        """
        actor = self.gov.user(check_id(user, "user"))
        entries = self.scheduler.working_memory(actor.id, check_text(session, "session"))  # type: ignore[union-attr]
        self._audit_foreign_reads([e.item for e in entries], user, "working_memory")
        return entries

    def maintain(
        self, *, user: str | None = None, cubes: Sequence[MemCube | str] | None = None
    ) -> MaintenanceReport:
        """Run the lifecycle policies once over the cubes ``user`` may write (default all the
        caller may write): TTL expiry, capacity eviction by importance, promotion candidates
        and demotion of stale artifacts. See :mod:`memos_integrations.core.policies`."""
        from . import policies

        actor = self.gov.user(user)
        scope = self.gov.writable(actor, None if cubes is None else [_cube_id(c) for c in cubes])
        return policies.run(self, scope, user)

    # ------------------------------------------------------------------ governance

    def forget_user(self, user_id: str, *, by: str | None = None) -> dict[str, int]:
        """Erase a user in one transaction: their cubes, every item they own (also in others'
        cubes), all versions, transitions, vectors and search-index entries, artifacts (KV
        caches, adapters), grants, audit records by or about them, and their working memory.
        One audit record of the erasure (with the counts) stays."""
        actor = self.gov.user(by)
        self.gov.user(check_id(user_id, "user"))
        if not (self.gov.is_super(actor) or by == user_id):
            raise _denied(user_id)
        counts = self.store.purge_user(user_id, AuditRecord(by, "forget_user", user_id))
        self.scheduler.working.clear(user=user_id)
        self._chat.forget_loaded()
        self._chat.parametric.forget(user_id)  # their adapters leave the loaded model too
        return counts

    def audit(
        self,
        *,
        user: str | None = None,
        actor: str | None = None,
        action: str | None = None,
        target: str | None = None,
        cube: MemCube | str | None = None,
        since: Any = None,
        until: Any = None,
        limit: int = 100,
    ) -> builtins.list[AuditRecord]:
        """Query the audit log, newest first.

        Filters: ``actor`` (who acted), ``action`` (exact, or a prefix ending in ``*`` such as
        ``"read:*"``, ``"denied:*"``), ``target``, ``cube``, ``since``/``until``. ``user`` is
        who asks: root and admins see every record; others see their own actions, actions
        on them and actions in the cubes they own.
        """
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 1_000_000:
            raise InvalidInput("limit must be an integer from 1 to 1,000,000")
        query = AuditQuery(
            actor=None if actor is None else check_id(actor, "user"),
            action=None if action is None else check_text(action, "action"),
            target=None if target is None else check_text(target, "target"),
            cube_id=None if cube is None else _cube_id(cube),
            since=parse_time(since, "since"),
            until=parse_time(until, "until"),
            limit=limit,
        )
        return self.store.query_audit(self.gov.audit_view(self.gov.user(user), query))

    def stats(self, *, user: str | None = None) -> dict[str, Any]:
        scope = self.gov.readable(self.gov.user(user))
        out = self.store.stats(scope)
        out["embedding_model"] = self.store.get_meta("embedding_model")
        out["cubes"] = len(self.list_cubes(user=user))
        out["users"] = len(self.store.list_users())
        return out

    # ------------------------------------------------------------------ portability

    def export_cube(
        self, cube: MemCube | str, path: str | Path, *, user: str | None = None
    ) -> Path:
        """Write a cube to a portable directory (JSONL + safetensors + checksummed manifest)."""
        from .portable import write_export

        found = self.get_cube(cube, user=user)
        dump = self.store.dump_cube(found.id)
        visible = self.gov.user(user)
        keep = [n for n, it in enumerate(dump.items) if self.gov.visible(visible, it)]
        if len(keep) != len(dump.items):  # others' private items stay out of the export
            ids = {dump.items[n].id for n in keep}
            dump.items = [dump.items[n] for n in keep]
            dump.vectors = dump.vectors[keep]
            dump.versions = [v for v in dump.versions if v.item_id in ids]
            dump.transitions = [t for t in dump.transitions if t.item_id in ids]
        out = write_export(dump, Path(path), self.store.get_meta("embedding_model") or "")
        self.store.add_audit(
            AuditRecord(user, "export", str(out), found.id, {"items": len(dump.items)})
        )
        return out

    def import_cube(
        self,
        path: str | Path,
        *,
        owner: str | None = None,
        cube_id: str | None = None,
        user: str | None = None,
    ) -> MemCube:
        """Import an export directory as a new cube, in one transaction.

        ``owner`` defaults to the exported owner; ``cube_id`` renames the cube (item ids are
        then renewed, so a cube can be copied within one store). A corrupt, tampered or
        foreign-schema export raises :class:`CorruptExport` and writes nothing. Vectors made by
        another embedding model are recomputed with this store's model.
        """
        from .portable import read_export, rebase

        actor = self.gov.user(user)
        dump, model_id = read_export(Path(path))
        if cube_id is not None or owner is not None:
            dump = rebase(dump, cube_id=cube_id and check_id(cube_id, "cube"), owner=owner)
        if not self.gov.is_super(actor) and dump.cube.owner != user:
            raise _denied(dump.cube.owner)
        self.gov.user(dump.cube.owner)
        known = {u.id for u in self.store.list_users()}
        dump.grants = [g for g in dump.grants if g.user_id in known]
        dump.items = [
            it if it.owner in known else it.evolve(owner=dump.cube.owner) for it in dump.items
        ]
        if self.store.get_cube(dump.cube.id) is not None:
            raise InvalidInput(
                f"cube {dump.cube.id!r} exists already; pass cube_id= to import it under a new id"
            )
        rewritten = self._scrub_dump(dump)
        if rewritten or model_id != self.embedder.model_id or dump.vectors.shape[1] == 0:
            dump.vectors = self.embedder.embed_documents([it.text for it in dump.items])
            dump.items = [it.evolve(embedding_model=self.embedder.model_id) for it in dump.items]
        if dump.items:
            self._record_embedder(dump.vectors)
        with self.bulk_load(len(dump.items)):
            self.store.load_cube(
                dump,
                AuditRecord(user, "import", str(path), dump.cube.id, {"items": len(dump.items)}),
            )
        return dump.cube

    # ------------------------------------------------------------------ listing

    def list(
        self,
        *,
        user: str | None = None,
        cube: MemCube | str | None = None,
        filter: Mapping[str, Any] | None = None,
        kinds: Sequence[str] | None = None,
        tags: Sequence[str] | None = None,
        session: str | None = None,
        states: Sequence[str] | None = None,
        limit: int = 100,
        offset: int = 0,
        order: str = "created",
    ) -> builtins.list[MemoryItem]:
        """Items the user may read, newest first by default; deleted ones only if asked for.

        ``order``: ``created``, ``created_asc``, ``event``, ``event_asc`` or ``accessed``.
        """
        if order not in ("created", "created_asc", "event", "event_asc", "accessed"):
            raise InvalidInput(f"unknown order {order!r}")
        if not (isinstance(limit, int) and isinstance(offset, int) and limit > 0 and offset >= 0):
            raise InvalidInput("limit must be a positive integer and offset >= 0")
        actor = self.gov.user(user)
        scope = self.gov.readable(actor, None if cube is None else [_cube_id(cube)])
        where = self._where(
            filter,
            kinds,
            tags,
            session,
            None,
            None,
            states or LISTED_STATES,
            live_only=False,
        )
        items = self.store.list_items(scope, where, limit=limit, offset=offset, order=order)
        self._audit_foreign_reads(items, user, "list")
        return items

    # ------------------------------------------------------------------ chat (local model)

    @property
    def model(self) -> LocalModel:
        """The local chat model, loaded on first use (needs the ``[local]`` extra)."""
        from ..models.runtime import LocalModel

        with self._model_lock:
            if not isinstance(self._model, LocalModel):
                self._model = LocalModel.load(self._model)
            return self._model

    def plan_chat(
        self,
        query: str,
        *,
        user: str,
        cube: MemCube | str | None = None,
        k: int = 5,
        history: Sequence[Mapping[str, Any]] = (),
        memory: str = "auto",
        instructions: str | None = None,
        after: Sequence[Mapping[str, Any]] = (),
        session: str | None = None,
    ) -> ChatPlan:
        """Decide what a chat turn uses, without generating: see :class:`ChatPlan`.

        ``memory``: ``auto`` (the user's hot set from the KV cache, other retrieved memories
        as prompt text, and their LoRA adapter if a fresh one exists), ``activation``
        (require the cache), ``plaintext`` (all as text), ``none``, or ``parametric-only``
        (the adapter alone, no memory in the prompt; a stale adapter falls back to
        ``plaintext``). The hot set lives in ``cube`` (default: the user's only cube). ``after``
        are turns that follow the query in this exchange (the assistant's tool calls and
        their results): the query stays what is searched, the model sees them after it.
        With ``session``, the turn's hits join that session's working memory, and its best
        earlier memories join the prompt (see :meth:`working_memory`). The scheduler's
        decision is ``plan.schedule`` (what :meth:`explain` shows without running a turn).
        """
        check_text(query, "query")
        actor, home = self._chat_scope(user, cube)
        return self._chat.plan(
            query,
            user=actor,
            cube=home,
            k=k,
            history=[dict(m) for m in history],
            memory=memory,
            instructions=instructions,
            after=[dict(m) for m in after],
            session=check_text(session, "session") if session is not None else None,
        )

    def chat(
        self,
        query: str,
        *,
        user: str,
        max_new_tokens: int = 256,
        temperature: float = 0.0,
        stop: Sequence[str] = (),
        seed: int | None = None,
        **plan: Any,
    ) -> ChatReply:
        """Answer ``query`` with the local model from ``user``'s memory (see :meth:`plan_chat`).

        With task experts (:meth:`build_experts`), the router picks the expert that answers;
        memories then ride in the prompt as text (KV caches and LoRA adapters belong to the base
        model: the plan's ``adapter`` slot says so and none is applied).
        """
        sampling = {
            "max_new_tokens": max_new_tokens,
            "temperature": temperature,
            "stop": stop,
            "seed": seed,
        }
        chosen = self.plan_chat(query, user=user, **plan)
        pieces = self._chat.generate(chosen, **sampling)
        return ChatReply("".join(pieces), chosen, expert=chosen.expert)

    def build_experts(
        self,
        tasks: Sequence[str | Sequence[str]],
        sparsity: float = 0.2,
        *,
        path: str | os.PathLike[str] | None = None,
        method: str = "seap",
        max_loaded: int = 2,
        calibration: int = 200,
        bias: bool = True,
        join_confused: bool = True,
        progress: bool = True,
        by: str | None = None,
        **schedule: Any,
    ) -> Any:
        """Prune the local model once per task (SEAP; ``bias``: with FLAP's bias
        compensation, the validated default), train a router, and answer chats with the
        routed expert from now on.
        ``tasks``: built-in names (see ``models.evaluation.TASKS``) or generic multiple-choice
        JSONL files; a list of them is a family sharing one expert (for tasks whose prompts the
        router cannot tell apart, e.g. ``["arc_easy", "arc_challenge"]``); with
        ``join_confused`` (the default) such tasks are found and joined into families
        before pruning (logged; ``experts.manifest["joined"]`` lists them). Experts live under
        ``path`` (default ``$MEMOS_HOME/experts/<model>-<method>[-bias]-<pct>``); at most
        ``max_loaded`` stay in memory; ``progress``: a bar over the experts. Returns the
        :class:`~memos_integrations.models.seap.experts.ExpertSet`. Experts answer every
        user's chats: the application or an admin (``by``) only."""
        from ..models.seap.experts import build_experts, default_dir

        self.gov.require_super(self.gov.user(by), "build task experts")
        base = self.model
        root = (
            Path(path)
            if path is not None
            else default_dir(base.fingerprint.id, method, sparsity, bias)
        )
        self._experts = build_experts(
            base,
            tasks,
            sparsity,
            root,
            method=method,
            calibration=calibration,
            max_loaded=max_loaded,
            bias=bias,
            join_confused=join_confused,
            progress=progress,
            **schedule,
        )
        return self._experts

    def use_experts(
        self,
        path: str | os.PathLike[str] | None,
        *,
        max_loaded: int = 2,
        by: str | None = None,
    ) -> Any:
        """Answer chats with an expert set built earlier (``None`` goes back to the base);
        the application or an admin (``by``) only."""
        from ..models.seap.experts import ExpertSet

        self.gov.require_super(self.gov.user(by), "switch task experts")
        self._experts = (
            None if path is None else ExpertSet.open(path, self.model, max_loaded=max_loaded)
        )
        return self._experts

    def stream_chat(
        self, plan: ChatPlan, *, max_new_tokens: int = 256, temperature: float = 0.0, **kw: Any
    ) -> Iterator[str]:
        """Generate the answer of a :meth:`plan_chat` plan piece by piece."""
        return self._chat.generate(
            plan, max_new_tokens=max_new_tokens, temperature=temperature, **kw
        )

    def build_activation(
        self, cube: MemCube | str, *, user: str, instructions: str | None = None
    ) -> KVPrefix:
        """Build (or reuse) ``user``'s hot-set KV cache in ``cube`` now, not at the next chat.

        Nothing is searched or counted as an access; ``InvalidInput`` if there is nothing to
        cache. Pass the same ``instructions`` the chats will use, or they rebuild it.
        """
        actor, _ = self._chat_scope(user, cube)
        return self._chat.warm(_cube_id(cube), user=actor, instructions=instructions)

    def promote(
        self,
        cube: MemCube | str,
        *,
        to: str = "parametric",
        user: str | None = None,
        items: Sequence[str] | None = None,
        policy: PromotionPolicy | None = None,
        config: TrainConfig | None = None,
        paraphrase: Paraphraser | None = None,
        replay: Sequence[Any] | None = None,
        instructions: str | None = None,
        progress: bool = True,
    ) -> PromotionReport:
        """Promote the cube's stable memories into a LoRA adapter for the cube's owner.

        ``items`` names the memories explicitly; otherwise ``policy`` chooses them (default: a
        :class:`~memos_integrations.models.parametric.PromotionPolicy` with the settings'
        ``stable_min_age`` and ``stable_min_accesses``, the rule ``maintain()`` reports
        ``promote_parametric`` candidates by, and confidence >= 0.9). ``config`` bounds
        training (steps, seconds); ``paraphrase(statement, n)`` adds LLM rewordings;
        ``replay`` (texts and/or chat examples) anchors the base model's behaviour (default:
        its own answers to unrelated questions under ``instructions``). Owner or admin only;
        the new adapter replaces the owner's previous one for this model. From then on the
        scheduler's adapter slot picks it for the owner's ``auto`` and ``parametric-only``
        chats (see :meth:`explain`).
        """
        if to != "parametric":
            raise InvalidInput(
                f"promote(to=...) supports 'parametric' (got {to!r}); the activation tier is "
                "built by build_activation()"
            )
        found = self.gov.cube(_cube_id(cube))
        self.gov.require_owner(self.gov.user(user), found)
        text = _instructions(instructions)
        if items is not None:
            items = [check_id(i, "item") for i in _as_inputs(items)]
        return self._chat.parametric.promote(
            found,
            actor=user,
            items=items,
            policy=policy,
            instructions=text,
            digest=digest(text),
            config=config,
            paraphrase=paraphrase,
            replay=replay,
            progress=progress,
        )

    def unload_adapters(self, *, owner: str | None = None) -> int:
        """Uninstall LoRA adapters from this process's local model (``owner``'s only, or all)
        to free memory; they load again on the next chat that needs them. Nothing stored
        changes. Returns how many were installed."""
        if owner is None:
            return self._chat.parametric.unload()
        return self._chat.parametric.forget(check_id(owner, "user"))

    def _chat_scope(self, user: str, cube: MemCube | str | None) -> tuple[str, str | None]:
        """The acting user and the cube holding their hot set, checked for reading."""
        actor = self.gov.user(check_id(user, "user"))
        home = _cube_id(cube) if cube is not None else self._home_cube(actor.id)
        if home is not None:
            self.gov.require_read(actor, self.gov.cube(home))
        return actor.id, home

    def artifacts(
        self, cube: MemCube | str, *, user: str | None = None, kind: str | None = None
    ) -> builtins.list[Artifact]:
        """A cube's activation/parametric artifacts (metadata only), ``stale`` up to date."""
        found = self.get_cube(cube, user=user)
        return [
            dataclasses.replace(a, stale=a.stale or self._chat.is_stale(a))
            for a in self.store.list_artifacts(found.id, kind, with_payload=False)
        ]

    def _home_cube(self, user: str) -> str | None:
        owned = self.store.list_cubes(owner=user)
        return owned[0].id if len(owned) == 1 else None

    # ------------------------------------------------------------------ async twins

    acreate_user = _threaded(create_user)
    acreate_cube = _threaded(create_cube)
    aget_cube = _threaded(get_cube)
    alist_cubes = _threaded(list_cubes)
    agrant = _threaded(grant)
    arevoke = _threaded(revoke)
    agrants = _threaded(grants)
    aadd = _threaded(add)
    arefine = _threaded(refine)
    await_refinements = _threaded(wait_refinements)
    aingest = _threaded(ingest)
    asearch = _threaded(search)
    aget = _threaded(get)
    alist = _threaded(list)
    acount = _threaded(count)
    ahistory = _threaded(history)
    atransitions = _threaded(transitions)
    aupdate = _threaded(update)
    arollback = _threaded(rollback)
    aset_state = _threaded(set_state)
    adelete = _threaded(delete)
    adelete_many = _threaded(delete_many)
    aset_state_many = _threaded(set_state_many)
    aexpire_due = _threaded(expire_due)
    aforget_user = _threaded(forget_user)
    aaudit = _threaded(audit)
    astats = _threaded(stats)
    aexport_cube = _threaded(export_cube)
    aimport_cube = _threaded(import_cube)
    aplan_chat = _threaded(plan_chat)
    aexplain = _threaded(explain)
    aworking_memory = _threaded(working_memory)
    amaintain = _threaded(maintain)
    aget_user = _threaded(get_user)
    alist_users = _threaded(list_users)
    achat = _threaded(chat)
    abuild_activation = _threaded(build_activation)
    abuild_experts = _threaded(build_experts)
    ause_experts = _threaded(use_experts)
    aartifacts = _threaded(artifacts)
    apromote = _threaded(promote)
    aunload_adapters = _threaded(unload_adapters)


def _governed(method: Callable[..., T]) -> Callable[..., T]:
    """Record refusals of the outermost engine call as ``denied:<method>`` audit records."""

    @functools.wraps(method)
    def guarded(self: MemOS, *args: Any, **kwargs: Any) -> T:
        if getattr(self._local, "in_call", False):  # a nested call: the outer one records
            return method(self, *args, **kwargs)
        self._local.in_call = True
        try:
            return method(self, *args, **kwargs)
        except (PermissionDenied, Hidden) as exc:
            actor = kwargs.get("user") or kwargs.get("by")
            if isinstance(actor, str) and not self._closed:
                self.store.add_audit(
                    AuditRecord(actor, f"denied:{method.__name__}", detail={"error": str(exc)})
                )
            if isinstance(exc, Hidden):  # to the caller, hidden is exactly missing
                raise NotFound(str(exc)) from None
            raise
        finally:
            self._local.in_call = False

    return guarded


# Every public sync method is governed; the async twins call them through the instance.
for _name, _fn in builtins.list(vars(MemOS).items()):
    if (
        not _name.startswith("_")
        and inspect.isfunction(_fn)
        and not inspect.iscoroutinefunction(_fn)
        and _name != "close"
    ):
        setattr(MemOS, _name, _governed(_fn))


def _is_loaded(model: Any) -> bool:
    from ..models.runtime import LocalModel

    return isinstance(model, LocalModel)


def _denied(subject: str) -> PermissionDenied:
    return PermissionDenied(f"only the root principal, an admin or {subject!r} may do this")


__all__ = ["MemOS", "Reader"]
