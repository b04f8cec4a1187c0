"""Caller-chosen item keys: upsert by key, identity by key, keys across deletes and imports."""

from __future__ import annotations

from pathlib import Path

import pytest
from _backends import BACKENDS

from memos_integrations import Conflict, InvalidInput, MemOS

STORES = BACKENDS  # every test here runs on both stores (see conftest.py)

CUBE = "alice-personal"


def _add(mos: MemOS, *docs: dict, user: str = "alice", cube: str = CUBE):
    return mos.add(list(docs), user=user, cube=cube)


def test_keyed_readd_is_a_no_op_and_a_change_is_a_new_version(mos: MemOS) -> None:
    [first] = _add(mos, {"text": "alice lives in Porto", "key": "home"})
    assert first.key == "home" and first.version == 1
    [again] = _add(mos, {"text": "alice lives in Porto", "key": "home"})
    assert (again.id, again.version) == (first.id, 1)

    [moved] = _add(mos, {"text": "alice lives in Lisbon", "key": "home", "tags": ["city"]})
    assert (moved.id, moved.version, moved.tags) == (first.id, 2, ("city",))
    assert [v.text for v in mos.history(first.id, user="alice")] == [
        "alice lives in Porto",
        "alice lives in Lisbon",
    ]
    hits = mos.search("which city does alice live in", user="alice", k=3)
    assert [h.item.text for h in hits] == ["alice lives in Lisbon"]
    assert mos.count(user="alice") == 1


def test_keyed_items_are_told_apart_by_key_not_content(mos: MemOS) -> None:
    a, b = _add(mos, {"text": "same words", "key": "a"}, {"text": "same words", "key": "b"})
    assert a.id != b.id
    [plain] = _add(mos, "same words")
    assert plain.id not in (a.id, b.id) and plain.key is None
    assert _add(mos, "same words")[0].id == plain.id  # unkeyed content stays idempotent
    assert mos.count(user="alice") == 3


def test_keys_are_per_cube(mos: MemOS) -> None:
    [mine] = _add(mos, {"text": "alice's note", "key": "1"})
    [theirs] = _add(mos, {"text": "bob's note", "key": "1"}, user="bob", cube="bob-personal")
    assert mine.id != theirs.id
    assert mos.get(mine.id, user="alice").text == "alice's note"


def test_a_deleted_key_can_be_used_again(mos: MemOS) -> None:
    [old] = _add(mos, {"text": "temporary", "key": "k"})
    assert mos.list(user="alice", filter={"key": "k"})[0].id == old.id
    mos.delete(old.id, user="alice")
    [new] = _add(mos, {"text": "temporary", "key": "k"})
    assert new.id != old.id and new.state == "generated"
    assert mos.get(old.id, user="alice").state == "deleted"


def test_readding_an_archived_key_brings_it_back(mos: MemOS) -> None:
    [item] = _add(mos, {"text": "old hobby: chess", "key": "hobby"})
    mos.set_state(item.id, "archived", user="alice")
    [back] = _add(mos, {"text": "old hobby: chess", "key": "hobby"})
    assert (back.id, back.state, back.version) == (item.id, "activated", 2)
    states = [(t.from_state, t.to_state) for t in mos.transitions(item.id, user="alice")]
    assert states[-1] == ("archived", "activated")
    assert mos.search("chess", user="alice", k=1)[0].item.id == item.id


def test_filter_by_key(mos: MemOS) -> None:
    _add(mos, *({"text": f"doc {i}", "key": f"k{i}"} for i in range(5)))
    found = mos.list(user="alice", filter={"key": {"$in": ["k1", "k3", "nope"]}})
    assert sorted(it.key for it in found) == ["k1", "k3"]


@pytest.mark.parametrize("key", ["", "   ", 7, "x" * 1025, "bad\x00key"])
def test_bad_keys_are_refused(mos: MemOS, key: object) -> None:
    with pytest.raises(InvalidInput):
        _add(mos, {"text": "anything", "key": key})
    assert mos.count(user="alice") == 0


def test_a_key_twice_in_one_call_is_refused_and_writes_nothing(mos: MemOS) -> None:
    with pytest.raises(InvalidInput, match="twice"):
        _add(mos, {"text": "one", "key": "k"}, {"text": "two", "key": "k"})
    assert mos.count(user="alice") == 0


def test_a_merged_key_points_the_caller_elsewhere(mos: MemOS) -> None:
    [item] = _add(mos, {"text": "prefers tea", "key": "drink"})
    mos.set_state(item.id, "merged", user="alice")
    with pytest.raises(Conflict, match="merged"):
        _add(mos, {"text": "prefers coffee", "key": "drink"})
    assert mos.get(item.id, user="alice").text == "prefers tea"


def test_keys_survive_export_and_import(mos: MemOS, tmp_path: Path) -> None:
    [item] = _add(mos, {"text": "a keyed memory", "key": "doc-1"})
    mos.export_cube(CUBE, tmp_path / "export", user="alice")
    mos.import_cube(tmp_path / "export", owner="bob", cube_id="bob-copy")
    [copy] = mos.list(user="bob", cube="bob-copy")
    assert (copy.key, copy.text) == ("doc-1", "a keyed memory") and copy.id != item.id
    # the key now lives in both cubes, each on its own
    [readded] = _add(mos, {"text": "a keyed memory", "key": "doc-1"}, user="bob", cube="bob-copy")
    assert readded.id == copy.id
