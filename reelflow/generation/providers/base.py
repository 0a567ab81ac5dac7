"""What every video provider is, and the one submit path the remote ones share.

* `VideoProvider` is the shape every asynchronous video API shares: submit a job, poll
  its status, download the result, cancel. Methods block; they run in sync activities
  on a thread pool. `GenerationJobRequest` and `JobStatus` are what goes in and out.
* `RemoteVideoProvider` is the template of a paid API (Sora, Veo, Runway). Its `submit`
  checks the request against the model's capabilities and requires a prompt before
  anything is sent, makes the provider's one call, turns the SDK's failure into a
  `ProviderTransientError` (with the server's Retry-After) or a
  `ProviderPermanentError`, and insists on a job id. A subclass supplies only its wire:
  the call that starts a job (`_start_job`, sending `idempotency_headers` where the API
  takes them), which exceptions its SDK raises and how they classify (`wire_errors`,
  `_classify`), and status, download and cancel, which use the same classification
  (`_calling`), state mapping (`_job_state`) and size-limited download (`_write_video`).

The local renderer (`reelflow.generation.providers.local`) is a `VideoProvider` too, but
no remote API: it keeps its jobs on disk and shares only `check_job_request`.
"""

from __future__ import annotations

import contextlib
import logging
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal, Protocol

from reelflow.core.cancellation import raise_if_cancelled
from reelflow.core.provider_errors import ProviderError, ProviderPermanentError
from reelflow.generation.capabilities import ModelCapabilities, check_request, get_capabilities
from reelflow.media.ffmpeg import atomic_output

logger = logging.getLogger(__name__)

JobState = Literal["queued", "running", "succeeded", "failed", "canceled"]
TERMINAL_STATES: frozenset[JobState] = frozenset({"succeeded", "failed", "canceled"})

DEFAULT_MAX_DOWNLOAD_BYTES = 500 * 1024 * 1024
DOWNLOAD_CHUNK_BYTES = 1024 * 1024


@dataclass(frozen=True)
class GenerationJobRequest:
    """One job for a provider.

    Attributes:
        prompt: What the video shows.
        duration_s: Length in whole seconds.
        aspect_ratio: E.g. ``"9:16"``.
        resolution: E.g. ``"720p"``.
        idempotency_key: Stable for the logical job (e.g. generation id + attempt):
            providers that honour it return the same job for the same key.
    """

    prompt: str
    duration_s: int
    aspect_ratio: str
    resolution: str
    idempotency_key: str


@dataclass(frozen=True)
class JobStatus:
    """A provider job's state.

    Attributes:
        state: ``queued``, ``running``, ``succeeded``, ``failed`` or ``canceled``.
        progress: 0.0–1.0 when the provider reports it.
        error: Why the job failed, when it did.
    """

    state: JobState
    progress: float | None = None
    error: str | None = None

    @property
    def terminal(self) -> bool:
        """Whether the job will not change state any more."""
        return self.state in TERMINAL_STATES


class VideoProvider(Protocol):
    """An asynchronous video generation API. Methods block; they are thread-safe.

    Failures raise `ProviderTransientError` (retry later) or `ProviderPermanentError`
    (do not retry); requests the model cannot make raise `UnsupportedRequest` before any
    call is made.
    """

    @property
    def capabilities(self) -> ModelCapabilities:
        """What this provider model accepts and charges."""
        ...

    def submit(self, request: GenerationJobRequest) -> str:
        """Start a job; returns the provider's job id."""
        ...

    def status(self, job_id: str) -> JobStatus:
        """The job's current state."""
        ...

    def download(self, job_id: str, dest: Path) -> Path:
        """Write a succeeded job's video to `dest` (atomically); returns `dest`."""
        ...

    def cancel(self, job_id: str) -> bool:
        """Stop the job if the provider can; True when it is (or already was) canceled."""
        ...


def check_job_request(capabilities: ModelCapabilities, request: GenerationJobRequest) -> None:
    """Refuse, before anything is sent, what the model cannot make or a blank prompt.

    Raises:
        UnsupportedRequest: A field the model does not accept (the message names the
            allowed values).
        ValueError: Empty prompt.
    """
    check_request(capabilities, request.duration_s, request.aspect_ratio, request.resolution)
    if not request.prompt.strip():
        raise ValueError("prompt must not be empty")


