"""The in-memory vector index: exact below the IVF threshold, high recall above it."""

from __future__ import annotations

import numpy as np

from memos_integrations.storage.vector_index import VectorIndex


def _unit(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    x = rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_exact_search_add_replace_remove() -> None:
    rng = np.random.default_rng(1)
    vecs = _unit(rng, 50, 8)
    index = VectorIndex(8)
    ids = [f"i{n}" for n in range(50)]
    index.add(["c1"] * 25 + ["c2"] * 25, ids, vecs)
    top = index.search(vecs[3], 3)
    assert top[0][0] == "i3" and abs(top[0][1] - 1.0) < 1e-5
    assert all(i in ids[:25] for i, _ in index.search(vecs[3], 30, cube_ids=["c1"]))
    index.remove(["i3"])
    assert "i3" not in {i for i, _ in index.search(vecs[3], 50)}
    index.add(["c1"], ["i4"], vecs[3:4])  # replace i4's vector
    assert index.search(vecs[3], 1)[0][0] == "i4"
    assert len(index) == 49
    assert {i for i, _ in index.search(vecs[0], 10, only={"i1", "i2"})} == {"i1", "i2"}
    assert index.search(vecs[0], 5, cube_ids=["nope"]) == []


def test_ivf_recall_against_exact() -> None:
    rng = np.random.default_rng(2)
    # clustered data, like real embeddings
    centers = _unit(rng, 40, 32)
    vecs = centers[rng.integers(0, 40, 6000)] + 0.35 * _unit(rng, 6000, 32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    ids = [str(n) for n in range(6000)]
    ivf = VectorIndex(32, ivf_min_rows=2000, nprobe=12)
    ivf.add(["c"] * 6000, ids, vecs)
    queries = _unit(rng, 50, 32)
    recall = []
    for q in queries:
        exact = set(np.argsort(-(vecs @ q))[:10].astype(str))
        got = {i for i, _ in ivf.search(q, 10)}
        recall.append(len(exact & got) / 10)
    assert np.mean(recall) >= 0.9
    # rows added after training (the tail) are found, and removals apply
    extra = _unit(rng, 3, 32)
    ivf.add(["c"] * 3, ["x0", "x1", "x2"], extra)
    assert ivf.search(extra[1], 1)[0][0] == "x1"
    ivf.remove(["x1"])
    assert ivf.search(extra[1], 1)[0][0] != "x1"
