"""The reader (fine mode): extraction with scripted chat models standing in for remote LLMs,
strict validation with retries, the failure path, fast-then-fine refinement, and one bounded
run with the real SmolLM2.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import BaseMessage
from pydantic import Field

from memos_integrations import MemOS
from memos_integrations.core.errors import BackendUnavailable, InvalidInput
from memos_integrations.core.reader import (
    ExtractionFailed,
    MemReader,
    absolute_dates,
    parse_json_list,
)

DAY = "2023-05-08T13:56:00+00:00"
TURNS = [
    {"role": "user", "name": "Caroline", "content": "I went to a support group yesterday!",
     "timestamp": DAY, "id": "D1:1"},
    {"role": "user", "name": "Melanie", "content": "Wow, how was it?", "timestamp": DAY,
     "id": "D1:2"},
    {"role": "user", "name": "Caroline", "content": "Inspiring. I start a counseling course "
     "next month.", "timestamp": DAY, "id": "D1:3"},
]  # fmt: skip
GOOD = [
    {"text": "Caroline went to a support group yesterday.", "kind": "event", "confidence": 0.9,
     "turns": [1]},
    {"text": "Caroline plans to start a counseling course next month.", "kind": "plan",
     "confidence": 0.8, "turns": [3]},
]  # fmt: skip


class Scripted(GenericFakeChatModel):
    """langchain-core's scripted chat model, recording every prompt it is given."""

    prompts: list[list[BaseMessage]] = Field(default_factory=list)

    def _generate(self, messages: list[BaseMessage], *args: Any, **kwargs: Any):  # type: ignore[no-untyped-def]
        self.prompts.append(list(messages))
        return super()._generate(messages, *args, **kwargs)


def scripted(*answers: Any) -> Scripted:
    return Scripted(messages=iter(a if isinstance(a, str) else json.dumps(a) for a in answers))


def test_fine_extraction_is_third_person_dated_typed_and_sourced() -> None:
    model = scripted(GOOD)
    result = MemReader(model).read(TURNS)
    assert not result.failed and result.calls == 1
    went, course = result.drafts
    # "yesterday"/"next month" resolved from the turn's timestamp (8 May 2023)
    assert went["text"] == "Caroline went to a support group on 7 May 2023."
    assert course["text"] == "Caroline plans to start a counseling course in June 2023."
    assert (went["kind"], course["kind"]) == ("event", "plan")
    assert went["confidence"] == 0.9
    assert went["turns"] == [0] and course["turns"] == [2]
    assert went["provenance"]["message_ids"] == ["D1:1"]
    assert went["provenance"]["speaker"] == "Caroline"
    assert went["event_time"] == DAY
    # the prompt shows every turn with its date, numbered
    shown = model.prompts[0][-1].content
    assert "[1] 2023-05-08 Caroline: I went to a support group yesterday!" in shown


def test_malformed_json_is_sent_back_and_retried() -> None:
    model = scripted("Sure! Here are the memories: [{'text': oops", GOOD)
    result = MemReader(model, retries=1).read(TURNS)
    assert not result.failed and result.calls == 2 and result.retries == 1
    assert len(result.drafts) == 2
    retry_prompt = [m.content for m in model.prompts[1]]
    assert "not valid JSON" in retry_prompt[-1]
    assert retry_prompt[-2].startswith("Sure!")  # the bad answer is shown back


@pytest.mark.parametrize(
    "bad, error",
    [
        ([{"text": "Caroline went out.", "kind": "rumour", "turns": [1]}], "kind"),
        ([{"text": "Caroline went out.", "kind": "event", "turns": [9]}], "turns"),
        ([{"text": "Caroline went out.", "kind": "event", "confidence": 3}], "confidence"),
        ([{"text": "We went out together.", "kind": "event", "turns": [1, 2]}], "third person"),
        ([{"text": "Каролина ходила в группу.", "kind": "event", "turns": [1]}], "language"),
        ({"text": "not a list"}, "JSON list"),
    ],
)
def test_invalid_answers_fail_after_the_retries(bad: Any, error: str) -> None:
    model = scripted(bad, bad)
    reader = MemReader(model, retries=1)
    result = reader.read(TURNS)
    assert result.drafts == [] and result.failed == [0, 1, 2] and result.calls == 2
    assert error in result.errors[0]
    with pytest.raises(ExtractionFailed, match=error) as info:
        MemReader(scripted(bad), retries=0)(TURNS)
    assert info.value.result.failed == [0, 1, 2]


