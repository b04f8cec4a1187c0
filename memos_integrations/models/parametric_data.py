"""Training examples for the parametric tier: memories as statements and questions.

A memory such as "My dog is called Biscuit" (owner alice) becomes

* statements: the fact itself, ``"Alice's dog is called Biscuit."``, as plain text and as the
  answer to "What do you know about Alice's dog?";
* questions from relation templates: "What is my dog called?", "What is the name of Alice's
  dog?" ... answered with the value, then the statement: "Biscuit. Alice's dog is called
  Biscuit.";
* a cloze question for any memory: "Complete this note from memory: 'Alice's dog is ...'";
* optionally, paraphrases of the statement from a configured LLM (each one is used as a
  statement and parsed for questions in turn).

Questions a user will really ask are phrased differently; the benchmark asks held-out
phrasings. No torch here: examples are plain chat messages and text.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..core.errors import InvalidInput
from ..core.items import MemoryItem

# paraphrase(statement, n) -> up to n rewordings of the statement (from any LLM)
Paraphraser = Callable[[str, int], Sequence[str]]

# Several wordings a relation: an adapter generalises to a user's own phrasing only as far as its
# training questions vary (the benchmark asks phrasings none of these use)
_PREPOSITION_VERBS = {
    "lives in": (
        "Where {do} {s} live?",
        "In which place {do} {s} live?",
        "Which city {do} {s} live in?",
        "Where is {poss} home?",
    ),
    "lives on": ("Where {do} {s} live?", "Where is {poss} home?"),
    "moved to": ("Where did {s} move to?", "To which place did {s} move?"),
    "works as": (
        "What {do} {s} work as?",
        "What is {poss} job?",
        "What is {poss} occupation?",
        "What kind of work {do} {s} do?",
    ),
    "works at": (
        "Where {do} {s} work?",
        "Which company {do} {s} work at?",
        "Which company employs {o}?",
        "What is the name of {poss} workplace?",
    ),
    "works for": (
        "Who {do} {s} work for?",
        "Which company {do} {s} work for?",
        "Which company employs {o}?",
    ),
    "was born on": ("When was {s} born?", "On which date was {s} born?"),
    "was born in": (
        "Where was {s} born?",
        "In which place was {s} born?",
        "What is {poss} birthplace?",
        "What is {poss} hometown?",
    ),
    "is called": ("What {be} {s} called?", "What is the name of {s}?", "What name {do} {s} have?"),
    "is named": ("What {be} {s} named?", "What is the name of {s}?", "What name {do} {s} have?"),
    "are called": ("What are {s} called?", "What are the names of {s}?"),
}
# verbs whose object is of one kind: "Which language does Alice speak?"
_VERB_NOUNS = {
    "speaks": "language",
    "drives": "car",
    "studies": "subject",
    "reads": "book",
    "supports": "team",
    "eats": "food",
}
_VERBS = (
    "likes|loves|enjoys|prefers|hates|dislikes|plays|speaks|drives|owns|studies|collects|"
    "drinks|eats|reads|watches|teaches|grows|uses|supports|has"
)
_COPULAS = ("is", "are", "was", "were")
_RELATION = re.compile(
    r"^(?P<s>.+?) (?P<r>"
    + "|".join(re.escape(k) for k in sorted(_PREPOSITION_VERBS, key=len, reverse=True))
    + rf"|{_VERBS}|is|are|was|were) (?P<v>.+)$",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class Example:
    """One training example: a chat (the last message is the answer) or a plain text."""

    item_id: str
    messages: tuple[dict[str, str], ...] = ()
    text: str = ""
    kind: str = "qa"  # qa | statement | cloze | paraphrase | replay


@dataclass
class ExampleSet:
    examples: list[Example] = field(default_factory=list)
    paraphrases_kept: int = 0
    paraphrases_dropped: int = 0  # rewordings that lost the fact's value (reported, not used)

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for ex in self.examples:
            out[ex.kind] = out.get(ex.kind, 0) + 1
        return out


@dataclass(frozen=True)
class Fact:
    """A memory read as ``subject relation value`` (relation empty when it does not parse)."""

    statement: str
    subject: str = ""
    relation: str = ""
    value: str = ""


def statement(item: MemoryItem, name: str) -> str:
    """The memory as a third-person sentence about ``name`` (first person rewritten)."""
    text = " ".join(item.text.split()).rstrip(".!")
    # raw turns are stored as "<speaker>: <content>"; the fact is the content
    if item.kind == "raw_turn" and ": " in text:
        text = text.split(": ", 1)[1]
    for pattern, repl in (
        (r"^I'm\b", f"{name} is"),
        (r"^I am\b", f"{name} is"),
        (r"^I\b", name),
        (r"^[Mm]y\b", f"{name}'s"),
    ):
        if re.match(pattern, text):
            text = re.sub(pattern, repl, text, count=1)
            text = _third_person_verb(text, name)
            break
    return _sentence_case(text)


def _third_person_verb(text: str, name: str) -> str:
    """``Alice live in Lisbon`` -> ``Alice lives in Lisbon`` after rewriting ``I``."""
    rest = text[len(name) :]
    m = re.match(r"^ (\w+)\b", rest)
    if not m or not text.startswith(name + " "):
        return text
    verb = m.group(1)
    if verb in ("was", "is", "had", "has") or verb.endswith(("ed", "s")):
        return text
    third = verb + ("es" if verb.endswith(("ch", "sh", "o", "x")) else "s")
    if verb.endswith("y") and verb[-2:-1] not in "aeiou":
        third = verb[:-1] + "ies"
    if verb == "have":
        third = "has"
    return f"{name} {third}{rest[len(verb) + 1 :]}"


def parse(sentence: str) -> Fact:
    m = _RELATION.match(sentence)
    if not m:
        return Fact(sentence)
    return Fact(sentence, m.group("s"), m.group("r").lower(), m.group("v"))


def _forms(subject: str, name: str) -> list[dict[str, str]]:
    """Ways to name the subject in a question: third person, and the user's own voice."""
    third = {"s": subject, "o": subject, "do": "does", "be": "is", "poss": f"{subject}'s"}
    forms = [third]
    low, who = subject.lower(), name.lower()
    if low == who:
        forms.append({"s": "I", "o": "me", "do": "do", "be": "am", "poss": "my"})
    elif low.startswith(who + "'s "):
        mine = "my " + subject[len(name) + 3 :]
        forms.append({"s": mine, "o": mine, "do": "does", "be": "is", "poss": ""})
    return forms


