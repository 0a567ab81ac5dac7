"""Runway's video API over plain HTTP (there is no official Runway SDK installed).

Wire format (Runway's public API, version header ``X-Runway-Version: 2024-11-06``,
``Authorization: Bearer <key>``):

* submit: ``POST /v1/text_to_video`` with ``{"model", "promptText", "ratio", "duration"}``
  → ``{"id": "<task id>"}``. ``ratio`` is Runway's pixel form, ``"1280:720"``.
* status: ``GET /v1/tasks/{id}`` → ``{"id", "status", "progress"?, "failure"?,
  "failureCode"?, "output"?: ["<url>"]}`` with status ``PENDING | THROTTLED | RUNNING |
  SUCCEEDED | FAILED | CANCELLED``.
* cancel: ``DELETE /v1/tasks/{id}`` → 204 (cancels a running task, deletes a finished one).
* download: ``GET`` of the first ``output`` URL with the same HTTP client, without the
  API key (the URL is a signed CDN link, not Runway's API).

Assumptions, not verified against the live API here: that ``/v1/text_to_video`` takes
these fields for ``gen4_turbo`` (Runway documents gen4_turbo under ``/v1/image_to_video``
with a required ``promptImage``; if the live API refuses the model on text-to-video it
answers 400, which surfaces as a permanent error), and that 1080p maps to
``"1920:1080"`` / ``"1080:1920"``. The idempotency key is sent as ``Idempotency-Key``;
Runway may ignore it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

import httpx

from reelflow.core.provider_errors import (
    ProviderError,
    ProviderPermanentError,
    ProviderTransientError,
)
from reelflow.generation.capabilities import (
    DEFAULT_MAX_DOWNLOAD_BYTES,
    GenerationJobRequest,
    JobState,
    JobStatus,
    check_request,
    get_capabilities,
)
from reelflow.media.ffmpeg import atomic_output
from reelflow.media.validation import frame_size

logger = logging.getLogger(__name__)

DEFAULT_RUNWAY_BASE_URL = "https://api.dev.runwayml.com"
DEFAULT_RUNWAY_MODEL = "gen4_turbo"
RUNWAY_API_VERSION = "2024-11-06"
_PROVIDER = "runway"
_TRANSIENT_STATUS = frozenset({408, 409, 429})
_DOWNLOAD_CHUNK = 1024 * 1024

_RUNWAY_STATES: Mapping[str, JobState] = MappingProxyType(
    {
        "PENDING": "queued",
        "THROTTLED": "queued",
        "RUNNING": "running",
        "SUCCEEDED": "succeeded",
        "FAILED": "failed",
        "CANCELLED": "canceled",
    }
)


class RunwayProvider:
    """Runway through `httpx`: each API method makes exactly one HTTP request.

    The `httpx.Client` should have no retrying transport: Temporal owns retries.
    """

    provider = _PROVIDER

    def __init__(
        self,
        http: httpx.Client,
        api_key: str,
        base_url: str = DEFAULT_RUNWAY_BASE_URL,
        model: str = DEFAULT_RUNWAY_MODEL,
        *,
        max_download_bytes: int = DEFAULT_MAX_DOWNLOAD_BYTES,
    ) -> None:
        """Wrap a client.

        Raises:
            UnsupportedRequest: Unknown model.
        """
        self.capabilities = get_capabilities(_PROVIDER, model)
        self.model = model
        self.max_download_bytes = max_download_bytes
        self._http = http
        self._base_url = base_url.rstrip("/")
        self._headers = {
            "Authorization": f"Bearer {api_key}",
            "X-Runway-Version": RUNWAY_API_VERSION,
        }

    def submit(self, request: GenerationJobRequest) -> str:
        """Create a task: one ``POST /v1/text_to_video``; returns the task id.

        Raises:
            UnsupportedRequest: The model cannot make the request (nothing is sent).
            ValueError: Empty prompt.
            ProviderTransientError: Rate limit, server error, timeout, connection failure.
            ProviderPermanentError: The API rejected the request.
        """
        check_request(
            self.capabilities, request.duration_s, request.aspect_ratio, request.resolution
        )
        if not request.prompt.strip():
            raise ValueError("prompt must not be empty")
        width, height = frame_size(request.aspect_ratio, request.resolution)
        body = {
            "model": self.model,
            "promptText": request.prompt,
            "ratio": f"{width}:{height}",
            "duration": request.duration_s,
        }
        data = self._json(
            "POST",
            "/v1/text_to_video",
            "create task",
            json=body,
            headers={"Idempotency-Key": request.idempotency_key},
        )
        task_id = data.get("id")
        if not isinstance(task_id, str) or not task_id:
            raise ProviderPermanentError("Runway answered without a task id", provider=_PROVIDER)
        logger.info("runway job %s submitted (%s)", task_id, self.model)
        return task_id

    def status(self, job_id: str) -> JobStatus:
        """The task's state: one ``GET /v1/tasks/{id}``.

        Raises:
            ProviderTransientError: Rate limit, server error, timeout, connection failure.
            ProviderPermanentError: Unknown task, bad key, ...
        """
        task = self._task(job_id, "get task")
        raw = str(task.get("status"))
        state = _RUNWAY_STATES.get(raw)
        if state is None:
            logger.warning("runway job %s has unknown status %r", job_id, raw)
            state = "running"
        progress = task.get("progress")
        error = None
        if state == "failed":
            reason = task.get("failure") or "the provider reported the job failed"
            code = task.get("failureCode")
            error = f"{code}: {reason}" if code else str(reason)
        return JobStatus(
            state=state,
            progress=(
                min(1.0, max(0.0, float(progress)))
                if isinstance(progress, (int, float)) and not isinstance(progress, bool)
                else (1.0 if state == "succeeded" else None)
            ),
            error=error,
        )

    def download(self, job_id: str, dest: Path) -> Path:
        """Stream the task's first output to `dest` (atomically).

        Two requests: ``GET /v1/tasks/{id}`` for the output URL (it is signed and
        expires, so it is read fresh), then the URL itself, without the API key.

        Raises:
            ProviderTransientError: Rate limit, server error, dropped connection.
            ProviderPermanentError: Not succeeded, no output, or over `max_download_bytes`.
        """
        task = self._task(job_id, "get task")
        output = task.get("output")
        url = output[0] if isinstance(output, list) and output else None
        if task.get("status") != "SUCCEEDED" or not isinstance(url, str):
            raise ProviderPermanentError(
                f"the Runway task {job_id} has no output (status {task.get('status')!r})",
                provider=_PROVIDER,
            )
        written = 0
        with atomic_output(dest) as tmp:
            try:
                with self._http.stream("GET", url) as response, tmp.open("wb") as fh:
                    if response.status_code >= 400:
                        response.read()
                        raise _status_error(response, "download video")
                    for chunk in response.iter_bytes(_DOWNLOAD_CHUNK):
                        written += len(chunk)
                        if written > self.max_download_bytes:
                            raise ProviderPermanentError(
                                f"the video of job {job_id} is larger than "
                                f"{self.max_download_bytes} bytes",
                                provider=_PROVIDER,
                            )
                        fh.write(chunk)
            except httpx.HTTPError as exc:
                raise _transport_error(exc, "download video") from exc
        logger.info("runway job %s downloaded: %d bytes", job_id, written)
        return dest

    def cancel(self, job_id: str) -> bool:
        """Cancel (or delete) the task: one ``DELETE /v1/tasks/{id}``.

        Returns:
            True when Runway accepted it; False when it refused or does not know the task.

        Raises:
            ProviderTransientError: Rate limit, server error, timeout, connection failure.
        """
        try:
            self._request("DELETE", f"/v1/tasks/{job_id}", "cancel task")
        except ProviderPermanentError:
            return False
        return True

    # -- HTTP --

    def _task(self, job_id: str, what: str) -> dict[str, Any]:
        return self._json("GET", f"/v1/tasks/{job_id}", what)

    def _json(
        self,
        method: str,
        path: str,
        what: str,
        *,
        json: Mapping[str, object] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        response = self._request(method, path, what, json=json, headers=headers)
        try:
            data = response.json()
        except ValueError as exc:
            raise ProviderPermanentError(
                f"Runway sent an unreadable response to {what}", provider=_PROVIDER
            ) from exc
        if not isinstance(data, dict):
            raise ProviderPermanentError(
                f"Runway sent an unexpected response to {what}", provider=_PROVIDER
            )
        return data

    def _request(
        self,
        method: str,
        path: str,
        what: str,
        *,
        json: Mapping[str, object] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        try:
            response = self._http.request(
                method,
                f"{self._base_url}{path}",
                json=json,
                headers={**self._headers, **(headers or {})},
            )
        except httpx.HTTPError as exc:
            raise _transport_error(exc, what) from exc
        if response.status_code >= 400:
            raise _status_error(response, what)
        return response


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # an HTTP date: the caller's backoff is good enough


def _status_error(response: httpx.Response, what: str) -> ProviderError:
    status = response.status_code
    detail = ""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        detail = str(body.get("error") or body.get("message") or "")
    message = f"Runway returned HTTP {status} to {what}" + (f": {detail}" if detail else "")
    error: ProviderError
    if status in _TRANSIENT_STATUS or status >= 500:
        error = ProviderTransientError(
            message, provider=_PROVIDER, status_code=status, retry_after_s=_retry_after(response)
        )
    else:
        error = ProviderPermanentError(message, provider=_PROVIDER, status_code=status)
    logger.warning("runway %s failed: %s (status %s)", what, type(error).__name__, status)
    return error


def _transport_error(exc: httpx.HTTPError, what: str) -> ProviderTransientError:
    logger.warning("runway %s failed: %s", what, type(exc).__name__)
    return ProviderTransientError(
        f"connection to Runway failed during {what} ({type(exc).__name__})", provider=_PROVIDER
    )
