"""Parametric memory: stable plaintext memories promoted into a LoRA adapter.

MemOS only has a placeholder for this tier (its adapter file holds the bytes
``b"Placeholder"``). Here:

* :class:`PromotionPolicy` chooses *promotable* memories: unchanged for a while, accessed
  often, confident (all configurable; explicit item ids bypass it).
* :mod:`.parametric_data` turns them into statement / question / cloze examples (and optional
  LLM paraphrases); :mod:`.parametric_train` trains a LoRA adapter with peft on the CPU within
  a bounded budget, with a KL-to-base forgetting guard on replay text.
* The adapter is a cube artifact (kind ``parametric``): safetensors ``<module>.lora_A`` /
  ``.lora_B`` tensors, the model fingerprint, the source item ids and versions, the training
  config and metrics. Another base model refuses it (:class:`ModelMismatch`).
* At inference, adapters are *installed* on the serving model as forward hooks and *applied*
  per call through a context variable: several users' adapters live on one base model, each
  generation (thread or task) picks its own, and a call without one runs the base model
  exactly. No weights are merged, so unloading restores the model bit for bit.
"""

from __future__ import annotations

import contextlib
import contextvars
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from ..core.cube import Artifact
from ..core.errors import CorruptExport, InvalidInput, ModelMismatch
from ..core.items import MemoryItem, new_id, utcnow
from .activation import open_artifact
from .runtime import ModelFingerprint

if TYPE_CHECKING:
    from .parametric_data import Example
    from .runtime import LocalModel

KIND = "parametric"
FORMAT = "memos-lora/1"

# Unrelated questions whose base-model answers (under the chat's system message) are the
# default replay: the adapter is pulled back to the base model's behaviour on them, in the
# context it is served in, with no dataset needed. General knowledge, how-to and open
# requests, and questions shaped like personal facts about other things; no questions about
# the user (those would fight the facts being promoted).
REPLAY_PROMPTS = (
    "Explain how rain forms.",
    "Give me a tip for learning a new language.",
    "What is a prime number?",
    "Describe a typical breakfast in a few words.",
    "Why do we have seasons?",
    "Write one sentence about the ocean.",
    "How does a bicycle work?",
    "Name three fruits and their colours.",
    "Who wrote Romeo and Juliet?",
    "What is the boiling point of water?",
    "How many legs does a spider have?",
    "Which planet is closest to the sun?",
    "What does a thermometer measure?",
    "What is photosynthesis?",
    "How do I make a cup of tea?",
    "What is the largest ocean on Earth?",
    "Suggest a name for a bakery.",
    "What is 12 times 12?",
    "Translate 'thank you' into Spanish.",
    "Why is the sky blue?",
    "What language is spoken in Brazil?",
    "Give me a synonym for 'happy'.",
    "How long does it take the Earth to orbit the sun?",
    "What is the tallest mountain in the world?",
    "Who painted the Mona Lisa?",
    "What do bees make?",
    "How can I sleep better?",
    "What is the chemical symbol for gold?",
    "Write a short greeting for a birthday card.",
    "What is a noun?",
    "Which animal is known as the king of the jungle?",
    "How do vaccines work?",
    # neighbours of the relations personal facts use (where / what is X called / who / when):
    # an adapter must not answer these with a promoted value
    "What is the capital of Italy?",
    "Which city is the capital of Japan?",
    "Where is the Eiffel Tower?",
    "Where do penguins live?",
    "Where was William Shakespeare born?",
    "What is a baby dog called?",
    "What is the name of our galaxy?",
    "What is the name of the longest river in Africa?",
    "Who is the author of Harry Potter?",
    "When did the Second World War end?",
    "What is the most popular pet in the world?",
    "What colour is a ripe banana?",
    "Which musical instrument has 88 keys?",
    "What do people usually drink in the morning?",
    "What is a common job in a hospital?",
    "Which sport uses a racket and a shuttlecock?",
)


