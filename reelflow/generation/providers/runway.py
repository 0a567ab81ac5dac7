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

Errors: 408, 409, 429 and 5xx are transient (with ``Retry-After``), other 4xx permanent;
the message carries Runway's ``{"error"}`` (or ``{"message"}``) text.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

import httpx

from reelflow.core.provider_errors import (
    TRANSIENT_STATUS,
    ProviderError,
    ProviderPermanentError,
    ProviderTransientError,
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

DEFAULT_RUNWAY_BASE_URL = "https://api.dev.runwayml.com"
RUNWAY_API_VERSION = "2024-11-06"
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


class RunwayProvider(RemoteVideoProvider):
    """Runway through `httpx`: each API method makes exactly one HTTP request.

    The `httpx.Client` should have no retrying transport: Temporal owns retries.
    """

    provider = "runway"
    wire_errors = (httpx.HTTPError,)

    def __init__(
        self,
        http: httpx.Client,
        api_key: str,
        base_url: str = DEFAULT_RUNWAY_BASE_URL,
        model: str | None = None,
        *,
        max_download_bytes: int = DEFAULT_MAX_DOWNLOAD_BYTES,
    ) -> None:
        """Wrap a client.

        Raises:
            UnsupportedRequest: Unknown model.
        """
        super().__init__(model, max_download_bytes=max_download_bytes)
        self._http = http
        self._base_url = base_url.rstrip("/")
        self._headers = {
            "Authorization": f"Bearer {api_key}",
            "X-Runway-Version": RUNWAY_API_VERSION,
        }

    def _start_job(self, request: GenerationJobRequest) -> object:
        """One ``POST /v1/text_to_video``; the task id is the job id."""
        width, height = frame_size(request.aspect_ratio, request.resolution)
        body = {
            "model": self.model,
            "promptText": request.prompt,
            "ratio": f"{width}:{height}",
            "duration": request.duration_s,
        }
        task = self._json(
            "POST",
            "/v1/text_to_video",
            "create task",
            json=body,
            headers=idempotency_headers(request),
        )
        return task.get("id")

    def status(self, job_id: str) -> JobStatus:
        """The task's state: one ``GET /v1/tasks/{id}``.

        Raises:
            ProviderTransientError: Rate limit, server error, timeout, connection failure.
            ProviderPermanentError: Unknown task, bad key, ...
        """
        task = self._task(job_id)
        state = self._job_state(job_id, task.get("status"), _RUNWAY_STATES)
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
        task = self._task(job_id)
        output = task.get("output")
        url = output[0] if isinstance(output, list) and output else None
        if task.get("status") != "SUCCEEDED" or not isinstance(url, str):
            raise ProviderPermanentError(
                f"the Runway task {job_id} has no output (status {task.get('status')!r})",
                provider=self.provider,
            )
        with self._calling("download video"), self._http.stream("GET", url) as response:
            _raise_for_error(response)
            return self._write_video(job_id, dest, response.iter_bytes(DOWNLOAD_CHUNK_BYTES))

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

    def _classify(self, exc: Exception, what: str) -> ProviderError:
        if isinstance(exc, httpx.HTTPStatusError):
            return _status_error(exc.response, what)
        return ProviderTransientError(
            f"connection to Runway failed during {what} ({type(exc).__name__})",
            provider=self.provider,
        )

    # -- HTTP --

    def _task(self, job_id: str) -> dict[str, Any]:
        return self._json("GET", f"/v1/tasks/{job_id}", "get task")

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
                f"Runway sent an unreadable response to {what}", provider=self.provider
            ) from exc
        if not isinstance(data, dict):
            raise ProviderPermanentError(
                f"Runway sent an unexpected response to {what}", provider=self.provider
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
        with self._calling(what):
            response = self._http.request(
                method,
                f"{self._base_url}{path}",
                json=json,
                headers={**self._headers, **(headers or {})},
            )
            _raise_for_error(response)
        return response


def _raise_for_error(response: httpx.Response) -> None:
    """Raise `httpx.HTTPStatusError` on a 4xx or 5xx, with the body read for its message."""
    if response.is_error:
        response.read()
        response.raise_for_status()


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
    if status in TRANSIENT_STATUS or status >= 500:
        return ProviderTransientError(
            message, provider="runway", status_code=status, retry_after_s=_retry_after(response)
        )
    return ProviderPermanentError(message, provider="runway", status_code=status)
