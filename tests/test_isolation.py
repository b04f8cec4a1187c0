"""Users never see each other's memories without a grant, through any read path."""

from __future__ import annotations

import pytest
from _backends import BACKENDS

from memos_integrations import MemOS, NotFound, PermissionDenied

STORES = BACKENDS  # every test here runs on both stores (see conftest.py)


@pytest.fixture
def secret(mos: MemOS):
    [item] = mos.add(["Alice's bank PIN hint is her cat's birthday"], user="alice")
    return item


def test_other_user_cannot_read_private_cube(mos: MemOS, secret, tmp_path) -> None:
    assert mos.search("bank PIN hint", user="bob", k=10) == []
    assert mos.search("bank PIN hint", user="bob", k=10, mode="text") == []
    with pytest.raises(NotFound):
        mos.get(secret.id, user="bob")
    with pytest.raises(NotFound):
        mos.history(secret.id, user="bob")
    with pytest.raises(NotFound):
        mos.search("PIN", user="bob", cubes=["alice-personal"])
    assert mos.list(user="bob") == []
    with pytest.raises(NotFound):
        mos.list(user="bob", cube="alice-personal")
    with pytest.raises(NotFound):
        mos.export_cube("alice-personal", tmp_path / "x", user="bob")
    with pytest.raises(NotFound):
        mos.update(secret.id, user="bob", text="hacked")
    assert mos.get(secret.id).text.startswith("Alice's bank")  # unchanged
    assert [c.id for c in mos.list_cubes(user="bob")] == ["bob-personal"]


def test_read_grant_shares_and_is_audited(mos: MemOS, secret) -> None:
    mos.grant("alice-personal", to="bob", access="read", by="alice")
    hits = mos.search("bank PIN hint", user="bob", k=10)
    assert [h.id for h in hits] == [secret.id]
    assert mos.get(secret.id, user="bob").id == secret.id
    reads = mos.audit(actor="bob", cube="alice-personal")
    assert {r.action for r in reads} >= {"read:search", "read:get"}
    with pytest.raises(PermissionDenied):
        mos.add(["bob writes"], user="bob", cube="alice-personal")
    with pytest.raises(PermissionDenied):
        mos.update(secret.id, user="bob", text="changed")
    with pytest.raises(PermissionDenied):
        mos.grant("alice-personal", to="bob", access="write", by="bob")
    assert mos.revoke("alice-personal", user="bob", by="alice")
    assert mos.search("bank PIN hint", user="bob", k=10) == []


def test_write_grant_and_private_items(mos: MemOS) -> None:
    mos.grant("alice-personal", to="bob", access="write", by="alice")
    [bobs] = mos.add(
        ["Bob's private note in alice's cube"],
        user="bob",
        cube="alice-personal",
        visibility="private",
    )
    [shared] = mos.add(["Bob's shared note in alice's cube"], user="bob", cube="alice-personal")
    # a private item is seen only by its owner, even by the cube's owner
    assert {h.id for h in mos.search("note in alice's cube", user="alice", k=10)} == {shared.id}
    with pytest.raises(NotFound):
        mos.get(bobs.id, user="alice")
    assert {h.id for h in mos.search("note", user="bob", k=10)} == {bobs.id, shared.id}


def test_admin_and_root_see_everything(mos: MemOS, secret) -> None:
    assert mos.get(secret.id, user="carol").id == secret.id
    assert mos.search("bank PIN", user="carol", k=1)[0].id == secret.id
    assert mos.search("bank PIN", user=None, k=1)[0].id == secret.id


def test_unknown_user_is_an_error_not_a_guess(mos: MemOS, secret) -> None:
    with pytest.raises(NotFound, match="create_user"):
        mos.search("PIN", user="mallory")
    with pytest.raises(NotFound):
        mos.add(["x"], user="mallory", cube="alice-personal")


def test_forget_user_needs_authority(mos: MemOS, secret) -> None:
    with pytest.raises(PermissionDenied):
        mos.forget_user("alice", by="bob")
    assert mos.get(secret.id).id == secret.id
    assert mos.forget_user("alice", by="alice")["items"] == 1
