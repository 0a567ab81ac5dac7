"""Video generation providers: what each can make, what it costs, and how to drive it.

Three parts, used by the generation workflow's activities:

* **Capabilities and prices.** `ModelCapabilities` states, per provider and model, the
  durations, aspect ratios and resolutions it accepts and its price per second at each
  resolution. `check_request` rejects what a model cannot make *before* anything is sent
  (no provider charge for input we could have rejected), `estimate_cost` prices a
  request, and `route_auto` orders the models that can serve a request by quality tier,
  then price (seed 003).
* **The provider interface.** `VideoProvider` is the shape every asynchronous video API
  shares: submit a job, poll its status, download the result, cancel. Methods block;
  they run in sync activities on a thread pool.
* **Implementations.** `LocalRenderer` renders with ffmpeg and behaves like a remote
  provider (job ids, state on disk, latency and injectable faults for tests);
  `SoraProvider` drives OpenAI's video API through the official ``openai`` SDK.
  Veo (`reelflow/veo.py`, google-genai) and Runway (`reelflow/runway.py`, its HTTP API)
  live in their own modules.

Prices (seed 003 gives per-video and per-second ranges, seed 001 "duration × resolution
multiplier"):

* Sora, premium: $1.50–$7.50 a video → sora-2 $0.10/s at 720p (15 s = $1.50);
  sora-2-pro $0.30/s at 720p and $0.50/s at 1080p (15 s = $7.50).
* Veo, mid tier: $0.20–$0.80 a video → $0.05/s at 720p (4 s = $0.20), $0.10/s at 1080p
  (8 s = $0.80).
* Runway, economy: $0.05–$0.30 per second → $0.05/s at 720p, $0.30/s at 1080p.
* local: $0 (compute seconds are recorded by the ledger instead).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import random
import shutil
import subprocess
import tempfile
import textwrap
import threading
import time
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal, Protocol, cast, get_args

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
from reelflow.media.ffmpeg import MediaToolError, atomic_output, require_tool, stderr_tail
from reelflow.media.validation import ASPECT_RATIOS, frame_size

if TYPE_CHECKING:
    from openai.types import VideoSeconds, VideoSize

logger = logging.getLogger(__name__)

# --- Capabilities and prices -------------------------------------------------------------

QUALITY_LOCAL = 0
QUALITY_ECONOMY = 1
QUALITY_MID = 2
QUALITY_PREMIUM = 3
"""Quality tiers from seed 003: higher is better; `route_auto` tries the best first."""

_COST_QUANTUM = Decimal("0.00000001")
"""Costs carry 8 decimals, like the ledger's dollar column."""


@dataclass(frozen=True)
class ModelCapabilities:
    """What one provider model accepts and what it charges.

    Attributes:
        provider: ``"sora"``, ``"veo"``, ``"runway"`` or ``"local"``.
        model: The provider's model id, e.g. ``"sora-2"``.
        durations_s: Accepted durations in whole seconds, ascending.
        aspect_ratios: Accepted aspect ratios, e.g. ``("16:9", "9:16")``.
        resolutions: Accepted resolutions, e.g. ``("720p", "1080p")``.
        price_per_second_usd: Dollars per generated second, by resolution; every
            resolution has a price.
        quality_tier: One of the ``QUALITY_*`` constants; higher is better.
    """

    provider: str
    model: str
    durations_s: tuple[int, ...]
    aspect_ratios: tuple[str, ...]
    resolutions: tuple[str, ...]
    # Left out of the hash (a mapping is unhashable) but compared for equality.
    price_per_second_usd: Mapping[str, Decimal] = field(hash=False)
    quality_tier: int

    def __post_init__(self) -> None:
        # The registry is code; a typo in it should fail at import, not mid-generation.
        if not self.durations_s or list(self.durations_s) != sorted(set(self.durations_s)):
            raise ValueError(f"{self.key}: durations must be distinct and ascending")
        if self.durations_s[0] < 1:
            raise ValueError(f"{self.key}: durations must be positive")
        if not self.aspect_ratios or not self.resolutions:
            raise ValueError(f"{self.key}: needs at least one aspect ratio and resolution")
        if set(self.price_per_second_usd) != set(self.resolutions):
            raise ValueError(f"{self.key}: needs exactly one price per resolution")
        if any(price < 0 for price in self.price_per_second_usd.values()):
            raise ValueError(f"{self.key}: prices must not be negative")
        for aspect_ratio in self.aspect_ratios:
            for resolution in self.resolutions:
                frame_size(aspect_ratio, resolution)  # raises on a malformed value
        object.__setattr__(
            self, "price_per_second_usd", MappingProxyType(dict(self.price_per_second_usd))
        )

    @property
    def key(self) -> str:
        """``"provider/model"``, e.g. ``"sora/sora-2"``."""
        return f"{self.provider}/{self.model}"


