"""``MemOSVectorStore``: a LlamaIndex vector store on one user's MemOS cube.

>>> store = MemOSVectorStore(mos=mos, user_id="alice", cube_id="alice-docs")
>>> index = VectorStoreIndex.from_documents(
...     docs, storage_context=StorageContext.from_defaults(vector_store=store),
...     embed_model=MemOSEmbedding(mos=mos))

Nodes are memories of kind ``node`` keyed by node id: adding a node id again is an upsert
(unchanged: nothing happens; changed: a new version), deleting tombstones (history kept).
MemOS embeds text itself with the store's model, so queries need ``query_str`` and node
embeddings made elsewhere are not used (``is_embedding_query`` is False; a store never
mixes embedding models). Query modes: ``default`` (dense, cosine similarities), ``hybrid``
(dense + full text fused by reciprocal rank; ``alpha`` weighs the legs: 1 dense only,
0 full text only) and ``text_search``/``sparse`` (full text).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from llama_index.core.schema import BaseNode
from llama_index.core.vector_stores.types import (
    BasePydanticVectorStore,
    MetadataFilters,
    VectorStoreQuery,
    VectorStoreQueryMode,
    VectorStoreQueryResult,
)

from ..core.engine import MAX_DENSE_WEIGHT, MemOS
from ..core.errors import InvalidInput
from ..core.items import MemoryItem
from ..core.lifecycle import SERVED_STATES
from ..storage.search import MAX_IN_VALUES
from ._binding import Target, UserBound
from .filters import to_filter
from .nodes import NODE_KIND, node_id, score_of, to_memory, to_node

_ALL = 1_000_000
_BATCH = 256  # nodes per transaction when adding
_MODES = {
    VectorStoreQueryMode.DEFAULT: "dense",
    VectorStoreQueryMode.HYBRID: "hybrid",
    VectorStoreQueryMode.SEMANTIC_HYBRID: "hybrid",
    VectorStoreQueryMode.TEXT_SEARCH: "text",
    VectorStoreQueryMode.SPARSE: "text",
}


def _where(*parts: dict[str, Any] | None) -> dict[str, Any]:
    present = [{"kind": NODE_KIND}, *(p for p in parts if p is not None)]
    return present[0] if len(present) == 1 else {"$and": present}


def _fusion(alpha: float | None) -> tuple[str, float | None]:
    """LlamaIndex's hybrid ``alpha`` (1: dense only, 0: text only) as mode and dense weight."""
    if alpha is None:
        return "hybrid", None
    if isinstance(alpha, bool) or not isinstance(alpha, int | float) or not 0 <= alpha <= 1:
        raise InvalidInput(f"alpha must be a number from 0 to 1, got {alpha!r}")
    if alpha == 0:
        return "text", None
    if alpha == 1:
        return "dense", None
    # weights alpha : (1 - alpha), with the text leg's weight fixed at 1
    return "hybrid", min(alpha / (1 - alpha), MAX_DENSE_WEIGHT)


