"""memos-integrations: a memory operating system for LLM applications.

Only the core is imported here; framework adapters live in ``memos_integrations.langchain``
and ``memos_integrations.llama_index`` and import their frameworks lazily.
"""

from .core.cube import Artifact, MemCube
from .core.engine import MemOS
from .core.errors import (
    BackendUnavailable,
    Conflict,
    CorruptExport,
    EmbedderMismatch,
    FilterError,
    InvalidInput,
    InvalidTransition,
    MemOSError,
    ModelMismatch,
    NotFound,
    PermissionDenied,
    StaleArtifact,
)
from .core.items import AuditRecord, Grant, ItemVersion, MemoryItem, SearchHit, Transition, User

__version__ = "0.1.0"

__all__ = [
    "Artifact",
    "AuditRecord",
    "BackendUnavailable",
    "Conflict",
    "CorruptExport",
    "EmbedderMismatch",
    "FilterError",
    "Grant",
    "InvalidInput",
    "InvalidTransition",
    "ItemVersion",
    "MemCube",
    "MemOS",
    "MemOSError",
    "MemoryItem",
    "ModelMismatch",
    "NotFound",
    "PermissionDenied",
    "SearchHit",
    "StaleArtifact",
    "Transition",
    "User",
    "__version__",
]
