"""LangChain 1.x / LangGraph adapters: MemOS as the long-term memory of LangChain agents.

Needs the ``[langchain]`` extra (``pip install "memos-integrations[langchain]"``); the core
package never imports LangChain.
"""

from __future__ import annotations

try:
    import langchain_core  # noqa: F401
    import langgraph.store.base  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    from ..core.errors import BackendUnavailable

    raise BackendUnavailable(
        f"memos_integrations.langchain needs LangChain and LangGraph ({exc.name} is missing): "
        'pip install "memos-integrations[langchain]"'
    ) from exc

from .chat_model import ChatMemOS
from .embeddings import MemOSEmbeddings
from .history import MemOSChatMessageHistory
from .middleware import MemOSMemoryMiddleware
from .retriever import MemOSRetriever
from .store import MemOSStore
from .tools import create_memos_tools
from .vectorstore import MemOSVectorStore

__all__ = [
    "ChatMemOS",
    "MemOSChatMessageHistory",
    "MemOSEmbeddings",
    "MemOSMemoryMiddleware",
    "MemOSRetriever",
    "MemOSStore",
    "MemOSVectorStore",
    "create_memos_tools",
]
