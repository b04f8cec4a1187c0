"""Governance: every public engine method checked as an outsider, the audit log, roles,
forget_user and redaction. Runs on both stores."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from _backends import BACKENDS, rows, table_counts

from memos_integrations import MemOS, NotFound, PermissionDenied
from memos_integrations.core.cube import Artifact
from memos_integrations.core.errors import InvalidInput
from memos_integrations.core.governance import Redactor
from memos_integrations.core.items import AuditRecord, SearchHit

STORES = BACKENDS

SECRET = "Alice's bank PIN hint is her cat's birthday"


@pytest.fixture
def world(mos: MemOS, tmp_path: Path) -> dict[str, Any]:
    """alice holds a secret in her cube (and an export of it); bob is the outsider."""
    [item] = mos.add([SECRET], user="alice", ttl=3600)
    mos.add(["Bob keeps bees"], user="bob")
    export = mos.export_cube("alice-personal", tmp_path / "alice-export")
    mos.scheduler.working.observe("alice", "s1", [SearchHit(item, 1.0)])
    return {"item": item, "export": export, "tmp": tmp_path}


# method -> how bob tries to reach alice's data; each must be refused and audited as denied
REFUSED: dict[str, Callable[[MemOS, dict[str, Any]], Any]] = {
    "add": lambda m, w: m.add(["x"], user="bob", cube="alice-personal"),
    "artifacts": lambda m, w: m.artifacts("alice-personal", user="bob"),
    "build_activation": lambda m, w: m.build_activation("alice-personal", user="bob"),
    "build_experts": lambda m, w: m.build_experts(["piqa"], by="bob"),
    "refine": lambda m, w: m.refine(user="bob", cube="alice-personal"),
    "use_experts": lambda m, w: m.use_experts(None, by="bob"),
    "chat": lambda m, w: m.chat("PIN?", user="bob", cube="alice-personal"),
    "count": lambda m, w: m.count(user="bob", cube="alice-personal"),
    "create_cube": lambda m, w: m.create_cube("alice-2", owner="alice", by="bob"),
    "create_user": lambda m, w: m.create_user("eve", by="bob"),
    "delete": lambda m, w: m.delete(w["item"].id, user="bob"),
    "delete_many": lambda m, w: m.delete_many([w["item"].id], user="bob"),
    "explain": lambda m, w: m.explain("PIN?", user="bob", cube="alice-personal"),
    "export_cube": lambda m, w: m.export_cube(
        "alice-personal", w["export"].parent / "x", user="bob"
    ),
    "forget_user": lambda m, w: m.forget_user("alice", by="bob"),
    "get": lambda m, w: m.get(w["item"].id, user="bob"),
    "get_cube": lambda m, w: m.get_cube("alice-personal", user="bob"),
    "get_user": lambda m, w: m.get_user("alice", user="bob"),
    "grant": lambda m, w: m.grant("alice-personal", to="bob", by="bob"),
    "grants": lambda m, w: m.grants("alice-personal", user="bob"),
    "history": lambda m, w: m.history(w["item"].id, user="bob"),
    "import_cube": lambda m, w: m.import_cube(w["export"], cube_id="stolen", user="bob"),
    "ingest": lambda m, w: m.ingest(["x"], user="bob", cube="alice-personal", progress=False),
    "list": lambda m, w: m.list(user="bob", cube="alice-personal"),
    "maintain": lambda m, w: m.maintain(user="bob", cubes=["alice-personal"]),
    "plan_chat": lambda m, w: m.plan_chat("PIN?", user="bob", cube="alice-personal"),
    "promote": lambda m, w: m.promote("alice-personal", user="bob", progress=False),
    "revoke": lambda m, w: m.revoke("alice-personal", user="bob", by="bob"),
    "rollback": lambda m, w: m.rollback(w["item"].id, 1, user="bob"),
    "search": lambda m, w: m.search("PIN", user="bob", cubes=["alice-personal"]),
    "set_state": lambda m, w: m.set_state(w["item"].id, "archived", user="bob"),
    "set_state_many": lambda m, w: m.set_state_many([w["item"].id], "archived", user="bob"),
    "transitions": lambda m, w: m.transitions(w["item"].id, user="bob"),
    "update": lambda m, w: m.update(w["item"].id, user="bob", text="hacked"),
}


def _no_alice(values: Any) -> None:
    assert "alice" not in repr(values).lower() and "PIN" not in repr(values)


# method -> a call by bob that succeeds but must show or touch nothing of alice's
SCOPED: dict[str, Callable[[MemOS, dict[str, Any]], None]] = {
    "audit": lambda m, w: _no_alice(m.audit(user="bob", limit=1000)),
    "list_cubes": lambda m, w: _no_alice(m.list_cubes(user="bob")),
    "list_users": lambda m, w: _no_alice(m.list_users(user="bob")),
    "stats": lambda m, w: m.stats(user="bob")["items"] == 1 or pytest.fail("stats leak"),
    "working_memory": lambda m, w: _no_alice(m.working_memory("s1", user="bob")),
    "expire_due": lambda m, w: m.expire_due(user="bob"),
}
# touch no user data: nothing to scope
EXEMPT = {
    "bulk_load": "a context for index upkeep; every write inside is checked itself",
    "close": "closes the caller's own handle",
    "stream_chat": "generates from a plan that plan_chat already checked",
    "unload_adapters": "uninstalls adapters from this process's model; no stored data changes",
    "wait_refinements": "reports of this handle's own async adds, each checked when added",
}


def test_every_public_method_is_covered() -> None:
    public = {
        n
        for n, f in vars(MemOS).items()
        if not n.startswith("_") and inspect.isfunction(f) and not inspect.iscoroutinefunction(f)
    }
    assert public == set(REFUSED) | set(SCOPED) | set(EXEMPT)
    for name in public - set(EXEMPT):  # and each has its async twin
        assert inspect.iscoroutinefunction(getattr(MemOS, f"a{name}")), name


def test_outsider_is_refused_and_audited(mos: MemOS, world) -> None:
    for method, call in sorted(REFUSED.items()):
        before = table_counts(mos)
        with pytest.raises((NotFound, PermissionDenied)) as info:
            call(mos, world)
        assert "PIN" not in str(info.value), method
        denied = mos.audit(action=f"denied:{method}", actor="bob")
        assert len(denied) == 1, f"{method} refused bob without an audit record"
        after = table_counts(mos)
        assert after.pop("audit") == before.pop("audit") + 1, method  # the denial only
        assert after == before, method
    assert mos.get(world["item"].id).text == SECRET


def test_outsider_sees_only_their_own(mos: MemOS, world) -> None:
    for check in SCOPED.values():
        check(mos, world)
    assert mos.get(world["item"].id).state == "generated"  # not expired, not served


async def test_async_twins_are_governed_too(mos: MemOS, world) -> None:
    with pytest.raises(NotFound):
        await mos.aget(world["item"].id, user="bob")
    assert len(mos.audit(action="denied:get", actor="bob")) == 1


def test_granted_reads_are_audited(mos: MemOS, world) -> None:
    mos.grant("alice-personal", to="bob", access="read", by="alice")
    item = world["item"]
    mos.list(user="bob", cube="alice-personal")
    mos.history(item.id, user="bob")
    mos.explain("bank PIN hint", user="bob", cube="alice-personal")
    actions = {r.action for r in mos.audit(actor="bob", cube="alice-personal", action="read:*")}
    assert actions == {"read:list", "read:history", "read:explain"}
    # alice, the cube's owner, sees who read her cube; bob sees his own actions only
    assert {r.actor for r in mos.audit(user="alice", action="read:*")} == {"bob"}
    assert all(r.actor == "bob" or r.target == "bob" for r in mos.audit(user="bob"))


def test_audit_filters(mos: MemOS) -> None:
    t0 = datetime.now(UTC)
    [item] = mos.add(["first"], user="alice")
    mos.update(item.id, user="alice", text="second", note="typo")
    mos.delete(item.id, user="alice")
    assert [r.action for r in mos.audit(actor="alice", since=t0)] == [
        "state:deleted",
        "update",
        "add",
    ]
    assert [r.action for r in mos.audit(target=item.id)] == ["state:deleted", "update"]
    assert [r.action for r in mos.audit(action="state:*")] == ["state:deleted"]
    assert mos.audit(action="state_*") == []  # wildcards of LIKE are literal in a prefix
    assert mos.audit(until=t0 - timedelta(seconds=1), actor="alice") == []
    assert len(mos.audit(actor="alice", limit=2)) == 2
    with pytest.raises(InvalidInput):
        mos.audit(limit=0)


def test_guest_role_is_read_only(mos: MemOS) -> None:
    mos.create_user("gus", role="guest")
    with pytest.raises(PermissionDenied):
        mos.create_cube("gus-cube", owner="gus")
    with pytest.raises(InvalidInput, match="read grants only"):
        mos.grant("alice-personal", to="gus", access="write", by="alice")
    [item] = mos.add(["Alice shares her reading list"], user="alice")
    mos.grant("alice-personal", to="gus", access="read", by="alice")
    assert mos.get(item.id, user="gus").id == item.id
    with pytest.raises(PermissionDenied):
        mos.add(["gus writes"], user="gus", cube="alice-personal")
    assert mos.maintain(user="gus").cubes == ()
    assert mos.create_user("dave", by="carol").role == "user"  # an admin may
    with pytest.raises(InvalidInput):
        mos.create_user("x", role="root")


# ---------------------------------------------------------------------------- forget_user


def test_forget_user_leaves_no_trace(mos: MemOS, open_mos) -> None:
    [item] = mos.add(["Alice's secret", "Alice's other secret"], user="alice")[:1]
    mos.update(item.id, user="alice", text="Alice's changed secret")
    mos.grant("bob-personal", to="alice", access="write", by="bob")
    mos.add(["Alice wrote into bob's cube"], user="alice", cube="bob-personal")
    mos.grant("alice-personal", to="bob", access="read", by="alice")
    mos.get(item.id, user="bob")  # an audit record by bob about alice's cube
    art = Artifact("kv-alice", "alice-personal", "activation", "hot/alice/x", b"\x00" * 8)
    mos.store.put_artifact(art, AuditRecord("alice", "build:activation", art.id, art.cube_id))
    mos.scheduler.working.observe("alice", "s", [SearchHit(item, 1.0)])
    mos.search("secret", user="carol", k=5)  # load the in-memory indexes first

    report = mos.forget_user("alice")
    assert report["items"] == 3 and report["versions"] == 4 and report["artifacts"] == 1
    assert mos.scheduler.working.clear(user="alice") == 0  # the working memory went too
    # every row of every table, as text (SQLite's index_log keeps a bare 'del' marker per id
    # so that other processes drop the items from their in-memory indexes)
    tables = [t for t in table_counts(mos) if t != "index_log"]
    dump = " ".join(str(r) for t in tables for r in rows(mos, f"SELECT * FROM {t}"))
    erasure = [r for r in mos.audit() if r.action == "forget_user"]
    assert len(erasure) == 1 and erasure[0].detail["items"] == 3
    assert "secret" not in dump and "alice-personal" not in dump
    assert "kv-alice" not in dump and item.id not in dump
    for m in (mos, open_mos()):  # nor in any search index, this process's or a fresh one's
        assert m.search("secret", user="carol", k=5) == []
        assert m.search("Alice wrote into bob's cube", user="carol", k=5, mode="text") == []
    assert mos.get_cube("bob-personal").owner == "bob"  # others' cubes stay


# ---------------------------------------------------------------------------- redaction

PII = {
    "email": "alice.smith+work@example.co.uk",
    "phone": "+1 (415) 555-0100",
    "card": "4111 1111 1111 1111",
}


def test_redactor_patterns() -> None:
    r = Redactor()
    text = f"mail {PII['email']}, call {PII['phone']}, pay with {PII['card']}"
    assert r(text) == "mail [email], call [phone], pay with [card]"
    # not personal data: dates, times, years, short numbers, a non-Luhn digit run
    kept = "On 2024-03-01 at 10:30 she ran 5 km; order 1234567812345678 in 2023/24"
    assert r(kept) == kept
    assert Redactor({"ticket": r"TCK-\d+"})("see TCK-991") == "see [ticket]"
    assert Redactor(["email"], replacement="<{name}>")(PII["email"]) == "<email>"
    with pytest.raises(InvalidInput):
        Redactor(["ssn"])


def test_redaction_before_anything_is_stored(target, embedder, tmp_path: Path) -> None:
    with MemOS.open(target, embedder=embedder, redact=True) as m:
        m.create_user("alice")
        m.create_cube("alice-personal", owner="alice")
        [item] = m.add(
            [
                {
                    "text": f"Alice's e-mail is {PII['email']}",
                    "metadata": {"contact": {"phone": PII["phone"]}},
                    "tags": [PII["email"]],
                }
            ],
            user="alice",
        )
        assert item.text == "Alice's e-mail is [email]"
        assert item.metadata == {"contact": {"phone": "[phone]"}} and item.tags == ("[email]",)
        m.add([{"role": "user", "content": f"my card is {PII['card']}"}], user="alice")
        m.update(item.id, user="alice", text=f"call {PII['phone']}", note=f"from {PII['email']}")
        m.set_state(item.id, "archived", user="alice", reason=f"asked by {PII['phone']}")
        assert m.search("card", user="alice", k=5)[0].text == "alice: my card is [card]"
        with MemOS.open(tmp_path / "plain.db", embedder=embedder) as plain:  # no redaction
            plain.create_user("alice")
            plain.create_cube("old", owner="alice")
            [kept] = plain.add([f"old address {PII['email']}"], user="alice")
            plain.update(kept.id, user="alice", text=f"call {PII['phone']}")
            export = plain.export_cube("old", tmp_path / "old-export")
        m.import_cube(export)  # an import is stored too: redacted on the way in
        assert m.list(user="alice", cube="old")[0].text == "call [phone]"
        assert m.search("old address", user="alice", cubes=["old"], k=1, mode="dense")
        dump = " ".join(str(r) for t in table_counts(m) for r in rows(m, f"SELECT * FROM {t}"))
        for value in PII.values():
            assert value not in dump, f"{value} stored despite redaction"
        assert "[phone]" in dump and "[email]" in dump  # the masks are what was kept
