"""``MemOSEmbedding``: the engine's embedding model as a LlamaIndex ``BaseEmbedding``.

Give it to a ``VectorStoreIndex`` over ``MemOSVectorStore`` so the index needs no other
model (nor an API key), or use it anywhere LlamaIndex wants an embedding model: by default
it is the bundled all-MiniLM-L6-v2, which runs offline in NumPy.
"""

from __future__ import annotations

import asyncio
from typing import Any

from llama_index.core.base.embeddings.base import BaseEmbedding, Embedding
from llama_index.core.bridge.pydantic import Field, PrivateAttr

from ..core.engine import MemOS
from ..core.errors import EmbedderMismatch
from ..embeddings import Embedder, default_embedder
from ._binding import engine_for, register_engine


class MemOSEmbedding(BaseEmbedding):
    """Embeds with ``mos.embedder`` (or the bundled model when no engine is given)."""

    store_url: str | None = Field(
        default=None, description="Store whose embedder to use; None: the bundled model."
    )
    _embedder: Embedder = PrivateAttr()

    def __init__(self, mos: MemOS | None = None, **data: Any) -> None:
        if mos is not None:
            register_engine(mos)
            data["store_url"] = mos.store.url
            embedder = mos.embedder
        elif data.get("store_url"):
            embedder = engine_for(data["store_url"]).embedder
        else:
            embedder = default_embedder()
        if data.setdefault("model_name", embedder.model_id) != embedder.model_id:
            raise EmbedderMismatch(
                f"this embedding was saved for model {data['model_name']!r}, but the store "
                f"now embeds with {embedder.model_id!r}"
            )
        super().__init__(**data)
        self._embedder = embedder

    @classmethod
    def class_name(cls) -> str:
        return "MemOSEmbedding"

    def _get_query_embedding(self, query: str) -> Embedding:
        return self._embedder.embed_query(query).tolist()

    def _get_text_embedding(self, text: str) -> Embedding:
        return self._embedder.embed_documents([text])[0].tolist()

    def _get_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        return self._embedder.embed_documents(texts).tolist()

    # the model runs in NumPy: async calls run it in a worker thread, off the event loop
    async def _aget_query_embedding(self, query: str) -> Embedding:
        return await asyncio.to_thread(self._get_query_embedding, query)

    async def _aget_text_embedding(self, text: str) -> Embedding:
        return await asyncio.to_thread(self._get_text_embedding, text)

    async def _aget_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        return await asyncio.to_thread(self._get_text_embeddings, texts)
