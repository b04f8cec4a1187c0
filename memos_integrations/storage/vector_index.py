"""An in-memory NumPy index of unit vectors, partitioned by cube.

Why not only brute force: a float32 scan of 100k x 384 vectors is memory-bound at
~10-16 ms on two cores, over the 5 ms budget. Partitions smaller than ``ivf_min_rows``
are scanned exactly; larger ones get an inverted-file (IVF) coarse quantiser: spherical
k-means centroids, rows stored contiguously per list, ``nprobe`` lists scanned exactly.
Rows appended after training sit in an exactly-scanned tail until the next re-layout.
Callers that need exactness on a filtered subset pass ``rows`` (see :meth:`search`).

The index holds no truth of its own: the store rebuilds or syncs it from its tables.
"""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
from threadpoolctl import ThreadpoolController

# IVF shape: 4 sqrt(n) lists, 72 probed. At 100k MiniLM vectors this scans 6% of the rows for
# recall@10 0.93 against exact search, where sqrt(n) lists with 32 probed scanned 10% for 0.93
# (the scan is memory-bound: 1.1 vs 1.5 ms). Measured with benchmarks/search_latency.py.
LISTS_PER_SQRT_N = 4
NPROBE = 72


@functools.cache
def _blas() -> ThreadpoolController:
    return ThreadpoolController()


@contextlib.contextmanager
def _one_blas_thread() -> Iterator[None]:
    """Matrix-vector products are too small to share: a second BLAS thread only adds wake-up
    latency, and 10x more when another process holds the other core (0.8 vs 7.7 ms for
    10k x 384 on 2 busy cores). The limit is process-wide for its few milliseconds."""
    with _blas().limit(limits=1, user_api="blas"):
        yield


@dataclass
class _IVF:
    centroids: np.ndarray  # (nlist, dim)
    order: np.ndarray  # row ids, grouped by list
    offsets: np.ndarray  # list l owns order[offsets[l]:offsets[l+1]]
    vectors: np.ndarray  # the vectors in ``order``: contiguous per list
    covered: int  # rows [0, covered) are laid out; the rest is the exact tail
    trained_at: int  # partition size when the centroids were trained


@dataclass
class _Partition:
    dim: int
    ids: list[str] = field(default_factory=list)
    vectors: np.ndarray = field(default=None)  # type: ignore[assignment]
    alive: np.ndarray = field(default=None)  # type: ignore[assignment]
    ivf: _IVF | None = None

    def __post_init__(self) -> None:
        self.vectors = np.zeros((16, self.dim), np.float32)
        self.alive = np.zeros(16, bool)

    @property
    def size(self) -> int:
        return len(self.ids)

    def append(self, ids: Sequence[str], vectors: np.ndarray) -> range:
        start, end = self.size, self.size + len(ids)
        if end > len(self.vectors):
            cap = max(end, 2 * len(self.vectors))
            grown = np.zeros((cap, self.dim), np.float32)
            grown[:start] = self.vectors[:start]
            alive = np.zeros(cap, bool)
            alive[:start] = self.alive[:start]
            self.vectors, self.alive = grown, alive
        self.vectors[start:end] = vectors
        self.alive[start:end] = True
        self.ids.extend(ids)
        return range(start, end)


