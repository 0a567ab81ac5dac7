"""Embeddings from the OpenAI API through the official SDK, at our 384 dimensions."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import openai

from reelflow.core.provider_errors import ProviderPermanentError, classify_openai_error
from reelflow.search.embedding import EMBEDDING_DIMENSIONS, EmbeddingBatch
from reelflow.search.minilm import FloatArray, LocalTokenCounter, l2_normalize

logger = logging.getLogger(__name__)

OPENAI_MAX_INPUTS_PER_REQUEST = 2048


class OpenAIEmbedder:
    """OpenAI embeddings (``text-embedding-3-*``) shortened to ``dimensions`` server-side."""

    provider = "openai"

    def __init__(
        self,
        client: openai.OpenAI,
        model: str = "text-embedding-3-small",
        dimensions: int = EMBEDDING_DIMENSIONS,
        token_counter: LocalTokenCounter | None = None,
    ) -> None:
        """Configure the embedder; no request is made here.

        Args:
            client: Shared client from :func:`build_openai_client` (retries off).
            model: OpenAI embedding model id.
            dimensions: Requested vector width; must match the database column.
            token_counter: Estimates tokens for :meth:`count_tokens`; defaults to the bundled
                WordPiece tokenizer.
        """
        if dimensions != EMBEDDING_DIMENSIONS:
            raise ValueError(f"dimensions must be {EMBEDDING_DIMENSIONS} to fit the vector column")
        self._client = client
        self._model = model
        self._dimensions = dimensions
        self.model_name = f"openai/{model}"
        self._token_counter = token_counter or LocalTokenCounter()

    def count_tokens(self, texts: Sequence[str]) -> int:
        """Estimate of OpenAI's token count for ``texts``.

        OpenAI's exact tokenizer (tiktoken) fetches its vocabulary from the internet at run
        time, which this product must not do. The bundled WordPiece vocabulary gives a close
        estimate for English prose (it splits rare words a little more, so it errs high).
        """
        return self._token_counter.count(texts)

    def embed(self, texts: Sequence[str]) -> EmbeddingBatch:
        """Embed ``texts`` with one request per 2048 inputs.

        Raises:
            ProviderTransientError: Rate limit, server error, timeout, connection failure.
            ProviderPermanentError: The request is rejected, or the answer does not fit.
        """
        if not texts:
            return EmbeddingBatch(
                vectors=np.zeros((0, EMBEDDING_DIMENSIONS), dtype=np.float32), input_tokens=0
            )
        rows: list[FloatArray] = []
        tokens = 0
        for start in range(0, len(texts), OPENAI_MAX_INPUTS_PER_REQUEST):
            part = list(texts[start : start + OPENAI_MAX_INPUTS_PER_REQUEST])
            vectors, used = self._embed_request(part)
            rows.append(vectors)
            tokens += used
        return EmbeddingBatch(vectors=l2_normalize(np.concatenate(rows)), input_tokens=tokens)

    def _embed_request(self, texts: list[str]) -> tuple[FloatArray, int]:
        try:
            response = self._client.embeddings.create(
                model=self._model, input=texts, dimensions=self._dimensions
            )
        except openai.OpenAIError as exc:
            error = classify_openai_error(exc)
            logger.warning(
                "embeddings request failed: %s (status %s)",
                type(error).__name__,
                getattr(error, "status_code", None),
            )
            raise error from exc
        # The API documents `index` as the position in the input; don't rely on list order.
        data = sorted(response.data, key=lambda d: d.index)
        if len(data) != len(texts) or [d.index for d in data] != list(range(len(texts))):
            raise ProviderPermanentError(
                f"OpenAI returned {len(data)} embeddings for {len(texts)} inputs",
                provider="openai",
            )
        vectors = np.asarray([d.embedding for d in data], dtype=np.float32)
        if vectors.shape != (len(texts), EMBEDDING_DIMENSIONS):
            raise ProviderPermanentError(
                f"OpenAI returned vectors of shape {vectors.shape}; does {self._model} "
                f"support dimensions={self._dimensions}?",
                provider="openai",
            )
        return vectors, int(response.usage.prompt_tokens)
