"""Helpers for the API tests: a deterministic embedder, multipart bodies and DB checks."""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

import httpx
import numpy as np
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from reelflow.search.embedding import EMBEDDING_DIMENSIONS, EmbeddingBatch
from schemas.tables import Video

_WORD = re.compile(r"[a-z0-9]+")

MAX_UPLOAD_BYTES = 256 * 1024
"""The tests' upload limit: small, so over-limit bodies are cheap, yet several chunks long."""


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, str]:
    """The response is exactly the error envelope with this status and code."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"code", "message"}, body
    assert body["error"]["code"] == code, body
    assert body["error"]["message"], body
    return dict(body["error"])


class BagOfWordsEmbedder:
    """A deterministic stand-in for our `Embedder` interface: hashed bag of words.

    Texts that share words get high cosine similarity, texts that share none get zero, so
    ranking assertions are exact. (The real local model has its own tests.)
    """

    model_name = "test/bag-of-words"
    provider = "local"

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def _vector(self, text: str) -> np.ndarray:
        vector = np.zeros(EMBEDDING_DIMENSIONS, dtype=np.float32)
        for word in _WORD.findall(text.lower()):
            slot = int.from_bytes(hashlib.sha256(word.encode()).digest()[:4], "big")
            vector[slot % EMBEDDING_DIMENSIONS] += 1.0
        norm = float(np.linalg.norm(vector))
        return vector / norm if norm else vector

    def embed(self, texts: Sequence[str]) -> EmbeddingBatch:
        self.calls.append(list(texts))
        vectors = np.stack([self._vector(t) for t in texts]).astype(np.float32)
        return EmbeddingBatch(vectors=vectors, input_tokens=self.count_tokens(texts))

    def count_tokens(self, texts: Sequence[str]) -> int:
        return sum(len(_WORD.findall(t.lower())) for t in texts)


@dataclass
class TenantKey:
    """A tenant created for a test and its API key."""

    tenant_id: uuid.UUID
    api_key: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}


@dataclass
class PulledBody:
    """A streaming request body that records how much of it the server actually read."""

    chunks: list[bytes]
    pulled: int = 0
    chunks_pulled: int = 0
    finished: bool = False

    @property
    def total(self) -> int:
        return sum(len(c) for c in self.chunks)

    async def stream(self) -> AsyncIterator[bytes]:
        for chunk in self.chunks:
            self.pulled += len(chunk)
            self.chunks_pulled += 1
            yield chunk
        self.finished = True


def multipart_parts(
    boundary: str,
    *,
    fields: dict[str, str],
    filename: str | None,
    file_chunks: Sequence[bytes],
    content_type: str = "video/mp4",
) -> list[bytes]:
    """A multipart/form-data body as a list of chunks, the file's bytes kept as given."""
    head = b""
    for name, value in fields.items():
        head += (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode()
            + value.encode()
            + b"\r\n"
        )
    if filename is None:
        return [head + f"--{boundary}--\r\n".encode()]
    head += (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
        f'filename="{filename}"\r\nContent-Type: {content_type}\r\n\r\n'
    ).encode()
    return [head, *file_chunks, f"\r\n--{boundary}--\r\n".encode()]


async def count_videos(engine: AsyncEngine, tenant_id: uuid.UUID) -> int:
    sessions = async_sessionmaker(engine)
    async with sessions() as session:
        count = await session.scalar(
            select(func.count()).select_from(Video).where(Video.tenant_id == tenant_id)
        )
    return int(count or 0)


async def fetch_video(engine: AsyncEngine, video_id: uuid.UUID | str) -> Video | None:
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    session: AsyncSession
    async with sessions() as session:
        return await session.get(Video, uuid.UUID(str(video_id)))