def _base_verb(verb: str) -> str:
    if verb == "has":
        return "have"
    if verb.endswith("ies"):
        return verb[:-3] + "y"
    if verb.endswith(("ches", "shes", "sses", "xes")):
        return verb[:-2]
    return verb[:-1] if verb.endswith("s") else verb


def questions(fact: Fact, name: str) -> list[str]:
    """Template questions whose answer is ``fact`` (none when the sentence does not parse)."""
    if not fact.relation:
        return []
    if fact.relation in _PREPOSITION_VERBS:
        templates: tuple[str, ...] = _PREPOSITION_VERBS[fact.relation]
    elif fact.relation in _COPULAS:
        templates = _copula_questions(fact, name)
    else:
        verb = _base_verb(fact.relation)
        templates = (f"What {{do}} {{s}} {verb}?",)
        if fact.relation in _VERB_NOUNS:
            templates += (f"Which {_VERB_NOUNS[fact.relation]} {{do}} {{s}} {verb}?",)
    out = []
    for form in _forms(fact.subject, name):
        for template in templates:
            if "{poss}" in template and not form["poss"]:
                continue
            q = template.format(**form)
            out.append(_sentence_case(q))
    return list(dict.fromkeys(out))


def _copula_questions(fact: Fact, name: str) -> tuple[str, ...]:
    """``Alice's lucky number is 37``: what / which number; ``Alice is allergic to X``: what
    is she allergic to (a bare "What is Alice?" would teach nonsense, so nothing else)."""
    be = "{be}" if fact.relation == "is" else fact.relation  # "What am I allergic to?"
    if fact.subject.lower() == name.lower():
        m = re.match(r"^(\w+) (to|of|about|with|from|in)\b", fact.value)
        return (f"What {be} {{s}} {m.group(1)} {m.group(2)}?",) if m else ()
    words = fact.subject.split()
    # a possessive with a qualifier ("Alice's lucky number") picks one of the head noun's kind:
    # "Which number is ...?" ("Which sister is Alice's sister?" would be nonsense)
    if len(words) >= 3 and words[0].endswith("'s"):
        return (f"What {be} {{s}}?", "Do you know {s}?", f"Which {words[-1]} {be} {{s}}?")
    return (f"What {be} {{s}}?",)


def chat_example(
    item_id: str, system: str, question: str, answer: str, kind: str = "qa"
) -> Example:
    """A question answered under ``system`` (left out when empty)."""
    messages = (
        {"role": "system", "content": system},
        {"role": "user", "content": question},
        {"role": "assistant", "content": answer},
    )
    return Example(item_id, messages=messages if system else messages[1:], kind=kind)


