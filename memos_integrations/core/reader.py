"""The reader: atomic, third-person memories extracted from a conversation by an LLM.

Fine mode (MemOS' MemReader): the conversation is cut into chunks of a few turns, each
chunk goes to the LLM with the date of every turn, and the answer must be a JSON list of
``{"text", "kind", "confidence", "turns"}`` objects. The answer is validated strictly (JSON
shape, kinds, turn numbers, third person, the conversation's script); an invalid answer is
sent back with the error for another try, and a chunk that still fails after ``retries`` is
reported as failed, so the engine keeps its raw turns (nothing is lost).

Any of these can be the LLM (duck-typed; no framework is imported here):

* a LangChain ``BaseChatModel`` (``invoke`` with role/content dicts);
* a LlamaIndex ``LLM`` (``complete`` with one prompt string);
* the local :class:`~memos_integrations.models.runtime.LocalModel` (greedy, the answer
  prefilled with ``[{"text": "`` and cut at the closing quote: one memory per call, so
  even a 135M model writes valid JSON; use small ``chunk_turns`` with it);
* a plain callable ``messages -> str``.

Small models copy turns rather than rewrite them, so two deterministic repairs run before
validation: a leading ``"[n] date Speaker:"`` echo is stripped, and first-person pronouns in
a memory drawn from one speaker's turn are replaced by that speaker's name. Relative dates
("yesterday", "last week", "next month") are then made absolute from the turn's timestamp.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from .errors import InvalidInput, MemOSError
from .items import parse_time

__all__ = [
    "KINDS",
    "ExtractionFailed",
    "MemReader",
    "ReadResult",
    "absolute_dates",
    "as_chat",
    "is_llm",
    "parse_json_list",
]

KINDS: tuple[str, ...] = ("fact", "preference", "event", "plan", "relationship", "opinion")
MAX_MEMORY_CHARS = 1000

ChatFn = Callable[[list[dict[str, str]]], str]

SYSTEM_PROMPT = (
    "You extract long-term memories from a conversation. Reply with only a JSON list, one "
    'object per memory: {"text": "...", "kind": "...", "confidence": 0.9, "turns": [1]}. '
    "text: one atomic fact in the third person, naming people instead of pronouns, with "
    "absolute dates (each turn shows its date), in the language of the conversation. "
    f"kind: one of {', '.join(KINDS)}. confidence: 0 to 1. turns: the numbers of the turns "
    "it comes from. Reply [] if nothing is worth remembering."
)
EXAMPLE = (
    "Example:\n[1] 2023-05-08 Alice: I adopted a puppy yesterday!\n"
    '-> [{"text": "Alice adopted a puppy on 7 May 2023.", "kind": "event", '
    '"confidence": 0.9, "turns": [1]}]'
)


class ExtractionFailed(MemOSError):
    """The LLM gave no valid answer for some turns after every retry (their raw turns are
    kept). ``result`` holds what was extracted from the other chunks."""

    def __init__(self, message: str, result: ReadResult) -> None:
        super().__init__(message)
        self.result = result


@dataclass
class ReadResult:
    """What a read produced: memory drafts for the engine, and what failed."""

    drafts: list[dict[str, Any]] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)  # indices of turns whose chunk failed
    errors: list[str] = field(default_factory=list)  # the last error of each failed chunk
    calls: int = 0  # LLM calls made (retries included)
    retries: int = 0
    repaired: int = 0  # memories fixed by the echo/pronoun repairs


# ---------------------------------------------------------------------------- LLM adapters


def is_llm(obj: Any) -> bool:
    """Whether ``obj`` is a model :func:`as_chat` talks to (rather than a plain function)."""
    return _is_local_model(obj) or _is_langchain(obj) or _is_llama_index(obj)


def as_chat(llm: Any, *, max_new_tokens: int = 256) -> ChatFn:
    """A function ``messages -> answer text`` for any supported LLM (see the module doc)."""
    if _is_local_model(llm):
        return _local_chat(llm, max_new_tokens)
    if _is_langchain(llm):
        return lambda messages: _text_of(llm.invoke(messages))
    if _is_llama_index(llm):
        return lambda messages: str(llm.complete(_flatten(messages)).text)
    if callable(llm):
        return lambda messages: str(llm(messages))
    raise InvalidInput(
        f"cannot read with a {type(llm).__name__}: pass a LangChain chat model, a LlamaIndex "
        "LLM, a LocalModel or a function messages -> text"
    )


def _is_local_model(llm: Any) -> bool:
    return all(hasattr(llm, a) for a in ("fingerprint", "generate", "apply_chat_template"))


def _is_langchain(llm: Any) -> bool:  # a BaseChatModel
    return hasattr(llm, "invoke") and hasattr(llm, "_generate")


def _is_llama_index(llm: Any) -> bool:  # an LLM
    return hasattr(llm, "complete") and hasattr(llm, "metadata")


LOCAL_PREFILL = '[{"text": "'  # put in a small model's mouth: it then writes a memory


def _local_chat(model: Any, max_new_tokens: int) -> ChatFn:
    """The local model writes one memory per call: the text after the prefill, up to its
    closing quote (a 135M model rarely gets further fields right, and every token costs).
    A text cut off by ``max_new_tokens`` stays unterminated, hence invalid."""

    def chat(messages: list[dict[str, str]]) -> str:
        prompt = model.apply_chat_template(messages, add_generation_prompt=True) + LOCAL_PREFILL
        text = model.generate(prompt, max_new_tokens=max_new_tokens, temperature=0.0, stop=['"'])
        if model.count_tokens(text) >= max_new_tokens:
            return LOCAL_PREFILL + text
        return f'[{{"text": {json.dumps(text)}}}]'  # its newlines escaped, as JSON wants

    return chat


def _text_of(message: Any) -> str:
    text = getattr(message, "text", None)
    if isinstance(text, str):  # langchain-core >= 1.0 (a str that is also callable)
        return str(text)
    if callable(text):  # older langchain-core: a method
        return str(text())
    content = getattr(message, "content", message)
    return content if isinstance(content, str) else json.dumps(content)


def _flatten(messages: list[dict[str, str]]) -> str:
    turns = "\n\n".join(f"{m['role'].upper()}:\n{m['content']}" for m in messages)
    return f"{turns}\n\nASSISTANT:\n"


def _llm_name(llm: Any) -> str:
    fingerprint = getattr(llm, "fingerprint", None)
    for name in (
        getattr(fingerprint, "name", None),
        getattr(llm, "model_name", None),
        getattr(llm, "model", None),
        getattr(getattr(llm, "metadata", None), "model_name", None),  # LlamaIndex
    ):
        if isinstance(name, str) and name:
            return name
    return type(llm).__name__


# ---------------------------------------------------------------------------- the reader


@dataclass(frozen=True)
class _Turn:
    index: int  # position in the messages given to read()
    role: str
    speaker: str
    content: str
    time: datetime | None
    message_id: str | None


class MemReader:
    """Extract memories from chat messages with an LLM (``mode="fine"`` of the engine).

    >>> mos = MemOS.open(reader=MemReader(chat_model))
    >>> mos.add(messages, user="alice", mode="fine")   # raw turns, then extracted memories
    """

    def __init__(
        self,
        llm: Any,
        *,
        chunk_turns: int = 8,
        chunk_chars: int = 3000,
        retries: int = 2,
        max_new_tokens: int = 256,
        name: str | None = None,
    ) -> None:
        if not (isinstance(chunk_turns, int) and chunk_turns >= 1):
            raise InvalidInput("chunk_turns must be a positive integer")
        if not (isinstance(retries, int) and retries >= 0):
            raise InvalidInput("retries must be a non-negative integer")
        self.chat = as_chat(llm, max_new_tokens=max_new_tokens)
        # a 135M model copies the worked example into its answer: it gets the rules only
        self.system = SYSTEM_PROMPT if _is_local_model(llm) else f"{SYSTEM_PROMPT}\n{EXAMPLE}"
        self.chunk_turns = chunk_turns
        self.chunk_chars = chunk_chars
        self.retries = retries
        self.extractor = f"reader:{name or _llm_name(llm)}"

    def __call__(self, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The engine's plain reader interface: drafts, or :class:`ExtractionFailed`."""
        result = self.read(messages)
        if result.failed:
            raise ExtractionFailed(
                f"no valid extraction for {len(result.failed)} turn(s): {result.errors[-1]}",
                result,
            )
        return result.drafts

    def read(self, messages: Sequence[Mapping[str, Any]]) -> ReadResult:
        """Extract memories from ``messages`` (``role``, ``content``, and optionally ``name``,
        ``timestamp``, ``id``). Never raises for a bad LLM answer: see ``failed``."""
        turns = [_turn(i, m) for i, m in enumerate(messages)]
        result = ReadResult()
        for chunk in self._chunks(turns):
            error = self._read_chunk(chunk, result)
            if error is not None:
                result.failed.extend(t.index for t in chunk)
                result.errors.append(error)
        return result

    def _chunks(self, turns: list[_Turn]) -> Iterator[list[_Turn]]:
        chunk: list[_Turn] = []
        size = 0
        for turn in turns:
            full = len(chunk) >= self.chunk_turns or size + len(turn.content) > self.chunk_chars
            if chunk and (full or _day_of(chunk[-1]) != _day_of(turn)):
                yield chunk
                chunk, size = [], 0
            chunk.append(turn)
            size += len(turn.content)
        if chunk:
            yield chunk

    def _read_chunk(self, chunk: list[_Turn], result: ReadResult) -> str | None:
        """Ask, validate, retry; append the drafts to ``result``. Returns the last error."""
        messages = [
            {"role": "system", "content": self.system},
            {"role": "user", "content": "\n".join(_line(n, t) for n, t in enumerate(chunk, 1))},
        ]
        error = "no answer"
        for attempt in range(self.retries + 1):
            result.calls += 1
            result.retries += attempt > 0
            try:
                answer = self.chat(messages)
            except Exception as exc:  # an API error, a prompt too long: this chunk fails
                error = f"the LLM call failed: {type(exc).__name__}: {exc}"
                continue
            try:
                drafts, repaired = self._validate(answer, chunk)
            except _Invalid as exc:
                error = str(exc)
                messages = [
                    *messages[:2],
                    {"role": "assistant", "content": answer[:2000]},
                    {
                        "role": "user",
                        "content": f"That reply is invalid: {error}. Reply with only the "
                        "corrected JSON list.",
                    },
                ]
                continue
            result.drafts.extend(drafts)
            result.repaired += repaired
            return None
        return error

    def _validate(self, answer: str, chunk: list[_Turn]) -> tuple[list[dict[str, Any]], int]:
        value = parse_json_list(answer)
        if isinstance(value, dict) and isinstance(value.get("memories"), list):
            value = value["memories"]
        if not isinstance(value, list):
            raise _Invalid("the reply must be a JSON list of memory objects")
        script = _script("".join(t.content for t in chunk))
        drafts: list[dict[str, Any]] = []
        repaired = 0
        seen: set[str] = set()
        for n, entry in enumerate(value, 1):
            draft, fixed = self._draft(entry, n, chunk, script)
            repaired += fixed
            if draft["text"] not in seen:  # a model repeating itself is not two memories
                seen.add(draft["text"])
                drafts.append(draft)
        return drafts, repaired

    def _draft(
        self, entry: Any, n: int, chunk: list[_Turn], script: str | None
    ) -> tuple[dict[str, Any], bool]:
        if not isinstance(entry, dict):
            raise _Invalid(f"item {n} is not an object")
        text = entry.get("text")
        if not isinstance(text, str) or not text.strip():
            raise _Invalid(f'item {n} needs a non-empty "text" string')
        kind = str(entry.get("kind", "fact")).strip().lower()
        if kind not in KINDS:
            raise _Invalid(f'item {n}: "kind" must be one of {", ".join(KINDS)}, not {kind!r}')
        confidence = entry.get("confidence", 0.8)
        if isinstance(confidence, bool) or not isinstance(confidence, int | float):
            raise _Invalid(f'item {n}: "confidence" must be a number from 0 to 1')
        if not 0 <= confidence <= 1:
            raise _Invalid(f'item {n}: "confidence" must be from 0 to 1, not {confidence}')
        numbers = entry.get("turns")
        if numbers is None:
            numbers = []
        if not isinstance(numbers, list) or not all(
            isinstance(x, int) and not isinstance(x, bool) and 1 <= x <= len(chunk) for x in numbers
        ):
            raise _Invalid(f'item {n}: "turns" must list turn numbers from 1 to {len(chunk)}')
        text, echoed = _strip_echo(text.strip(), chunk)
        sources = [chunk[x - 1] for x in dict.fromkeys(numbers)] or _attribute(text, chunk, echoed)
        speakers = {t.speaker for t in sources}
        fixed = echoed is not None
        if len(speakers) == 1:
            rewritten = _third_person(text, next(iter(speakers)))
            fixed |= rewritten != text
            text = rewritten
        if _FIRST_PERSON.search(text):
            raise _Invalid(f"item {n} is not in the third person: {text[:80]!r}")
        if script is not None and _script(text) not in (script, None):
            raise _Invalid(f"item {n} is not in the conversation's language")
        anchor = sources[0].time if sources else None
        if anchor is not None:
            text = absolute_dates(text, anchor)
        if len(text) > MAX_MEMORY_CHARS:
            raise _Invalid(f"item {n} is longer than {MAX_MEMORY_CHARS} characters")
        return {
            "text": text,
            "kind": kind,
            "confidence": float(confidence),
            "event_time": anchor.isoformat() if anchor else None,
            "turns": [t.index for t in sources],
            "provenance": {
                "source": "reader",
                "extractor": self.extractor,
                "message_ids": [t.message_id for t in sources if t.message_id],
                "timestamps": [t.time.isoformat() for t in sources if t.time],
                "speaker": next(iter(speakers)) if len(speakers) == 1 else None,
                "role": sources[0].role if len({t.role for t in sources}) == 1 else None,
            },
        }, fixed


