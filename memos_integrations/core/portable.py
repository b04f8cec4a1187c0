"""The portable cube format: a directory anyone can read without this package.

    manifest.json         format, schema version, cube, embedding model, counts, sha256 per file
    items.jsonl           one memory per line (current state)
    versions.jsonl        every version of every memory
    transitions.jsonl     every lifecycle transition
    grants.jsonl          read/write grants
    artifacts.jsonl       activation/parametric artifacts (metadata; payloads below)
    vectors.safetensors   float32 [n_items, dim], rows in items.jsonl order
    artifacts/<id>.safetensors

Nothing is pickled. Reading checks the format, the schema version and every checksum,
and parses every record, before anything is handed to a store.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import load as st_load
from safetensors.numpy import save as st_save

from ..storage.base import CubeDump
from .cube import Artifact, MemCube
from .errors import CorruptExport, InvalidInput
from .items import (
    Grant,
    ItemVersion,
    MemoryItem,
    Transition,
    check_id,
    check_item,
    check_metadata,
    new_id,
    parse_time,
)

FORMAT = "memos-cube"
SCHEMA_VERSION = 1


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _iso(value: Any) -> Any:
    return value.isoformat() if hasattr(value, "isoformat") else value


def _record(obj: Any) -> dict[str, Any]:
    return {k: (list(v) if isinstance(v, tuple) else _iso(v)) for k, v in asdict(obj).items()}


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    with path.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")


def write_export(dump: CubeDump, path: Path, embedding_model: str) -> Path:
    """Write ``dump`` to directory ``path`` (must not exist or be empty); atomic via rename."""
    if path.exists() and any(path.iterdir()):
        raise InvalidInput(f"{path} exists and is not empty; export into a new directory")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".export-", dir=path.parent))
    try:
        _write_jsonl(tmp / "items.jsonl", [it.to_dict() for it in dump.items])
        _write_jsonl(tmp / "versions.jsonl", [_record(v) for v in dump.versions])
        _write_jsonl(tmp / "transitions.jsonl", [_record(t) for t in dump.transitions])
        _write_jsonl(tmp / "grants.jsonl", [_record(g) for g in dump.grants])
        (tmp / "artifacts").mkdir()
        meta = []
        for a in dump.artifacts:
            (tmp / "artifacts" / f"{a.id}.safetensors").write_bytes(a.payload)
            row = _record(a)
            row.pop("payload")
            meta.append(row)
        _write_jsonl(tmp / "artifacts.jsonl", meta)
        (tmp / "vectors.safetensors").write_bytes(
            st_save({"vectors": np.ascontiguousarray(dump.vectors, np.float32)})
        )
        files = sorted(p for p in tmp.rglob("*") if p.is_file())
        manifest = {
            "format": FORMAT,
            "schema_version": SCHEMA_VERSION,
            "cube": dump.cube.to_dict(),
            "embedding": {"model_id": embedding_model, "dim": int(dump.vectors.shape[1])},
            "counts": {
                "items": len(dump.items),
                "versions": len(dump.versions),
                "transitions": len(dump.transitions),
                "artifacts": len(dump.artifacts),
            },
            "files": {p.relative_to(tmp).as_posix(): _sha256(p) for p in files},
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False))
        if path.exists():
            path.rmdir()
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise CorruptExport(f"{path.name} line {n} is not JSON: {exc}") from None
            if not isinstance(row, dict):
                raise CorruptExport(f"{path.name} line {n} is not a JSON object")
            rows.append(row)
    return rows


def read_export(path: Path) -> tuple[CubeDump, str]:
    """Read and fully validate an export; returns the dump and its embedding model id."""
    manifest_path = path / "manifest.json"
    if not manifest_path.is_file():
        raise CorruptExport(f"{path} is not a cube export (no manifest.json)")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CorruptExport(f"manifest.json is not valid JSON: {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise CorruptExport(f"{path} is not a {FORMAT!r} export")
    if manifest.get("schema_version") != SCHEMA_VERSION:
        raise CorruptExport(
            f"export schema version {manifest.get('schema_version')!r} is not supported "
            f"(this version reads {SCHEMA_VERSION}); use a matching memos-integrations"
        )
    files = manifest.get("files")
    if not isinstance(files, dict):
        raise CorruptExport("manifest.json lists no files")
    for name, digest in files.items():
        target = (path / name).resolve()
        if path.resolve() not in target.parents or not target.is_file():
            raise CorruptExport(f"manifest names a missing or outside file: {name!r}")
        if _sha256(target) != digest:
            raise CorruptExport(f"checksum mismatch for {name}: the export is corrupt")
    required = {
        "items.jsonl",
        "versions.jsonl",
        "transitions.jsonl",
        "grants.jsonl",
        "artifacts.jsonl",
        "vectors.safetensors",
    }
    if missing := required - files.keys():
        raise CorruptExport(f"export lacks {', '.join(sorted(missing))}")
    try:
        return _parse(path, manifest), str(manifest.get("embedding", {}).get("model_id", ""))
    except CorruptExport:
        raise
    except (InvalidInput, KeyError, TypeError, ValueError) as exc:
        raise CorruptExport(f"export records are invalid: {exc}") from None


def _parse(path: Path, manifest: dict[str, Any]) -> CubeDump:
    c = manifest["cube"]
    cube = MemCube(
        c["id"],
        c["name"],
        c["owner"],
        c.get("description", ""),
        check_metadata(c.get("metadata")),
        parse_time(c["created_at"]),
    )  # type: ignore[arg-type]
    check_id(cube.id, "cube")
    check_id(cube.owner, "user")
    items = []
    for row in _read_jsonl(path / "items.jsonl"):
        item = check_item(MemoryItem.from_dict(row))
        if item.cube_id != cube.id:
            raise CorruptExport(f"item {item.id} belongs to cube {item.cube_id}, not {cube.id}")
        items.append(item)
    versions = [
        ItemVersion(
            **{
                **r,
                "tags": tuple(r["tags"]),
                "expires_at": parse_time(r["expires_at"]),
                "event_time": parse_time(r["event_time"]),
                "changed_at": parse_time(r["changed_at"]),
            }
        )
        for r in _read_jsonl(path / "versions.jsonl")
    ]
    transitions = [
        Transition(**{**r, "at": parse_time(r["at"])})
        for r in _read_jsonl(path / "transitions.jsonl")
    ]
    grants = [
        Grant(**{**r, "granted_at": parse_time(r["granted_at"])})
        for r in _read_jsonl(path / "grants.jsonl")
    ]
    for g in grants:  # an export may only carry grants on itself, never on other cubes
        if g.cube_id != cube.id or g.access not in ("read", "write"):
            raise CorruptExport(f"grant on {g.cube_id!r} ({g.access!r}) does not belong here")
        check_id(g.user_id, "user")
    artifacts = []
    for r in _read_jsonl(path / "artifacts.jsonl"):
        if r.get("cube_id") != cube.id:
            raise CorruptExport(f"artifact {r.get('id')!r} belongs to another cube")
        check_id(r.get("id"), "artifact")
        payload = (path / "artifacts" / f"{r['id']}.safetensors").read_bytes()
        artifacts.append(
            Artifact(**{**r, "payload": payload, "created_at": parse_time(r["created_at"])})
        )
    try:
        vectors = st_load((path / "vectors.safetensors").read_bytes())["vectors"]
    except Exception as exc:  # safetensors raises its own error types
        raise CorruptExport(f"vectors.safetensors is unreadable: {exc}") from None
    dim = manifest.get("embedding", {}).get("dim")
    if vectors.ndim != 2 or vectors.shape != (len(items), dim):
        raise CorruptExport(
            f"vectors have shape {vectors.shape}; expected {len(items)} rows of the manifest's "
            f"dim {dim}"
        )
    if not np.all(np.isfinite(vectors)):
        raise CorruptExport("vectors.safetensors holds NaN or infinite values")
    ids = {it.id for it in items}
    if len(ids) != len(items):
        raise CorruptExport("duplicate item ids in items.jsonl")
    if any(v.item_id not in ids for v in versions) or any(
        t.item_id not in ids for t in transitions
    ):
        raise CorruptExport("versions or transitions refer to items not in the export")
    return CubeDump(
        cube, grants, items, vectors.astype(np.float32), versions, transitions, artifacts
    )


def rebase(dump: CubeDump, *, cube_id: str | None, owner: str | None) -> CubeDump:
    """The same cube under a new id and/or owner; a new id also renews every item id."""
    new_cube = dump.cube.__class__(
        id=cube_id or dump.cube.id,
        name=dump.cube.name,
        owner=owner or dump.cube.owner,
        description=dump.cube.description,
        metadata=dump.cube.metadata,
        created_at=dump.cube.created_at,
    )
    renew = cube_id is not None and cube_id != dump.cube.id
    ids = {it.id: (new_id() if renew else it.id) for it in dump.items}
    old_owner = dump.cube.owner

    def own(who: str | None) -> str | None:
        return new_cube.owner if who == old_owner else who

    items = [
        it.evolve(id=ids[it.id], cube_id=new_cube.id, owner=own(it.owner)) for it in dump.items
    ]
    versions = [v.__class__(**{**asdict(v), "item_id": ids[v.item_id]}) for v in dump.versions]
    transitions = [
        t.__class__(**{**asdict(t), "item_id": ids[t.item_id]}) for t in dump.transitions
    ]
    grants = [
        g.__class__(**{**asdict(g), "cube_id": new_cube.id})
        for g in dump.grants
        if g.user_id != new_cube.owner
    ]
    artifacts = [
        a.__class__(
            **{
                **asdict(a),
                "cube_id": new_cube.id,
                "id": new_id() if renew else a.id,
                # derived memories stay fresh in the copy: same sources under their new ids,
                # and a cache or adapter of the old owner becomes the new owner's
                "sources": {ids.get(i, i): v for i, v in a.sources.items()},
                "name": _rename_owner(a.name, old_owner, new_cube.owner),
            }
        )
        for a in dump.artifacts
    ]
    return CubeDump(new_cube, grants, items, dump.vectors, versions, transitions, artifacts)


def _rename_owner(name: str, old: str, new: str) -> str:
    """``hot/<old>/<model>`` -> ``hot/<new>/<model>`` (artifact names carry their reader)."""
    parts = name.split("/")
    if len(parts) >= 2 and parts[1] == old:
        parts[1] = new
    return "/".join(parts)
