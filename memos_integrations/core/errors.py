"""One error hierarchy for the whole package.

Every error a caller can get from the engine, a store or an adapter derives from
:class:`MemOSError`, so ``except MemOSError`` is always enough. Messages say what
went wrong *and* what to do about it.
"""

from __future__ import annotations


class MemOSError(Exception):
    """Base class of every error raised by memos_integrations."""


class InvalidInput(MemOSError, ValueError):
    """The caller passed something the engine will not store or run (nothing was written)."""


class FilterError(InvalidInput):
    """A search/list filter is malformed; raised before any SQL is built."""


class NotFound(MemOSError, KeyError):
    """A user, cube, item or version does not exist (or is not visible to the caller)."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class PermissionDenied(MemOSError, PermissionError):
    """The acting user lacks the grant the operation needs."""


class Conflict(MemOSError):
    """The operation clashes with existing state (duplicate id, content collision, ...)."""


class InvalidTransition(Conflict):
    """A lifecycle transition that the state machine does not allow."""


class EmbedderMismatch(MemOSError):
    """The store was built with another embedding model than the one given now."""


class StaleArtifact(MemOSError):
    """A derived artifact (KV cache, adapter) was built from sources that changed since."""


class ModelMismatch(MemOSError):
    """An artifact (KV cache, adapter) built for another model than the one given now."""


class CorruptExport(MemOSError):
    """A cube export failed its checksum, schema or structure checks (nothing was imported)."""


class BackendUnavailable(MemOSError):
    """A storage backend, model or optional dependency cannot be used here."""


__all__ = [
    "BackendUnavailable",
    "Conflict",
    "CorruptExport",
    "EmbedderMismatch",
    "FilterError",
    "InvalidInput",
    "InvalidTransition",
    "MemOSError",
    "ModelMismatch",
    "NotFound",
    "PermissionDenied",
    "StaleArtifact",
]
