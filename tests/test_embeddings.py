"""Embedders: the bundled model and adapters for LangChain, LlamaIndex and callables."""

from __future__ import annotations

import numpy as np
import pytest

from memos_integrations import InvalidInput, MemOS
from memos_integrations.embeddings import BUNDLED_MODEL_ID, as_embedder


def test_bundled_model_is_semantic(embedder) -> None:
    assert embedder.model_id == BUNDLED_MODEL_ID and embedder.dim == 384
    docs = embedder.embed_documents(["A cat sits on the mat", "Stock markets fell sharply"])
    q = embedder.embed_query("a kitten on a rug")
    assert docs.dtype == np.float32 and docs.shape == (2, 384)
    assert np.allclose(np.linalg.norm(docs, axis=1), 1, atol=1e-5)
    assert q @ docs[0] > q @ docs[1] + 0.2


def test_langchain_embeddings_adapter(tmp_path) -> None:
    from langchain_core.embeddings import DeterministicFakeEmbedding

    emb = as_embedder(DeterministicFakeEmbedding(size=16), model_id="fake-16")
    assert emb.model_id == "fake-16" and emb.dim == 16
    with MemOS.open(tmp_path / "lc.db", embedder=DeterministicFakeEmbedding(size=16)) as mos:
        mos.create_user("u")
        mos.create_cube("c", owner="u")
        [item] = mos.add(["hello world"], user="u")
        assert item.embedding_model.startswith("DeterministicFakeEmbedding")
        # deterministic fake: the same text embeds identically, so dense finds it first
        assert mos.search("hello world", user="u", k=1, mode="dense")[0].id == item.id


def test_llama_index_embedding_adapter(tmp_path) -> None:
    from llama_index.core.embeddings import MockEmbedding

    emb = as_embedder(MockEmbedding(embed_dim=12), model_id="mock-12")
    out = emb.embed_documents(["a", "b"])
    assert out.shape == (2, 12)


def test_callable_needs_model_id_and_output_is_checked() -> None:
    def fn(texts):
        return [[1.0, 0.0, 0.0] for _ in texts]

    with pytest.raises(InvalidInput, match="model_id"):
        as_embedder(fn)
    emb = as_embedder(fn, model_id="ones")
    assert emb.embed_query("x").tolist() == [1.0, 0.0, 0.0]
    bad = as_embedder(lambda texts: [[0.0, 0.0] for _ in texts], model_id="zeros")
    with pytest.raises(InvalidInput, match="zero"):
        bad.embed_documents(["x"])
    with pytest.raises(InvalidInput):
        as_embedder(42)
