"""A writer killed with SIGKILL mid-ingest loses nothing it acknowledged.

A child process opens the store, adds memories one ``mos.add`` call at a time and prints
each item id once the call has returned. The parent SIGKILLs it after ~150 acknowledgements,
reopens the store and checks that every acknowledged memory is there, the store is intact,
both search legs work and new writes go through. On both stores: a SQLite file, and a
PostgreSQL database whose client dies mid-transaction.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from _backends import BACKENDS, assert_intact, rows

from memos_integrations import MemOS

STORES = BACKENDS  # every test here runs on both stores (see conftest.py)
pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="needs SIGKILL")

ACKS_BEFORE_KILL = 150
PREWARMED = 400  # texts whose (real) vectors the child computes before it says "ready"


def crash_text(n: int) -> str:
    return f"crash note {n}: marker{n:05d} the ferry leaves pier {n % 17} at dawn"


CHILD = r"""
import sys

import numpy as np

from memos_integrations import MemOS
from memos_integrations.embeddings import default_embedder


db, prewarmed = sys.argv[1], int(sys.argv[2])


def crash_text(n):
    return f"crash note {n}: marker{n:05d} the ferry leaves pier {n % 17} at dawn"


class Prewarmed:
    # The real model; the vectors of the first texts are computed in one batch up front, so
    # the kill window is spent in the write path rather than in forward passes.
    def __init__(self, real, texts):
        self.real, self.model_id, self.dim = real, real.model_id, real.dim
        self.vectors = dict(zip(texts, real.embed_documents(texts)))

    def embed_documents(self, texts):
        if all(t in self.vectors for t in texts):
            return np.stack([self.vectors[t] for t in texts])
        return self.real.embed_documents(texts)

    def embed_query(self, text):
        return self.real.embed_query(text)


embedder = Prewarmed(default_embedder(), [crash_text(n) for n in range(prewarmed)])
mos = MemOS.open(db, embedder=embedder)
print("ready", flush=True)
n = 0
while True:
    [item] = mos.add(crash_text(n), user="alice", cube="alice-personal",
                     metadata={"n": n}, tags=["crash"])
    print(f"{item.id} {n}", flush=True)
    n += 1
"""


def _reader(stream, lines: queue.Queue) -> None:
    for line in stream:
        lines.put(line.rstrip("\n"))
    lines.put(None)


def test_sigkill_mid_ingest_loses_no_acknowledged_memory(tmp_path: Path, target, embedder) -> None:
    db = target
    with MemOS.open(db, embedder=embedder) as setup:
        setup.create_user("alice")
        setup.create_cube("alice-personal", owner="alice")
        [seed] = setup.add("The harbour master keeps a ledger of every ship", user="alice")

    stderr_path = tmp_path / "child.stderr"
    with stderr_path.open("w") as stderr:
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(db), str(PREWARMED)],
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            bufsize=1,
        )
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=_reader, args=(child.stdout, lines), daemon=True).start()

    def next_line(timeout: float) -> str:
        try:
            line = lines.get(timeout=timeout)
        except queue.Empty:
            child.kill()
            pytest.fail(f"child silent for {timeout}s; stderr:\n{stderr_path.read_text()}")
        if line is None:
            pytest.fail(f"child exited early ({child.wait()}); stderr:\n{stderr_path.read_text()}")
        return line

    acked: dict[str, int] = {}
    try:
        assert next_line(timeout=240) == "ready"
        while len(acked) < ACKS_BEFORE_KILL:
            item_id, n = next_line(timeout=120).split()
            acked[item_id] = int(n)
        assert child.poll() is None, "the child must still be ingesting when it is killed"
        os.kill(child.pid, signal.SIGKILL)
    finally:
        if child.poll() is None:
            child.kill()
        child.wait(timeout=60)
    assert child.returncode == -signal.SIGKILL
    while (line := lines.get(timeout=30)) is not None:  # acks already in the pipe count too
        item_id, n = line.split()
        acked[item_id] = int(n)
    child.stdout.close()
    assert len(acked) >= ACKS_BEFORE_KILL
    assert sorted(acked.values()) == list(range(len(acked)))

    mos = MemOS.open(db, embedder=embedder)
    try:
        # Intact after the crash: every item whole (vector, first version, creation
        # transition; on SQLite also page structure, FTS index and foreign keys).
        assert_intact(mos)
        n_items = rows(mos, "SELECT count(*) FROM items")[0][0]
        # At most the one add in flight at the kill committed without being acknowledged.
        assert len(acked) + 1 <= n_items <= len(acked) + 2

        for item_id, n in acked.items():
            item = mos.get(item_id)
            assert (item.text, item.metadata, item.tags) == (crash_text(n), {"n": n}, ("crash",))
            assert [v.version for v in mos.history(item_id)] == [1]
        assert mos.get(seed.id).text == seed.text
        assert mos.count() == n_items

        late_id, late_n = max(acked.items(), key=lambda kv: kv[1])
        text_hits = mos.search(f"marker{late_n:05d}", user="alice", k=3, mode="text")
        assert text_hits[0].id == late_id
        dense_hits = mos.search(crash_text(late_n), user="alice", k=1, mode="dense")
        assert [h.id for h in dense_hits] == [late_id]
        hybrid = mos.search(crash_text(late_n), user="alice", k=5)
        assert hybrid[0].id == late_id

        [fresh] = mos.add("After the crash the lighthouse still turns every night", user="alice")
        assert mos.get(fresh.id).text == fresh.text
        assert mos.search("lighthouse turns at night", user="alice", k=1)[0].id == fresh.id
        assert mos.count() == n_items + 1
        # Re-adding acknowledged content is still recognised as a duplicate.
        assert mos.add(crash_text(late_n), user="alice")[0].id == late_id
        assert_intact(mos)
    finally:
        mos.close()
