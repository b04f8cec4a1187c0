"""The main job: two users talk to an assistant over several sessions; later questions
are answered from memory, and the memories show their states, versions and provenance.

Run it with ``memos demo`` (or ``make demo``). It writes ``demo.db`` in MEMOS_HOME afresh.
"""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING

from .core.config import Settings, memos_home
from .core.engine import MemOS
from .core.errors import MemOSError
from .core.items import MemoryItem, SearchHit

if TYPE_CHECKING:
    from .models.runtime import LocalModel

# (user, session, timestamp, user turn, assistant turn)
CONVERSATION: list[tuple[str, str, str, str, str]] = [
    (
        "alice",
        "s1",
        "2024-03-02T09:15:00+00:00",
        "Hi! I just moved to Lisbon in March 2024 for a new job at a robotics startup.",
        "Congratulations on the move and the new job!",
    ),
    (
        "alice",
        "s1",
        "2024-03-02T09:16:30+00:00",
        "I'm vegetarian, so I'm hunting for good vegetarian restaurants near Alfama.",
        "Alfama has several great vegetarian places; I can suggest some.",
    ),
    (
        "bob",
        "s1",
        "2024-03-05T18:00:00+00:00",
        "I'm training for the Berlin marathon in September, running 50 km a week.",
        "Great goal! Remember to taper in the last three weeks.",
    ),
    (
        "bob",
        "s1",
        "2024-03-05T18:02:00+00:00",
        "My daughter Mia turns 7 on the 12th of June and she loves dinosaurs.",
        "A dinosaur party could be fun for Mia's birthday.",
    ),
    (
        "alice",
        "s2",
        "2024-04-20T20:40:00+00:00",
        "My sister Clara is visiting me from Toronto next month.",
        "How nice! Lisbon is lovely in May.",
    ),
    (
        "alice",
        "s2",
        "2024-04-20T20:41:10+00:00",
        "I adopted a cat and named her Pixel.",
        "Pixel is a great name for a robotics engineer's cat.",
    ),
    (
        "bob",
        "s2",
        "2024-05-11T07:30:00+00:00",
        "I hurt my knee on a long run, so I'm switching to cycling for a few weeks.",
        "Sorry to hear that; cycling keeps your fitness while the knee heals.",
    ),
]

QUESTIONS: list[tuple[str, str]] = [
    ("alice", "Where does alice live now?"),
    ("alice", "What kind of food does alice eat?"),
    ("alice", "What is the name of alice's cat?"),
    ("bob", "When is Mia's birthday?"),
    ("bob", "Which race is bob training for?"),
    ("bob", "Where does alice live?"),  # bob must not see alice's memories
]


INSTRUCTIONS = (
    "Answer in one short sentence using only the notes from memory. If they do not say, "
    "answer 'I don't know'."
)


def _load_model() -> LocalModel | None:
    """The bundled SmolLM2 when the [local] extra is installed, else None."""
    try:
        from .models.runtime import LocalModel

        return LocalModel.load()
    except (ImportError, MemOSError, OSError, RuntimeError) as exc:
        print(f"(local model unavailable: {exc}; showing the best memory as the answer)\n")
        return None


def _answer(mos: MemOS, local: bool, user: str, question: str, hits: list[SearchHit]) -> str:
    """The local model's answer and which memory tier served it, or the top memory."""
    if not local:
        return hits[0].text if hits else "I don't remember anything about that."
    reply = mos.chat(question, user=user, k=3, instructions=INSTRUCTIONS, max_new_tokens=40)
    plan = reply.plan
    tiers = []
    if plan.cached:
        tokens = plan.activation.n_tokens if plan.activation else 0
        tiers.append(f"activation: {len(plan.cached)} memories as a {tokens}-token KV cache")
    if plan.in_prompt:
        tiers.append(f"plaintext: {len(plan.in_prompt)} memories in the prompt")
    served = "; ".join(tiers) or "no memory"
    return f"{reply.text.strip()}  [served by {served}]"