class _Invalid(Exception):
    """An LLM answer failed validation (the message goes back to the LLM)."""


def _turn(index: int, message: Mapping[str, Any]) -> _Turn:
    if not isinstance(message, Mapping) or not isinstance(message.get("content"), str):
        raise InvalidInput("the reader reads chat messages: dicts with a 'content' string")
    stamp = next(
        (message[k] for k in ("timestamp", "time", "created_at", "date") if message.get(k)), None
    )
    role = str(message.get("role") or "user")
    return _Turn(
        index=index,
        role=role,
        speaker=str(message.get("name") or message.get("speaker") or role),
        content=message["content"],
        time=parse_time(stamp, "message timestamp"),
        message_id=str(message["id"]) if message.get("id") is not None else None,
    )


def _day_of(turn: _Turn) -> Any:
    return turn.time.date() if turn.time else None


def _line(number: int, turn: _Turn) -> str:
    day = f" {turn.time.date().isoformat()}" if turn.time else ""
    return f"[{number}]{day} {turn.speaker}: {turn.content}"


# ---------------------------------------------------------------------------- parsing

_DECODER = json.JSONDecoder()


def parse_json_list(text: str) -> Any:
    """The first JSON list or object in ``text`` (code fences and chatter around it are
    ignored); a list cut off by the token limit keeps its complete objects."""
    start = min((p for p in (text.find("["), text.find("{")) if p >= 0), default=-1)
    if start < 0:
        raise _Invalid("the reply contains no JSON")
    try:
        return _DECODER.raw_decode(text, start)[0]
    except ValueError:
        pass
    if text[start] == "[":  # truncated: close the list after its last complete object
        for end in (m.end() for m in reversed(list(re.finditer(r"\}\s*(?=,|$)", text)))):
            try:
                return json.loads(text[start:end] + "]")
            except ValueError:
                continue
    raise _Invalid("the reply is not valid JSON")