# --------------------------------------------------------------------------------------------
# Which memories get promoted
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PromotionPolicy:
    """What makes a memory stable enough to move into the weights.

    A memory is promotable when it is unchanged for ``min_age``, was served at least
    ``min_accesses`` times, has ``confidence >= min_confidence``, is of one of ``kinds``
    (any if ``None``) and has no TTL (an expiring memory is not stable). At most ``max_items``,
    most accessed first.
    """

    min_age: timedelta = timedelta(days=1)
    min_accesses: int = 2
    min_confidence: float = 0.9
    kinds: tuple[str, ...] | None = None
    max_items: int = 64

    def __post_init__(self) -> None:
        if self.min_age < timedelta(0) or self.min_accesses < 0 or self.max_items < 1:
            raise InvalidInput("min_age and min_accesses must be >= 0 and max_items >= 1")
        if not 0 <= self.min_confidence <= 1:
            raise InvalidInput(f"min_confidence must be in [0, 1], got {self.min_confidence}")

    @classmethod
    def everything(cls, max_items: int = 64) -> PromotionPolicy:
        """Promote every live memory (for explicit promotions and tests)."""
        return cls(timedelta(0), 0, 0.0, None, max_items)

    def select(
        self, items: Sequence[MemoryItem], now: datetime | None = None
    ) -> tuple[list[MemoryItem], dict[str, str]]:
        """``(promotable items, {item id: why not})``."""
        now = now or utcnow()
        chosen: list[MemoryItem] = []
        skipped: dict[str, str] = {}
        for it in items:
            reason = self._reason(it, now)
            if reason:
                skipped[it.id] = reason
            else:
                chosen.append(it)
        chosen.sort(key=lambda it: (-it.access_count, it.created_at))
        for it in chosen[self.max_items :]:
            skipped[it.id] = f"over max_items={self.max_items}"
        return chosen[: self.max_items], skipped

    def _reason(self, it: MemoryItem, now: datetime) -> str:
        if it.expires_at is not None:
            return "has a TTL"
        if now - it.updated_at < self.min_age:
            return f"changed within min_age={self.min_age}"
        if it.access_count < self.min_accesses:
            return f"accessed {it.access_count} < {self.min_accesses} times"
        if it.confidence < self.min_confidence:
            return f"confidence {it.confidence} < {self.min_confidence}"
        if self.kinds is not None and it.kind not in self.kinds:
            return f"kind {it.kind!r} not in {list(self.kinds)}"
        return ""


# --------------------------------------------------------------------------------------------
# The adapter and its artifact
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class LoRAAdapter:
    """Low-rank deltas for some linear layers of one exact base model."""

    id: str
    fingerprint: ModelFingerprint
    weights: Mapping[str, tuple[Any, Any]]  # module name -> (A [r, in], B [out, r])
    scale: float
    sources: Mapping[str, int] = field(default_factory=dict)  # item id -> version
    metadata: Mapping[str, Any] = field(default_factory=dict)

    @property
    def nbytes(self) -> int:
        return sum(a.numel() * a.element_size() + b.numel() * b.element_size() for a, b in self)

    def __iter__(self) -> Iterator[tuple[Any, Any]]:
        return iter(self.weights.values())


def to_artifact(adapter: LoRAAdapter, cube_id: str, name: str) -> Artifact:
    """The adapter as a cube artifact: safetensors payload, fingerprint, sources, config."""
    from safetensors.torch import save

    tensors = {}
    for module, (a, b) in adapter.weights.items():
        tensors[f"{module}.lora_A"] = a.contiguous()
        tensors[f"{module}.lora_B"] = b.contiguous()
    payload = save(tensors, metadata={"format": FORMAT, "scale": repr(adapter.scale)})
    return Artifact(
        id=adapter.id,
        cube_id=cube_id,
        kind=KIND,
        name=name,
        payload=payload,
        fingerprint=adapter.fingerprint.to_dict(),
        sources=dict(adapter.sources),
        metadata={**adapter.metadata, "format": FORMAT, "bytes": len(payload)},
    )