def _show(item: MemoryItem, indent: str = "    ") -> None:
    p = item.provenance
    when = item.event_time.strftime("%Y-%m-%d %H:%M") if item.event_time else "-"
    print(f"{indent}[{item.state:9}] v{item.version}  {item.text}")
    print(
        f"{indent}             said by {p.speaker} in session {p.session_id} at {when}; "
        f"cube {item.cube_id}; served {item.access_count}x"
    )


def run(home: Path | None = None) -> None:
    home = home or memos_home()
    db = home / "demo.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    model = _load_model()
    # a small hot set (the 4 most used memories) so answers show both tiers at work
    settings = Settings(db_path=db, activation_items=4)
    with MemOS.open(db, model=model, settings=settings) as mos:
        print(f"== memos demo: embedded store at {db}\n")
        for user in ("alice", "bob"):
            mos.create_user(user)
            mos.create_cube(f"{user}-personal", owner=user)
        print("== 1. conversations, stored as memories (fast mode: raw turns)")
        for user, session, when, said, reply in CONVERSATION:
            mos.add(
                [
                    {"role": "user", "content": said, "timestamp": when},
                    {"role": "assistant", "content": reply, "timestamp": when},
                ],
                user=user,
                cube=f"{user}-personal",
                session=f"{user}-{session}",
            )
            print(f"  {when[:10]} {user:5} ({session}): {said}")
        replay = mos.add(
            [{"role": "user", "content": CONVERSATION[0][3], "timestamp": CONVERSATION[0][2]}],
            user="alice",
            cube="alice-personal",
            session="alice-s1",
        )
        print(f"  replaying a turn stores nothing new (same id: {replay[0].id[:8]}...)")
        print(f"  stored: {mos.stats()['items']} memories in 2 cubes\n")

        print("== 2. a new fact updates a memory: a new version, history kept")
        moved = mos.search("alice moved to Lisbon", user="alice", k=1)[0].item
        updated = mos.update(
            moved.id,
            user="alice",
            note="alice moved again",
            text="alice: In October 2024 I moved from Lisbon to Porto.",
        )
        for v in mos.history(updated.id):
            print(f"    v{v.version} ({v.change}): {v.text}")
        print()

        print("== 3. questions answered from memory, across sessions")
        answerer_name = "SmolLM2-135M, a tiny local model" if model else "top memory"
        for user, question in QUESTIONS:
            # what the users said, not the assistant's replies, is the evidence here
            hits = [
                h for h in mos.search(question, user=user, k=6) if h.item.provenance.role == "user"
            ][:3]
            print(f"  {user} asks: {question}")
            answer = _answer(mos, model is not None, user, question, hits)
            print(f"    answer ({answerer_name}): " + textwrap.shorten(answer, 200))
            for hit in hits[:2]:
                _show(hit.item, indent="      ")
            print()

        print("== 4. rollback, sharing and lifecycle")
        restored = mos.rollback(updated.id, 1, user="alice")
        print(f"  rollback to v1 wrote v{restored.version}: {restored.text}")
        mos.grant("alice-personal", to="bob", access="read", by="alice")
        shared = mos.search("Where does alice live?", user="bob", k=1)
        print(f"  after alice shares her cube, bob finds: {shared[0].text if shared else None}")
        mos.set_state(restored.id, "archived", user="alice", reason="superseded")
        print("  transitions of that memory:")
        for t in mos.transitions(restored.id):
            print(
                f"    {t.at:%H:%M:%S} {t.from_state or '-':>9} -> {t.to_state:9} "
                f"by {t.by} ({t.reason})"
            )
        print()

        print("== 5. export, import and forgetting a user")
        shutil.rmtree(home / "demo-export", ignore_errors=True)
        out = mos.export_cube("alice-personal", home / "demo-export", user="alice")
        print(f"  exported alice's cube to {out} (JSONL + safetensors + manifest)")
        report = mos.forget_user("bob")
        print(f"  forget_user('bob') removed: {report}")
        print(f"  audit log (newest first): {[r.action for r in mos.audit(limit=6)]}")
        print(f"\n== stats: {mos.stats()}")