# ---------------------------------------------------------------------------- repairs

_FIRST_PERSON = re.compile(
    r"(?<![\w'])(I|I'm|I've|I'd|I'll|me|my|My|mine|myself|[Ww]e|[Oo]ur|us|ourselves)(?![\w'])"
)
_ECHO = re.compile(r"^\s*(?:\[\d+\]\s*)?(?:\d{4}-\d{2}-\d{2}\s*)?(?P<who>[^:\n]{1,40}):\s+")
_PRONOUNS = (
    (re.compile(r"(?<![\w'])I am(?![\w'])"), "{} is"),
    (re.compile(r"(?<![\w'])I'm(?![\w'])"), "{} is"),
    (re.compile(r"(?<![\w'])I was(?![\w'])"), "{} was"),
    (re.compile(r"(?<![\w'])I have(?![\w'])"), "{} has"),
    (re.compile(r"(?<![\w'])I've(?![\w'])"), "{} has"),
    (re.compile(r"(?<![\w'])I'd(?![\w'])"), "{} would"),
    (re.compile(r"(?<![\w'])I'll(?![\w'])"), "{} will"),
    (re.compile(r"(?<![\w'])(?:my|My|mine)(?![\w'])"), "{}'s"),
    (re.compile(r"(?<![\w'])(?:I|me|myself)(?![\w'])"), "{}"),
)