def _top(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest scores, best first."""
    if k >= len(scores):
        return np.argsort(-scores, kind="stable")
    part = np.argpartition(-scores, k)[:k]
    return part[np.argsort(-scores[part], kind="stable")]


class VectorIndex:
    """Cosine top-k over unit vectors, partitioned by cube, safe to share between threads."""

    def __init__(self, dim: int, *, ivf_min_rows: int = 20_000, nprobe: int = NPROBE) -> None:
        self.dim = dim
        self.ivf_min_rows = ivf_min_rows
        self.nprobe = nprobe
        self._parts: dict[str, _Partition] = {}
        self._where: dict[str, tuple[str, int]] = {}  # item id -> (cube id, row)
        self._lock = threading.RLock()

    def __len__(self) -> int:
        return len(self._where)

    def __contains__(self, item_id: str) -> bool:
        return item_id in self._where

    def add(self, cube_ids: Sequence[str], ids: Sequence[str], vectors: np.ndarray) -> None:
        """Add (or replace) vectors; rows are grouped per cube."""
        vectors = np.asarray(vectors, np.float32).reshape(len(ids), self.dim)
        with self._lock:
            self.remove(i for i in ids if i in self._where)
            by_cube: dict[str, list[int]] = {}
            for n, cube in enumerate(cube_ids):
                by_cube.setdefault(cube, []).append(n)
            for cube, rows in by_cube.items():
                part = self._parts.setdefault(cube, _Partition(self.dim))
                new_ids = [ids[n] for n in rows]
                for item_id, row in zip(new_ids, part.append(new_ids, vectors[rows]), strict=True):
                    self._where[item_id] = (cube, row)

    def remove(self, ids: Iterable[str]) -> None:
        with self._lock:
            for item_id in ids:
                loc = self._where.pop(item_id, None)
                if loc is not None:
                    self._parts[loc[0]].alive[loc[1]] = False

    def drop_cube(self, cube_id: str) -> None:
        with self._lock:
            part = self._parts.pop(cube_id, None)
            for item_id in part.ids if part else ():
                self._where.pop(item_id, None)

    def search(
        self,
        query: np.ndarray,
        k: int,
        cube_ids: Iterable[str] | None = None,
        only: set[str] | None = None,
    ) -> list[tuple[str, float]]:
        """Top-k (id, cosine) over the given cubes (all when None).

        ``only`` restricts the search to those ids, scanned exactly (used for selective
        filters, where an approximate scan might not return k rows).
        """
        q = np.asarray(query, np.float32).reshape(self.dim)
        with self._lock, _one_blas_thread():
            cubes = list(self._parts) if cube_ids is None else cube_ids
            wanted = None
            if only is not None:  # group the allowed ids by cube once
                wanted = {}
                for item_id in only:
                    if (loc := self._where.get(item_id)) is not None:
                        wanted.setdefault(loc[0], []).append(loc[1])
            found: list[tuple[str, float]] = []
            for cube in cubes:
                part = self._parts.get(cube)
                if part is None:
                    continue
                rows = None if wanted is None else np.asarray(wanted.get(cube, ()), np.int64)
                rows, scores = self._search_part(part, q, k, rows)
                found.extend((part.ids[r], float(s)) for r, s in zip(rows, scores, strict=True))
        found.sort(key=lambda t: -t[1])
        return found[:k]

    # ------------------------------------------------------------------ internals

    def _search_part(
        self, part: _Partition, q: np.ndarray, k: int, rows: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        n = part.size
        if rows is not None:
            scores = part.vectors[rows] @ q
            top = _top(scores, k)
            return rows[top], scores[top]
        if n < self.ivf_min_rows:
            scores = part.vectors[:n] @ q
            scores[~part.alive[:n]] = -np.inf
            top = _top(scores, k)
            top = top[np.isfinite(scores[top])]
            return top, scores[top]
        ivf = self._ivf(part)
        probe = _top(ivf.centroids @ q, min(self.nprobe, len(ivf.centroids)))
        spans = [(int(ivf.offsets[lst]), int(ivf.offsets[lst + 1])) for lst in probe]
        cand_rows = [ivf.order[a:b] for a, b in spans]
        cand_scores = [ivf.vectors[a:b] @ q for a, b in spans]
        if ivf.covered < n:  # the tail appended since the last layout
            cand_rows.append(np.arange(ivf.covered, n))
            cand_scores.append(part.vectors[ivf.covered : n] @ q)
        rows = np.concatenate(cand_rows)
        scores = np.concatenate(cand_scores)
        keep = part.alive[rows]
        rows, scores = rows[keep], scores[keep]
        top = _top(scores, k)
        return rows[top], scores[top]

    def _ivf(self, part: _Partition) -> _IVF:
        """The partition's IVF layout, (re)built when missing or when the tail got long."""
        n = part.size
        ivf = part.ivf
        if ivf is None or n > 4 * ivf.trained_at:
            live = part.vectors[:n][part.alive[:n]]
            centroids = _spherical_kmeans(live, int(LISTS_PER_SQRT_N * np.sqrt(n)))
            ivf = part.ivf = _layout(part, centroids, trained_at=n)
        elif n - ivf.covered > max(2_000, ivf.covered // 10):
            ivf = part.ivf = _layout(part, ivf.centroids, trained_at=ivf.trained_at)
        return ivf


def _layout(part: _Partition, centroids: np.ndarray, trained_at: int) -> _IVF:
    n = part.size
    assign = _assign(part.vectors[:n], centroids)
    order = np.argsort(assign, kind="stable")
    counts = np.bincount(assign, minlength=len(centroids))
    offsets = np.concatenate([[0], np.cumsum(counts)])
    return _IVF(centroids, order, offsets, part.vectors[order], n, trained_at)


def _assign(vectors: np.ndarray, centroids: np.ndarray, chunk: int = 16_384) -> np.ndarray:
    out = np.empty(len(vectors), np.int64)
    for s in range(0, len(vectors), chunk):
        out[s : s + chunk] = np.argmax(vectors[s : s + chunk] @ centroids.T, axis=1)
    return out


def _spherical_kmeans(vectors: np.ndarray, nlist: int, iters: int = 8) -> np.ndarray:
    """Cosine k-means on a sample; deterministic (fixed seed) so layouts are reproducible."""
    rng = np.random.default_rng(0)
    sample = vectors[rng.choice(len(vectors), min(len(vectors), 32 * nlist), replace=False)]
    centroids = sample[rng.choice(len(sample), nlist, replace=False)].copy()
    for _ in range(iters):
        assign = _assign(sample, centroids)
        # per-list sums by sorting once (np.add.at is unbuffered: seconds at 100k rows)
        counts = np.bincount(assign, minlength=nlist)
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        sums = np.zeros_like(centroids)
        filled = counts > 0
        sums[filled] = np.add.reduceat(sample[np.argsort(assign, kind="stable")], starts[filled])
        norms = np.linalg.norm(sums, axis=1, keepdims=True)
        empty = norms[:, 0] == 0
        sums[empty] = sample[rng.choice(len(sample), int(empty.sum()), replace=False)]
        norms[empty] = 1.0
        centroids = (sums / norms).astype(np.float32)
    return centroids
