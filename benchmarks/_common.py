"""Helpers shared by the benchmark scripts: machine description, result files, percentiles.

Every script writes ``benchmarks/results/<name>.json`` in the shape described in
``BENCHMARKS.md``: ``command``, ``date``, ``machine``, ``summary`` (plain floats,
percentages 0-100) and ``details`` (anything else).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shlex
import subprocess
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"
REPO_ROOT = BENCH_DIR.parent


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _ram_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024**2, 1)
    except OSError:
        pass
    return None


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def load_average() -> list[float] | None:
    """The 1/5/15-minute load averages (other processes on a shared box skew timings)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def machine_info() -> str:
    """One line: cores, RAM and CPU model, e.g. ``2 cores, 23.4 GiB RAM, AMD EPYC ...``."""
    ram = _ram_gib()
    ram_text = f"{ram} GiB RAM" if ram is not None else "RAM unknown"
    return f"{_cores()} cores, {ram_text}, {_cpu_model()}"


def machine_details() -> dict[str, Any]:
    """The machine as a dict, for ``details`` (versions matter for timings)."""
    return {
        "cores": _cores(),
        "ram_gib": _ram_gib(),
        "cpu_model": _cpu_model(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "platform": platform.platform(),
        "load_average": load_average(),
    }


def scoring_dtype(choice: str) -> str:
    """``auto``: bf16 where the CPU computes it natively (AMX / AVX512-BF16: ~3x faster than
    fp32), else fp32 (emulated bf16 is ~3.7x *slower* on an AVX-512 CPU without it)."""
    if choice != "auto":
        return choice
    import torch

    # (mkldnn's "bf16 supported" is also true where oneDNN only emulates it, e.g. plain AVX-512)
    cpu = torch.cpu
    try:
        native = bool(cpu._is_avx512_bf16_supported() or cpu._is_amx_tile_supported())
    except AttributeError:  # a torch without these probes
        native = False
    return "bf16" if native else "fp32"


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(
            ["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.rstrip()  # not strip(): porcelain lines start with a status column


def code_version(package: str = "memos_integrations") -> dict[str, Any]:
    """Which engine code a run measured: the commit, uncommitted changes to the package, and
    a hash of its sources (call it at start-up: modules are imported once, edits made while
    a long benchmark runs do not reach it)."""
    digest = hashlib.sha256()
    for path in sorted((REPO_ROOT / package).rglob("*.py")):
        digest.update(str(path.relative_to(REPO_ROOT)).encode())
        digest.update(path.read_bytes())
    dirty = _git("status", "--porcelain", "--", package)
    return {
        "commit": _git("rev-parse", "--short", "HEAD"),
        "uncommitted_changes": [line[3:] for line in dirty.splitlines()] if dirty else [],
        "source_sha256": digest.hexdigest()[:16],
    }


@dataclass(frozen=True)
class RunStart:
    """Taken when a benchmark starts: the code it measures (edits made while it runs do not
    reach it) and the machine's load then; :meth:`details` adds the load at the end."""

    code: dict[str, Any] = field(default_factory=code_version)
    load: list[float] | None = field(default_factory=load_average)

    def details(self) -> dict[str, Any]:
        return {
            "load_average": {"start": self.load, "end": load_average()},
            "machine": machine_details(),
            "code": self.code,
        }


def command_line(argv: list[str] | None = None) -> str:
    """The command that reproduces this run: ``python benchmarks/x.py --flag ...``."""
    argv = list(sys.argv if argv is None else argv)
    script = Path(argv[0]).resolve()
    try:
        shown = str(script.relative_to(REPO_ROOT))
    except ValueError:
        shown = argv[0]
    return shlex.join(["python", shown, *argv[1:]])


def percentiles(samples: Iterable[float], qs: Iterable[float] = (50, 95, 99)) -> dict[str, float]:
    """``{"p50": ..., "p95": ...}`` of the samples (linear interpolation), plus mean/min/max."""
    arr = np.asarray(list(samples), dtype=np.float64)
    if arr.size == 0:
        return {}
    out = {f"p{q:g}": float(np.percentile(arr, q)) for q in qs}
    out.update(mean=float(arr.mean()), min=float(arr.min()), max=float(arr.max()), n=int(arr.size))
    return out


def _plain(value: Any) -> Any:
    """JSON-safe copies of NumPy scalars/arrays, tuples and paths."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    return value


def write_result(
    name: str,
    command: str | None,
    summary: Mapping[str, Any],
    details: Mapping[str, Any],
) -> Path:
    """Write ``benchmarks/results/<name>.json`` and return its path.

    ``command`` defaults to the current command line; summary numbers are stored as floats
    (booleans, strings and lists are kept as they are).
    """
    flat: dict[str, Any] = {}
    for key, value in summary.items():
        if isinstance(value, bool | str | list | tuple) or value is None:
            flat[key] = _plain(value)
        else:
            flat[key] = float(value)
    record = {
        "command": command or command_line(),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "summary": flat,
        "details": _plain(dict(details)),
    }
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n")
    tmp.replace(path)
    return path


__all__ = [
    "BENCH_DIR",
    "RESULTS_DIR",
    "code_version",
    "command_line",
    "load_average",
    "machine_details",
    "machine_info",
    "merge_part",
    "percentiles",
    "write_result",
]


def merge_part(
    name: str, part: str, command: str, summary: Mapping[str, Any], details: Mapping[str, Any]
) -> Path:
    """Merge one part of a multi-script result into ``results/<name>.json``.

    Other parts' summary keys stay as they were; ``details.parts[part]`` records this part's
    command, date and machine load (plus ``details``), and the top-level ``command`` joins
    every part's command with ``&&``.
    """
    path = RESULTS_DIR / f"{name}.json"
    old = json.loads(path.read_text()) if path.exists() else {"summary": {}, "details": {}}
    parts = dict(old["details"].get("parts", {}))
    parts[part] = {
        "command": command,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "load_average": load_average(),
        **details,
    }
    commands = " && ".join(dict.fromkeys(p["command"] for p in parts.values()))
    merged = {**old["summary"], **summary}
    return write_result(name, commands, merged, {"parts": parts, "machine": machine_details()})
