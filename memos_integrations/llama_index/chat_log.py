"""Session transcripts: the chat messages of one user's sessions, one MemOS item each.

Every message is a keyed item (key ``chat:<uuid>``) of the session, so two identical
messages ("ok", "ok") stay two messages and a replay never merges turns. The active queue
is the live items (``generated``/``activated``); archiving moves items to the ``archived``
lifecycle state, deleting tombstones them (history is kept either way). Everything here
blocks: async callers run these functions in a worker thread.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from llama_index.core.base.llms.types import ChatMessage
from llama_index.core.storage.chat_store.base_db import MessageStatus

from ..core.items import MemoryItem
from ..core.lifecycle import LISTED_STATES, SERVED_STATES
from ._binding import Target
from .messages import CHAT_KINDS, from_item, to_memory

_ALL = 1_000_000  # "no limit" for list(): far above any transcript the engine would serve

STATES: dict[MessageStatus | None, tuple[str, ...]] = {
    MessageStatus.ACTIVE: tuple(SERVED_STATES),
    MessageStatus.ARCHIVED: ("archived",),
    None: tuple(LISTED_STATES),
}


def new_key() -> str:
    return f"chat:{uuid.uuid4().hex}"


def transcript_filter(session: str) -> dict[str, Any]:
    """The items of a session's transcript (keyed turns; not memories derived from them)."""
    return {"session_id": session, "kind": {"$in": list(CHAT_KINDS)}, "key": {"$exists": True}}


def items(
    t: Target,
    session: str,
    status: MessageStatus | None = MessageStatus.ACTIVE,
    *,
    limit: int | None = None,
    offset: int = 0,
    newest_first: bool = False,
) -> list[MemoryItem]:
    if limit == 0:
        return []
    return t.mos.list(
        user=t.user,
        cube=t.cube,
        filter=transcript_filter(session),
        states=STATES[status],
        limit=_ALL if limit is None else limit,
        offset=offset,
        order="created" if newest_first else "created_asc",
    )


def messages(
    t: Target,
    session: str,
    status: MessageStatus | None = MessageStatus.ACTIVE,
    *,
    limit: int | None = None,
    offset: int = 0,
) -> list[ChatMessage]:
    return [from_item(it) for it in items(t, session, status, limit=limit, offset=offset)]


def count(t: Target, session: str, status: MessageStatus | None = MessageStatus.ACTIVE) -> int:
    return t.mos.count(
        user=t.user, cube=t.cube, filter=transcript_filter(session), states=STATES[status]
    )


def append(
    t: Target,
    session: str,
    new: Sequence[ChatMessage],
    status: MessageStatus = MessageStatus.ACTIVE,
) -> list[MemoryItem]:
    """Add messages at the end of the session's transcript, in one transaction."""
    if not new:
        return []
    added = t.mos.add(
        [to_memory(m, key=new_key()) for m in new], user=t.user, cube=t.cube, session=session
    )
    if status == MessageStatus.ARCHIVED:
        move(t, added, "archived", "added as archived")
    return added


def move(t: Target, chosen: Sequence[MemoryItem], state: str, reason: str) -> None:
    t.mos.set_state_many([it.id for it in chosen], state, user=t.user, reason=reason)


def replace(
    t: Target,
    session: str,
    new: Sequence[ChatMessage],
    status: MessageStatus = MessageStatus.ACTIVE,
) -> None:
    """Make ``new`` the whole transcript of the session (the old messages are tombstoned).

    The new messages are written first: if they are refused, the old ones are still there.
    """
    old = items(t, session, None)
    append(t, session, new, status)
    move(t, old, "deleted", "transcript replaced")


def archive_oldest(t: Target, session: str, n: int) -> list[ChatMessage]:
    oldest = items(t, session, limit=n) if n > 0 else []
    move(t, oldest, "archived", "left the short-term queue")
    return [from_item(it) for it in oldest]


def delete_oldest(t: Target, session: str, n: int) -> list[ChatMessage]:
    oldest = items(t, session, limit=n) if n > 0 else []
    move(t, oldest, "deleted", "oldest messages deleted")
    return [from_item(it) for it in oldest]


def sessions(t: Target) -> list[str]:
    """Every session with a transcript in the cube, in order of first message."""
    seen: dict[str, None] = {}
    offset, page = 0, 1000
    while True:
        batch = t.mos.list(
            user=t.user,
            cube=t.cube,
            filter={"kind": {"$in": list(CHAT_KINDS)}, "key": {"$exists": True}},
            limit=page,
            offset=offset,
            order="created_asc",
        )
        for it in batch:
            if it.provenance.session_id is not None:
                seen.setdefault(it.provenance.session_id, None)
        if len(batch) < page:
            return list(seen)
        offset += page


def delete_at(t: Target, session: str, idx: int) -> ChatMessage | None:
    """Delete the message at position ``idx`` of the whole transcript (any status)."""
    found = items(t, session, None, limit=1, offset=idx) if idx >= 0 else []
    move(t, found, "deleted", "message deleted")
    return from_item(found[0]) if found else None


def clear(t: Target, session: str, status: MessageStatus | None = None) -> None:
    move(t, items(t, session, status), "deleted", "transcript cleared")
