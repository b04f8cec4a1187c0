"""The core never imports LangChain; the adapters say how to get it when it is missing."""

from __future__ import annotations

import subprocess
import sys


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )


def test_core_import_does_not_load_langchain() -> None:
    out = _run(
        "import sys, memos_integrations\n"
        "loaded = [m for m in sys.modules if m.startswith(('langchain', 'langgraph'))]\n"
        "assert not loaded, loaded\n"
    )
    assert out.returncode == 0, out.stderr


def test_missing_extra_names_the_install_command() -> None:
    out = _run(
        "import sys; sys.modules['langgraph'] = None\n"
        "from memos_integrations import BackendUnavailable\n"
        "try:\n"
        "    import memos_integrations.langchain\n"
        "except BackendUnavailable as exc:\n"
        "    print(exc)\n"
    )
    assert out.returncode == 0, out.stderr
    assert 'pip install "memos-integrations[langchain]"' in out.stdout