def idempotency_headers(request: GenerationJobRequest) -> dict[str, str]:
    """The header by which an API that honours it returns the first job for a repeated key."""
    return {"Idempotency-Key": request.idempotency_key}


class RemoteVideoProvider(ABC):
    """A paid video API: one HTTP request per method call, failures classified.

    The SDK or HTTP client a subclass wraps must not retry: Temporal's retry policy owns
    retrying (and shows each attempt in the workflow history), so a failure surfaces at
    once as a `ProviderError` carrying the server's Retry-After.

    Subclasses set `provider` and `wire_errors` and implement `_start_job`, `_classify`,
    `status`, `download` and `cancel`.
    """

    provider: ClassVar[str]
    """The provider's name in the capability table, e.g. ``"sora"``."""
    wire_errors: ClassVar[tuple[type[Exception], ...]]
    """What the SDK or HTTP client raises when a call fails; anything else is a bug."""

    def __init__(
        self, model: str | None = None, *, max_download_bytes: int = DEFAULT_MAX_DOWNLOAD_BYTES
    ) -> None:
        """Look up the model's capabilities (default: the provider's default model).

        Raises:
            UnsupportedRequest: Unknown model.
        """
        self.capabilities = get_capabilities(self.provider, model)
        self.model = self.capabilities.model
        self.max_download_bytes = max_download_bytes

    def submit(self, request: GenerationJobRequest) -> str:
        """Start a job with one request; returns the provider's job id.

        Raises:
            UnsupportedRequest: The model cannot make the request (nothing is sent).
            ValueError: Empty prompt (nothing is sent).
            ProviderTransientError: Rate limit, server error, timeout, connection failure.
            ProviderPermanentError: The API rejected the request, or named no job.
        """
        check_job_request(self.capabilities, request)
        with self._calling("submit"):
            job_id = self._start_job(request)
        if not isinstance(job_id, str) or not job_id:
            raise ProviderPermanentError(
                f"{self.provider} accepted the request but named no job", provider=self.provider
            )
        logger.info("%s job %s submitted (%s)", self.provider, job_id, self.model)
        return job_id

    @abstractmethod
    def _start_job(self, request: GenerationJobRequest) -> object:
        """Send the one request that starts a job; return the job id the API named.

        The request is already checked. Return what the API sent (the template refuses
        anything but a non-empty string); let the SDK's exceptions propagate.
        """

    @abstractmethod
    def _classify(self, exc: Exception, what: str) -> ProviderError:
        """Turn one of `wire_errors`, raised during `what`, into a transient or permanent error."""

    @abstractmethod
    def status(self, job_id: str) -> JobStatus: ...

    @abstractmethod
    def download(self, job_id: str, dest: Path) -> Path: ...

    @abstractmethod
    def cancel(self, job_id: str) -> bool: ...

    @contextlib.contextmanager
    def _calling(self, what: str) -> Iterator[None]:
        """Raise the SDK's failures inside the block as classified `ProviderError`s."""
        try:
            yield
        except self.wire_errors as exc:
            error = self._classify(exc, what)
            logger.warning(
                "%s %s failed: %s (status %s)",
                self.provider,
                what,
                type(error).__name__,
                error.status_code,
            )
            raise error from exc

    def _job_state(self, job_id: str, raw: object, states: Mapping[str, JobState]) -> JobState:
        """The API's state word in our vocabulary; an unknown word reads as still running."""
        state = states.get(str(raw))
        if state is None:
            logger.warning("%s job %s has unknown status %r", self.provider, job_id, raw)
            return "running"
        return state

    def _write_video(self, job_id: str, dest: Path, chunks: Iterable[bytes]) -> Path:
        """Write `chunks` to `dest` atomically, refusing more than `max_download_bytes`.

        Raises:
            ProviderPermanentError: Over the limit; nothing is left at `dest`.
        """
        written = 0
        with atomic_output(dest) as tmp, tmp.open("wb") as fh:
            for chunk in chunks:
                raise_if_cancelled()  # a canceled download activity stops between chunks
                written += len(chunk)
                if written > self.max_download_bytes:
                    raise ProviderPermanentError(
                        f"the video of job {job_id} is larger than {self.max_download_bytes} bytes",
                        provider=self.provider,
                    )
                fh.write(chunk)
        logger.info("%s job %s downloaded: %d bytes", self.provider, job_id, written)
        return dest