def test_an_llm_error_fails_its_chunk_only() -> None:
    answers: list[Any] = [RuntimeError("503 Service Unavailable"), "[]", "[]"]

    def llm(messages: list[dict[str, str]]) -> str:  # a plain function is an LLM too
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    result = MemReader(llm, retries=0, chunk_turns=1).read(TURNS)
    assert result.failed == [0] and "503" in result.errors[0] and result.calls == 3


def test_small_model_echoes_are_repaired() -> None:
    """A copied turn (as a 135M model writes) becomes a third-person memory of its speaker."""
    echo = [{"text": "[1] 2023-05-08 Caroline: I went to a support group yesterday and my "
             "friend came.", "kind": "event"}]  # fmt: skip
    result = MemReader(scripted(echo)).read(TURNS)
    [draft] = result.drafts
    assert draft["text"] == (
        "Caroline went to a support group on 7 May 2023 and Caroline's friend came."
    )
    assert draft["turns"] == [0] and result.repaired == 1  # attributed by word overlap


def test_truncated_list_keeps_its_complete_objects() -> None:
    text = '[{"text": "a", "kind": "fact"}, {"text": "b", "kind": "fact"}, {"text": "c'
    assert parse_json_list(text) == [{"text": "a", "kind": "fact"}, {"text": "b", "kind": "fact"}]
    assert parse_json_list('```json\n{"memories": []}\n```') == {"memories": []}


def test_absolute_dates() -> None:
    said = datetime(2023, 5, 8, 13, 56, tzinfo=UTC)  # a Monday
    cases = {
        "Bob ran a marathon last week.": "Bob ran a marathon in the week of 1 May 2023.",
        "Bob moved 3 years ago.": "Bob moved in 2020.",
        "Bob called last Friday.": "Bob called on Friday, 5 May 2023.",
        "Bob flies tomorrow.": "Bob flies on 9 May 2023.",
        "Bob met Ann two days ago.": "Bob met Ann on 6 May 2023.",
        "Bob graduated last year.": "Bob graduated in 2022.",
    }
    for text, expected in cases.items():
        assert absolute_dates(text, said) == expected


def test_other_languages_are_kept() -> None:
    turns = [{"role": "user", "name": "Мария", "content": "Вчера я купила велосипед.",
              "timestamp": DAY}]  # fmt: skip
    answer = [{"text": "Мария купила велосипед 7 мая 2023 года.", "kind": "event", "turns": [1]}]
    [draft] = MemReader(scripted(answer)).read(turns).drafts
    assert draft["text"] == answer[0]["text"]


def test_llama_index_llm_reads_too() -> None:
    from llama_index.core.llms import CompletionResponse, CustomLLM, LLMMetadata

    class Scripted(CustomLLM):
        prompts: list[str] = Field(default_factory=list)

        @property
        def metadata(self) -> LLMMetadata:
            return LLMMetadata(model_name="scripted")

        def complete(self, prompt: str, formatted: bool = False, **kw: Any) -> CompletionResponse:
            self.prompts.append(prompt)
            return CompletionResponse(text=json.dumps(GOOD))

        def stream_complete(self, prompt: str, formatted: bool = False, **kw: Any):  # type: ignore[no-untyped-def]
            yield self.complete(prompt)

    llm = Scripted()
    reader = MemReader(llm)
    assert len(reader.read(TURNS).drafts) == 2
    assert reader.extractor == "reader:scripted" and "Caroline" in llm.prompts[0]


# ---------------------------------------------------------------------------- in the engine


def _mos(open_mos, model: Any) -> MemOS:
    mos = open_mos(reader=MemReader(model, retries=0))
    mos.create_user("alice")
    mos.create_cube("alice-personal", owner="alice")
    return mos


