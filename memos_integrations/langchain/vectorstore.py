"""``MemOSVectorStore``: a LangChain ``VectorStore`` over one user's cube.

A document is a keyed memory (kind ``document`` by default): its id is the memory key, its
``page_content`` the text and its ``metadata`` exactly the metadata it was added with (no
system fields). Re-adding an id writes a new version of that memory; deleting tombstones it.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.vectorstores import VectorStore
from langchain_core.vectorstores.utils import maximal_marginal_relevance

from ..core.engine import MemOS
from ..core.errors import InvalidInput
from ..core.items import MemoryItem, SearchHit
from ..core.lifecycle import SERVED_STATES
from ..embeddings import as_embedder
from ._listing import by_keys, list_all
from ._scope import user_cube
from .embeddings import MemOSEmbeddings

DEFAULT_USER = "langchain"


class MemOSVectorStore(VectorStore):
    """Documents as MemOS memories of ``user`` in ``cube``.

    >>> vs = MemOSVectorStore(mos, user="alice")
    >>> vs.add_documents([Document("Alice moved to Lisbon", metadata={"src": "chat"})])
    >>> vs.similarity_search("where does Alice live?", k=1, filter={"src": "chat"})

    ``filter`` takes metadata keys (``{"src": "chat"}``, ``{"page": {"$gt": 2}}``, dotted
    paths for nested keys, ``$and``/``$or``/``$not``) with the operators of the MemOS filter
    language. ``search_mode="dense"`` (default) ranks by cosine similarity, and scores are
    cosine similarities; ``"hybrid"`` fuses it with full-text search (reciprocal-rank scores).
    Embeddings are always the engine's; ``embeddings`` exposes them as LangChain
    ``Embeddings``.
    """

    def __init__(
        self,
        mos: MemOS,
        *,
        user: str = DEFAULT_USER,
        cube: str | None = None,
        kind: str = "document",
        search_mode: Literal["dense", "hybrid"] = "dense",
        create_missing: bool = True,
    ) -> None:
        if search_mode not in ("dense", "hybrid"):
            raise InvalidInput(f"search_mode must be 'dense' or 'hybrid', got {search_mode!r}")
        self.mos = mos
        self.user = user
        self.cube = user_cube(mos, user, cube, create=create_missing)
        self.kind = kind
        self.search_mode = search_mode

    @property
    def embeddings(self) -> Embeddings:
        return MemOSEmbeddings(self.mos.embedder)

    # ------------------------------------------------------------------ writing

    def add_texts(
        self,
        texts: Iterable[str],
        metadatas: list[dict] | None = None,
        *,
        ids: list[str | None] | None = None,
        **kwargs: Any,
    ) -> list[str]:
        """Add (or, for known ids, update) texts in one transaction; returns their ids."""
        texts = list(texts)
        if metadatas is not None and len(metadatas) != len(texts):
            raise InvalidInput(f"{len(texts)} texts but {len(metadatas)} metadatas")
        if ids is not None and len(ids) != len(texts):
            raise InvalidInput(f"{len(texts)} texts but {len(ids)} ids")
        keys = [(ids[i] if ids else None) or uuid.uuid4().hex for i in range(len(texts))]
        memories = [
            {
                "text": text,
                "key": key,
                "kind": self.kind,
                "metadata": metadatas[i] if metadatas else {},
            }
            for i, (text, key) in enumerate(zip(texts, keys, strict=True))
        ]
        self.mos.add(memories, user=self.user, cube=self.cube)
        return keys

    def delete(self, ids: list[str] | None = None, **kwargs: Any) -> bool | None:
        """Tombstone the documents with these ids (unknown ids are ignored); ``None``: all."""
        items = self._all() if ids is None else self._by_keys(ids)
        for item in items:
            self.mos.delete(item.id, user=self.user, reason="vectorstore delete")
        return True

    # ------------------------------------------------------------------ reading

    def get_by_ids(self, ids: Sequence[str], /) -> list[Document]:
        return [_document(item) for item in self._by_keys(list(ids))]

    def similarity_search(
        self, query: str, k: int = 4, filter: Mapping[str, Any] | None = None, **kwargs: Any
    ) -> list[Document]:
        return [doc for doc, _ in self.similarity_search_with_score(query, k, filter, **kwargs)]

    def similarity_search_with_score(
        self, query: str, k: int = 4, filter: Mapping[str, Any] | None = None, **kwargs: Any
    ) -> list[tuple[Document, float]]:
        hits = self._search(query, k, filter, self.search_mode)
        return [(_document(h.item), _score(h, self.search_mode)) for h in hits]

    def _select_relevance_score_fn(self) -> Callable[[float], float]:
        if self.search_mode != "dense":
            raise InvalidInput(
                "relevance scores in [0, 1] need search_mode='dense' (hybrid scores are "
                "reciprocal-rank scores, not similarities)"
            )
        return lambda cosine: (1.0 + cosine) / 2.0

    def max_marginal_relevance_search(
        self,
        query: str,
        k: int = 4,
        fetch_k: int = 20,
        lambda_mult: float = 0.5,
        filter: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> list[Document]:
        """The ``fetch_k`` nearest documents, re-ranked for diversity; ``k`` of them."""
        hits = self._search(query, max(fetch_k, k), filter, "dense")
        if not hits:
            return []
        embedder = self.mos.embedder
        # The engine does not hand out stored vectors; re-embedding the candidates gives the
        # same vectors (the store pins its model).
        vectors = embedder.embed_documents([h.text for h in hits])
        chosen = maximal_marginal_relevance(
            np.asarray(embedder.embed_query(query)), vectors.tolist(), lambda_mult, k
        )
        return [_document(hits[i].item) for i in chosen]

    def _search(
        self, query: str, k: int, filter: Mapping[str, Any] | None, mode: str
    ) -> list[SearchHit]:
        return self.mos.search(
            query,
            user=self.user,
            k=k,
            cubes=[self.cube],
            kinds=[self.kind],
            filter=metadata_filter(filter),
            mode=mode,  # type: ignore[arg-type]
        )

    def _by_keys(self, keys: list[str]) -> list[MemoryItem]:
        return by_keys(self.mos, keys, **self._scope())

    def _all(self) -> list[MemoryItem]:
        return list_all(self.mos, **self._scope())

    def _scope(self) -> dict[str, Any]:
        return {
            "user": self.user,
            "cube": self.cube,
            "kinds": [self.kind],
            "states": SERVED_STATES,
        }

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_texts(
        cls,
        texts: list[str],
        embedding: Embeddings,
        metadatas: list[dict] | None = None,
        *,
        ids: list[str] | None = None,
        mos: MemOS | None = None,
        path: str | Path | None = None,
        **kwargs: Any,
    ) -> MemOSVectorStore:
        """A store over ``mos`` (or over ``MemOS.open(path, embedder=embedding)``) holding
        ``texts``; other keyword arguments go to the constructor (``user``, ``cube``, ...)."""
        if mos is None:
            mos = MemOS.open(path, embedder=embedding)
        elif as_embedder(embedding).model_id != mos.embedder.model_id:
            raise InvalidInput(
                f"embedding is {as_embedder(embedding).model_id!r} but the MemOS engine embeds "
                f"with {mos.embedder.model_id!r}; pass the engine's (vs.embeddings) or none"
            )
        store = cls(mos, **kwargs)
        store.add_texts(texts, metadatas, ids=ids)  # type: ignore[arg-type]
        return store


def _document(item: MemoryItem) -> Document:
    return Document(page_content=item.text, metadata=dict(item.metadata), id=item.key)


def _score(hit: SearchHit, mode: str) -> float:
    if mode == "dense" and hit.dense_score is not None:
        return hit.dense_score
    return hit.score


def metadata_filter(spec: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """A LangChain-style metadata filter as a MemOS filter (keys become ``metadata.<key>``)."""
    if spec is None:
        return None
    if not isinstance(spec, Mapping):
        raise InvalidInput(f"filter must be a dict of metadata keys, got {type(spec).__name__}")
    out: dict[str, Any] = {}
    for key, value in spec.items():
        if key in ("$and", "$or"):
            if not isinstance(value, list | tuple):
                raise InvalidInput(f"{key} takes a list of filters")
            out[key] = [metadata_filter(v) for v in value]
        elif key == "$not":
            out[key] = metadata_filter(value)
        elif isinstance(key, str) and key.startswith("$"):
            raise InvalidInput(f"unknown logical operator {key!r}; use $and, $or or $not")
        else:
            out[f"metadata.{key}"] = value
    return out
