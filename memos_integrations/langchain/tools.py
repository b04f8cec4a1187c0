"""Memory tools for agents: search, add, update and delete the current user's memories.

The user is never a tool argument (the model cannot choose whose memory it touches): it comes
from ``user=`` or from the run (runtime context or config ``user_id``), and every call goes
through the engine's access checks. Errors come back to the model as the tool's answer.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

from langchain.tools import ToolRuntime
from langchain_core.tools import BaseTool, StructuredTool, ToolException

from ..core.engine import MemOS
from ..core.errors import InvalidInput, MemOSError
from ..core.items import MemoryItem, SearchHit
from ._scope import RunIdentity, is_known, run_identity, user_cube

TOOL_NAMES = ("search", "add", "update", "delete")


def _told_to_model(method: Callable[..., str]) -> Callable[..., str]:
    """MemOS errors become the tool's answer (a ToolException), so the model learns what went
    wrong; a run without a user is the application's bug and is raised before this."""

    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> str:
        try:
            return method(*args, **kwargs)
        except MemOSError as exc:
            raise ToolException(f"{type(exc).__name__}: {exc}") from exc

    return wrapper


class _MemoryTools:
    """The tool bodies, bound to one engine; each acts for the identity it is given."""

    def __init__(
        self, mos: MemOS, user: str | None, cube: str | None, k: int, kind: str, create: bool
    ) -> None:
        self.mos, self.user, self.cube, self.k = mos, user, cube, k
        self.kind, self.create = kind, create

    def who(self, runtime: ToolRuntime) -> RunIdentity:
        return run_identity(
            "the MemOS memory tools", self.user, self.cube, runtime.context, runtime.config
        )

    @_told_to_model
    def search(self, who: RunIdentity, query: str) -> str:
        if not is_known(self.mos, who.user, missing_ok=self.create):
            return _hits_text([])
        return _hits_text(self.mos.search(query, user=who.user, k=self.k))

    @_told_to_model
    def add(self, who: RunIdentity, text: str) -> str:
        cube = user_cube(self.mos, who.user, who.cube, create=self.create)
        [item] = self.mos.add(
            {"text": text, "kind": self.kind, "provenance": {"extractor": "agent"}},
            user=who.user,
            cube=cube,
            session=who.thread,
        )
        return f"Saved memory {item.id}."

    @_told_to_model
    def update(self, who: RunIdentity, memory_id: str, text: str) -> str:
        item = self.mos.update(memory_id, user=who.user, text=text, note="updated by the agent")
        return f"Updated memory {item.id} (now version {item.version})."

    @_told_to_model
    def delete(self, who: RunIdentity, memory_id: str) -> str:
        self.mos.delete(memory_id, user=who.user, reason="deleted by the agent")
        return f"Deleted memory {memory_id}."


def create_memos_tools(
    mos: MemOS,
    *,
    user: str | None = None,
    cube: str | None = None,
    allow: Sequence[str] = TOOL_NAMES,
    k: int = 5,
    kind: str = "fact",
    create_missing: bool = True,
) -> list[BaseTool]:
    """Tools ``search_memory``, ``add_memory``, ``update_memory``, ``delete_memory``.

    ``allow`` picks some of ``"search", "add", "update", "delete"`` (a read-only agent gets
    ``allow=("search",)``). Memories the agent adds get ``kind`` and go to the user's cube
    (``cube=``, or ``cube_id`` in the run, or the user's own). Update and delete reach any
    memory the user may write, and nothing else: the engine refuses the rest. Sync tools;
    LangChain runs them in a worker thread when the agent is async.
    """
    unknown = set(allow) - set(TOOL_NAMES)
    if unknown:
        raise InvalidInput(f"unknown memory tools {sorted(unknown)}; choose from {TOOL_NAMES}")
    body = _MemoryTools(mos, user, cube, k, kind, create_missing)

    def search_memory(query: str, runtime: ToolRuntime) -> str:
        """Search the user's long-term memory. Returns matching memories with their ids."""
        return body.search(body.who(runtime), query)

    def add_memory(text: str, runtime: ToolRuntime) -> str:
        """Save a new fact about the user to long-term memory (one self-contained sentence).
        Returns the new memory's id."""
        return body.add(body.who(runtime), text)

    def update_memory(memory_id: str, text: str, runtime: ToolRuntime) -> str:
        """Replace the text of a memory (by id, from search_memory) when a fact changed. The
        old version is kept in the memory's history."""
        return body.update(body.who(runtime), memory_id, text)

    def delete_memory(memory_id: str, runtime: ToolRuntime) -> str:
        """Delete a memory (by id, from search_memory) that is wrong or that the user asked
        to forget."""
        return body.delete(body.who(runtime), memory_id)

    funcs = {
        "search": search_memory,
        "add": add_memory,
        "update": update_memory,
        "delete": delete_memory,
    }
    return [
        StructuredTool.from_function(funcs[name], handle_tool_error=True)
        for name in TOOL_NAMES
        if name in allow
    ]


def _hits_text(hits: Sequence[SearchHit]) -> str:
    if not hits:
        return "No memories found."
    return "\n".join(_line(h.item) for h in hits)


def _line(item: MemoryItem) -> str:
    when = (item.event_time or item.created_at).date().isoformat()
    return f"- id={item.id} [{when}, {item.kind}] {item.text}"
