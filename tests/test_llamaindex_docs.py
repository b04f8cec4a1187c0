"""docs/llama_index.md runs: its Python blocks are executed in order, top-level await included."""

from __future__ import annotations

import ast
import asyncio
import inspect
import re
from pathlib import Path

import pytest

PAGE = Path(__file__).parents[1] / "docs" / "llama_index.md"


def test_every_example_on_the_page_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, smol_cache: tuple[Path, object, float]
) -> None:
    monkeypatch.setenv("MEMOS_HOME", str(tmp_path))  # MemOS.open() in the examples
    # MemOSLLM's example: the bundled SmolLM2, converted once per session by the fixture
    monkeypatch.setenv("MEMOS_MODEL", str(smol_cache[0]))
    blocks = re.findall(r"```python\n(.*?)```", PAGE.read_text(), flags=re.DOTALL)
    assert len(blocks) >= 5
    namespace: dict[str, object] = {}
    loop = asyncio.new_event_loop()
    try:
        for n, source in enumerate(blocks):
            code = compile(
                source, f"{PAGE.name}[block {n}]", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
            )
            result = eval(code, namespace)  # our own documentation
            if inspect.iscoroutine(result):
                loop.run_until_complete(result)
    finally:
        loop.close()
        mos = namespace.get("mos")
        if mos is not None:
            mos.close()  # type: ignore[attr-defined]