def test_fine_mode_stores_memories_linked_to_archived_raw_turns(open_mos) -> None:
    model = scripted(GOOD)
    mos = _mos(open_mos, model)
    out = mos.add(TURNS, user="alice", session="s1", mode="fine")
    assert [m.kind for m in out] == ["event", "plan"]
    raws = mos.list(user="alice", kinds=["raw_turn"], order="created_asc")
    assert [r.state for r in raws] == ["archived"] * 3  # kept, not served
    went = out[0]
    assert went.provenance.derived_from == (raws[0].id,)
    assert went.provenance.source == "reader" and went.provenance.session_id == "s1"
    assert went.provenance.message_ids == ("D1:1",)
    assert went.event_time == datetime(2023, 5, 8, 13, 56, tzinfo=UTC)
    [archived] = [t for t in mos.transitions(raws[0].id) if t.to_state == "archived"]
    assert went.id in (archived.reason or "")
    hits = mos.search("support group", user="alice", k=5)
    assert hits[0].item.id == went.id and all(h.item.kind != "raw_turn" for h in hits)
    # replaying the conversation adds nothing and asks the LLM nothing
    assert mos.add(TURNS, user="alice", session="s1", mode="fine") == []
    assert len(model.prompts) == 1
    assert mos.count(user="alice") == 5


def test_failed_extraction_keeps_the_raw_turns_and_refine_retries(open_mos) -> None:
    mos = _mos(open_mos, scripted("no json here"))
    out = mos.add(TURNS, user="alice", session="s1", mode="fine")
    assert [m.kind for m in out] == ["raw_turn"] * 3 and all(m.state == "generated" for m in out)
    [failure] = mos.audit(action="read_failed")
    assert failure.detail["turns"] == [m.id for m in out]
    assert "no JSON" in failure.detail["errors"][0]
    assert len(mos.search("support group", user="alice", k=3)) > 0  # still findable
    mos.reader = MemReader(scripted(GOOD))  # the LLM is back
    report = mos.refine(user="alice")
    assert report.read == 3 and report.actions == {"add": 2} and not report.failed
    assert sorted(report.archived) == sorted(m.id for m in out)
    assert mos.refine(user="alice").read == 0  # nothing left to read


def test_async_mode_returns_raw_turns_first(open_mos) -> None:
    mos = _mos(open_mos, scripted(GOOD))
    raws = mos.add(TURNS, user="alice", session="s1", mode="async")
    assert [r.kind for r in raws] == ["raw_turn"] * 3
    [report] = mos.wait_refinements(timeout=60)
    assert report.read == 3 and len(report.memories) == 2 and len(report.archived) == 3
    assert {r.state for r in mos.list(user="alice", kinds=["raw_turn"])} == {"archived"}


async def test_async_twins(open_mos) -> None:
    mos = _mos(open_mos, scripted("[]"))
    await mos.aadd(TURNS[:1], user="alice", mode="async")
    [report] = await mos.await_refinements(60)
    assert report.read == 1 and report.memories == [] and len(report.archived) == 1
    assert (await mos.arefine(user="alice")).read == 0


def test_fine_mode_input_errors(open_mos) -> None:
    mos = open_mos()
    mos.create_user("alice")
    mos.create_cube("alice-personal", owner="alice")
    with pytest.raises(BackendUnavailable, match="reader"):
        mos.add("hello", user="alice", mode="fine")
    mos.reader = MemReader(scripted("[]"))
    with pytest.raises(InvalidInput, match="chat messages"):
        mos.add({"text": "a memory"}, user="alice", mode="fine")
    with pytest.raises(InvalidInput, match="mode"):
        mos.add("hello", user="alice", mode="slow")
    with pytest.raises(InvalidInput, match="LangChain"):
        MemReader(42)


def test_smollm2_bounded_run(smol_cache, open_mos) -> None:
    """The real 135M model: whatever it answers, the result is valid or the turns are kept."""
    import torch

    torch.set_num_threads(1)
    model = smol_cache[1]
    reader = MemReader(model, retries=0, max_new_tokens=40, chunk_turns=2)
    mos = open_mos(reader=reader)
    mos.create_user("alice")
    mos.create_cube("alice-personal", owner="alice")
    out = mos.add(TURNS[:2], user="alice", session="s1", mode="fine")
    raws = mos.list(user="alice", kinds=["raw_turn"])
    assert len(raws) == 2  # nothing lost, whatever the model did
    for item in out:
        if item.kind == "raw_turn":
            assert item.state == "generated"  # extraction failed: kept live
        else:
            assert item.provenance.extractor.startswith("reader:")
            assert set(item.provenance.derived_from) <= {r.id for r in raws}
            assert not any(w in item.text.split() for w in ("I", "me", "my"))
