"""Who explains why a video worked: the `VideoAnalyzer` protocol and `build_analyzer`.

Two analyzers fill the same `VideoAnalysis` schema: Gemini video understanding
(`gemini_analyzer`, google-genai, imported only when chosen) and the offline analyzer
(`offline_analyzer`: ffmpeg measurements plus the ingest transcript, no network), which
lists what it could not fill in `unfilled`.

Analyzers block (uploads, polling, ffmpeg): activities run them on an executor thread
inside a cancel scope (`reelflow.core.cancellation`); they check for cancellation between
steps, and the ffmpeg they start is stopped by `run_tool`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from reelflow.chat.structured import TokenUsage
from reelflow.core.errors import DomainError
from schemas.discover import VideoAnalysis
from schemas.failures import FailureCode

if TYPE_CHECKING:
    from reelflow.core.settings import Settings

KeyframeSink = Callable[[int, Path], str]
"""Stores a scene's keyframe (scene index, JPEG path) and returns its storage key."""


@dataclass(frozen=True)
class TranscriptForAnalysis:
    """The ingest transcript of the video: full text and timed segments `(start_s, end_s, text)`."""

    text: str
    segments: list[tuple[float, float, str]] = field(default_factory=list)


@dataclass(frozen=True)
class AnalysisResult:
    """One analysis and where it came from.

    Attributes:
        analysis: The validated analysis (never a half object).
        analyzer: `gemini` or `offline`.
        model: The provider model, or `ffmpeg-scenes+transcript` for the offline analyzer.
        prompt_version: Which prompt (or measurement method) produced it; stored with the
            analysis so answers from different prompts are never compared blindly.
        usage: Billed tokens, or None when nothing was billed.
    """

    analysis: VideoAnalysis
    analyzer: str
    model: str
    prompt_version: str
    usage: TokenUsage | None


class AnalysisFailed(DomainError):
    """A domain failure after the provider billed tokens (`ANALYSIS_INVALID` after the
    retry, `CONTENT_BLOCKED`): `usage` says how many, so the ledger still records them."""

    def __init__(self, code: FailureCode, message: str, *, usage: TokenUsage | None = None) -> None:
        super().__init__(code, message)
        self.usage = usage


class VideoAnalyzer(Protocol):
    """Explains a video in the `VideoAnalysis` schema."""

    def analyze(
        self,
        video: Path,
        *,
        duration_s: float,
        transcript: TranscriptForAnalysis | None,
        keyframe_sink: KeyframeSink | None,
    ) -> AnalysisResult:
        """Analyze a local video file (blocking; call from an executor thread).

        Args:
            video: Absolute path of the downloaded video.
            duration_s: Its duration, from the probe.
            transcript: The ingest transcript, if the video has speech.
            keyframe_sink: Stores keyframes; None when no keyframes are wanted.

        Raises:
            DomainError: `ANALYSIS_INVALID`, `CONTENT_BLOCKED`, `FILE_NOT_READY`, or
                `PROVIDER_REJECTED` for an upload the provider refused.
            ProviderTransientError: 429/5xx/timeouts (Retry-After kept).
            Cancelled: the cancel scope was canceled between steps.
        """
        ...


def build_analyzer(settings: Settings) -> VideoAnalyzer:
    """The analyzer `settings.discover_analyzer` names; build it once per worker process.

    The google-genai SDK is imported only when Gemini is chosen.

    Raises:
        SettingsError: Gemini is chosen without `GEMINI_API_KEY`.
    """
    if settings.discover_analyzer == "gemini":
        from reelflow.core.settings import SettingsError
        from reelflow.discover.gemini_analyzer import GeminiAnalyzer, build_gemini_analysis_client

        if settings.gemini_api_key is None:
            raise SettingsError("GEMINI_API_KEY is required when DISCOVER_ANALYZER is 'gemini'")
        client = build_gemini_analysis_client(
            settings.gemini_api_key.get_secret_value(), settings.gemini_base_url
        )
        return GeminiAnalyzer(client, model=settings.discover_analysis_model)
    from reelflow.discover.offline_analyzer import OfflineAnalyzer

    return OfflineAnalyzer()
