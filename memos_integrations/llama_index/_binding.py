"""Which engine, user and cube an adapter works on, in a form that survives serialisation.

LlamaIndex serialises an agent's memory into the workflow ``Context`` (``Context.to_dict``)
and rebuilds it with ``cls.from_dict(data)``. A live engine cannot travel in JSON, so the
adapters keep its store URL and find the engine again by URL: the one this process opened
(registered when an adapter was built with it), or else a fresh ``MemOS.open(url)``.
"""

from __future__ import annotations

import contextlib
import threading
import weakref
from dataclasses import dataclass
from typing import Any

from llama_index.core.bridge.pydantic import BaseModel, Field, PrivateAttr

from ..core.engine import MemOS
from ..core.errors import Conflict, InvalidInput, NotFound, PermissionDenied
from ..core.items import check_id

_lock = threading.Lock()
_live: dict[str, weakref.ref[MemOS]] = {}  # url -> the engine adapters were last built with
_owned: dict[str, MemOS] = {}  # engines this module opened itself (kept alive here)


def register_engine(mos: MemOS) -> None:
    """Make ``mos`` the engine that restored adapters use for its store URL.

    Adapters built with an engine register it themselves; call this after reopening a store
    and before restoring serialised adapters (a workflow ``Context``), so they share it.
    """
    with _lock:
        _live[mos.store.url] = weakref.ref(mos)


def engine_for(url: str) -> MemOS:
    """The open engine for ``url`` in this process, opening one if there is none."""
    with _lock:
        ref = _live.get(url)
        mos = ref() if ref is not None else None
        if mos is None or mos.closed:
            mos = MemOS.open(url)
            _owned[url] = mos
            _live[url] = weakref.ref(mos)
        return mos


def forget_engines() -> None:
    """Drop every registered engine and close the ones opened here (as a new process would)."""
    with _lock:
        _live.clear()
        owned = list(_owned.values())
        _owned.clear()
    for mos in owned:
        mos.close()


@dataclass(frozen=True)
class Target:
    """Where an operation runs: the engine, the acting user and the cube written to."""

    mos: MemOS
    user: str
    cube: str


def ensure_user(mos: MemOS, user_id: str) -> None:
    """Create ``user_id`` if the store does not know it yet."""
    try:
        mos.get_user(user_id)
    except NotFound:
        with contextlib.suppress(Conflict):  # created concurrently by another adapter
            mos.create_user(user_id)


def provision(mos: MemOS, user_id: str, cube_id: str | None) -> str:
    """The cube ``user_id`` works in, creating the user and the cube if they do not exist.

    Without ``cube_id`` it is the user's ``<user>-personal`` cube, or the only cube they
    own, created for a user who owns none. A cube of another user is used only if that
    user granted access.
    """
    ensure_user(mos, user_id)
    if cube_id is None:
        personal = f"{user_id}-personal"
        owned = [c.id for c in mos.list_cubes(user=user_id) if c.owner == user_id]
        if len(owned) > 1 and personal not in owned:
            raise InvalidInput(
                f"user {user_id!r} owns {len(owned)} cubes ({', '.join(sorted(owned))}); "
                "pass cube_id= to say which one to use"
            )
        cube_id = owned[0] if len(owned) == 1 else personal
    try:
        return mos.get_cube(cube_id, user=user_id).id
    except NotFound:
        pass
    try:
        return mos.create_cube(cube_id, owner=user_id).id
    except Conflict:
        pass
    try:  # another adapter created it meanwhile, or it belongs to someone else
        return mos.get_cube(cube_id, user=user_id).id
    except NotFound:
        raise PermissionDenied(
            f"cube {cube_id!r} belongs to another user and {user_id!r} has no grant on it"
        ) from None


class EngineBound(BaseModel):
    """A pydantic adapter that holds an engine privately and serialises its store URL."""

    store_url: str = Field(description="URL of the MemOS store (the engine is found by it).")
    _mos: MemOS | None = PrivateAttr(default=None)

    def __init__(self, mos: MemOS | None = None, **data: Any) -> None:
        if mos is not None:
            if not isinstance(mos, MemOS):
                raise InvalidInput(f"mos must be a MemOS engine, got {type(mos).__name__}")
            data["store_url"] = mos.store.url
        elif not isinstance(data.get("store_url"), str):
            raise InvalidInput("pass mos= (a MemOS engine) or the store_url of one")
        super().__init__(**data)
        if mos is not None:
            register_engine(mos)
            self._mos = mos

    @property
    def mos(self) -> MemOS:
        if self._mos is None or self._mos.closed:
            self._mos = engine_for(self.store_url)
        return self._mos


class UserBound(EngineBound):
    """An adapter acting for one user in one cube (the cube is resolved on first use)."""

    user_id: str = Field(description="The end user every read and write acts as.")
    cube_id: str | None = Field(
        default=None,
        description="The cube written to; None: the user's own cube (set on first use).",
    )
    _cube: str | None = PrivateAttr(default=None)

    def __init__(self, mos: MemOS | None = None, **data: Any) -> None:
        # validated here, not in a pydantic validator, so the error stays an InvalidInput
        check_id(data.get("user_id"), "user")
        if data.get("cube_id") is not None:
            check_id(data["cube_id"], "cube")
        super().__init__(mos, **data)

    def target(self) -> Target:
        """The engine, user and cube to act on (blocking: call it from a worker thread)."""
        mos = self.mos
        if self._cube is None or self._cube != self.cube_id:
            self._cube = provision(mos, self.user_id, self.cube_id)
            # kept, so a serialised adapter comes back to this cube whatever cubes follow
            self.cube_id = self._cube
        return Target(mos, self.user_id, self._cube)
