"""The langchain-tests standard suites, unmodified, against the LangChain adapters.

The vector store suite runs on a fresh SQLite file per test with the suite's own
``DeterministicFakeEmbedding(size=6)``; the retriever and embeddings suites use the real
bundled model.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from langchain_core.vectorstores import VectorStore
from langchain_tests.integration_tests import (
    EmbeddingsIntegrationTests,
    RetrieversIntegrationTests,
    VectorStoreIntegrationTests,
)
from langchain_tests.unit_tests import EmbeddingsUnitTests

from memos_integrations import MemOS
from memos_integrations.langchain import MemOSEmbeddings, MemOSRetriever
from memos_integrations.langchain.vectorstore import MemOSVectorStore

FACTS = [
    "Alice moved to Lisbon in March 2024",
    "Alice's sister Maria is a pilot",
    "Alice prefers green tea to coffee",
    "Alice runs a half marathon every autumn",
    "Alice is allergic to cats",
]


class TestMemOSVectorStoreStandard(VectorStoreIntegrationTests):
    @pytest.fixture
    def vectorstore(self, tmp_path: Path) -> Iterator[VectorStore]:  # type: ignore[override]
        mos = MemOS.open(tmp_path / "vs.db", embedder=self.get_embeddings())
        try:
            yield MemOSVectorStore(mos, user="alice")
        finally:
            mos.close()


class TestMemOSRetrieverStandard(RetrieversIntegrationTests):
    mos: MemOS

    @pytest.fixture(autouse=True, scope="class")
    @classmethod
    def _memories(cls, tmp_path_factory: pytest.TempPathFactory, embedder) -> Iterator[None]:
        mos = MemOS.open(tmp_path_factory.mktemp("retriever") / "r.db", embedder=embedder)
        mos.create_user("alice")
        mos.create_cube("alice-personal", owner="alice")
        mos.add(FACTS, user="alice")
        cls.mos = mos
        yield
        mos.close()

    @property
    def retriever_constructor(self) -> type[MemOSRetriever]:
        return MemOSRetriever

    @property
    def retriever_constructor_params(self) -> dict[str, Any]:
        return {"mos": self.mos, "user": "alice"}

    @property
    def retriever_query_example(self) -> str:
        return "where does Alice live?"


class TestMemOSEmbeddingsUnit(EmbeddingsUnitTests):
    @property
    def embeddings_class(self) -> type[MemOSEmbeddings]:
        return MemOSEmbeddings


class TestMemOSEmbeddingsIntegration(EmbeddingsIntegrationTests):
    @property
    def embeddings_class(self) -> type[MemOSEmbeddings]:
        return MemOSEmbeddings
