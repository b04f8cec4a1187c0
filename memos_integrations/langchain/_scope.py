"""Who a LangChain call acts for, and which cube it writes to.

Every adapter resolves a user (never guessed: from its constructor, the run's context or the
run config) and a cube, creating them on first use when the application allows it. Keeping
this in one place is what lets the store, the middleware and the tools agree on where one
user's memories live.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..core.engine import MemOS
from ..core.errors import Conflict, InvalidInput, NotFound
from ..core.items import check_id

USER_KEY = "user_id"
CUBE_KEY = "cube_id"


def ensure_user(mos: MemOS, user: str, *, create: bool) -> str:
    """``user`` as a known user id; registered first when ``create`` (the app vouches for it)."""
    check_id(user, "user")
    try:
        mos.get_user(user)
    except NotFound:
        if not create:
            raise
        with contextlib.suppress(Conflict):  # created concurrently elsewhere: fine
            mos.create_user(user)
    return user


def is_known(mos: MemOS, user: str, *, missing_ok: bool) -> bool:
    """Whether ``user`` exists; an unknown user is fine to *read* as "no memories yet" only when
    the adapter may create users (``missing_ok``), and an error otherwise."""
    try:
        mos.get_user(check_id(user, "user"))
    except NotFound:
        if not missing_ok:
            raise
        return False
    return True


def user_cube(mos: MemOS, user: str, cube: str | None = None, *, create: bool = True) -> str:
    """The cube ``user``'s memories go to.

    ``cube`` may name one (``"{user}"`` in it is replaced by the user id). Without it, the
    user's only owned cube is used; a user who owns none gets one with the user's id when
    ``create`` is true. A user owning several cubes must say which.
    """
    ensure_user(mos, user, create=create)
    if cube is not None:
        cube_id = check_id(cube.replace("{user}", user), "cube")
        try:
            mos.get_cube(cube_id)
        except NotFound:
            if not create:
                raise
            _create_cube(mos, cube_id, user)
        return cube_id
    owned = [c.id for c in mos.list_cubes(user=user) if c.owner == user]
    if len(owned) == 1:
        return owned[0]
    if owned:
        raise InvalidInput(
            f"user {user!r} owns {len(owned)} cubes ({', '.join(owned[:5])}); pass cube= "
            "(or cube_id in the run config) to say which one to use"
        )
    if not create:
        raise NotFound(f"user {user!r} owns no cube; create one with mos.create_cube()")
    _create_cube(mos, user, user)
    return user


def _create_cube(mos: MemOS, cube_id: str, owner: str) -> None:
    try:
        mos.create_cube(cube_id, owner=owner)
    except Conflict:
        if mos.get_cube(cube_id).owner != owner:
            raise
        # created concurrently for the same owner: fine


def run_value(context: Any, config: Mapping[str, Any] | None, key: str) -> str | None:
    """``key`` from the run's context (a mapping or an object) or else its config.

    The context wins because LangGraph's ``context_schema`` is the typed, recommended place;
    ``config["configurable"]`` is where LangGraph Platform and older code put it.
    """
    value = None
    if isinstance(context, Mapping):
        value = context.get(key)
    elif context is not None:
        value = getattr(context, key, None)
    if value is None and config is not None:
        value = (config.get("configurable") or {}).get(key)
    if value is not None and not isinstance(value, str):
        raise InvalidInput(f"{key} in the run context/config must be a string, got {value!r}")
    return value


@dataclass(frozen=True)
class RunIdentity:
    """Who a call acts for: the user, the cube to write to (None: theirs) and the thread."""

    user: str
    cube: str | None
    thread: str | None


def run_identity(
    who: str,
    user: str | None,
    cube: str | None,
    context: Any,
    config: Mapping[str, Any] | None,
) -> RunIdentity:
    """The identity of a run: fixed ``user``/``cube`` win, else the run's context/config.

    No user is an error (``who`` names the adapter in it): memory is never read or written
    for "nobody", nor for a user guessed from elsewhere.
    """
    user = user or run_value(context, config, USER_KEY)
    if user is None:
        raise InvalidInput(
            f"{who} needs a user: pass user=..., a runtime context with user_id, or "
            "config={'configurable': {'user_id': ...}}"
        )
    cube = run_value(context, config, CUBE_KEY) or cube
    return RunIdentity(user, cube, run_value(None, config, "thread_id"))
