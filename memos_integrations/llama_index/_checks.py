"""Argument checks that raise the package's own errors (pydantic would raise its own)."""

from __future__ import annotations

from typing import Any

from ..core.errors import InvalidInput


def check_int(value: Any, what: str, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise InvalidInput(f"{what} must be an integer from {lo} to {hi}, got {value!r}")
    return value


def check_choice(value: Any, what: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise InvalidInput(f"{what} must be one of {', '.join(choices)}, got {value!r}")
    return value
