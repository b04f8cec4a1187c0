"""``MemOSRetriever``: a LangChain retriever over one user's memories."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from langchain_core.callbacks import (
    AsyncCallbackManagerForRetrieverRun,
    CallbackManagerForRetrieverRun,
)
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables import RunnableConfig, ensure_config
from pydantic import ConfigDict

from ..core.engine import MemOS
from ..core.errors import InvalidInput
from ..core.items import SearchHit
from ._scope import USER_KEY, run_value

SearchType = Literal["hybrid", "dense", "text"]


class MemOSRetriever(BaseRetriever):
    """Search the memories ``user`` may read; one ``Document`` per memory.

    ``page_content`` is the memory text, ``id`` the memory id (for ``mos.get/update/history``)
    and ``metadata`` the memory's own metadata plus, under ``score_key``, the score the search
    ranked it by (fused reciprocal-rank score for ``"hybrid"``, cosine similarity for
    ``"dense"``, BM25 for ``"text"``). ``filter`` uses the MemOS filter language
    (``{"kind": "fact"}``, ``{"metadata.topic": {"$in": [...]}}``; see docs/api.md).

    Without ``user``, the user id is read from the run config
    (``config={"configurable": {"user_id": ...}}``, also the enclosing run's) on each call;
    there is no implicit "everyone" scope.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    mos: MemOS
    user: str | None = None
    k: int = 4
    search_type: SearchType = "hybrid"
    filter: dict[str, Any] | None = None
    cubes: list[str] | None = None
    kinds: list[str] | None = None
    tags: list[str] | None = None
    score_key: str | None = "score"

    def invoke(
        self, input: str, config: RunnableConfig | None = None, **kwargs: Any
    ) -> list[Document]:
        return super().invoke(input, config, **self._with_user(config, kwargs))

    async def ainvoke(
        self, input: str, config: RunnableConfig | None = None, **kwargs: Any
    ) -> list[Document]:
        return await super().ainvoke(input, config, **self._with_user(config, kwargs))

    def _with_user(self, config: RunnableConfig | None, kwargs: dict[str, Any]) -> dict[str, Any]:
        """The acting user, read once per call: the fixed one, else the run config's."""
        if self.user is not None or kwargs.get("user") is not None:
            return kwargs
        # ensure_config also picks up the config of an enclosing run (a graph node, a tool)
        return {**kwargs, "user": run_value(None, ensure_config(config), USER_KEY)}

    def _search_args(
        self, k: int | None, filter: dict[str, Any] | None, user: str | None
    ) -> dict[str, Any]:
        user = self.user or user
        if user is None:
            raise InvalidInput(
                "MemOSRetriever needs a user: MemOSRetriever(mos=..., user='alice') or "
                "config={'configurable': {'user_id': 'alice'}} on the call"
            )
        return {
            "user": user,
            "k": self.k if k is None else k,
            "cubes": self.cubes,
            "filter": self.filter if filter is None else filter,
            "kinds": self.kinds,
            "tags": self.tags,
            "mode": self.search_type,
        }

    def _get_relevant_documents(
        self,
        query: str,
        *,
        run_manager: CallbackManagerForRetrieverRun,
        k: int | None = None,
        filter: dict[str, Any] | None = None,
        user: str | None = None,
    ) -> list[Document]:
        return self._documents(self.mos.search(query, **self._search_args(k, filter, user)))

    async def _aget_relevant_documents(
        self,
        query: str,
        *,
        run_manager: AsyncCallbackManagerForRetrieverRun,
        k: int | None = None,
        filter: dict[str, Any] | None = None,
        user: str | None = None,
    ) -> list[Document]:
        hits = await self.mos.asearch(query, **self._search_args(k, filter, user))
        return self._documents(hits)

    def _documents(self, hits: Sequence[SearchHit]) -> list[Document]:
        return [self._document(hit) for hit in hits]

    def _document(self, hit: SearchHit) -> Document:
        metadata = dict(hit.item.metadata)
        if self.score_key is not None:
            if self.score_key in metadata:
                raise InvalidInput(
                    f"memory {hit.id!r} has its own metadata key {self.score_key!r}; pass "
                    "score_key= another name (or None) so the score does not overwrite it"
                )
            metadata[self.score_key] = _score(hit, self.search_type)
        return Document(page_content=hit.text, metadata=metadata, id=hit.id)


def _score(hit: SearchHit, search_type: SearchType) -> float:
    if search_type == "dense" and hit.dense_score is not None:
        return hit.dense_score
    if search_type == "text" and hit.text_score is not None:
        return hit.text_score
    return hit.score
