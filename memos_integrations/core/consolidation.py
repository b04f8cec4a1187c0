"""Consolidation: a new memory against the similar ones a cube already holds.

Exact duplicates (same text at the same event time) are idempotent in the store itself.
Above that, each new memory is compared with its nearest live neighbours (dense cosine on
the cube's vectors) and one of four things happens:

* ``add`` — nothing similar enough: stored as a new item;
* ``duplicate`` — it says nothing the neighbour does not: nothing is written;
* ``update`` — it supersedes or contradicts the neighbour ("lives in Lisbon" after "lives in
  Paris"): the neighbour gets a *new version* with the new text and the union of both
  provenances; the old text stays in its history;
* ``merge`` — it complements the neighbour: a new item with the fused text is stored, its
  provenance ``derived_from`` naming the neighbour, and the neighbour moves to ``merged``
  (a transition whose reason names the new item). Nothing is ever hard-deleted.

A judge decides: an LLM (any the reader accepts) asked for strict JSON, or, without one or
when its answer stays invalid, the rule fallback: cosine >= ``duplicate`` is a duplicate;
>= ``similar`` with the same kind and a newer or equal event time is an update.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from ..storage.base import Scope, SearchRequest
from ..storage.search import And, Cond
from .errors import Conflict, InvalidInput, MemOSError
from .items import AuditRecord, MemoryItem, Provenance, content_hash, utcnow
from .lifecycle import SERVED_STATES
from .reader import _Invalid, as_chat, is_llm, parse_json_list

if TYPE_CHECKING:
    from .engine import MemOS

__all__ = ["Consolidator", "Decision", "rule_decision"]

Action = Literal["add", "duplicate", "update", "merge"]
ACTIONS: tuple[str, ...] = ("add", "duplicate", "update", "merge")

JUDGE_PROMPT = (
    "You keep a memory store consistent. Compare the NEW memory with the EXISTING ones and "
    'reply with only a JSON object {"action": "...", "target": n, "text": "..."}. action: '
    '"duplicate" if NEW says nothing that EXISTING [n] does not; "update" if NEW replaces or '
    'contradicts [n] (newer information wins); "merge" if NEW and [n] are about the same thing '
    'and complement each other (text: one merged memory); "add" if NEW is about something else.'
)


@dataclass(frozen=True)
class Decision:
    action: Action
    target: MemoryItem | None = None
    text: str | None = None  # the fused text of a merge
    reason: str = "rule"


def rule_decision(
    draft: MemoryItem,
    neighbours: Sequence[tuple[MemoryItem, float]],
    *,
    duplicate: float,
    similar: float,
) -> Decision:
    """The fallback judge: thresholds on cosine similarity, newest information wins."""
    for item, score in neighbours:
        if score >= duplicate:
            return Decision("duplicate", item, reason=f"rule: cosine {score:.3f}")
        newer = (
            draft.event_time is None
            or item.event_time is None
            or draft.event_time >= item.event_time
        )
        if score >= similar and item.kind == draft.kind and newer:
            return Decision("update", item, reason=f"rule: cosine {score:.3f}, newer")
    return Decision("add", reason="rule: no close neighbour")


class Consolidator:
    """Decides what a new memory does to its neighbours (see the module doc).

    ``judge``: None (rules only), an LLM the reader accepts, or a function
    ``(new text, [existing texts]) -> {"action", "target" (1-based), "text"?}``.
    """

    def __init__(
        self,
        judge: Any = None,
        *,
        duplicate: float = 0.92,
        similar: float = 0.8,
        candidates: int = 3,
        retries: int = 1,
    ) -> None:
        if not 0 < similar <= duplicate <= 1:
            raise InvalidInput("thresholds must satisfy 0 < similar <= duplicate <= 1")
        self.duplicate = duplicate
        self.similar = similar
        self.candidates = candidates
        self.retries = retries
        self._judge = _as_judge(judge)

    def decide(self, draft: MemoryItem, neighbours: Sequence[tuple[MemoryItem, float]]) -> Decision:
        close = [(it, s) for it, s in neighbours if s >= self.similar]
        if not close:
            return Decision("add", reason="no neighbour above the similarity threshold")
        rule = rule_decision(draft, close, duplicate=self.duplicate, similar=self.similar)
        if self._judge is None:
            return rule
        error = "no answer"
        for _ in range(self.retries + 1):
            try:
                answer = self._judge(draft.text, [it.text for it, _ in close])
                return _checked(answer, close, draft)
            except (_Invalid, MemOSError) as exc:
                error = str(exc)
            except Exception as exc:  # a remote judge failing: the rules decide
                error = f"{type(exc).__name__}: {exc}"
        return replace(rule, reason=f"{rule.reason} (judge failed: {error})")

    # ------------------------------------------------------------------ applying a decision

    def store(
        self, mos: MemOS, drafts: Sequence[MemoryItem], user: str | None
    ) -> list[tuple[MemoryItem, str]]:
        """Store ``drafts`` one by one, each consolidated against what is there by then
        (earlier drafts included). Returns (resulting item, action) per draft."""
        if not drafts:
            return []
        vectors = mos.embedder.embed_documents([d.text for d in drafts])
        mos._record_embedder(vectors)
        return [self._store_one(mos, d, v, user) for d, v in zip(drafts, vectors, strict=True)]

    def _store_one(
        self, mos: MemOS, draft: MemoryItem, vector: np.ndarray, user: str | None
    ) -> tuple[MemoryItem, str]:
        decision = self.decide(draft, self._neighbours(mos, draft, vector))
        target = decision.target
        if decision.action == "update" and target is not None:
            try:
                return _supersede(mos, target, draft, user, decision.reason), "update"
            except Conflict:  # the new text is already another live item: a duplicate
                decision = Decision("duplicate", target, reason="content clash on update")
        if decision.action == "duplicate" and target is not None:
            return target, "duplicate"
        if decision.action == "merge" and target is not None and decision.text:
            return _merge(mos, target, draft, decision.text, user, decision.reason), "merge"
        audit = AuditRecord(user, "add", None, draft.cube_id, {"mode": "fine"})
        [(item_id, created)] = mos.store.add_items([draft], vector[None, :], audit)
        return mos.store.get_items([item_id])[0], "add" if created else "duplicate"

    def _neighbours(
        self, mos: MemOS, draft: MemoryItem, vector: np.ndarray
    ) -> list[tuple[MemoryItem, float]]:
        """Live, unkeyed memories of the draft's cube nearest to it (raw turns excluded)."""
        where = And(
            (
                Cond("state", "text", "$in", SERVED_STATES),
                Cond("kind", "text", "$ne", "raw_turn"),
                Cond("key", "text", "$exists", False),
            )
        )
        scope = Scope((draft.cube_id,), draft.owner if draft.visibility == "private" else None)
        hits = mos.store.search(SearchRequest(scope, self.candidates, None, vector, where, "dense"))
        return [(h.item, float(h.dense_score or 0.0)) for h in hits]


