"""The lifecycle state machine of a plaintext memory.

``generated`` -> ``activated`` -> (``merged`` | ``archived`` | ``expired``), and a ``deleted``
tombstone reachable from everywhere. An item is ``generated`` when written and becomes
``activated`` the first time it is served (retrieved or read), as in the MemOS paper.
Every transition is recorded by the store; nothing here touches storage.
"""

from __future__ import annotations

from typing import Final, Literal

from .errors import InvalidInput, InvalidTransition

State = Literal["generated", "activated", "merged", "archived", "expired", "deleted"]

STATES: Final[tuple[State, ...]] = (
    "generated",
    "activated",
    "merged",
    "archived",
    "expired",
    "deleted",
)

# Which states may follow which. Archived and expired items can be brought back;
# merged items point at their successor and only go to the tombstone.
ALLOWED: Final[dict[str, frozenset[str]]] = {
    "generated": frozenset({"activated", "merged", "archived", "expired", "deleted"}),
    "activated": frozenset({"merged", "archived", "expired", "deleted"}),
    "merged": frozenset({"deleted"}),
    "archived": frozenset({"activated", "deleted"}),
    "expired": frozenset({"activated", "archived", "deleted"}),
    "deleted": frozenset(),
}

# States that search and list return unless the caller asks for others.
SERVED_STATES: Final[tuple[State, ...]] = ("generated", "activated")
# States that list and count return unless asked: everything but tombstones.
LISTED_STATES: Final[tuple[State, ...]] = tuple(s for s in STATES if s != "deleted")


def check_state(state: str) -> State:
    if state not in STATES:
        raise InvalidInput(f"unknown state {state!r}; expected one of {', '.join(STATES)}")
    return state  # type: ignore[return-value]


def check_transition(current: str, target: str) -> None:
    """Raise :class:`InvalidTransition` unless ``current -> target`` is allowed."""
    check_state(target)
    if target not in ALLOWED[current]:
        allowed = ", ".join(sorted(ALLOWED[current])) or "none (terminal state)"
        raise InvalidTransition(
            f"cannot move an item from {current!r} to {target!r}; allowed from {current!r}: "
            f"{allowed}"
        )
