"""Reading many memories through ``MemOS.list``: every page, or a set of keys in chunks."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from ..core.engine import MemOS
from ..core.items import MemoryItem

PAGE = 1000  # also the filter language's limit on a $in list


def pages(mos: MemOS, **list_args: Any) -> Iterator[list[MemoryItem]]:
    """``mos.list(**list_args)`` page after page, oldest first, until the last page."""
    offset = 0
    while True:
        page = mos.list(**list_args, limit=PAGE, offset=offset, order="created_asc")
        yield page
        if len(page) < PAGE:
            return
        offset += PAGE


def list_all(mos: MemOS, **list_args: Any) -> list[MemoryItem]:
    return [item for page in pages(mos, **list_args) for item in page]


def by_keys(
    mos: MemOS, keys: Sequence[str], *, filter: dict[str, Any] | None = None, **list_args: Any
) -> list[MemoryItem]:
    """The items with these keys (in no particular order), ``filter`` and ``list_args`` too."""
    found: list[MemoryItem] = []
    for start in range(0, len(keys), PAGE):
        chunk = list(keys[start : start + PAGE])
        where = {**(filter or {}), "key": {"$in": chunk}}
        found += mos.list(**list_args, filter=where, limit=len(chunk))
    return found
