"""Cube export/import: a lossless round trip, and corrupt exports that import nothing.

Real SQLite files and the real bundled embedder (plus LangChain's deterministic fake
embedder for the "other model" case). Items are compared field by field, histories,
transitions and grants record by record, and vectors byte by byte.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from _backends import BACKENDS, table_counts, vectors
from safetensors.numpy import load as st_load
from safetensors.numpy import save as st_save

from memos_integrations import MemOS
from memos_integrations.core.errors import (
    CorruptExport,
    InvalidInput,
    MemOSError,
    NotFound,
)
from memos_integrations.core.lifecycle import STATES
from memos_integrations.embeddings import as_embedder

CUBE = "alice-work"

# ---------------------------------------------------------------------------- helpers


def _plain(obj: Any) -> Any:
    """A dataclass as a JSON-like dict with exact ISO times (offsets included)."""
    data = asdict(obj) if not isinstance(obj, dict) else obj
    return {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in data.items()}


def cube_state(m: MemOS, cube_id: str) -> dict[str, Any]:
    """Everything a cube holds, keyed by item id."""
    items = m.list(cube=cube_id, states=list(STATES), limit=10_000, order="created_asc")
    return {
        "cube": m.get_cube(cube_id).to_dict(),
        "items": {it.id: it.to_dict() for it in items},
        "versions": {it.id: [_plain(v) for v in m.history(it.id)] for it in items},
        "transitions": {it.id: [_plain(t) for t in m.transitions(it.id)] for it in items},
        "grants": [_plain(g) for g in m.grants(cube_id)],
        "vectors": vectors(m, cube_id),
    }


def store_snapshot(m: MemOS) -> dict[str, Any]:
    return {
        "cubes": [c.id for c in m.list_cubes()],
        "count": m.count(states=list(STATES)),
        "audit": len(m.audit(limit=100_000)),
        "versions": m.stats()["versions"],
        "tables": table_counts(m),
    }


def fresh_store(
    target: Path | str, embedder: Any, users: tuple[str, ...] = ("alice", "bob")
) -> MemOS:
    m = MemOS.open(target, embedder=embedder)
    for user in users:
        m.create_user(user)
    m.create_user("carol", role="admin")
    return m


def reseal(export: Path) -> None:
    """Recompute every checksum in the manifest, as a careful forger would."""
    manifest = json.loads((export / "manifest.json").read_text())
    for name in manifest["files"]:
        if (export / name).is_file():
            manifest["files"][name] = hashlib.sha256((export / name).read_bytes()).hexdigest()
    (export / "manifest.json").write_text(json.dumps(manifest))


def edit_manifest(export: Path, fn: Callable[[dict[str, Any]], None]) -> None:
    manifest = json.loads((export / "manifest.json").read_text())
    fn(manifest)
    (export / "manifest.json").write_text(json.dumps(manifest))


def edit_jsonl(export: Path, name: str, fn: Callable[[list[Any]], list[Any]]) -> None:
    path = export / name
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    path.write_text("".join(json.dumps(r) + "\n" for r in fn(rows)))


def edit_vectors(export: Path, fn: Callable[[np.ndarray], np.ndarray]) -> None:
    path = export / "vectors.safetensors"
    vecs = st_load(path.read_bytes())["vectors"]
    path.write_bytes(st_save({"vectors": np.ascontiguousarray(fn(vecs.copy()))}))


def flip_byte(path: Path, at: int) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 0x01
    path.write_bytes(bytes(data))


# ---------------------------------------------------------------------------- the source cube


@pytest.fixture(scope="module", params=BACKENDS)
def kind(request: pytest.FixtureRequest) -> str:
    """The backend of the module's stores (source and destinations alike)."""
    return request.param


@pytest.fixture
def new_target(kind: str, tmp_path: Path, request: pytest.FixtureRequest):
    """Where a fresh destination store of the same backend lives."""

    def make(name: str) -> Path | str:
        return (
            tmp_path / f"{name}.db" if kind == "sqlite" else request.getfixturevalue("pg_schemas")()
        )

    return make


