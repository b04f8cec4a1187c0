"""The MemOS embedder (by default the bundled all-MiniLM-L6-v2) as LangChain ``Embeddings``."""

from __future__ import annotations

import asyncio
from typing import Any

from langchain_core.embeddings import Embeddings

from ..embeddings import Embedder, as_embedder


class MemOSEmbeddings(Embeddings):
    """LangChain ``Embeddings`` over a MemOS :class:`~memos_integrations.embeddings.Embedder`.

    >>> emb = MemOSEmbeddings()              # the bundled model, offline, no torch
    >>> emb = MemOSEmbeddings(mos.embedder)  # whatever a MemOS instance embeds with

    Vectors are unit-length float lists. ``model_id`` names the model, so a store opened with
    ``MemOS.open(..., embedder=MemOSEmbeddings())`` records the same model as the default.
    """

    def __init__(self, embedder: Embedder | Any = None) -> None:
        self.embedder: Embedder = as_embedder(embedder)

    @property
    def model_id(self) -> str:
        return self.embedder.model_id

    @property
    def dim(self) -> int:
        return self.embedder.dim

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return self.embedder.embed_documents(list(texts)).tolist()

    def embed_query(self, text: str) -> list[float]:
        return self.embedder.embed_query(text).tolist()

    async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
        return await asyncio.to_thread(self.embed_documents, texts)

    async def aembed_query(self, text: str) -> list[float]:
        return await asyncio.to_thread(self.embed_query, text)

    def __repr__(self) -> str:
        return f"MemOSEmbeddings(model_id={self.model_id!r})"
