"""Whether the shared evaluation data (``../shared/data`` or ``MEMOS_DATA_DIR``) is here: tests
that calibrate or score on its tasks skip without it, e.g. in a clone outside the workspace."""

from __future__ import annotations

import pytest

from memos_integrations.core.config import data_dir

HAS_TASK_DATA = (data_dir() / "tasks" / "piqa.train.jsonl").is_file()
NO_TASK_DATA = "shared task data not found (MEMOS_DATA_DIR)"
needs_task_data = pytest.mark.skipif(not HAS_TASK_DATA, reason=NO_TASK_DATA)