@pytest.fixture(scope="module")
def source(kind: str, tmp_path_factory, embedder, request: pytest.FixtureRequest):
    """A cube with every kind of content, its export, and its state at export time."""
    root = tmp_path_factory.mktemp("portable")
    target = root / "source.db" if kind == "sqlite" else request.getfixturevalue("pg_schemas")()
    m = fresh_store(target, embedder, users=("alice", "bob", "dave"))
    m.create_cube(
        "Alice's work notes",
        owner="alice",
        cube_id=CUBE,
        description="work memory — ünïcode",
        metadata={"team": "R&D", "n": [1, 2.5]},
    )
    m.create_cube("alice-personal", owner="alice")
    m.grant(CUBE, to="bob", access="write", by="alice")
    m.grant(CUBE, to="dave", access="read", by="alice")

    ids: dict[str, str] = {}
    ids["fact"] = m.add(
        {
            "text": "Alice moved to Lisbon in March 2024 — she loves pastéis de nata",
            "kind": "event",
            "tags": ["move", "lisbon", "ünï"],
            "metadata": {"city": "Lisbon", "nested": {"a": [1, None, True, 2.5]}, "emoji": "🙂"},
            "event_time": "2024-03-01T10:00:00+02:00",
            "priority": 7,
            "confidence": 0.75,
        },
        user="alice",
        cube=CUBE,
        session="onboarding",
    )[0].id
    ids["turn"] = m.add(
        {
            "role": "user",
            "content": "I switched to decaf last week",
            "name": "Alice",
            "timestamp": "2024-05-02T08:30:00Z",
            "id": "msg-42",
        },
        user="alice",
        cube=CUBE,
        session="chat-7",
    )[0].id
    ids["private"] = m.add(
        "Alice's door code is 4711",
        user="alice",
        cube=CUBE,
        visibility="private",
        ttl=7 * 86400,
        priority=-3,
    )[0].id
    ids["prov"] = m.add(
        {
            "text": "The team standup moved to 9:30",
            "provenance": {
                "extractor": "fine",
                "message_ids": ["m1", "m2"],
                "speaker": "Bob",
                "role": "assistant",
                "timestamps": ["2024-06-01T09:00:00+00:00"],
            },
        },
        user="alice",
        cube=CUBE,
    )[0].id
    ids["edited"] = m.add(
        {"text": "Project Falcon ships in Q3", "tags": ["falcon"]}, user="alice", cube=CUBE
    )[0].id
    m.update(
        ids["edited"],
        user="alice",
        text="Project Falcon ships in Q4",
        tags=["falcon", "delay"],
        metadata={"reason": "vendor"},
        note="slipped",
    )
    m.update(ids["edited"], user="bob", priority=3, confidence=0.5)
    m.rollback(ids["edited"], 1, user="alice")
    ids["archived"] = m.add("The old office was on Rua Augusta", user="alice", cube=CUBE)[0].id
    m.set_state(ids["archived"], "archived", user="alice", reason="moved offices")
    ids["deleted"] = m.add("A mistaken note that gets deleted", user="alice", cube=CUBE)[0].id
    m.delete(ids["deleted"], user="alice", reason="wrong")
    ids["bobs"] = m.add("Bob reviews the Falcon budget on Fridays", user="bob", cube=CUBE)[0].id
    ids["served"] = m.add("Alice takes the 7:40 train to the office", user="alice", cube=CUBE)[0].id
    assert (
        m.search("which train does alice take", user="alice", cubes=[CUBE], k=1, mode="dense")[0].id
        == ids["served"]
    )
    m.add("A personal memory in another cube", user="alice", cube="alice-personal")

    export = m.export_cube(CUBE, root / "pristine")
    state = cube_state(m, CUBE)
    assert state["items"][ids["served"]]["access_count"] >= 1
    assert state["items"][ids["edited"]]["version"] == 4
    assert ids["deleted"] not in state["vectors"]
    yield {"mos": m, "export": export, "state": state, "ids": ids, "root": root}
    m.close()


def test_export_layout(source) -> None:
    export: Path = source["export"]
    manifest = json.loads((export / "manifest.json").read_text())
    assert manifest["format"] == "memos-cube" and manifest["schema_version"] == 1
    assert manifest["counts"]["items"] == len(source["state"]["items"]) == 9
    assert manifest["embedding"] == {"model_id": source["mos"].embedder.model_id, "dim": 384}
    lines = (export / "items.jsonl").read_text().splitlines()
    assert len(lines) == 9 and all(json.loads(line)["cube_id"] == CUBE for line in lines)
    assert "A personal memory in another cube" not in (export / "items.jsonl").read_text()


