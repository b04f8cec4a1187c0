"""MemCube: a named, owned container of memories of all three tiers."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from .items import utcnow


@dataclass(frozen=True)
class MemCube:
    """One user's (or a team's) memory. Items and artifacts reference it by ``id``.

    ``owner`` may read, write and share it; other users need a read or write grant.
    """

    id: str
    name: str
    owner: str
    description: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)
    created_at: datetime = field(default_factory=utcnow)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "owner": self.owner,
            "description": self.description,
            "metadata": self.metadata,
            "created_at": self.created_at.isoformat(),
        }


@dataclass(frozen=True)
class Artifact:
    """A derived memory of the activation or parametric tier (KV cache, LoRA adapter).

    ``payload`` is safetensors bytes, never a pickle; ``sources`` maps the item ids it was
    built from to their versions, so a change to any of them marks the artifact stale.
    """

    id: str
    cube_id: str
    kind: str  # activation | parametric | expert
    name: str
    payload: bytes
    fingerprint: dict[str, Any] = field(default_factory=dict)
    sources: dict[str, int] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    stale: bool = False
    created_at: datetime = field(default_factory=utcnow)