def _strip_echo(text: str, chunk: list[_Turn]) -> tuple[str, str | None]:
    """Drop a copied ``[n] date Speaker:`` line head; returns the text and the speaker."""
    m = _ECHO.match(text)
    speakers = {t.speaker for t in chunk}
    if m and m.group("who").strip() in speakers:
        return text[m.end() :].strip() or text, m.group("who").strip()
    return text, None


def _third_person(text: str, speaker: str) -> str:
    """First-person pronouns of one speaker's statement replaced by the speaker's name."""
    if not _FIRST_PERSON.search(text) or speaker in ("user", "assistant"):
        return text
    for pattern, replacement in _PRONOUNS:
        text = pattern.sub(replacement.format(speaker), text)
    return text[0].upper() + text[1:]


_WORD = re.compile(r"\w+")


def _attribute(text: str, chunk: list[_Turn], speaker: str | None) -> list[_Turn]:
    """The turn a memory without ``turns`` came from: the one sharing the most words
    (among the named speaker's turns when the memory echoed one)."""
    words = {w.lower() for w in _WORD.findall(text) if len(w) > 2}
    pool = [t for t in chunk if t.speaker == speaker] or chunk

    def overlap(turn: _Turn) -> int:
        return len(words & {w.lower() for w in _WORD.findall(turn.content)})

    best = max(pool, key=overlap)
    return [best] if overlap(best) > 0 or len(chunk) == 1 else list(chunk)