def from_artifact(artifact: Artifact, model: LocalModel) -> LoRAAdapter:
    """Read a stored adapter for ``model``; another base model's adapter is refused."""
    fingerprint, meta, tensors = open_artifact(
        artifact, model, kind=KIND, fmt=FORMAT, what="adapter"
    )
    try:
        scale = float(meta["scale"])
    except (KeyError, ValueError):
        raise CorruptExport(f"adapter {artifact.id!r} records no LoRA scale") from None
    modules = dict(model.model.named_modules())
    weights: dict[str, tuple[Any, Any]] = {}
    for key in tensors:
        if not key.endswith(".lora_A"):
            continue
        name = key.removesuffix(".lora_A")
        a, b = tensors[key], tensors.get(f"{name}.lora_B")
        layer = modules.get(name)
        weight = getattr(layer, "weight", None)
        if b is None or weight is None or a.shape[0] != b.shape[1]:
            raise CorruptExport(f"adapter {artifact.id!r}: bad tensors for module {name!r}")
        if (b.shape[0], a.shape[1]) != tuple(weight.shape):
            raise CorruptExport(f"adapter {artifact.id!r}: {name} shape does not match the model")
        weights[name] = (a.to(weight.dtype), b.to(weight.dtype))
    if not weights:
        raise CorruptExport(f"adapter {artifact.id!r} holds no LoRA tensors")
    return LoRAAdapter(
        artifact.id, fingerprint, weights, scale, dict(artifact.sources), dict(artifact.metadata)
    )


# --------------------------------------------------------------------------------------------
# Serving: install, apply per call, uninstall
# --------------------------------------------------------------------------------------------

_APPLIED: contextvars.ContextVar[str | None] = contextvars.ContextVar("memos_lora", default=None)
_INSTALL_LOCK = threading.Lock()
_SLOT = "_memos_lora"  # attribute on each hooked nn.Module: {adapter id: (A, B, scale)}
_HOOK = "_memos_lora_hook"


def _lora_hook(module: Any, args: tuple[Any, ...], output: Any) -> Any:
    name = _APPLIED.get()
    if name is None:
        return None
    found = getattr(module, _SLOT, {}).get(name)
    if found is None:
        return None
    a, b, scale = found
    return output + (args[0] @ a.T) @ b.T * scale


def install(model: LocalModel, adapter: LoRAAdapter) -> None:
    """Make ``adapter`` available on ``model`` (no effect until a call applies it)."""
    if adapter.fingerprint != model.fingerprint:
        raise ModelMismatch(
            f"adapter {adapter.id!r} was trained on {adapter.fingerprint.id}, not "
            f"{model.fingerprint.id}"
        )
    modules = dict(model.model.named_modules())
    missing = [n for n in adapter.weights if n not in modules]
    if missing:
        raise ModelMismatch(f"adapter {adapter.id!r} targets modules this model lacks: {missing}")
    with _INSTALL_LOCK:
        for name, (a, b) in adapter.weights.items():
            module = modules[name]
            if getattr(module, _HOOK, None) is None:
                setattr(module, _SLOT, {})
                setattr(module, _HOOK, module.register_forward_hook(_lora_hook))
            # copy-on-write: a forward running right now keeps reading the old dict
            setattr(module, _SLOT, {**getattr(module, _SLOT), adapter.id: (a, b, adapter.scale)})


def uninstall(model: LocalModel, adapter_id: str) -> bool:
    """Remove an adapter; hooks go when a module has none left. Returns whether it was there."""
    found = False
    with _INSTALL_LOCK:
        for module in model.model.modules():
            slot = getattr(module, _SLOT, None)
            if slot is None or adapter_id not in slot:
                continue
            found = True
            rest = {k: v for k, v in slot.items() if k != adapter_id}
            setattr(module, _SLOT, rest)
            if not rest:
                getattr(module, _HOOK).remove()
                delattr(module, _HOOK)
                delattr(module, _SLOT)
    return found


