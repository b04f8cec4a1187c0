"""``MemOSRetriever``: a user's memories as LlamaIndex nodes, by hybrid search.

>>> retriever = MemOSRetriever(mos, user_id="alice", similarity_top_k=5)
>>> retriever.retrieve("where does alice live?")

Searches every cube the user may read (or ``cube_ids``). Nodes stored by
``MemOSVectorStore`` come back as the same nodes; other memories as ``TextNode``s with the
memory's id, kind, session and dates in their metadata. Tool and system turns are left out
unless ``kinds`` asks for them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.callbacks import CallbackManager
from llama_index.core.schema import NodeWithScore, QueryBundle
from llama_index.core.vector_stores.types import MetadataFilters

from ..core.engine import MAX_K, MemOS
from ..core.errors import InvalidInput
from ..core.items import SearchHit, check_id
from ._binding import ensure_user
from ._checks import check_choice, check_int
from .filters import to_filter
from .messages import NOT_RECALLED
from .nodes import score_of, to_node
from .recall import RecallMode


class MemOSRetriever(BaseRetriever):
    """Retrieve a user's memories (dense + full text, fused) as scored nodes."""

    def __init__(
        self,
        mos: MemOS,
        user_id: str,
        *,
        similarity_top_k: int = 10,
        mode: RecallMode = "hybrid",
        cube_ids: Sequence[str] | None = None,
        kinds: Sequence[str] | None = None,
        session_id: str | None = None,
        filters: MetadataFilters | dict[str, Any] | None = None,
        callback_manager: CallbackManager | None = None,
        verbose: bool = False,
    ) -> None:
        if not isinstance(mos, MemOS):
            raise InvalidInput(f"mos must be a MemOS engine, got {type(mos).__name__}")
        self._mos, self.user_id = mos, check_id(user_id, "user")
        self._user_known = False
        self.similarity_top_k = check_int(similarity_top_k, "similarity_top_k", 1, MAX_K)
        self.mode: RecallMode = check_choice(mode, "mode", ("hybrid", "dense", "text"))  # type: ignore[assignment]
        self.cube_ids = None if cube_ids is None else [check_id(c, "cube") for c in cube_ids]
        self.kinds = None if kinds is None else list(kinds)
        self.session_id = session_id
        self.filters = filters
        super().__init__(callback_manager=callback_manager, verbose=verbose)

    def _search_args(self, query_bundle: QueryBundle) -> dict[str, Any]:
        where = (
            to_filter(self.filters) if isinstance(self.filters, MetadataFilters) else self.filters
        )
        if self.kinds is None:
            skip = {"kind": {"$nin": list(NOT_RECALLED)}}
            where = skip if where is None else {"$and": [skip, where]}
        return {
            "query": query_bundle.query_str,
            "user": self.user_id,
            "k": self.similarity_top_k,
            "cubes": self.cube_ids,
            "filter": where,
            "kinds": self.kinds,
            "session": self.session_id,
            "mode": self.mode,
        }

    def _nodes(self, hits: list[SearchHit]) -> list[NodeWithScore]:
        return [NodeWithScore(node=to_node(h.item), score=score_of(h, self.mode)) for h in hits]

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        if not self._user_known:  # a user new to the store has no memories yet
            ensure_user(self._mos, self.user_id)
            self._user_known = True
        return self._nodes(self._mos.search(**self._search_args(query_bundle)))

    async def _aretrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        # one worker thread for the whole call: the engine is synchronous and thread-safe
        return await asyncio.to_thread(self._retrieve, query_bundle)
