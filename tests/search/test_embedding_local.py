"""The numpy MiniLM must reproduce sentence-transformers' all-MiniLM-L6-v2 vectors.

tests/fixtures/minilm_reference.json holds vectors computed with the real
sentence-transformers + torch (see "generated_with" inside it) for varied texts, including
non-ASCII text and one long enough to be truncated at 256 tokens.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from reelflow.search.embedding import EMBEDDING_DIMENSIONS
from reelflow.search.minilm import LocalMiniLMEmbedder

REFERENCE = Path(__file__).parent.parent / "fixtures" / "minilm_reference.json"


@pytest.fixture(scope="module")
def embedder() -> Iterator[LocalMiniLMEmbedder]:
    yield LocalMiniLMEmbedder()


@pytest.fixture(scope="module")
def reference() -> dict[str, object]:
    data: dict[str, object] = json.loads(REFERENCE.read_text(encoding="utf-8"))
    return data


def test_matches_sentence_transformers_reference(
    embedder: LocalMiniLMEmbedder, reference: dict[str, object]
) -> None:
    texts = reference["texts"]
    assert isinstance(texts, list) and len(texts) >= 6
    expected = np.asarray(reference["vectors"], dtype=np.float32)

    batch = embedder.embed(texts)

    assert batch.vectors.shape == (len(texts), EMBEDDING_DIMENSIONS)
    assert batch.vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(batch.vectors, axis=1), 1.0, atol=1e-5)
    cosines = np.sum(batch.vectors * expected, axis=1) / np.linalg.norm(expected, axis=1)
    assert cosines.min() >= 0.999, cosines
    # Stronger than the cosine bound: every coordinate agrees to well below rounding noise
    # of a real implementation difference (e.g. a tanh GELU would exceed this).
    assert np.abs(batch.vectors - expected).max() < 1e-4


def test_vector_does_not_depend_on_batch_companions(
    embedder: LocalMiniLMEmbedder, reference: dict[str, object]
) -> None:
    texts = reference["texts"]
    assert isinstance(texts, list)
    together = embedder.embed(texts).vectors
    alone = np.stack([embedder.embed([t]).vectors[0] for t in texts])
    # Padding must be masked out: a short text batched with a 256-token one is unchanged.
    np.testing.assert_allclose(together, alone, atol=1e-5)


def test_question_is_closest_to_its_answer(embedder: LocalMiniLMEmbedder) -> None:
    question = "How do I get my money back for a subscription?"
    passages = [
        "To request a refund, open Billing, choose the charge and click 'Refund'. "
        "Refunds reach your card within five business days.",
        "Our studio lights are daylight balanced at 5600 kelvin.",
        "The hiking trail climbs 800 metres through pine forest to the lake.",
        "Temporal replays workflow history to rebuild state after a crash.",
    ]
    vectors = embedder.embed([question, *passages]).vectors
    similarities = vectors[1:] @ vectors[0]
    assert int(np.argmax(similarities)) == 0, similarities
    assert similarities[0] - np.max(similarities[1:]) > 0.2, similarities


def test_long_text_is_truncated_and_tokens_are_counted(embedder: LocalMiniLMEmbedder) -> None:
    long_text = "pipelines " * 400
    assert embedder.count_tokens([long_text]) > 256
    batch = embedder.embed([long_text, "short text"])
    # 256 for the truncated text ([CLS] + 254 pieces + [SEP]) and 4 for "[CLS] short text [SEP]".
    assert batch.input_tokens == 256 + 4
    assert embedder.count_tokens(["short text", "another one"]) == 4


def test_empty_input_gives_empty_batch(embedder: LocalMiniLMEmbedder) -> None:
    batch = embedder.embed([])
    assert batch.vectors.shape == (0, EMBEDDING_DIMENSIONS)
    assert batch.input_tokens == 0
    assert embedder.count_tokens([]) == 0


def test_identifies_itself(embedder: LocalMiniLMEmbedder) -> None:
    assert embedder.provider == "local"
    assert embedder.model_name == "local/all-MiniLM-L6-v2"


def test_one_instance_serves_several_threads(
    embedder: LocalMiniLMEmbedder, reference: dict[str, object]
) -> None:
    texts = reference["texts"]
    assert isinstance(texts, list)
    texts = texts[:4]  # short ones: the point is sharing, not load
    expected = embedder.embed(texts).vectors
    with ThreadPoolExecutor(max_workers=3) as pool:
        results = list(pool.map(lambda _: embedder.embed(texts).vectors, range(3)))
    for vectors in results:
        np.testing.assert_allclose(vectors, expected, atol=1e-6)