# ---------------------------------------------------------------------------- round trips


def test_round_trip_into_a_fresh_store_is_lossless(source, new_target, embedder) -> None:
    dst = fresh_store(new_target("fresh"), embedder)  # no "dave" here
    try:
        cube = dst.import_cube(source["export"])
        assert cube.id == CUBE
        got, want = cube_state(dst, CUBE), source["state"]
        assert got["cube"] == want["cube"]
        assert got["items"] == want["items"]  # every field: provenance, times, state, counts
        assert got["versions"] == want["versions"]
        assert got["transitions"] == want["transitions"]
        assert got["grants"] == [g for g in want["grants"] if g["user_id"] != "dave"]
        assert got["vectors"] == want["vectors"]  # bit-exact float32 bytes
        ids = source["ids"]
        assert [v["version"] for v in got["versions"][ids["edited"]]] == [1, 2, 3, 4]
        assert got["items"][ids["deleted"]]["state"] == "deleted"
        assert got["items"][ids["turn"]]["provenance"]["message_ids"] == ["msg-42"]
        assert got["items"][ids["fact"]]["event_time"] == "2024-03-01T10:00:00+02:00"
        assert dst.store.get_meta("embedding_model") == embedder.model_id

        # The imported cube is a working cube: search, grants, privacy, duplicates.
        for mode in ("dense", "text", "hybrid"):
            hits = dst.search("Lisbon pastries", user="alice", k=1, mode=mode)
            assert hits[0].id == ids["fact"], mode
        assert ids["deleted"] not in {
            h.id for h in dst.search("mistaken note deleted", user="alice", k=20)
        }
        bob_sees = {h.id for h in dst.search("door code", user="bob", k=20)}
        assert ids["private"] not in bob_sees and ids["bobs"] in bob_sees
        assert dst.add("Project Falcon ships in Q3", user="alice", cube=CUBE)[0].id == ids["edited"]
        [new] = dst.add("Imported cubes accept new memories", user="bob", cube=CUBE)
        assert dst.get(new.id).cube_id == CUBE
        assert dst.audit(action="import", limit=5)[0].detail["items"] == 9
    finally:
        dst.close()


def test_import_under_a_new_cube_id_in_the_same_store(source) -> None:
    m: MemOS = source["mos"]
    original = cube_state(m, CUBE)
    cube = m.import_cube(source["export"], cube_id="alice-work-copy")
    assert cube.id == "alice-work-copy"
    copy = cube_state(m, "alice-work-copy")
    assert cube_state(m, CUBE) == original  # the source cube is untouched

    assert {k: v for k, v in copy["cube"].items() if k != "id"} == {
        k: v for k, v in original["cube"].items() if k != "id"
    }
    assert not set(copy["items"]) & set(original["items"])  # fresh item ids
    by_hash = {it["content_hash"]: old_id for old_id, it in original["items"].items()}
    assert len(by_hash) == len(original["items"]) == len(copy["items"])
    for new_id, item in copy["items"].items():
        old_id = by_hash[item["content_hash"]]
        old = original["items"][old_id]
        assert {**item, "id": old_id, "cube_id": CUBE} == old
        assert [{**v, "item_id": old_id} for v in copy["versions"][new_id]] == original["versions"][
            old_id
        ]
        assert [{**t, "item_id": old_id} for t in copy["transitions"][new_id]] == original[
            "transitions"
        ][old_id]
        if old_id in original["vectors"]:
            assert copy["vectors"][new_id] == original["vectors"][old_id]
        else:
            assert new_id not in copy["vectors"]
    assert [{**g, "cube_id": CUBE} for g in copy["grants"]] == original["grants"]

    hits = m.search("Lisbon pastries", user="alice", cubes=["alice-work-copy"], k=1)
    assert hits[0].item.cube_id == "alice-work-copy"
    assert hits[0].text == original["items"][source["ids"]["fact"]]["text"]