class UnsupportedRequest(ValueError):
    """A request asks for something a provider or model cannot make.

    Permanent: the same request fails the same way; the API answers 422.

    Attributes:
        field: The request field, e.g. ``"duration_s"``, ``"resolution"``, ``"provider"``.
        value: The rejected value.
        allowed: The values that field accepts.
        subject: Who rejects it, e.g. ``"sora/sora-2"``; empty for the registry itself.
        message: A sentence naming the allowed values.
    """

    code = "unsupported_request"

    def __init__(
        self, field: str, value: object, allowed: Sequence[object], subject: str = ""
    ) -> None:
        # Everything goes into args so the exception pickles (Temporal failure
        # conversion, process pools) with its fields intact.
        super().__init__(field, value, tuple(allowed), subject)
        self.field = field
        self.value = value
        self.allowed = tuple(allowed)
        self.subject = subject
        where = f" by {subject}" if subject else ""
        self.message = (
            f"{field} {value!r} is not supported{where}; allowed: {describe_allowed(self.allowed)}"
        )

    def __str__(self) -> str:
        return self.message


class NoRouteAvailable(ValueError):
    """No candidate model can serve a request within the cost limit.

    Attributes:
        reasons: Why each candidate was left out, one sentence each.
    """

    code = "no_provider_available"

    def __init__(self, reasons: Sequence[str]) -> None:
        super().__init__(tuple(reasons))
        self.reasons = tuple(reasons)

    def __str__(self) -> str:
        if not self.reasons:
            return "no provider is available"
        return "no provider can make this video: " + "; ".join(self.reasons)


def describe_allowed(values: Sequence[object]) -> str:
    """Allowed values for a message: ``"4, 8, 12, 15"``; consecutive integers as ``"1–60"``."""
    if values and all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        numbers = sorted(cast("Sequence[int]", values))
        runs: list[str] = []
        start = prev = numbers[0]
        for n in [*numbers[1:], None]:
            if n is not None and n == prev + 1:
                prev = n
                continue
            # Three or more in a row read better as a range.
            runs.append(
                f"{start}–{prev}"
                if prev - start >= 2
                else ", ".join(str(i) for i in range(start, prev + 1))
            )
            if n is not None:
                start = prev = n
        return ", ".join(runs)
    return ", ".join(str(v) for v in values)


_REGISTRY: tuple[ModelCapabilities, ...] = (
    ModelCapabilities(
        provider="sora",
        model="sora-2",
        durations_s=(4, 8, 12, 15),
        aspect_ratios=ASPECT_RATIOS,
        resolutions=("720p",),
        price_per_second_usd={"720p": Decimal("0.10")},
        quality_tier=QUALITY_PREMIUM,
    ),
    ModelCapabilities(
        provider="sora",
        model="sora-2-pro",
        durations_s=(4, 8, 12, 15),
        aspect_ratios=ASPECT_RATIOS,
        resolutions=("720p", "1080p"),
        price_per_second_usd={"720p": Decimal("0.30"), "1080p": Decimal("0.50")},
        quality_tier=QUALITY_PREMIUM,
    ),
    ModelCapabilities(
        provider="veo",
        model="veo-3.0-generate-001",
        durations_s=(4, 6, 8),
        aspect_ratios=("16:9", "9:16"),
        resolutions=("720p", "1080p"),
        price_per_second_usd={"720p": Decimal("0.05"), "1080p": Decimal("0.10")},
        quality_tier=QUALITY_MID,
    ),
    ModelCapabilities(
        provider="runway",
        model="gen4_turbo",
        durations_s=(5, 10),
        aspect_ratios=("16:9", "9:16"),
        resolutions=("720p", "1080p"),
        price_per_second_usd={"720p": Decimal("0.05"), "1080p": Decimal("0.30")},
        quality_tier=QUALITY_ECONOMY,
    ),
    ModelCapabilities(
        provider="local",
        model="ffmpeg",
        durations_s=tuple(range(1, 61)),
        aspect_ratios=ASPECT_RATIOS,
        resolutions=("480p", "720p", "1080p"),
        price_per_second_usd={"480p": Decimal(0), "720p": Decimal(0), "1080p": Decimal(0)},
        quality_tier=QUALITY_LOCAL,
    ),
)

CAPABILITIES: Mapping[tuple[str, str], ModelCapabilities] = MappingProxyType(
    {(caps.provider, caps.model): caps for caps in _REGISTRY}
)
"""Every known model, by ``(provider, model)``."""

PROVIDERS: tuple[str, ...] = tuple(dict.fromkeys(caps.provider for caps in _REGISTRY))
"""Provider names, best quality first."""

DEFAULT_MODELS: Mapping[str, str] = MappingProxyType(
    {"sora": "sora-2", "veo": "veo-3.0-generate-001", "runway": "gen4_turbo", "local": "ffmpeg"}
)


def provider_models(provider: str) -> tuple[ModelCapabilities, ...]:
    """All models of `provider`.

    Raises:
        UnsupportedRequest: Unknown provider (the message names the known ones).
    """
    models = tuple(caps for caps in _REGISTRY if caps.provider == provider)
    if not models:
        raise UnsupportedRequest("provider", provider, PROVIDERS)
    return models


def get_capabilities(provider: str, model: str | None = None) -> ModelCapabilities:
    """The capabilities of `model` (default: the provider's default model).

    Raises:
        UnsupportedRequest: Unknown provider or model.
    """
    models = provider_models(provider)
    wanted = model if model is not None else DEFAULT_MODELS[provider]
    for caps in models:
        if caps.model == wanted:
            return caps
    raise UnsupportedRequest("model", wanted, [caps.model for caps in models], provider)


