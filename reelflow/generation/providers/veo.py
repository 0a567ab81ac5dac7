"""Google's Veo video models through the official ``google-genai`` SDK.

The installed SDK (google-genai 3.x) generates videos only in its Vertex AI mode
("Gemini Enterprise Agent Platform"): ``models.generate_videos`` and
``operations.get`` raise ``ValueError`` on a Gemini Developer API client. The client
is therefore built with ``vertexai=True`` and an API key (Vertex AI express mode),
and the wire format is Vertex's:

* submit: ``POST /v1beta1/publishers/google/models/{model}:predictLongRunning`` with
  ``{"instances": [{"prompt"}], "parameters": {"sampleCount", "durationSeconds",
  "aspectRatio", "resolution"}}``; the answer's ``name`` (the long-running operation,
  ``projects/…/publishers/google/models/{model}/operations/{id}``) is the job id.
* status: ``POST /v1beta1/{model resource}:fetchPredictOperation`` with
  ``{"operationName": name}``, answered ``{"name", "done", "error"?, "response"?:
  {"videos": [{"bytesBase64Encoded" | "gcsUri", "mimeType"}],
  "raiMediaFilteredCount"?, "raiMediaFilteredReasons"?}}``. The SDK rebuilds the
  operation from its name (`GenerateVideosOperation(name=...)`).
* download: the same fetch once more; without an output bucket (``storageUri``, which
  we never set) Vertex returns the MP4 inline, base64-encoded, and it is written out.
  A ``gs://`` result cannot be read with an API key and fails permanently.
* cancel: the SDK has no way to cancel an operation, so ``cancel`` returns False.
"""

from __future__ import annotations

import logging
from pathlib import Path

import httpx
import httpx2
from google import genai
from google.genai import errors as genai_errors
from google.genai import types as genai_types

from reelflow.core.provider_errors import (
    ProviderError,
    ProviderPermanentError,
    classify_gemini_error,
)
from reelflow.generation.providers.base import (
    DEFAULT_MAX_DOWNLOAD_BYTES,
    GenerationJobRequest,
    JobStatus,
    RemoteVideoProvider,
)

logger = logging.getLogger(__name__)

_TIMEOUT_MS = 60_000


def build_veo_client(api_key: str, base_url: str | None = None) -> genai.Client:
    """A Vertex AI express-mode client (API key) with the SDK's retries off.

    Temporal's retry policy owns retrying; ``HttpRetryOptions(attempts=1)`` counts the
    first try, so the SDK makes exactly one request per call.

    Args:
        api_key: A Google Cloud API key with the Vertex AI API enabled.
        base_url: Another endpoint than ``https://aiplatform.googleapis.com/`` (tests).
    """
    return genai.Client(
        vertexai=True,
        api_key=api_key,
        http_options=genai_types.HttpOptions(
            base_url=base_url,
            timeout=_TIMEOUT_MS,
            retry_options=genai_types.HttpRetryOptions(attempts=1),
        ),
    )


class VeoProvider(RemoteVideoProvider):
    """Veo through ``google-genai``: each method makes exactly one HTTP request.

    Use a client from `build_veo_client` (retries off); a client with retries on would
    repeat requests behind Temporal's back. Vertex takes no idempotency key.
    """

    provider = "veo"
    wire_errors = (
        genai_errors.APIError,
        genai_errors.UnknownApiResponseError,
        httpx.HTTPError,
        httpx2.HTTPError,
    )

    def __init__(
        self,
        client: genai.Client,
        model: str | None = None,
        *,
        max_download_bytes: int = DEFAULT_MAX_DOWNLOAD_BYTES,
    ) -> None:
        """Wrap a client.

        Raises:
            UnsupportedRequest: Unknown model.
        """
        super().__init__(model, max_download_bytes=max_download_bytes)
        self._client = client

    def _start_job(self, request: GenerationJobRequest) -> str | None:
        """One ``predictLongRunning``; the operation's name is the job id."""
        operation = self._client.models.generate_videos(
            model=self.model,
            source=genai_types.GenerateVideosSource(prompt=request.prompt),
            config=genai_types.GenerateVideosConfig(
                aspect_ratio=request.aspect_ratio,
                duration_seconds=request.duration_s,
                resolution=request.resolution,
                number_of_videos=1,
            ),
        )
        return operation.name

    def status(self, job_id: str) -> JobStatus:
        """The operation's state: one ``fetchPredictOperation``.

        Raises:
            ProviderTransientError: Rate limit, server error, timeout, connection failure.
            ProviderPermanentError: Unknown operation, bad key, ...
        """
        operation = self._fetch(job_id, "get operation")
        if not operation.done:
            return JobStatus(state="running")
        failure = _failure(operation)
        if failure is not None:
            return JobStatus(state="failed", error=failure)
        return JobStatus(state="succeeded", progress=1.0)

    def download(self, job_id: str, dest: Path) -> Path:
        """Write the generated MP4 to `dest` (atomically): one ``fetchPredictOperation``.

        Raises:
            ProviderTransientError: Rate limit, server error, dropped connection.
            ProviderPermanentError: Not done, failed, no inline video, or too large.
        """
        operation = self._fetch(job_id, "download video")
        if not operation.done:
            raise ProviderPermanentError(
                f"the Veo operation {job_id} is not done yet", provider=self.provider
            )
        failure = _failure(operation)
        if failure is not None:
            raise ProviderPermanentError(
                f"the Veo operation {job_id} failed: {failure}", provider=self.provider
            )
        video = _first_video(operation)
        data = video.video_bytes if video is not None else None
        if not data:
            where = video.uri if video is not None and video.uri else "nowhere"
            raise ProviderPermanentError(
                f"the Veo operation {job_id} returned no inline video (stored at {where})",
                provider=self.provider,
            )
        return self._write_video(job_id, dest, [data])

    def cancel(self, job_id: str) -> bool:
        """Veo operations cannot be canceled through the SDK: always False, no request."""
        logger.info("veo job %s cannot be canceled; it runs to completion", job_id)
        return False

    def _fetch(self, job_id: str, what: str) -> genai_types.GenerateVideosOperation:
        with self._calling(what):
            return self._client.operations.get(
                # `name` sits on the SDK's non-pydantic `Operation` base, unseen by mypy.
                genai_types.GenerateVideosOperation.model_validate({"name": job_id})
            )

    def _classify(self, exc: Exception, what: str) -> ProviderError:
        error = classify_gemini_error(exc)
        if not isinstance(error, ProviderError):
            error = ProviderPermanentError(f"Veo client error: {exc}", provider=self.provider)
        # The Gemini classifier names "gemini"; the attempt was Veo's.
        error.provider = self.provider
        return error


def _first_video(operation: genai_types.GenerateVideosOperation) -> genai_types.Video | None:
    result = operation.result or operation.response
    videos = result.generated_videos if result is not None else None
    return videos[0].video if videos else None


def _failure(operation: genai_types.GenerateVideosOperation) -> str | None:
    """Why a done operation made no video, or None when it made one."""
    if operation.error:
        code = operation.error.get("code", "?")
        message = operation.error.get("message", "no message")
        return f"{code}: {message}"
    if _first_video(operation) is not None:
        return None
    result = operation.result or operation.response
    reasons = (result.rai_media_filtered_reasons if result is not None else None) or []
    if reasons:
        return "filtered by the provider's safety checks: " + "; ".join(reasons)
    return "the provider reported the job done without a video"