def test_import_with_another_embedder_re_embeds(source, new_target) -> None:
    from langchain_core.embeddings import DeterministicFakeEmbedding

    fake = as_embedder(DeterministicFakeEmbedding(size=16), model_id="fake-16")
    dst = fresh_store(new_target("fake"), fake)
    try:
        dst.import_cube(source["export"])
        got, want = cube_state(dst, CUBE), source["state"]
        assert set(got["items"]) == set(want["items"])
        for item_id, item in got["items"].items():
            assert item["embedding_model"] == "fake-16"
            assert {**item, "embedding_model": None} == {
                **want["items"][item_id],
                "embedding_model": None,
            }
        assert got["versions"] == want["versions"]
        assert got["transitions"] == want["transitions"]
        assert set(got["vectors"]) == set(want["vectors"])
        for item_id, blob in got["vectors"].items():
            vec = np.frombuffer(blob, np.float32)
            assert vec.shape == (16,) and abs(float(np.linalg.norm(vec)) - 1) < 1e-5
            expected = fake.embed_documents([want["items"][item_id]["text"]])[0]
            np.testing.assert_allclose(vec, expected, rtol=1e-6)
        assert dst.store.get_meta("embedding_model") == "fake-16"
        assert dst.store.get_meta("embedding_dim") == "16"

        fact = want["items"][source["ids"]["fact"]]["text"]
        assert dst.search(fact, user="alice", k=1, mode="dense")[0].id == source["ids"]["fact"]
        assert dst.search(fact, user="alice", k=1)[0].id == source["ids"]["fact"]
        assert (
            dst.search("Falcon budget", user="bob", k=1, mode="text")[0].id == source["ids"]["bobs"]
        )
        [new] = dst.add("A memory embedded by the fake model", user="alice", cube=CUBE)
        assert dst.search(new.text, user="alice", k=1, mode="dense")[0].id == new.id
    finally:
        dst.close()


# ---------------------------------------------------------------------------- refusals


def test_import_onto_an_existing_cube_id_writes_nothing(source, new_target, embedder) -> None:
    m: MemOS = source["mos"]
    for kwargs in ({}, {"cube_id": "alice-personal"}, {"cube_id": CUBE}):
        before = store_snapshot(m)
        with pytest.raises(InvalidInput, match="exists already"):
            m.import_cube(source["export"], **kwargs)
        assert store_snapshot(m) == before
    before = store_snapshot(m)
    with pytest.raises(InvalidInput, match="cube id"):
        m.import_cube(source["export"], cube_id="../elsewhere")
    with pytest.raises(NotFound, match="nobody"):
        m.import_cube(source["export"], cube_id="for-nobody", owner="nobody")
    assert store_snapshot(m) == before

    dst = fresh_store(new_target("twice"), embedder)
    try:
        dst.import_cube(source["export"])
        before = store_snapshot(dst)
        with pytest.raises(InvalidInput, match="exists already"):
            dst.import_cube(source["export"])
        assert store_snapshot(dst) == before
    finally:
        dst.close()