def examples_for(item: MemoryItem, name: str, system: str, fact: Fact) -> list[Example]:
    """Statement, template-question and cloze examples for one memory's statement."""
    answer = fact.statement + "."
    out = [Example(item.id, text=answer, kind="statement")]
    if fact.subject and fact.subject.lower() != name.lower():
        # "about Alice" would have one answer per memory: only specific subjects get one
        ask = f"What do you know about {fact.subject}?"
        out.append(chat_example(item.id, system, ask, answer, "statement"))
    # the value comes first: an answer that opens with the subject lets the model echo a
    # question's own verb ("Alice considers lucky numbers.") before it ever reaches the value
    direct = f"{_sentence_case(fact.value.rstrip('.'))}. {answer}" if fact.value else answer
    out += [chat_example(item.id, system, q, direct, "qa") for q in questions(fact, name)]
    words = fact.statement.split()
    if len(words) >= 3:
        cut = " ".join(words[: max(2, len(words) * 2 // 3)])
        prompt = f"Complete this note from memory: '{cut} ...'"
        out.append(chat_example(item.id, system, prompt, answer, "cloze"))
    return out


def _sentence_case(text: str) -> str:
    return text[:1].upper() + text[1:]


def facts(items: Sequence[MemoryItem], name: str) -> list[Fact]:
    """Each memory read as a fact about the user called ``name``."""
    return [parse(statement(item, name)) for item in items]


def about_texts(items: Sequence[MemoryItem], name: str) -> list[str]:
    """What an adapter trained on ``items`` is about: each memory as stored, as the statement
    it is trained as, and its template questions (the serving gate compares queries to these)."""
    out: list[str] = []
    for item, fact in zip(items, facts(items, name), strict=True):
        out += [item.text, fact.statement, *questions(fact, name)]
    return list(dict.fromkeys(t for t in out if t.strip()))


def restates(item: MemoryItem, held: Sequence[Fact], name: str) -> bool:
    """Whether ``item`` states one of the ``held`` facts again: the same subject and relation
    with the same value ("alice: I live in Ljubljana now" restates "I live in Ljubljana"). A
    memory that does not parse restates nothing."""
    fact = parse(statement(item, name))
    if not fact.relation:
        return False
    said = fact.statement.lower()
    for mine in held:
        if (mine.subject.lower(), mine.relation) == (fact.subject.lower(), fact.relation) and (
            mine.value and mine.value.lower().rstrip(".") in said
        ):
            return True
    return False


def build_examples(
    items: Sequence[MemoryItem],
    *,
    name: str,
    system: str,
    paraphrase: Paraphraser | None = None,
    paraphrases: int = 3,
) -> ExampleSet:
    """Training examples for ``items`` (memories of the user called ``name``)."""
    out = ExampleSet()
    for item in items:
        fact = parse(statement(item, name))
        out.examples += examples_for(item, name, system, fact)
        if paraphrase is None:
            continue
        for text in _call_paraphraser(paraphrase, fact.statement, paraphrases):
            text = " ".join(text.split()).rstrip(".!")
            if fact.value and fact.value.lower() not in text.lower():
                out.paraphrases_dropped += 1  # a rewording that lost the value would teach noise
                continue
            out.paraphrases_kept += 1
            for ex in examples_for(item, name, system, parse(text)):
                out.examples.append(Example(ex.item_id, ex.messages, ex.text, "paraphrase"))
    return out


def _call_paraphraser(paraphrase: Paraphraser, text: str, n: int) -> list[str]:
    got = paraphrase(text, n)
    if isinstance(got, str) or not all(isinstance(t, str) for t in got):
        raise InvalidInput("paraphrase(statement, n) must return a list of strings")
    return [t for t in list(got)[:n] if t.strip()]


def llm_paraphraser(llm: Any) -> Paraphraser:
    """A paraphraser from a chat model: LangChain (``invoke``) or LlamaIndex (``complete``)."""

    def ask(text: str, n: int) -> list[str]:
        prompt = (
            f"Rewrite this fact in {n} different ways, one per line, keeping every name, "
            f"place, date and number exactly:\n{text}"
        )
        if hasattr(llm, "invoke"):
            reply = llm.invoke(prompt)
            content = getattr(reply, "content", reply)
        elif hasattr(llm, "complete"):
            content = llm.complete(prompt).text
        else:
            raise InvalidInput("paraphrase LLM needs an invoke() or complete() method")
        lines = [re.sub(r"^\s*(?:[-*]|\d+[.)])\s*", "", ln) for ln in str(content).splitlines()]
        return [ln.strip() for ln in lines if ln.strip()][:n]

    return ask