class MemOSVectorStore(UserBound, BasePydanticVectorStore):
    """Nodes as MemOS memories in one cube of one user."""

    stores_text: bool = True
    is_embedding_query: bool = False

    @classmethod
    def class_name(cls) -> str:
        return "MemOSVectorStore"

    @property
    def client(self) -> MemOS:
        return self.mos

    # ------------------------------------------------------------------ writing

    def add(self, nodes: Sequence[BaseNode], **kwargs: Any) -> list[str]:
        """Upsert nodes by id (the last one wins when an id repeats)."""
        latest = {n.node_id: n for n in nodes}
        if latest:
            t = self.target()
            t.mos.ingest(
                [to_memory(n) for n in latest.values()],
                user=t.user,
                cube=t.cube,
                batch_size=_BATCH,
                progress=False,
            )
        return [n.node_id for n in nodes]

    def delete(self, ref_doc_id: str, **delete_kwargs: Any) -> None:
        """Delete the nodes of a source document."""
        self._delete(self.target(), _where({"metadata.ref_doc_id": ref_doc_id}))

    def delete_nodes(
        self,
        node_ids: list[str] | None = None,
        filters: MetadataFilters | None = None,
        **delete_kwargs: Any,
    ) -> None:
        """Delete the nodes with these ids and/or matching ``filters`` (all, given neither)."""
        t = self.target()
        for ids in self._id_chunks(node_ids):
            self._delete(t, _where(ids, to_filter(filters)))

    def clear(self) -> None:
        self._delete(self.target(), _where())

    @staticmethod
    def _delete(t: Target, where: dict[str, Any]) -> None:
        doomed = t.mos.list(user=t.user, cube=t.cube, filter=where, limit=_ALL)
        t.mos.delete_many([it.id for it in doomed], user=t.user, reason="deleted from index")

    # ------------------------------------------------------------------ reading

    def get_nodes(
        self, node_ids: list[str] | None = None, filters: MetadataFilters | None = None
    ) -> list[BaseNode]:
        """Nodes by id (in the order asked; missing ids are skipped) and/or by filters."""
        t = self.target()
        found: list[MemoryItem] = []
        for ids in self._id_chunks(node_ids):
            found += t.mos.list(
                user=t.user,
                cube=t.cube,
                filter=_where(ids, to_filter(filters)),
                states=SERVED_STATES,
                limit=_ALL,
                order="created_asc",
            )
        if node_ids is not None:
            rank = {nid: i for i, nid in enumerate(node_ids)}
            found.sort(key=lambda it: rank[node_id(it)])
        return [to_node(it) for it in found]

    @staticmethod
    def _id_chunks(node_ids: list[str] | None) -> list[dict[str, Any] | None]:
        """Id conditions of at most MAX_IN_VALUES ids each ([None] for no id condition)."""
        if node_ids is None:
            return [None]
        ids = list(dict.fromkeys(node_ids))
        return [
            {"key": {"$in": ids[i : i + MAX_IN_VALUES]}} for i in range(0, len(ids), MAX_IN_VALUES)
        ]

    def query(self, query: VectorStoreQuery, **kwargs: Any) -> VectorStoreQueryResult:
        mode = _MODES.get(query.mode)
        if mode is None:
            supported = ", ".join(m.value for m in _MODES)
            raise InvalidInput(
                f"query mode {query.mode.value!r} is not supported by MemOSVectorStore; "
                f"use one of {supported}"
            )
        if not query.query_str or not query.query_str.strip():
            raise InvalidInput(
                "MemOSVectorStore embeds queries with the store's own model and needs "
                "query_str (a query embedding alone is not enough)"
            )
        weight = None
        k = query.similarity_top_k
        if mode == "hybrid":
            mode, weight = _fusion(query.alpha)
            k = query.hybrid_top_k or k
        # an empty node_ids means no restriction: VectorStoreIndex.as_retriever passes [] for
        # stores that keep their own text
        if query.node_ids and len(query.node_ids) > MAX_IN_VALUES:
            raise InvalidInput(f"at most {MAX_IN_VALUES} node_ids can restrict one query")
        where = _where(
            {"key": {"$in": list(query.node_ids)}} if query.node_ids else None,
            {"metadata.ref_doc_id": {"$in": list(query.doc_ids)}} if query.doc_ids else None,
            to_filter(query.filters),
        )
        t = self.target()
        hits = t.mos.search(
            query.query_str,
            user=t.user,
            k=k,
            cubes=[t.cube],
            filter=where,
            mode=mode,  # type: ignore[arg-type]
            dense_weight=weight,
        )
        return VectorStoreQueryResult(
            nodes=[to_node(h.item) for h in hits],
            similarities=[score_of(h, mode) for h in hits],
            ids=[node_id(h.item) for h in hits],
        )

    # ------------------------------------------------------------------ async: each call runs
    # in one worker thread (the engine is synchronous and thread-safe), never on the loop

    async def async_add(self, nodes: Sequence[BaseNode], **kwargs: Any) -> list[str]:
        return await asyncio.to_thread(self.add, nodes, **kwargs)

    async def adelete(self, ref_doc_id: str, **delete_kwargs: Any) -> None:
        await asyncio.to_thread(self.delete, ref_doc_id, **delete_kwargs)

    async def adelete_nodes(
        self,
        node_ids: list[str] | None = None,
        filters: MetadataFilters | None = None,
        **delete_kwargs: Any,
    ) -> None:
        await asyncio.to_thread(self.delete_nodes, node_ids, filters, **delete_kwargs)

    async def aclear(self) -> None:
        await asyncio.to_thread(self.clear)

    async def aget_nodes(
        self, node_ids: list[str] | None = None, filters: MetadataFilters | None = None
    ) -> list[BaseNode]:
        return await asyncio.to_thread(self.get_nodes, node_ids, filters)

    async def aquery(self, query: VectorStoreQuery, **kwargs: Any) -> VectorStoreQueryResult:
        return await asyncio.to_thread(self.query, query, **kwargs)