def _flip_items(d: Path) -> None:
    flip_byte(d / "items.jsonl", len((d / "items.jsonl").read_bytes()) // 2)


def _flip_vectors(d: Path) -> None:
    flip_byte(d / "vectors.safetensors", len((d / "vectors.safetensors").read_bytes()) - 3)


def _extra_item(d: Path) -> None:
    edit_jsonl(
        d,
        "items.jsonl",
        lambda rows: [*rows, {**rows[0], "id": "f" * 32, "text": "A smuggled memory"}],
    )


def _rename_item(d: Path, new_id: str) -> None:
    old = json.loads((d / "items.jsonl").read_text().splitlines()[0])["id"]
    for name in ("items.jsonl", "versions.jsonl", "transitions.jsonl"):
        key = "id" if name == "items.jsonl" else "item_id"
        edit_jsonl(
            d,
            name,
            lambda rows, key=key: [{**r, key: new_id} if r.get(key) == old else r for r in rows],
        )


def _set_item(**changes: Any) -> Callable[[Path], None]:
    def mutate(d: Path) -> None:
        edit_jsonl(d, "items.jsonl", lambda rows: [{**rows[0], **changes}, *rows[1:]])
        reseal(d)

    return mutate


def _resealed(fn: Callable[[Path], None]) -> Callable[[Path], None]:
    def mutate(d: Path) -> None:
        fn(d)
        reseal(d)

    return mutate


def _recube(d: Path) -> None:
    edit_manifest(d, lambda man: man["cube"].update(id="../evil"))
    for name in ("items.jsonl", "grants.jsonl"):
        edit_jsonl(d, name, lambda rows: [{**r, "cube_id": "../evil"} for r in rows])
    reseal(d)


def _nan_vector(v: np.ndarray) -> np.ndarray:
    v[0, 0] = np.nan
    return v


CORRUPTIONS = [
    # damaged bytes: caught by the checksums
    pytest.param(_flip_items, "checksum", id="flipped-byte-items"),
    pytest.param(_flip_vectors, "checksum", id="flipped-byte-vectors"),
    pytest.param(_extra_item, "checksum", id="extra-record-unsealed"),
    pytest.param(
        lambda d: (d / "versions.jsonl").write_text(""), "checksum", id="emptied-versions"
    ),
    # missing pieces
    pytest.param(lambda d: (d / "versions.jsonl").unlink(), "missing", id="deleted-versions"),
    pytest.param(lambda d: (d / "vectors.safetensors").unlink(), "missing", id="deleted-vectors"),
    pytest.param(lambda d: (d / "manifest.json").unlink(), "manifest", id="deleted-manifest"),
    pytest.param(
        lambda d: edit_manifest(d, lambda m: m["files"].pop("items.jsonl")),
        "items.jsonl",
        id="unlisted-items",
    ),
    pytest.param(lambda d: edit_manifest(d, lambda m: m.pop("files")), "files", id="no-file-list"),
    pytest.param(
        lambda d: edit_manifest(d, lambda m: m["files"].update({"../x": "0" * 64})),
        "outside",
        id="path-outside",
    ),
    # foreign formats
    pytest.param(
        lambda d: edit_manifest(d, lambda m: m.update(schema_version=99)), "99", id="schema-99"
    ),
    pytest.param(
        lambda d: edit_manifest(d, lambda m: m.update(format="other")),
        "memos-cube",
        id="format-other",
    ),
    pytest.param(
        lambda d: (d / "manifest.json").write_text("{not json"), "json", id="manifest-not-json"
    ),
    pytest.param(
        lambda d: (d / "manifest.json").write_text("[1, 2]"), "memos-cube", id="manifest-array"
    ),
    # consistent forgeries (checksums recomputed): caught by structure checks
    pytest.param(_resealed(_extra_item), "shape", id="extra-record-resealed"),
    pytest.param(
        _resealed(lambda d: edit_vectors(d, lambda v: v[:-1])),
        "shape",
        id="truncated-vectors-resealed",
    ),
    pytest.param(
        _resealed(lambda d: edit_vectors(d, lambda v: v.reshape(-1))),
        "shape",
        id="flat-vectors-resealed",
    ),
    pytest.param(
        _resealed(
            lambda d: (d / "vectors.safetensors").write_bytes(
                (d / "vectors.safetensors").read_bytes()[:200]
            )
        ),
        "vectors",
        id="cut-vectors-resealed",
    ),
    pytest.param(
        _resealed(
            lambda d: (d / "vectors.safetensors").write_bytes(
                st_save({"other": np.zeros((9, 384), np.float32)})
            )
        ),
        "vectors",
        id="renamed-tensor-resealed",
    ),
    pytest.param(
        _resealed(
            lambda d: (
                edit_jsonl(d, "items.jsonl", lambda r: [*r, *r[:1]])
                or edit_vectors(d, lambda v: np.concatenate([v, v[:1]]))
            )
        ),
        "duplicate",
        id="duplicate-item-resealed",
    ),
    pytest.param(
        _resealed(
            lambda d: (d / "items.jsonl").write_text((d / "items.jsonl").read_text() + "{broken\n")
        ),
        "json",
        id="bad-json-line",
    ),
    pytest.param(
        _resealed(
            lambda d: (d / "items.jsonl").write_text((d / "items.jsonl").read_text() + "[1, 2]\n")
        ),
        "object",
        id="array-line",
    ),
    pytest.param(
        _resealed(
            lambda d: edit_jsonl(d, "versions.jsonl", lambda r: [*r, {**r[0], "item_id": "0" * 32}])
        ),
        "refer",
        id="orphan-version",
    ),
    pytest.param(
        _resealed(lambda d: edit_jsonl(d, "transitions.jsonl", lambda r: [*r, {"item_id": "x"}])),
        "invalid",
        id="broken-transition",
    ),
    pytest.param(
        _resealed(
            lambda d: edit_jsonl(
                d, "items.jsonl", lambda r: [{k: v for k, v in r[0].items() if k != "text"}, *r[1:]]
            )
        ),
        "text",
        id="item-without-text",
    ),
    pytest.param(_set_item(cube_id="bob-personal"), "bob-personal", id="item-other-cube"),
    pytest.param(_set_item(state="bogus"), "state", id="item-bad-state"),
    pytest.param(_set_item(text=""), "empty", id="item-empty-text"),
    pytest.param(_set_item(text="bad \ud800"), "unicode", id="item-surrogate-text"),
    pytest.param(_set_item(tags="not-a-list"), "tag", id="item-tags-str"),
    pytest.param(_set_item(metadata={"x": float("nan")}), "nan", id="item-nan-metadata"),
    pytest.param(_set_item(event_time="someday"), "event_time", id="item-bad-event-time"),
    # the rules every other entry point enforces apply to imported records too
    pytest.param(_set_item(kind="Not A Kind"), "kind", id="item-bad-kind"),
    pytest.param(_set_item(visibility="public"), "visibility", id="item-bad-visibility"),
    pytest.param(_set_item(priority="high"), "priority", id="item-bad-priority"),
    pytest.param(_set_item(confidence=7.5), "confidence", id="item-bad-confidence"),
    pytest.param(_resealed(lambda d: _rename_item(d, "a b")), "id", id="item-bad-id"),
    pytest.param(_recube, "id", id="cube-bad-id"),
    pytest.param(
        _resealed(lambda d: edit_vectors(d, _nan_vector)), "vector", id="nan-vector-resealed"
    ),
    pytest.param(
        _resealed(lambda d: edit_vectors(d, lambda v: v[:, :16])), "dim", id="wrong-dim-resealed"
    ),
]


@pytest.mark.parametrize(("corrupt", "match"), CORRUPTIONS)
def test_corrupt_export_imports_nothing(
    source, tmp_path: Path, new_target, embedder, corrupt, match: str
) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(source["export"], broken)
    corrupt(broken)

    dst = fresh_store(new_target("target"), embedder)
    m: MemOS = source["mos"]
    copy_id = "restored-" + hashlib.sha256(str(tmp_path).encode()).hexdigest()[:12]
    try:
        for target, kwargs in ((dst, {}), (m, {"cube_id": copy_id})):
            before = store_snapshot(target)
            with pytest.raises(CorruptExport) as info:
                target.import_cube(broken, **kwargs)
            assert isinstance(info.value, MemOSError)
            assert match.lower() in str(info.value).lower(), str(info.value)
            assert store_snapshot(target) == before, "a refused import wrote something"
            assert target.store.get_cube(kwargs.get("cube_id", CUBE)) is None
    finally:
        dst.close()


def test_forged_grant_cannot_reach_another_cube(
    source, tmp_path: Path, new_target, embedder
) -> None:
    """A grant record naming a different cube must not be imported as a grant on that cube."""
    forged = tmp_path / "forged"
    shutil.copytree(source["export"], forged)
    edit_jsonl(
        forged,
        "grants.jsonl",
        lambda rows: [
            *rows,
            {**rows[0], "cube_id": "alice-personal", "user_id": "bob", "access": "write"},
        ],
    )
    reseal(forged)

    dst = fresh_store(new_target("victim"), embedder)
    try:
        dst.create_cube("alice-personal", owner="alice")
        dst.add("Alice's diary: private thoughts", user="alice", cube="alice-personal")
        before = store_snapshot(dst)
        with pytest.raises(CorruptExport, match="grant"):
            dst.import_cube(forged)
        assert store_snapshot(dst) == before
        assert dst.grants("alice-personal") == []
        with pytest.raises(NotFound):
            dst.search("diary", user="bob", cubes=["alice-personal"])
    finally:
        dst.close()
