"""MemOSEmbedding is the engine's embedder; the package imports LlamaIndex only on demand."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from memos_integrations import EmbedderMismatch, MemOS
from memos_integrations.embeddings import BUNDLED_MODEL_ID
from memos_integrations.llama_index import MemOSEmbedding

ROOT = Path(__file__).parents[1]


def test_same_vectors_as_the_engine(mos: MemOS) -> None:
    embed = MemOSEmbedding(mos=mos)
    texts = ["Lisbon is in Portugal", "Rust has a borrow checker"]
    assert embed.model_name == mos.embedder.model_id == BUNDLED_MODEL_ID
    expected = mos.embedder.embed_documents(texts)
    assert np.allclose(embed.get_text_embedding_batch(texts), expected, atol=1e-6)
    assert np.allclose(embed.get_text_embedding(texts[0]), expected[0], atol=1e-6)
    assert np.allclose(
        embed.get_query_embedding("where is Lisbon?"),
        mos.embedder.embed_query("where is Lisbon?"),
        atol=1e-6,
    )

    async def run() -> list[list[float]]:
        return [
            await embed.aget_query_embedding("where is Lisbon?"),
            await embed.aget_text_embedding(texts[1]),
            *(await embed.aget_text_embedding_batch(texts)),
        ]

    got = asyncio.run(run())
    assert np.allclose(got[1:], [expected[1], *expected], atol=1e-6)
    # the engine finds the nodes this model embedded: its vectors are the store's own
    [item] = mos.add("Lisbon is in Portugal", user="alice")
    hit = mos.search("where is Lisbon?", user="alice", mode="dense")[0]
    assert hit.id == item.id
    assert hit.dense_score == pytest.approx(float(np.dot(got[0], expected[0])), abs=1e-5)


def test_serialises_and_refuses_another_model(mos: MemOS) -> None:
    data = MemOSEmbedding(mos=mos).to_dict()
    assert data["store_url"] == mos.store.url
    again = MemOSEmbedding.from_dict(data)
    assert again.get_query_embedding("x") == MemOSEmbedding().get_query_embedding("x")
    with pytest.raises(EmbedderMismatch):
        MemOSEmbedding.from_dict({**data, "model_name": "someone-else/other-model"})


def _python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        check=False,
    )


def test_core_import_does_not_import_llama_index() -> None:
    out = _python(
        "import sys, memos_integrations; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'llama_index'))"
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_missing_llama_index_is_a_clear_error() -> None:
    out = _python(
        "import sys; sys.modules['llama_index'] = None\n"
        "from memos_integrations import BackendUnavailable\n"
        "try:\n"
        "    import memos_integrations.llama_index\n"
        "except BackendUnavailable as exc:\n"
        "    print('refused:', exc)\n"
    )
    assert out.returncode == 0, out.stderr
    assert "pip install 'memos-integrations[llama-index]'" in out.stdout
