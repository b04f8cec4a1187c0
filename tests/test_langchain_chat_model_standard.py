"""langchain-tests' ``ChatModelUnitTests``, unmodified, against ``ChatMemOS`` on a tiny model.

The engine behind the model is a real one (SQLite file, the bundled embedder) with a tiny
random Llama as its local model, so the suite runs in seconds. Two tests skip themselves:
``test_init_from_env`` (ChatMemOS reads no settings from the environment; the engine picks its
model) and ``test_serdes`` (ChatMemOS holds a live engine and is not serializable).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from langchain_tests.unit_tests import ChatModelUnitTests

from memos_integrations import MemOS
from memos_integrations.langchain import ChatMemOS
from memos_integrations.models.runtime import LocalModel


class TestChatMemOSUnit(ChatModelUnitTests):
    mos: MemOS

    @pytest.fixture(autouse=True, scope="class")
    @classmethod
    def _engine(
        cls, tmp_path_factory: pytest.TempPathFactory, embedder, tiny_dirs: tuple[Path, Path]
    ) -> Iterator[None]:
        model = LocalModel.load(tiny_dirs[0])
        mos = MemOS.open(tmp_path_factory.mktemp("chat") / "c.db", embedder=embedder, model=model)
        cls.mos = mos
        yield
        mos.close()

    @property
    def chat_model_class(self) -> type[ChatMemOS]:
        return ChatMemOS

    @property
    def chat_model_params(self) -> dict[str, Any]:
        return {"mos": self.mos, "user_id": "alice"}

    @property
    def supports_model_override(self) -> bool:
        # The model is the engine's (its KV caches are built for it); a per-call `model=` is
        # refused rather than silently ignored. Tracing still reports an override's name.
        return False
