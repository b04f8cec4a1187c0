"""The Python examples of docs/langchain.md run, in order, as a reader would run them."""

from __future__ import annotations

import itertools
import re
from pathlib import Path
from typing import Any

import pytest
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel

torch = pytest.importorskip("torch")
DOC = Path(__file__).parents[1] / "docs" / "langchain.md"


class AnyToolModel(GenericFakeChatModel):
    """The page's `model`: a scripted stand-in for a tool-calling chat model."""

    def bind_tools(self, tools: Any, **kwargs: Any) -> AnyToolModel:  # type: ignore[override]
        return self


def test_examples_run(tmp_path, monkeypatch, smol_cache) -> None:
    monkeypatch.setenv("MEMOS_HOME", str(tmp_path))
    monkeypatch.setenv("MEMOS_MODEL", str(smol_cache[0]))  # converted once per test session
    torch.set_num_threads(1)  # see test_runtime: busy 2-core CI boxes
    blocks = re.findall(r"^```python\n(.*?)^```", DOC.read_text(), flags=re.S | re.M)
    assert len(blocks) >= 8
    namespace: dict[str, Any] = {"model": AnyToolModel(messages=itertools.repeat("OK."))}
    for n, block in enumerate(blocks):
        exec(compile(block, f"{DOC.name}[python block {n}]", "exec"), namespace)
    namespace["mos"].close()
