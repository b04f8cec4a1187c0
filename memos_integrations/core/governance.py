"""Who may do what: the access checks every engine method goes through.

Principals: ``None`` is the application itself (the root principal, trusted: it passes
every check); users with role ``admin`` pass every check too; other users may read cubes
they own or hold a grant on, and write cubes they own or hold a write grant on. Items with
visibility ``private`` are seen only by their owner (and root/admins).
"""

from __future__ import annotations

from ..storage.base import Scope, Store
from .cube import MemCube
from .errors import NotFound, PermissionDenied
from .items import MemoryItem, User


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
        """'owner', 'write', 'read' or None."""
        if self.is_super(user) or cube.owner == user.id:  # type: ignore[union-attr]
            return "owner"
        grants = self.store.list_grants(cube_id=cube.id, user_id=user.id)  # type: ignore[union-attr]
        return grants[0].access if grants else None

    def require_read(self, user: User | None, cube: MemCube) -> None:
        if self.access(user, cube) is None:
            # Same message as a missing cube: do not reveal that someone else's cube exists.
            raise NotFound(f"unknown cube {cube.id!r}, or no read grant on it")

    def require_write(self, user: User | None, cube: MemCube) -> None:
        access = self.access(user, cube)
        if access is None:
            raise NotFound(f"unknown cube {cube.id!r}, or no read grant on it")
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

    def visible(self, user: User | None, item: MemoryItem) -> bool:
        if self.is_super(user):
            return True
        if item.visibility == "private" and item.owner != user.id:  # type: ignore[union-attr]
            return False
        return self.access(user, self.cube(item.cube_id)) is not None