def check_request(
    caps: ModelCapabilities, duration_s: int, aspect_ratio: str, resolution: str
) -> None:
    """Reject a request the model cannot make, naming the allowed values.

    Raises:
        UnsupportedRequest: On the first field that does not fit (duration, then aspect
            ratio, then resolution).
    """
    if isinstance(duration_s, bool) or not isinstance(duration_s, int):
        raise UnsupportedRequest("duration_s", duration_s, caps.durations_s, caps.key)
    if duration_s not in caps.durations_s:
        raise UnsupportedRequest("duration_s", duration_s, caps.durations_s, caps.key)
    if aspect_ratio not in caps.aspect_ratios:
        raise UnsupportedRequest("aspect_ratio", aspect_ratio, caps.aspect_ratios, caps.key)
    if resolution not in caps.resolutions:
        raise UnsupportedRequest("resolution", resolution, caps.resolutions, caps.key)


def estimate_cost(caps: ModelCapabilities, duration_s: int, resolution: str) -> Decimal:
    """Dollars for `duration_s` seconds at `resolution`: seconds × price per second.

    Raises:
        UnsupportedRequest: The model does not make that duration or resolution.
    """
    if isinstance(duration_s, bool) or not isinstance(duration_s, int):
        raise UnsupportedRequest("duration_s", duration_s, caps.durations_s, caps.key)
    if duration_s not in caps.durations_s:
        raise UnsupportedRequest("duration_s", duration_s, caps.durations_s, caps.key)
    if resolution not in caps.price_per_second_usd:
        raise UnsupportedRequest("resolution", resolution, caps.resolutions, caps.key)
    return (caps.price_per_second_usd[resolution] * duration_s).quantize(_COST_QUANTUM)


class VideoSpec(Protocol):
    """Anything that says what video to make (a job request, an API input, ...)."""

    @property
    def duration_s(self) -> int: ...

    @property
    def aspect_ratio(self) -> str: ...

    @property
    def resolution(self) -> str: ...


@dataclass(frozen=True)
class RouteOption:
    """A model that can serve a request, and what it would cost."""

    capabilities: ModelCapabilities
    estimated_cost_usd: Decimal


def route_auto(
    candidates: Iterable[ModelCapabilities],
    request: VideoSpec,
    max_cost: Decimal | None = None,
) -> list[RouteOption]:
    """The candidates that can serve `request`, best first: the first choice and fallbacks.

    Order (seed 003): highest quality tier first; within a tier the cheapest first; ties
    by provider and model name so the order never depends on the input order.

    Args:
        candidates: Models to consider, e.g. those with credentials configured.
        request: What to make.
        max_cost: Leave out models whose estimate is above this many dollars.

    Returns:
        At least one option.

    Raises:
        NoRouteAvailable: No candidate fits; the message says why for each.
        ValueError: `max_cost` is negative.
    """
    if max_cost is not None and max_cost < 0:
        raise ValueError("max_cost must not be negative")
    options: list[RouteOption] = []
    reasons: list[str] = []
    for caps in candidates:
        try:
            check_request(caps, request.duration_s, request.aspect_ratio, request.resolution)
        except UnsupportedRequest as exc:
            reasons.append(exc.message)
            continue
        cost = estimate_cost(caps, request.duration_s, request.resolution)
        if max_cost is not None and cost > max_cost:
            reasons.append(f"{caps.key} would cost ${cost.normalize():f}, over ${max_cost:f}")
            continue
        options.append(RouteOption(caps, cost))
    if not options:
        raise NoRouteAvailable(reasons)
    options.sort(
        key=lambda o: (
            -o.capabilities.quality_tier,
            o.estimated_cost_usd,
            o.capabilities.provider,
            o.capabilities.model,
        )
    )
    return options


def select_model(provider: str, request: VideoSpec) -> ModelCapabilities:
    """The cheapest model of `provider` that can make `request` (best quality on a tie).

    The API takes a provider, not a model: ``"sora"`` at 1080p means sora-2-pro.

    Raises:
        UnsupportedRequest: Unknown provider, or a field no model of the provider accepts
            (the allowed values are those of all its models together).
    """
    models = provider_models(provider)
    durations = sorted({d for caps in models for d in caps.durations_s})
    aspects = list(dict.fromkeys(a for caps in models for a in caps.aspect_ratios))
    resolutions = list(dict.fromkeys(r for caps in models for r in caps.resolutions))
    if isinstance(request.duration_s, bool) or request.duration_s not in durations:
        raise UnsupportedRequest("duration_s", request.duration_s, durations, provider)
    if request.aspect_ratio not in aspects:
        raise UnsupportedRequest("aspect_ratio", request.aspect_ratio, aspects, provider)
    if request.resolution not in resolutions:
        raise UnsupportedRequest("resolution", request.resolution, resolutions, provider)
    fitting = [
        caps
        for caps in models
        if request.duration_s in caps.durations_s
        and request.aspect_ratio in caps.aspect_ratios
        and request.resolution in caps.resolutions
    ]
    if not fitting:
        # Each value exists somewhere, but not together: name what goes with the rest.
        usable = [
            r
            for caps in models
            if request.duration_s in caps.durations_s and request.aspect_ratio in caps.aspect_ratios
            for r in caps.resolutions
        ]
        raise UnsupportedRequest(
            "resolution", request.resolution, list(dict.fromkeys(usable)), provider
        )
    return min(
        fitting,
        key=lambda caps: (
            estimate_cost(caps, request.duration_s, request.resolution),
            -caps.quality_tier,
        ),
    )