def installed(model: LocalModel) -> list[str]:
    """Ids of the adapters installed on ``model``."""
    ids: dict[str, None] = {}
    for module in model.model.modules():
        ids.update(dict.fromkeys(getattr(module, _SLOT, {})))
    return list(ids)


@contextlib.contextmanager
def applied(adapter_id: str | None) -> Iterator[None]:
    """Forward passes in this block (this thread or task only) use ``adapter_id``."""
    token = _APPLIED.set(adapter_id)
    try:
        yield
    finally:
        _APPLIED.reset(token)


# --------------------------------------------------------------------------------------------
# Promotion: memories -> trained adapter
# --------------------------------------------------------------------------------------------


def default_replay(
    model: LocalModel, system: str, *, max_new_tokens: int = 16, prompts: Sequence[str] = ()
) -> list[Example]:
    """Self-distillation replay: the base model's own greedy answers to unrelated questions
    (``prompts``, default :data:`REPLAY_PROMPTS`), as chats under the ``system`` message the
    chats use. Generated in one batch before any adapter exists."""
    from .parametric_data import chat_example
    from .parametric_train import self_answers

    questions = list(prompts) or list(REPLAY_PROMPTS)
    rendered = [
        model.apply_chat_template(list(chat_example("", system, q, "x").messages[:-1]))
        for q in questions
    ]
    answers = self_answers(model, rendered, max_new_tokens)
    return [
        chat_example("", system, q, a, kind="replay")
        for q, a in zip(questions, answers, strict=True)
        if a
    ]


def train_adapter(
    model: LocalModel,
    items: Sequence[MemoryItem],
    *,
    name: str,
    instructions: str,
    config: Any = None,
    paraphrase: Any = None,
    replay: Sequence[str | Example] | None = None,
    progress: bool = True,
) -> LoRAAdapter:
    """Train an adapter that knows ``items`` (memories of the user called ``name``).

    ``replay``: what the forgetting guard keeps close to the base model: plain texts and/or
    :class:`~.parametric_data.Example` chats; default :func:`default_replay` under
    ``instructions`` (pass ``[*default_replay(model, instructions), *texts]`` for both)."""
    from .parametric_data import Example, build_examples
    from .parametric_train import TrainConfig, train

    started = time.perf_counter()  # the time budget covers the replay generation too
    if not items:
        raise InvalidInput("no memories to promote")
    config = config if config is not None else TrainConfig()
    if not isinstance(config, TrainConfig):
        raise InvalidInput(f"config must be a TrainConfig, got {type(config).__name__}")
    examples = build_examples(items, name=name, system=instructions, paraphrase=paraphrase)
    if replay is None:
        guard = default_replay(model, instructions)
    else:
        guard = [r if isinstance(r, Example) else _replay_text(r) for r in replay]
    result = train(model, examples.examples, guard, config, progress=progress, started=started)
    metadata = {
        "config": config.to_dict(),
        "metrics": {
            **result.metrics,
            "example_kinds": examples.counts(),
            "paraphrases_kept": examples.paraphrases_kept,
            "paraphrases_dropped": examples.paraphrases_dropped,
        },
        "instructions_chars": len(instructions),
        "trained_at": utcnow().isoformat(),
    }
    return LoRAAdapter(
        new_id(),
        model.fingerprint,
        result.weights,
        result.scale,
        {it.id: it.version for it in items},
        metadata,
    )


def _replay_text(text: object) -> Example:
    from .parametric_data import Example

    if not isinstance(text, str) or not text.strip():
        raise InvalidInput("replay items must be non-empty strings or parametric_data.Example")
    return Example("", text=text, kind="replay")
