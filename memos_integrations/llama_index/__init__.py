"""LlamaIndex adapters: MemOS as agent memory, memory block, chat store, vector store,
retriever, embedding model and a local LLM that answers from memory.

Needs the ``llama-index`` extra (``pip install 'memos-integrations[llama-index]'``);
``import memos_integrations`` alone never imports LlamaIndex.
"""

from __future__ import annotations

try:
    import llama_index.core  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    from ..core.errors import BackendUnavailable

    raise BackendUnavailable(
        "memos_integrations.llama_index needs llama-index-core: "
        "pip install 'memos-integrations[llama-index]'"
    ) from exc

from ._binding import register_engine
from .chat_store import MemOSChatStore
from .embedding import MemOSEmbedding
from .llm import MemOSLLM
from .memory import MemOSMemory
from .memory_block import MemOSMemoryBlock
from .retriever import MemOSRetriever
from .vector_store import MemOSVectorStore

__all__ = [
    "MemOSChatStore",
    "MemOSEmbedding",
    "MemOSLLM",
    "MemOSMemory",
    "MemOSMemoryBlock",
    "MemOSRetriever",
    "MemOSVectorStore",
    "register_engine",
]