# --- Provider interface -------------------------------------------------------------------

JobState = Literal["queued", "running", "succeeded", "failed", "canceled"]
JOB_STATES: tuple[JobState, ...] = get_args(JobState)
TERMINAL_STATES: frozenset[JobState] = frozenset({"succeeded", "failed", "canceled"})


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


def _require_prompt(prompt: str) -> None:
    if not prompt.strip():
        raise ValueError("prompt must not be empty")


# --- Local renderer -----------------------------------------------------------------------


@dataclass(frozen=True)
class LocalRendererFaults:
    """Ways to make the local renderer misbehave, for tests of validation and fallback.

    Faults are stored with each job at submit time, so a job behaves the same whichever
    renderer object (or process) finishes it.

    Attributes:
        extra_latency_s: The job stays in progress this long before rendering starts.
        black_frames: Render a black picture (no text), keeping the sound.
        drop_audio: Render without an audio track.
        wrong_duration_s: Render this many seconds instead of the requested duration.
        job_failed: The job ends ``failed`` without rendering.
        empty_output: The job succeeds with a 0-byte file.
        html_error_page: The job succeeds with an HTML error page instead of a video.
        random_bytes: The job succeeds with 64 KiB of random bytes.
    """

    extra_latency_s: float = 0.0
    black_frames: bool = False
    drop_audio: bool = False
    wrong_duration_s: float | None = None
    job_failed: bool = False
    empty_output: bool = False
    html_error_page: bool = False
    random_bytes: bool = False

    def __post_init__(self) -> None:
        if self.extra_latency_s < 0:
            raise ValueError("extra_latency_s must not be negative")
        if self.wrong_duration_s is not None and not self.wrong_duration_s > 0:
            raise ValueError("wrong_duration_s must be positive")


_HTML_ERROR_PAGE = """<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title>502 Bad Gateway</title></head>
<body><h1>502 Bad Gateway</h1><p>The upstream render service did not answer.</p></body>
</html>
"""

_RANDOM_BYTES = 64 * 1024
_RENDER_BACKGROUND = "c0=0x1d3557:c1=0x457b9d:c2=0xe63946:c3=0xa8dadc:nb_colors=4"
"""Gradient colours, none of them near black, so blackdetect sees a real picture."""
_TONE_HZ = 220
_MAX_DRAWN_CHARS = 280
_LATENCY_POLL_S = 0.05
_EVENTS_FILE = "events.jsonl"


@dataclass
class _JobRecord:
    """A local job as stored in ``<job_id>.json``."""

    job_id: str
    idempotency_key: str
    request: dict[str, Any]
    faults: dict[str, Any]
    state: JobState
    created_at: float
    ready_at: float
    render_started_at: float | None = None
    finished_at: float | None = None
    error: str | None = None

    @classmethod
    def from_json(cls, text: str) -> _JobRecord:
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError("job record is not a JSON object")
        return cls(**data)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @property
    def job_request(self) -> GenerationJobRequest:
        return GenerationJobRequest(**self.request)

    @property
    def job_faults(self) -> LocalRendererFaults:
        return LocalRendererFaults(**self.faults)