def _script(text: str) -> str | None:
    """The dominant writing system of ``text`` (LATIN, CYRILLIC, CJK, ...), None if no letters."""
    counts: dict[str, int] = {}
    for ch in text:
        if ch.isalpha():
            name = unicodedata.name(ch, "")
            script = (
                "CJK"
                if name.startswith(("CJK", "HIRAGANA", "KATAKANA", "HANGUL"))
                else (name.split(" ")[0])
            )
            counts[script] = counts.get(script, 0) + 1
    return max(counts, key=counts.__getitem__) if counts else None


# ---------------------------------------------------------------------------- dates

_WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_NUMBERS = {"a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6}


def _day(d: datetime) -> str:
    return f"{d.day} {d.strftime('%B %Y')}"


def _month(d: datetime, shift: int) -> str:
    index = d.year * 12 + d.month - 1 + shift
    return datetime(index // 12, index % 12 + 1, 1).strftime("%B %Y")


def _ago(m: re.Match[str], anchor: datetime) -> str:
    raw = m.group("n").lower()
    n = int(raw) if raw.isdigit() else _NUMBERS[raw]
    unit = m.group("unit").lower().rstrip("s")
    if unit == "day":
        return f"on {_day(anchor - timedelta(days=n))}"
    if unit == "week":
        return f"in the week of {_day(anchor - timedelta(weeks=n))}"
    if unit == "month":
        return f"in {_month(anchor, -n)}"
    return f"in {anchor.year - n}"


def _last_weekday(m: re.Match[str], anchor: datetime) -> str:
    target = _WEEKDAYS.index(m.group("wd").lower())
    back = (anchor.weekday() - target) % 7 or 7
    return f"on {m.group('wd').capitalize()}, {_day(anchor - timedelta(days=back))}"


_RELATIVE: tuple[tuple[re.Pattern[str], Callable[[re.Match[str], datetime], str]], ...] = tuple(
    (re.compile(p, re.IGNORECASE), f)
    for p, f in (
        (r"\b(?:on )?yesterday\b", lambda m, a: f"on {_day(a - timedelta(days=1))}"),
        (r"\b(?:on )?today\b", lambda m, a: f"on {_day(a)}"),
        (r"\b(?:on )?tomorrow\b", lambda m, a: f"on {_day(a + timedelta(days=1))}"),
        (r"\blast weekend\b", lambda m, a: f"on the weekend before {_day(a)}"),
        (r"\blast week\b", lambda m, a: f"in the week of {_day(a - timedelta(weeks=1))}"),
        (r"\bnext week\b", lambda m, a: f"in the week of {_day(a + timedelta(weeks=1))}"),
        (r"\blast month\b", lambda m, a: f"in {_month(a, -1)}"),
        (r"\bthis month\b", lambda m, a: f"in {_month(a, 0)}"),
        (r"\bnext month\b", lambda m, a: f"in {_month(a, 1)}"),
        (r"\blast year\b", lambda m, a: f"in {a.year - 1}"),
        (r"\bthis year\b", lambda m, a: f"in {a.year}"),
        (r"\bnext year\b", lambda m, a: f"in {a.year + 1}"),
        (
            r"\b(?P<n>\d+|a|an|one|two|three|four|five|six) (?P<unit>days?|weeks?|months?|years?)"
            r" ago\b",
            _ago,
        ),
        (r"\blast (?P<wd>" + "|".join(_WEEKDAYS) + r")\b", _last_weekday),
    )
)


def absolute_dates(text: str, anchor: datetime) -> str:
    """Relative English time expressions in ``text`` made absolute from ``anchor`` (the time
    the turn was said): "went hiking yesterday" said on 8 May 2023 -> "on 7 May 2023"."""
    for pattern, render in _RELATIVE:
        text = pattern.sub(lambda m, r=render: r(m, anchor), text)  # type: ignore[misc]
    return text
