"""Who may do what, what is recorded, and what is never stored.

Principals: ``None`` is the application itself (the root principal, trusted: it passes
every check); users with role ``admin`` pass every check too; users with role ``user`` may
read cubes they own or hold a grant on, and write cubes they own or hold a write grant on;
``guest`` users are read-only: they own nothing, hold read grants only and write nowhere.
Items with visibility ``private`` are seen only by their owner (and root/admins).

Every engine method goes through these checks (``tests/test_governance.py`` calls each public
method as an outsider); refusals are written to the audit log as ``denied:<method>``.

:class:`Redactor` masks personal data (e-mail addresses, phone numbers, payment card numbers,
or patterns of your own) in everything a caller sends before any of it is stored.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final

from ..storage.base import AuditQuery, Scope, Store
from .cube import MemCube
from .errors import InvalidInput, NotFound, PermissionDenied
from .items import MemoryItem, User

ROLES: Final[tuple[str, ...]] = ("admin", "user", "guest")


class Hidden(NotFound):
    """A cube the caller may not read: reported exactly like a missing one (so its existence
    is not revealed), but the engine knows to audit the refusal."""


class Governance:
    def __init__(self, store: Store) -> None:
        self.store = store

    def user(self, user_id: str | None) -> User | None:
        """The acting user (``None`` stays root). Unknown ids are an error, never a guess."""
        if user_id is None:
            return None
        user = self.store.get_user(user_id)
        if user is None:
            raise NotFound(f"unknown user {user_id!r}; create it first with mos.create_user()")
        return user

    def cube(self, cube_id: str) -> MemCube:
        cube = self.store.get_cube(cube_id)
        if cube is None:
            raise NotFound(f"unknown cube {cube_id!r}; create it first with mos.create_cube()")
        return cube

    @staticmethod
    def is_super(user: User | None) -> bool:
        return user is None or user.role == "admin"

    def access(self, user: User | None, cube: MemCube) -> str | None:
        """'owner', 'write', 'read' or None (a guest's grants count as read grants)."""
        if self.is_super(user) or cube.owner == user.id:  # type: ignore[union-attr]
            return "owner"
        grants = self.store.list_grants(cube_id=cube.id, user_id=user.id)  # type: ignore[union-attr]
        if not grants:
            return None
        return "read" if user.role == "guest" else grants[0].access  # type: ignore[union-attr]

    def require_super(self, user: User | None, what: str) -> None:
        if not self.is_super(user):
            raise PermissionDenied(f"only the application or an admin may {what}")

    def require_read(self, user: User | None, cube: MemCube) -> None:
        if self.access(user, cube) is None:
            # Same message as a missing cube: do not reveal that someone else's cube exists.
            raise Hidden(f"unknown cube {cube.id!r}, or no read grant on it")

    def require_write(self, user: User | None, cube: MemCube) -> None:
        access = self.access(user, cube)
        if access is None:
            raise Hidden(f"unknown cube {cube.id!r}, or no read grant on it")
        if access == "read":
            raise PermissionDenied(
                f"user {user.id!r} may only read cube {cube.id!r}; ask its owner "  # type: ignore[union-attr]
                f"({cube.owner!r}) for a write grant"
            )

    def require_owner(self, user: User | None, cube: MemCube) -> None:
        if self.access(user, cube) != "owner":
            raise PermissionDenied(
                f"only the owner of cube {cube.id!r} ({cube.owner!r}) may do this"
            )

    @staticmethod
    def require_can_own(user: User) -> None:
        if user.role == "guest":
            raise PermissionDenied(f"{user.id!r} is a guest: guests own no cubes and write nowhere")

    def readable(self, user: User | None, cube_ids: list[str] | None = None) -> Scope:
        """The scope a search or list runs in: explicit cubes (checked) or all readable."""
        if cube_ids is not None:
            for cid in cube_ids:
                self.require_read(user, self.cube(cid))
            return Scope(tuple(cube_ids), None if self.is_super(user) else user.id)  # type: ignore[union-attr]
        if self.is_super(user):
            return Scope(None, None)
        owned = [c.id for c in self.store.list_cubes(owner=user.id)]  # type: ignore[union-attr]
        granted = [g.cube_id for g in self.store.list_grants(user_id=user.id)]  # type: ignore[union-attr]
        return Scope(tuple(dict.fromkeys(owned + granted)), user.id)  # type: ignore[union-attr]

    def writable(self, user: User | None, cube_ids: list[str] | None = None) -> Scope:
        """The scope of maintenance: explicit cubes (checked for writing) or all writable."""
        if cube_ids is not None:
            for cid in cube_ids:
                self.require_write(user, self.cube(cid))
            return Scope(tuple(cube_ids), None)
        if self.is_super(user):
            return Scope(None, None)
        if user.role == "guest":  # type: ignore[union-attr]
            return Scope((), None)
        owned = [c.id for c in self.store.list_cubes(owner=user.id)]  # type: ignore[union-attr]
        granted = [
            g.cube_id
            for g in self.store.list_grants(user_id=user.id)  # type: ignore[union-attr]
            if g.access == "write"
        ]
        return Scope(tuple(dict.fromkeys(owned + granted)), None)

    def visible(self, user: User | None, item: MemoryItem) -> bool:
        if self.is_super(user):
            return True
        if item.visibility == "private" and item.owner != user.id:  # type: ignore[union-attr]
            return False
        return self.access(user, self.cube(item.cube_id)) is not None

    def audit_view(self, user: User | None, query: AuditQuery) -> AuditQuery:
        """Limit an audit query to what ``user`` may see: everything for root and admins;
        otherwise their own actions, actions on them, and actions in the cubes they own."""
        if self.is_super(user):
            return query
        from dataclasses import replace

        owned = tuple(c.id for c in self.store.list_cubes(owner=user.id))  # type: ignore[union-attr]
        return replace(query, viewer=user.id, viewer_cubes=owned)  # type: ignore[union-attr]


# ---------------------------------------------------------------------------- redaction


def _luhn(digits: str) -> bool:
    total = 0
    for n, ch in enumerate(reversed(digits)):
        d = int(ch)
        if n % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _card(match: re.Match[str]) -> bool:
    digits = re.sub(r"\D", "", match.group(0))
    return 13 <= len(digits) <= 19 and _luhn(digits)


def _phone(match: re.Match[str]) -> bool:
    text = match.group(0)
    digits = re.sub(r"\D", "", text)
    if not 7 <= len(digits) <= 15:
        return False
    # an ISO date, a time or a plain year range is not a phone number
    return not re.fullmatch(r"\d{4}-\d{2}-\d{2}|\d{1,4}([-.:/]\d{1,4}){0,2}", text.strip())


# name -> (pattern, check on the match): checks keep dates and order numbers out
BUILTIN_PATTERNS: Final[dict[str, tuple[str, Callable[[re.Match[str]], bool] | None]]] = {
    "email": (r"(?<![\w.+-])[\w.+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}", None),
    "card": (r"(?<!\d)(?:\d[ -]?){12,18}\d(?!\d)", _card),
    "phone": (r"(?<![\w+])\+?\(?\d[\d ().-]{5,}\d(?!\w)", _phone),
}
# Cards first: a card number also looks like a long phone number.
DEFAULT_REDACT: Final[tuple[str, ...]] = ("email", "card", "phone")


class Redactor:
    """Masks personal data in text and in JSON values (strings inside dicts and lists).

    >>> Redactor().text("mail bob@example.com or call +1 415 555 0100")
    'mail [email] or call [phone]'

    ``patterns``: names of built-in patterns (``email``, ``card`` with a Luhn check,
    ``phone``) and/or ``{name: regex}`` of your own; each match becomes ``[name]``
    (``replacement`` is a format string with ``{name}``).
    """

    def __init__(
        self,
        patterns: Iterable[str] | Mapping[str, str] = DEFAULT_REDACT,
        *,
        replacement: str = "[{name}]",
    ) -> None:
        chosen: list[tuple[str, re.Pattern[str], Callable[[re.Match[str]], bool] | None]] = []
        items = patterns.items() if isinstance(patterns, Mapping) else ((p, None) for p in patterns)
        for name, regex in items:
            if regex is None:
                if name not in BUILTIN_PATTERNS:
                    raise InvalidInput(
                        f"unknown redaction pattern {name!r}; built in: "
                        f"{', '.join(BUILTIN_PATTERNS)} (or pass {{name: regex}})"
                    )
                regex, check = BUILTIN_PATTERNS[name]
            else:
                check = None
            try:
                chosen.append((name, re.compile(regex), check))
            except re.error as exc:
                raise InvalidInput(f"redaction pattern {name!r} is not a regex: {exc}") from None
        self.patterns = tuple(chosen)
        self.replacement = replacement

    def text(self, value: str) -> str:
        for name, regex, check in self.patterns:
            mask = self.replacement.format(name=name)
            value = regex.sub(
                lambda m, mask=mask, check=check: mask if check is None or check(m) else m.group(0),
                value,
            )
        return value

    __call__ = text

    def value(self, value: Any) -> Any:
        """A JSON value with every string redacted (keys are kept: they are field names)."""
        return redact_value(self.text, value)


def as_redactor(value: Any) -> Callable[[str], str] | None:
    """``None``/``False`` (off), ``True`` (the built-in patterns), pattern names, a
    :class:`Redactor` or any ``str -> str`` callable."""
    if value is None or value is False:
        return None
    if value is True:
        return Redactor()
    if isinstance(value, Redactor) or callable(value):
        return value
    if isinstance(value, Iterable) and not isinstance(value, str | bytes):
        return Redactor(value)
    raise InvalidInput("redact must be True, pattern names, a Redactor or a str -> str function")


def redact_value(redact: Callable[[str], str] | None, value: Any) -> Any:
    """Apply a text redactor to every string of a JSON value (``None`` redactor: unchanged)."""
    if redact is None:
        return value
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, Mapping):
        return {k: redact_value(redact, v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(redact_value(redact, v) for v in value)
    return value