def _as_judge(judge: Any) -> Callable[[str, list[str]], Any] | None:
    if judge is None:
        return None
    if not is_llm(judge):
        if not callable(judge):
            raise InvalidInput("judge must be an LLM or a function (new, existing) -> answer")
        return judge
    chat = as_chat(judge, max_new_tokens=160)

    def ask(new: str, existing: list[str]) -> Any:
        listing = "\n".join(f"[{n}] {text}" for n, text in enumerate(existing, 1))
        answer = chat(
            [
                {"role": "system", "content": JUDGE_PROMPT},
                {"role": "user", "content": f"EXISTING:\n{listing}\nNEW: {new}"},
            ]
        )
        return parse_json_list(answer)

    return ask


def _checked(answer: Any, close: Sequence[tuple[MemoryItem, float]], draft: MemoryItem) -> Decision:
    if not isinstance(answer, Mapping) or answer.get("action") not in ACTIONS:
        raise _Invalid(f'the judge must answer {{"action": one of {", ".join(ACTIONS)}}}')
    action = answer["action"]
    if action == "add":
        return Decision("add", reason="judge")
    n = answer.get("target")
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= len(close):
        raise _Invalid(f'"target" must be a number from 1 to {len(close)}')
    text = answer.get("text")
    if action == "merge" and (not isinstance(text, str) or not text.strip()):
        raise _Invalid('a merge needs the merged "text"')
    return Decision(action, close[n - 1][0], text.strip() if action == "merge" else None, "judge")


def _joined(a: Provenance, b: Provenance, *extra: str) -> Provenance:
    """Both provenances in one: message ids, timestamps and sources united, in order."""

    def union(*parts: Sequence[str]) -> tuple[str, ...]:
        return tuple(dict.fromkeys(x for p in parts for x in p))

    return replace(
        a,
        message_ids=union(a.message_ids, b.message_ids),
        timestamps=union(a.timestamps, b.timestamps),
        derived_from=union(a.derived_from, b.derived_from, extra),
        speaker=a.speaker if a.speaker == b.speaker else None,
    )


def _supersede(
    mos: MemOS, target: MemoryItem, draft: MemoryItem, user: str | None, reason: str
) -> MemoryItem:
    changes = {
        "text": draft.text,
        "kind": draft.kind,
        "confidence": draft.confidence,
        "event_time": draft.event_time or target.event_time,
        "provenance": _joined(target.provenance, draft.provenance),
    }
    return mos._write_version(
        target, changes, user, "consolidate", f"superseded ({reason}): {target.text[:200]}"
    )


def _merge(
    mos: MemOS, target: MemoryItem, draft: MemoryItem, text: str, user: str | None, reason: str
) -> MemoryItem:
    now = utcnow()
    merged = draft.evolve(
        text=text,
        content_hash=content_hash(text, draft.event_time),
        provenance=_joined(draft.provenance, target.provenance, target.id),
        created_at=now,
        updated_at=now,
    )
    vector = mos.embedder.embed_documents([text])
    [(item_id, _)] = mos.store.add_items(
        [merged], vector, AuditRecord(user, "add", None, draft.cube_id, {"mode": "merge"})
    )
    if item_id != target.id:
        mos.store.set_state(
            [target.id],
            "merged",
            from_states=SERVED_STATES,
            by=user,
            reason=f"merged into {item_id} ({reason})",
            audit=AuditRecord(user, "state:merged", target.id, target.cube_id, {"into": item_id}),
        )
    return mos.store.get_items([item_id])[0]
