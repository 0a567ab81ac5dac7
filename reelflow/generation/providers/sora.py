"""OpenAI's video API (Sora) through the official ``openai`` SDK.

Wire format (the SDK speaks it; `tests/generation/providers/sora_server.py` serves it):

* submit: ``POST /v1/videos``, a multipart form ``{prompt, model, seconds, size}`` with
  ``size`` in pixels (``"1280x720"``) and an ``Idempotency-Key`` header → ``{"id"}``.
* status: ``GET /v1/videos/{id}`` → ``{"status": queued | in_progress | completed |
  failed, "progress": 0–100, "error"?: {"code", "message"}}``.
* download: ``GET /v1/videos/{id}/content?variant=video``, streamed.
* cancel: there is no cancel endpoint; ``DELETE /v1/videos/{id}`` deletes a finished
  job's video and is refused (409 or another 4xx) while it renders.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, cast

# The installed openai SDK speaks HTTP through httpx2 (a dependency it pins); errors raised
# while a streamed download is being read come from there, not from the SDK.
import httpx2
import openai

from reelflow.core.provider_errors import (
    ProviderError,
    ProviderPermanentError,
    ProviderTransientError,
    classify_openai_error,
)
from reelflow.generation.providers.base import (
    DEFAULT_MAX_DOWNLOAD_BYTES,
    DOWNLOAD_CHUNK_BYTES,
    GenerationJobRequest,
    JobState,
    JobStatus,
    RemoteVideoProvider,
    idempotency_headers,
)
from reelflow.media.validation import frame_size

if TYPE_CHECKING:
    from openai.types import VideoSeconds, VideoSize

_SORA_STATES: Mapping[str, JobState] = MappingProxyType(
    {
        "queued": "queued",
        "in_progress": "running",
        "completed": "succeeded",
        "failed": "failed",
        # Not in the SDK's enum today; mapped so a new state does not read as "running".
        "cancelled": "canceled",
        "canceled": "canceled",
    }
)


class SoraProvider(RemoteVideoProvider):
    """Sora through ``openai``: each method makes exactly one HTTP request.

    The SDK's own retries are switched off on the client this object uses, whatever the
    caller's client says.

    Sora has no cancel endpoint; ``cancel`` deletes the video, which the API allows for
    finished jobs, and reports False when the job cannot be removed.
    """

    provider = "sora"
    wire_errors = (openai.OpenAIError, httpx2.HTTPError)

    def __init__(
        self,
        client: openai.OpenAI,
        model: str | None = None,
        *,
        max_download_bytes: int = DEFAULT_MAX_DOWNLOAD_BYTES,
    ) -> None:
        """Wrap a client.

        Args:
            client: E.g. from `reelflow.core.openai_client.build_openai_client`.
            model: ``sora-2`` (the default) or ``sora-2-pro``.
            max_download_bytes: Abort downloads larger than this.

        Raises:
            UnsupportedRequest: Unknown model.
        """
        super().__init__(model, max_download_bytes=max_download_bytes)
        self._client = client.with_options(max_retries=0)

    def _start_job(self, request: GenerationJobRequest) -> str:
        width, height = frame_size(request.aspect_ratio, request.resolution)
        video = self._client.videos.create(
            prompt=request.prompt,
            model=self.model,
            # The SDK's literals lag the API's values (15 s); the API takes strings.
            seconds=cast("VideoSeconds", str(request.duration_s)),
            size=cast("VideoSize", f"{width}x{height}"),
            # The OpenAI client sends no idempotency header of its own; where the API
            # honours this one a repeated submit returns the first job.
            extra_headers=idempotency_headers(request),
        )
        return video.id

    def status(self, job_id: str) -> JobStatus:
        """Retrieve the job: one ``GET /videos/{id}``.

        Raises:
            ProviderTransientError: Rate limit, server error, timeout, connection failure.
            ProviderPermanentError: Unknown job, bad key, ...
        """
        with self._calling("retrieve video"):
            video = self._client.videos.retrieve(job_id)
        state = self._job_state(job_id, video.status, _SORA_STATES)
        progress = getattr(video, "progress", None)
        error = None
        if state == "failed":
            failure = getattr(video, "error", None)
            if failure is not None:
                error = f"{failure.code}: {failure.message}"
            else:
                error = "the provider reported the job failed without a reason"
        return JobStatus(
            state=state,
            progress=None if progress is None else min(1.0, max(0.0, float(progress) / 100)),
            error=error,
        )

    def download(self, job_id: str, dest: Path) -> Path:
        """Stream the MP4 to `dest` (atomically): one ``GET /videos/{id}/content``.

        Raises:
            ProviderTransientError: Rate limit, server error, dropped connection.
            ProviderPermanentError: Not ready, unknown job, or over `max_download_bytes`.
        """
        with (
            self._calling("download video"),
            self._client.videos.with_streaming_response.download_content(
                job_id, variant="video"
            ) as response,
        ):
            return self._write_video(job_id, dest, response.iter_bytes(DOWNLOAD_CHUNK_BYTES))

    def cancel(self, job_id: str) -> bool:
        """Delete the job's video: one ``DELETE /videos/{id}``.

        Returns:
            True if the API deleted it; False if it refused (e.g. still rendering) or
            does not know the job.

        Raises:
            ProviderTransientError: Rate limit, server error, timeout, connection failure.
        """
        try:
            with self._calling("delete video"):
                deleted = self._client.videos.delete(job_id)
        except ProviderError as error:
            # 409 is a conflict with the job's state (still rendering), not a glitch that
            # a retry fixes soon: the answer is "cannot cancel", like any 4xx refusal.
            if isinstance(error, ProviderPermanentError) or error.status_code == 409:
                return False
            raise
        return bool(deleted.deleted)

    def _classify(self, exc: Exception, what: str) -> ProviderError:
        if isinstance(exc, httpx2.HTTPError):
            # The SDK wraps failures of the request itself; this is a streamed body breaking.
            return ProviderTransientError(
                f"the connection to OpenAI broke during {what}: {exc}", provider="openai"
            )
        error = classify_openai_error(exc)
        if isinstance(error, ProviderError):
            return error
        # classify_openai_error maps every OpenAIError; keep the type honest if it ever doesn't.
        return ProviderPermanentError(f"OpenAI client error: {exc}", provider="openai")
