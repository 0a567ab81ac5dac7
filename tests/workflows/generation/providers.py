"""Providers for the workflow tests, built on the real local renderer.

`RenamedRenderer` puts a `LocalRenderer` (with its injectable faults) under other
capabilities, so one test registry can hold a misbehaving first choice and a good
fallback whose files are really rendered, downloaded and validated. `FlakyProvider`
answers 429/503 before letting calls through, like a provider under load.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path

from reelflow.generation.capabilities import QUALITY_LOCAL, ModelCapabilities, get_capabilities
from reelflow.generation.providers.base import GenerationJobRequest, JobStatus, VideoProvider
from reelflow.generation.providers.local import LocalRenderer, LocalRendererFaults
from reelflow.media.validation import ASPECT_RATIOS

TEST_FPS = 12
"""Half the default frame rate: renders and validation take half the time."""


def local_model(model: str) -> ModelCapabilities:
    """Capabilities of an extra free local model; `route_auto` orders ties by name."""
    return ModelCapabilities(
        provider="local",
        model=model,
        durations_s=tuple(range(1, 61)),
        aspect_ratios=ASPECT_RATIOS,
        resolutions=("480p", "720p"),
        price_per_second_usd={"480p": Decimal(0), "720p": Decimal(0)},
        quality_tier=QUALITY_LOCAL,
    )


class RenamedRenderer:
    """A local renderer presented as another provider model."""

    def __init__(self, renderer: LocalRenderer, capabilities: ModelCapabilities) -> None:
        self.renderer = renderer
        self._capabilities = capabilities

    @property
    def capabilities(self) -> ModelCapabilities:
        return self._capabilities

    def submit(self, request: GenerationJobRequest) -> str:
        return self.renderer.submit(request)

    def status(self, job_id: str) -> JobStatus:
        return self.renderer.status(job_id)

    def download(self, job_id: str, dest: Path) -> Path:
        return self.renderer.download(job_id, dest)

    def cancel(self, job_id: str) -> bool:
        return self.renderer.cancel(job_id)


def renderer(
    jobs_dir: Path,
    model: str | None = None,
    faults: LocalRendererFaults | None = None,
    *,
    start_on_submit: bool = True,
) -> RenamedRenderer:
    """A renderer on `jobs_dir`; `model` None keeps the real ``local/ffmpeg`` capabilities."""
    caps = get_capabilities("local") if model is None else local_model(model)
    inner = LocalRenderer(jobs_dir, faults=faults, fps=TEST_FPS, start_on_submit=start_on_submit)
    return RenamedRenderer(inner, caps)


class FlakyProvider:
    """Raises the given errors on the first calls of each method, then delegates.

    A failing submit raises *before* delegating, as a provider does when it refuses a
    request under load, so no job exists for it.
    """

    def __init__(
        self,
        inner: VideoProvider,
        *,
        submit_errors: Sequence[Exception] = (),
        status_errors: Sequence[Exception] = (),
    ) -> None:
        self.inner = inner
        self._submit_errors = list(submit_errors)
        self._status_errors = list(status_errors)
        self._lock = threading.Lock()
        self.submit_calls = 0
        self.status_calls = 0

    @property
    def capabilities(self) -> ModelCapabilities:
        return self.inner.capabilities

    def submit(self, request: GenerationJobRequest) -> str:
        with self._lock:
            self.submit_calls += 1
            error = self._submit_errors.pop(0) if self._submit_errors else None
        if error is not None:
            raise error
        return self.inner.submit(request)

    def status(self, job_id: str) -> JobStatus:
        with self._lock:
            self.status_calls += 1
            error = self._status_errors.pop(0) if self._status_errors else None
        if error is not None:
            raise error
        return self.inner.status(job_id)

    def download(self, job_id: str, dest: Path) -> Path:
        return self.inner.download(job_id, dest)

    def cancel(self, job_id: str) -> bool:
        return self.inner.cancel(job_id)