class LocalRenderer:
    """An ffmpeg renderer that behaves like an asynchronous video provider.

    ``submit`` stores a job record under `jobs_dir` and starts rendering on a background
    thread; ``status`` reports it and, if no thread or process is rendering an unfinished
    job (the worker that submitted it died), starts rendering it again. All state is on
    disk, keyed by job id, so a renderer re-created on the same directory (another
    worker, after a crash) sees every job. The job id is derived from the idempotency
    key: the same key never makes a second job.

    The video shows the prompt (drawn from a text file, never spliced into the filter
    graph) over a moving gradient, with a sine tone, as H.264/AAC MP4 with the index
    first. Cross-process exclusion uses ``flock``, so `jobs_dir` must be on a local
    filesystem.
    """

    provider = "local"

    def __init__(
        self,
        jobs_dir: Path,
        *,
        faults: LocalRendererFaults | None = None,
        fps: int = 24,
        start_on_submit: bool = True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """Open (and create) the jobs directory.

        Args:
            jobs_dir: Where job records and outputs live; share it between renderers.
            faults: Misbehaviour for jobs submitted through this object.
            fps: Frame rate of rendered videos.
            start_on_submit: Start rendering in ``submit``. False leaves the job queued
                until the first ``status`` call, as if the submitting worker had died.
            clock: Seconds since the epoch; injectable so latency can be simulated.
        """
        if fps < 1:
            raise ValueError("fps must be at least 1")
        self.jobs_dir = jobs_dir.resolve()
        self.jobs_dir.mkdir(parents=True, exist_ok=True)
        self.faults = faults or LocalRendererFaults()
        self.fps = fps
        self.start_on_submit = start_on_submit
        self._clock = clock
        self.capabilities = get_capabilities("local")

    # -- interface --

    def submit(self, request: GenerationJobRequest) -> str:
        """Create the job for `request.idempotency_key` (once) and start rendering it.

        Raises:
            UnsupportedRequest: The request is outside the local capabilities.
            ValueError: Empty prompt or idempotency key.
            ProviderPermanentError: The key was already used for a different request.
        """
        check_request(
            self.capabilities, request.duration_s, request.aspect_ratio, request.resolution
        )
        _require_prompt(request.prompt)
        if not request.idempotency_key:
            raise ValueError("idempotency_key must not be empty")
        job_id = self.job_id_for(request.idempotency_key)
        self._log_event("submit", request.idempotency_key, job_id)
        now = self._clock()
        record = _JobRecord(
            job_id=job_id,
            idempotency_key=request.idempotency_key,
            request=asdict(request),
            faults=asdict(self.faults),
            state="queued",
            created_at=now,
            ready_at=now + self.faults.extra_latency_s,
        )
        if self._create_record(record):
            self._log_event("create", request.idempotency_key, job_id)
            logger.info("local job %s created for key %s", job_id, request.idempotency_key)
        else:
            existing = self._read(job_id)
            if existing.request != asdict(request):
                raise ProviderPermanentError(
                    f"idempotency key {request.idempotency_key!r} was already used for a "
                    "different request",
                    provider="local",
                    status_code=409,
                )
            if existing.state in TERMINAL_STATES:
                return job_id
        if self.start_on_submit:
            self._ensure_rendering(job_id)
        return job_id

    def status(self, job_id: str) -> JobStatus:
        """The job's state; resumes rendering of an unfinished job nobody is rendering.

        Raises:
            ProviderPermanentError: No such job.
        """
        record = self._read(job_id)
        if record.state not in TERMINAL_STATES:
            self._ensure_rendering(job_id)
            record = self._read(job_id)
        return JobStatus(state=record.state, progress=self._progress(record), error=record.error)

    def download(self, job_id: str, dest: Path) -> Path:
        """Copy a succeeded job's output to `dest` (atomically).

        Raises:
            ProviderPermanentError: No such job, or it has not succeeded.
        """
        record = self._read(job_id)
        if record.state != "succeeded":
            raise ProviderPermanentError(
                f"job {job_id} is {record.state}; only a succeeded job can be downloaded",
                provider="local",
                status_code=409,
            )
        with atomic_output(dest) as tmp:
            shutil.copyfile(self._output_path(job_id), tmp)
        return dest

    def cancel(self, job_id: str) -> bool:
        """Cancel a queued or running job; False if it already succeeded or failed.

        An unknown job id also gives False: there is nothing to stop.
        """
        try:
            if not self._record_path(job_id).exists():
                return False
        except ProviderPermanentError:
            return False

        def to_canceled(record: _JobRecord) -> None:
            if record.state not in TERMINAL_STATES:
                record.state = "canceled"
                record.finished_at = self._clock()

        record = self._update(job_id, to_canceled)
        return record.state == "canceled"

    # -- inspection for tests and demos --

    @staticmethod
    def job_id_for(idempotency_key: str) -> str:
        """The job id a key maps to (a hash, so any key is a safe file name)."""
        digest = hashlib.sha256(idempotency_key.encode("utf-8")).hexdigest()
        return f"local_{digest[:32]}"

    def submit_count(self, idempotency_key: str) -> int:
        """How many times ``submit`` was called with this key, by any renderer object."""
        return self._count("submit", idempotency_key)

    def jobs_created(self, idempotency_key: str) -> int:
        """How many jobs were created for this key (never more than one)."""
        return self._count("create", idempotency_key)

    def renders_started(self, idempotency_key: str) -> int:
        """How many times rendering started for this key's job (more after a crash)."""
        return self._count("render", idempotency_key)

    def wait(self, job_id: str, *, timeout_s: float = 60.0, poll_s: float = 0.05) -> JobStatus:
        """Poll until the job is terminal (a convenience for tests and the demo).

        Raises:
            TimeoutError: Still unfinished after `timeout_s` (real) seconds.
        """
        deadline = time.monotonic() + timeout_s
        while True:
            status = self.status(job_id)
            if status.terminal:
                return status
            if time.monotonic() >= deadline:
                raise TimeoutError(f"local job {job_id} is still {status.state}")
            time.sleep(poll_s)

    # -- storage --

    def _record_path(self, job_id: str) -> Path:
        if not job_id.startswith("local_") or not job_id[6:].isalnum():
            # Job ids come back from workflow state; never let one name another file.
            raise ProviderPermanentError(
                f"no such job: {job_id!r}", provider="local", status_code=404
            )
        return self.jobs_dir / f"{job_id}.json"

    def _output_path(self, job_id: str) -> Path:
        return self.jobs_dir / f"{job_id}.out"

    def _create_record(self, record: _JobRecord) -> bool:
        """Write the record if the job does not exist yet; False if it already does."""
        path = self._record_path(record.job_id)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.new")
        tmp.write_text(record.to_json(), encoding="utf-8")
        try:
            # link() fails if the name exists: an atomic create-if-absent of a complete
            # file, even between processes racing on the same key.
            os.link(tmp, path)
        except FileExistsError:
            return False
        finally:
            tmp.unlink(missing_ok=True)
        return True

    def _read(self, job_id: str) -> _JobRecord:
        path = self._record_path(job_id)
        try:
            return _JobRecord.from_json(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ProviderPermanentError(
                f"no such job: {job_id}", provider="local", status_code=404
            ) from None

    @contextlib.contextmanager
    def _locked(self, job_id: str, kind: str, *, blocking: bool) -> Iterator[bool]:
        """Hold an ``flock`` on ``<job_id>.<kind>.lock``; yields False if it is taken."""
        fd = os.open(self.jobs_dir / f"{job_id}.{kind}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
            except BlockingIOError:
                yield False
                return
            yield True
        finally:
            # Closing the descriptor releases the lock; so does the process dying.
            os.close(fd)

    def _update(self, job_id: str, change: Callable[[_JobRecord], None]) -> _JobRecord:
        """Read, change and atomically rewrite a record under its lock."""
        with self._locked(job_id, "record", blocking=True):
            record = self._read(job_id)
            change(record)
            path = self._record_path(job_id)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
            tmp.write_text(record.to_json(), encoding="utf-8")
            os.replace(tmp, path)
            return record

    def _log_event(self, event: str, key: str, job_id: str) -> None:
        line = json.dumps({"event": event, "key": key, "job_id": job_id}) + "\n"
        # One short O_APPEND write per event: lines from several processes never interleave.
        with (self.jobs_dir / _EVENTS_FILE).open("a", encoding="utf-8") as fh:
            fh.write(line)

    def _count(self, event: str, key: str) -> int:
        path = self.jobs_dir / _EVENTS_FILE
        if not path.exists():
            return 0
        counts: Counter[tuple[str, str]] = Counter()
        for line in path.read_text(encoding="utf-8").splitlines():
            entry = json.loads(line)
            counts[(entry["event"], entry["key"])] += 1
        return counts[(event, key)]

    def _progress(self, record: _JobRecord) -> float | None:
        if record.state == "succeeded":
            return 1.0
        if record.state in ("failed", "canceled"):
            return None
        if record.render_started_at is not None:
            return 0.9
        waiting = record.ready_at - record.created_at
        if waiting <= 0:
            return 0.0
        # The simulated latency is most of the work: it covers 0–90 %.
        elapsed = self._clock() - record.created_at
        return round(min(0.9, max(0.0, 0.9 * elapsed / waiting)), 3)

    # -- rendering --

    def _ensure_rendering(self, job_id: str) -> None:
        """Start a render thread for the job unless one (here or elsewhere) holds it."""
        lock_path = self.jobs_dir / f"{job_id}.render.lock"
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return
        # The thread owns the descriptor (and so the lock) until it finishes.
        thread = threading.Thread(
            target=self._render_job, args=(job_id, fd), name=f"render-{job_id}", daemon=True
        )
        thread.start()

    def _render_job(self, job_id: str, lock_fd: int) -> None:
        try:
            record = self._read(job_id)
            if record.state in TERMINAL_STATES:
                return
            if record.state == "queued":
                record = self._update(job_id, self._mark_running)
            while self._clock() < record.ready_at:
                time.sleep(min(_LATENCY_POLL_S, max(0.0, record.ready_at - self._clock())))
                record = self._read(job_id)
                if record.state in TERMINAL_STATES:
                    return  # canceled while "in progress"
            record = self._update(job_id, self._mark_render_started)
            if record.state in TERMINAL_STATES:
                return
            self._log_event("render", record.idempotency_key, job_id)
            error = self._produce_output(record)
            self._update(job_id, lambda r: self._finish(r, error))
            if self._read(job_id).state == "canceled":
                self._output_path(job_id).unlink(missing_ok=True)
        except Exception:
            # A background thread has nobody to raise to: record the failure as the job's.
            logger.exception("local job %s crashed", job_id)
            with contextlib.suppress(Exception):
                self._update(job_id, lambda r: self._finish(r, "the renderer crashed"))
        finally:
            os.close(lock_fd)

    def _mark_running(self, record: _JobRecord) -> None:
        if record.state == "queued":
            record.state = "running"

    def _mark_render_started(self, record: _JobRecord) -> None:
        if record.state not in TERMINAL_STATES:
            record.state = "running"
            record.render_started_at = self._clock()

    def _finish(self, record: _JobRecord, error: str | None) -> None:
        if record.state in TERMINAL_STATES:
            return  # canceled while rendering: the cancel wins
        record.state = "failed" if error else "succeeded"
        record.error = error
        record.finished_at = self._clock()

    def _produce_output(self, record: _JobRecord) -> str | None:
        """Write the job's output file; returns an error message if the job fails."""
        faults = record.job_faults
        request = record.job_request
        out = self._output_path(record.job_id)
        if faults.job_failed:
            return "simulated failure: the provider could not generate this video"
        if faults.empty_output:
            payload: bytes | None = b""
        elif faults.html_error_page:
            payload = _HTML_ERROR_PAGE.encode("utf-8")
        elif faults.random_bytes:
            payload = random.Random(record.job_id).randbytes(_RANDOM_BYTES)
        else:
            payload = None
        if payload is not None:
            with atomic_output(out) as tmp:
                tmp.write_bytes(payload)
            return None
        try:
            render_video(
                out,
                prompt=request.prompt,
                duration_s=faults.wrong_duration_s or float(request.duration_s),
                aspect_ratio=request.aspect_ratio,
                resolution=request.resolution,
                fps=self.fps,
                with_audio=not faults.drop_audio,
                black=faults.black_frames,
            )
        except MediaToolError as exc:
            return f"render failed: {exc}"
        return None


def render_video(
    dest: Path,
    *,
    prompt: str,
    duration_s: float,
    aspect_ratio: str,
    resolution: str,
    fps: int = 24,
    with_audio: bool = True,
    black: bool = False,
) -> Path:
    """Render `prompt` over a moving gradient (with a tone) as an H.264/AAC MP4.

    Args:
        dest: Absolute path of the MP4; replaced atomically.
        prompt: Text to draw; long prompts are wrapped and cut to fit.
        duration_s: Length in seconds.
        aspect_ratio: E.g. ``"16:9"``.
        resolution: E.g. ``"720p"``.
        fps: Frame rate.
        with_audio: False renders no audio track at all.
        black: Render black frames with no text (a failed generation, for tests).

    Returns:
        `dest`.

    Raises:
        MediaToolError: ffmpeg is missing, timed out or failed.
        ValueError: Bad aspect ratio, resolution, duration or fps.
    """
    if not duration_s > 0 or fps < 1:
        raise ValueError("duration_s and fps must be positive")
    width, height = frame_size(aspect_ratio, resolution)
    size = f"s={width}x{height}:r={fps}:d={duration_s:.3f}"
    with tempfile.TemporaryDirectory(prefix="reelflow-generate-") as scratch:
        workdir = Path(scratch)
        if black:
            _encode(dest, workdir, f"color=c=black:{size}", [], duration_s, fps, with_audio)
            return dest
        source = (
            f"gradients={size}:{_RENDER_BACKGROUND}:speed=0.03:x0=0:y0=0:x1={width}:y1={height}"
        )
        try:
            _encode(
                dest,
                workdir,
                source,
                [_write_caption(prompt, workdir, width, height)],
                duration_s,
                fps,
                with_audio,
            )
        except MediaToolError as exc:
            # drawtext needs a font; a machine without fonts still gets a usable video.
            logger.warning("drawing the prompt failed, rendering without it: %s", exc)
            _encode(dest, workdir, source, [], duration_s, fps, with_audio)
    return dest


def _write_caption(prompt: str, workdir: Path, width: int, height: int) -> str:
    """Write the prompt to a text file and return the drawtext filter that shows it."""
    # Sized from the short side so portrait and landscape get the same lettering.
    font_size = max(12, min(width, height) // 16)
    chars_per_line = max(10, int(width * 0.85 / (font_size * 0.6)))
    max_lines = max(1, int(height * 0.8 / (font_size * 1.3)))
    # Control characters would draw as boxes; the text is shown, never interpreted.
    text = "".join(
        ch if unicodedata.category(ch)[0] != "C" else " " for ch in prompt.replace("\n", " ")
    ).strip()
    if len(text) > _MAX_DRAWN_CHARS:
        text = text[: _MAX_DRAWN_CHARS - 1].rstrip() + "…"
    lines = textwrap.wrap(text, chars_per_line) or [" "]
    if len(lines) > max_lines:
        lines = [*lines[: max_lines - 1], lines[max_lines - 1][: chars_per_line - 1] + "…"]
    # The text reaches ffmpeg as a file in its working directory, with expansion off:
    # nothing in the prompt is parsed by the filtergraph or drawtext's % expansion.
    (workdir / "prompt.txt").write_text("\n".join(lines), encoding="utf-8")
    return (
        f"drawtext=textfile=prompt.txt:expansion=none:fontcolor=white:fontsize={font_size}"
        f":line_spacing={font_size // 4}:x=(w-text_w)/2:y=(h-text_h)/2"
        f":box=1:boxcolor=black@0.45:boxborderw={font_size // 2}"
    )


def _encode(
    dest: Path,
    workdir: Path,
    source: str,
    filters: Sequence[str],
    duration_s: float,
    fps: int,
    with_audio: bool,
) -> None:
    graph = ",".join([source, *filters, "format=yuv420p"])
    args = [require_tool("ffmpeg"), "-nostdin", "-hide_banner", "-v", "error"]
    args += ["-f", "lavfi", "-i", graph]
    if with_audio:
        args += ["-f", "lavfi", "-i", f"sine=f={_TONE_HZ}:r=44100:d={duration_s:.3f}"]
    args += ["-map", "0:v"]
    if with_audio:
        args += ["-map", "1:a", "-c:a", "aac", "-b:a", "64k", "-ac", "1"]
    with atomic_output(dest) as tmp:
        args += [
            "-c:v", "libx264", "-preset", "veryfast", "-crf", "28",
            # A keyframe every 2 s keeps seeks (tail check, thumbnails) cheap.
            "-g", str(fps * 2),
            "-t", f"{duration_s:.3f}",
            "-movflags", "+faststart",
            "-f", "mp4", "-y", f"file:{tmp}",
        ]  # fmt: skip
        timeout_s = max(120.0, duration_s * 10)
        try:
            result = subprocess.run(
                args,
                cwd=workdir,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                errors="replace",
                timeout=timeout_s,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise MediaToolError(f"ffmpeg timed out after {timeout_s:.0f} s") from None
        if result.returncode != 0:
            raise MediaToolError(
                f"ffmpeg could not render {dest.name}: "
                f"{stderr_tail(result.stderr) or f'exit {result.returncode}'}"
            )


# --- Sora (OpenAI) ------------------------------------------------------------------------

DEFAULT_MAX_DOWNLOAD_BYTES = 500 * 1024 * 1024
_DOWNLOAD_CHUNK = 1024 * 1024

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


class SoraProvider:
    """OpenAI's video API (Sora) through the official ``openai`` SDK.

    The SDK's own retries are switched off on the client this object uses, whatever the
    caller's client says: each method makes exactly one HTTP request, and a failure
    surfaces at once as a classified `ProviderError` for Temporal's retry policy.

    Sora has no cancel endpoint; ``cancel`` deletes the video, which the API allows for
    finished jobs, and reports False when the job cannot be removed.
    """

    provider = "sora"

    def __init__(
        self,
        client: openai.OpenAI,
        model: str = "sora-2",
        *,
        max_download_bytes: int = DEFAULT_MAX_DOWNLOAD_BYTES,
    ) -> None:
        """Wrap a client.

        Args:
            client: E.g. from `reelflow.search.embedding.build_openai_client`.
            model: ``sora-2`` or ``sora-2-pro``.
            max_download_bytes: Abort downloads larger than this.

        Raises:
            UnsupportedRequest: Unknown model.
        """
        self.capabilities = get_capabilities("sora", model)
        self.model = model
        self.max_download_bytes = max_download_bytes
        self._client = client.with_options(max_retries=0)

    def submit(self, request: GenerationJobRequest) -> str:
        """Create a video job: one ``POST /videos``.

        Raises:
            UnsupportedRequest: The model cannot make the request (nothing is sent).
            ValueError: Empty prompt.
            ProviderTransientError: Rate limit, server error, timeout, connection failure.
            ProviderPermanentError: The API rejected the request.
        """
        check_request(
            self.capabilities, request.duration_s, request.aspect_ratio, request.resolution
        )
        _require_prompt(request.prompt)
        width, height = frame_size(request.aspect_ratio, request.resolution)
        try:
            video = self._client.videos.create(
                prompt=request.prompt,
                model=self.model,
                # The SDK's literals lag the API's values (15 s); the API takes strings.
                seconds=cast("VideoSeconds", str(request.duration_s)),
                size=cast("VideoSize", f"{width}x{height}"),
                # The OpenAI client sends no idempotency header of its own; where the API
                # honours this one a repeated submit returns the first job.
                extra_headers={"Idempotency-Key": request.idempotency_key},
            )
        except openai.OpenAIError as exc:
            raise _classified(exc, "create video") from exc
        logger.info("sora job %s submitted (%s)", video.id, self.model)
        return video.id

    def status(self, job_id: str) -> JobStatus:
        """Retrieve the job: one ``GET /videos/{id}``.

        Raises:
            ProviderTransientError: Rate limit, server error, timeout, connection failure.
            ProviderPermanentError: Unknown job, bad key, ...
        """
        try:
            video = self._client.videos.retrieve(job_id)
        except openai.OpenAIError as exc:
            raise _classified(exc, "retrieve video") from exc
        state = _SORA_STATES.get(str(video.status))
        if state is None:
            logger.warning("sora job %s has unknown status %r", job_id, video.status)
            state = "running"
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
        written = 0
        with atomic_output(dest) as tmp:
            try:
                with (
                    self._client.videos.with_streaming_response.download_content(
                        job_id, variant="video"
                    ) as response,
                    tmp.open("wb") as fh,
                ):
                    for chunk in response.iter_bytes(_DOWNLOAD_CHUNK):
                        written += len(chunk)
                        if written > self.max_download_bytes:
                            raise ProviderPermanentError(
                                f"the video of job {job_id} is larger than "
                                f"{self.max_download_bytes} bytes",
                                provider="openai",
                            )
                        fh.write(chunk)
            except openai.OpenAIError as exc:
                raise _classified(exc, "download video") from exc
            except httpx2.HTTPError as exc:
                raise ProviderTransientError(
                    f"the video download was interrupted: {exc}", provider="openai"
                ) from exc
        logger.info("sora job %s downloaded: %d bytes", job_id, written)
        return dest

    def cancel(self, job_id: str) -> bool:
        """Delete the job's video: one ``DELETE /videos/{id}``.

        Returns:
            True if the API deleted it; False if it refused (e.g. still rendering) or
            does not know the job.

        Raises:
            ProviderTransientError: Rate limit, server error, timeout, connection failure.
        """
        try:
            deleted = self._client.videos.delete(job_id)
        except openai.OpenAIError as exc:
            error = _classified(exc, "delete video")
            # 409 is a conflict with the job's state (still rendering), not a glitch that
            # a retry fixes soon: the answer is "cannot cancel", like any 4xx refusal.
            if isinstance(error, ProviderPermanentError) or error.status_code == 409:
                return False
            raise error from exc
        return bool(deleted.deleted)


def _classified(exc: openai.OpenAIError, what: str) -> ProviderError:
    error = classify_openai_error(exc)
    logger.warning(
        "sora %s failed: %s (status %s)",
        what,
        type(error).__name__,
        getattr(error, "status_code", None),
    )
    if isinstance(error, ProviderError):
        return error
    # classify_openai_error maps every OpenAIError; keep the type honest if it ever doesn't.
    return ProviderPermanentError(f"OpenAI client error: {exc}", provider="openai")
