"""Gemini video understanding through the official `google-genai` SDK.

One analysis is: upload the file (Files API, resumable), wait until it is `ACTIVE`, ask
`generateContent` for JSON in our `VideoAnalysis` schema, validate it, delete the file.

* A file that stays `PROCESSING` past `max_wait_s` is `FILE_NOT_READY`; one that turns
  `FAILED` is refused for good (`PROVIDER_REJECTED`).
* An answer that does not validate even after `parse_structured`'s repairs is asked for
  once more (the upload is reused), then refused as `ANALYSIS_INVALID`.
* A safety block (`prompt_feedback.block_reason`, or a safety finish reason) is
  `CONTENT_BLOCKED`: the same video would be blocked again.
* 429/5xx/timeouts become `ProviderTransientError` with Google's Retry-After
  (`classify_gemini_error`); Temporal's retry policy does the waiting, so SDK retries are off.

The uploaded file is deleted afterwards, best effort (Google drops it after 48 h anyway).
"""

from __future__ import annotations

import logging
import mimetypes
import time
from pathlib import Path

from google import genai
from google.genai import errors as genai_errors
from google.genai import types as genai_types

from reelflow.chat.providers import TRANSPORT_ERRORS
from reelflow.chat.structured import TokenUsage, json_schema_for, parse_structured
from reelflow.core import cancellation
from reelflow.core.errors import DomainError
from reelflow.core.provider_errors import classify_gemini_error
from reelflow.discover.analyzers import (
    AnalysisFailed,
    AnalysisResult,
    KeyframeSink,
    TranscriptForAnalysis,
)
from schemas.discover import VideoAnalysis
from schemas.failures import FailureCode

logger = logging.getLogger(__name__)

PROMPT_VERSION = "gemini-video-v1"
"""Bump when the prompt or the requested schema changes: stored with every analysis."""

DEFAULT_API_VERSION = "v1beta"
"""The Files API and `responseJsonSchema` are documented on v1beta (google-genai 3.x
defaults to v1, so it is set explicitly)."""

REQUEST_TIMEOUT_S = 600.0
"""Per HTTP phase: an 8 MiB upload chunk, or a long video's analysis, may take minutes."""

TRANSCRIPT_CHARS = 6000
"""How much of the transcript goes into the prompt (the video's audio is there anyway)."""

_SDK_ERRORS = (genai_errors.APIError, genai_errors.UnknownApiResponseError, *TRANSPORT_ERRORS)
"""What an SDK call raises for the provider's sake (classified by `classify_gemini_error`)."""

_SAFETY_FINISH_REASONS = frozenset(
    {
        "SAFETY",
        "BLOCKLIST",
        "PROHIBITED_CONTENT",
        "SPII",
        "IMAGE_SAFETY",
        "IMAGE_PROHIBITED_CONTENT",
        "MODEL_ARMOR",
    }
)

SYSTEM_INSTRUCTION = (
    "You analyse short-form social videos (Reels, TikToks) for a marketing team that wants "
    "to know why a video outperformed its account's usual views. Answer only with JSON in "
    "the given schema. Describe only what is in the video; when you cannot tell, use null "
    "and list the field in `unfilled` with the reason."
)


def build_prompt(duration_s: float, transcript: TranscriptForAnalysis | None) -> str:
    """The analysis request sent after the video part."""
    length = f"{duration_s:.1f} s long" if duration_s > 0 else "of unknown length"
    lines = [
        f"The video is {length}. Analyse it and fill the schema:",
        "- hook: the first 3 seconds (start_s 0, end_s 3 or the end of the hook): what is "
        "said or shown (`text`) and the technique (question, bold claim, pattern interrupt, "
        "before/after, ...).",
        "- scenes: a storyboard of 8 to 15 scenes in order, covering the whole video, each "
        "with start_s and end_s in seconds, `shot` (framing and camera), `description`, "
        "`on_screen_text` (exact text shown, or null) and `audio` (voice, music, effects). "
        "A video with fewer visual cuts is split at its beats. Leave `keyframe_key` null.",
        "- transcript_excerpt: the key spoken lines, verbatim.",
        "- emotional_triggers: e.g. curiosity, fear of missing out, humour, awe, relief.",
        "- viral_patterns: reusable formats, e.g. listicle, storytime, before/after, POV, "
        "tutorial, reaction.",
        "- pacing: cuts_per_minute (visual cuts per minute), words_per_minute (speech), "
        "average_scene_s.",
        "- call_to_action: what the viewer is asked to do, verbatim, or null.",
        "- viral_score and hook_score: 0 to 10, each with concrete reasons from the video.",
        "- loudness_lufs: null (it is measured separately).",
        "- unfilled: every field you could not fill, with the reason.",
    ]
    if transcript is not None and transcript.text.strip():
        lines.append("")
        lines.append("Transcript from speech recognition (may contain errors):")
        if transcript.segments:
            body = "\n".join(
                f"[{start:.1f}-{end:.1f}] {text.strip()}"
                for start, end, text in transcript.segments
            )
        else:
            body = transcript.text.strip()
        if len(body) > TRANSCRIPT_CHARS:
            body = body[:TRANSCRIPT_CHARS].rsplit(" ", 1)[0] + " …"
        lines.append(body)
    return "\n".join(lines)


class GeminiAnalyzer:
    """`VideoAnalyzer` on Gemini; build once per process with a shared client."""

    analyzer = "gemini"

    def __init__(
        self,
        client: genai.Client,
        *,
        model: str,
        poll_interval_s: float = 2.0,
        max_wait_s: float = 300.0,
        generation_attempts: int = 2,
        temperature: float = 0.2,
    ) -> None:
        """Wrap a shared client.

        Args:
            client: From :func:`build_gemini_analysis_client`.
            model: A Gemini model that understands video, e.g. `gemini-2.5-flash`.
            poll_interval_s: Wait between checks of an uploaded file's state.
            max_wait_s: Longest a file may stay `PROCESSING` before `FILE_NOT_READY`.
            generation_attempts: Generations tried when the answer does not validate (the
                first plus retries); the upload is never repeated.
            temperature: Low, so the same video gives a stable analysis.
        """
        if generation_attempts < 1:
            raise ValueError("generation_attempts must be at least 1")
        self._client = client
        self.model = model
        self._poll_interval_s = poll_interval_s
        self._max_wait_s = max_wait_s
        self._attempts = generation_attempts
        self._temperature = temperature
        self._schema = json_schema_for(VideoAnalysis, target="gemini")

    def analyze(
        self,
        video: Path,
        *,
        duration_s: float,
        transcript: TranscriptForAnalysis | None,
        keyframe_sink: KeyframeSink | None,
    ) -> AnalysisResult:
        """See :meth:`VideoAnalyzer.analyze`; Gemini stores no keyframes."""
        del keyframe_sink  # Gemini describes scenes; stills are the offline analyzer's job
        cancellation.raise_if_cancelled()
        uploaded = self._upload(video)
        try:
            active = self._wait_until_active(uploaded)
            cancellation.raise_if_cancelled()
            analysis, usage = self._generate(active, build_prompt(duration_s, transcript))
        finally:
            self._delete(uploaded)
        return AnalysisResult(
            analysis=analysis,
            analyzer=self.analyzer,
            model=self.model,
            prompt_version=PROMPT_VERSION,
            usage=usage,
        )

    # --- steps -----------------------------------------------------------------------------

    def _upload(self, video: Path) -> genai_types.File:
        mime_type = mimetypes.guess_type(video.name)[0] or "video/mp4"
        try:
            uploaded = self._client.files.upload(
                file=video,
                config=genai_types.UploadFileConfig(mime_type=mime_type, display_name=video.name),
            )
        except (
            genai_errors.APIError,
            genai_errors.UnknownApiResponseError,
            *TRANSPORT_ERRORS,
            OSError,
        ) as exc:
            raise _classified(exc) from exc
        if not uploaded.name:
            raise DomainError(
                FailureCode.PROVIDER_REJECTED, "Gemini accepted the upload but named no file."
            )
        logger.info("uploaded %s to Gemini as %s", video.name, uploaded.name)
        return uploaded

    def _wait_until_active(self, uploaded: genai_types.File) -> genai_types.File:
        deadline = time.monotonic() + self._max_wait_s
        current = uploaded
        while True:
            state = _enum_text(current.state)
            if state == "ACTIVE":
                return current
            if state == "FAILED":
                reason = current.error.message if current.error and current.error.message else ""
                raise DomainError(
                    FailureCode.PROVIDER_REJECTED,
                    "Gemini could not process the video"
                    + (f": {reason}" if reason else "")
                    + ". Check that the file plays; the same file will fail again.",
                )
            if time.monotonic() >= deadline:
                raise DomainError(
                    FailureCode.FILE_NOT_READY,
                    f"Gemini was still processing the uploaded video after "
                    f"{self._max_wait_s:.0f} s; try the analysis again later.",
                )
            _sleep_cancellable(min(self._poll_interval_s, max(0.0, deadline - time.monotonic())))
            try:
                current = self._client.files.get(name=str(uploaded.name))
            except (
                genai_errors.APIError,
                genai_errors.UnknownApiResponseError,
                *TRANSPORT_ERRORS,
            ) as exc:
                raise _classified(exc) from exc

    def _generate(
        self, active: genai_types.File, prompt: str
    ) -> tuple[VideoAnalysis, TokenUsage | None]:
        config = genai_types.GenerateContentConfig(
            system_instruction=SYSTEM_INSTRUCTION,
            temperature=self._temperature,
            response_mime_type="application/json",
            response_json_schema=self._schema,
            automatic_function_calling=genai_types.AutomaticFunctionCallingConfig(disable=True),
        )
        contents = [
            genai_types.Part.from_uri(
                file_uri=str(active.uri), mime_type=active.mime_type or "video/mp4"
            ),
            genai_types.Part(text=prompt),
        ]
        billed: TokenUsage | None = None
        last_error: DomainError | None = None
        for attempt in range(1, self._attempts + 1):
            cancellation.raise_if_cancelled()
            try:
                response = self._client.models.generate_content(
                    model=self.model,
                    contents=genai_types.Content(role="user", parts=contents),
                    config=config,
                )
            except (
                genai_errors.APIError,
                genai_errors.UnknownApiResponseError,
                *TRANSPORT_ERRORS,
            ) as exc:
                raise _classified(exc) from exc
            billed = _add_usage(billed, gemini_usage(response))
            raise_if_gemini_blocked(response, billed)
            try:
                return parse_structured(gemini_answer_text(response), VideoAnalysis), billed
            except DomainError as exc:
                last_error = exc
                logger.warning(
                    "Gemini analysis attempt %d/%d did not validate: %s",
                    attempt,
                    self._attempts,
                    exc.message,
                )
        assert last_error is not None
        raise AnalysisFailed(
            FailureCode.ANALYSIS_INVALID,
            f"{last_error.message} (asked {self._attempts} times)",
            usage=billed,
        )

    def _delete(self, uploaded: genai_types.File) -> None:
        if not uploaded.name:
            return
        try:
            self._client.files.delete(name=uploaded.name)
        except Exception:
            # Best effort: the file expires on its own after 48 h, and the analysis is done.
            logger.warning("could not delete %s from Gemini", uploaded.name, exc_info=True)


# --- helpers -----------------------------------------------------------------------------------


def build_gemini_analysis_client(
    api_key: str, base_url: str | None = None, *, api_version: str = DEFAULT_API_VERSION
) -> genai.Client:
    """A Gemini Developer API client for video analysis, SDK retries off.

    ``HttpRetryOptions(attempts=1)`` means a single try (see
    `reelflow.chat.providers.gemini.build_gemini_client`); ``vertexai=False`` keeps
    ``GOOGLE_GENAI_USE_VERTEXAI`` from switching endpoints.
    """
    return genai.Client(
        vertexai=False,
        api_key=api_key,
        http_options=genai_types.HttpOptions(
            base_url=base_url,
            api_version=api_version,
            timeout=int(REQUEST_TIMEOUT_S * 1000),
            retry_options=genai_types.HttpRetryOptions(attempts=1),
        ),
    )


def _classified(exc: Exception) -> Exception:
    failure = classify_gemini_error(exc)
    if failure is exc and isinstance(exc, OSError):
        return DomainError(
            FailureCode.DEPENDENCY_UNAVAILABLE, f"could not read the video to upload: {exc}"
        )
    return failure


def _sleep_cancellable(seconds: float) -> None:
    """Sleep in short steps so a canceled activity stops polling within a fraction of a second."""
    end = time.monotonic() + seconds
    while (remaining := end - time.monotonic()) > 0:
        cancellation.raise_if_cancelled()
        time.sleep(min(remaining, 0.25))
    cancellation.raise_if_cancelled()


def _enum_text(value: object) -> str:
    return str(getattr(value, "value", value) or "")


def gemini_usage(response: genai_types.GenerateContentResponse) -> TokenUsage | None:
    """Billed tokens of one response, from `usage_metadata`."""
    usage = response.usage_metadata
    if usage is None:
        return None
    # Thinking tokens are billed as output.
    return TokenUsage(
        input_tokens=usage.prompt_token_count or 0,
        output_tokens=(usage.candidates_token_count or 0) + (usage.thoughts_token_count or 0),
    )


def _add_usage(total: TokenUsage | None, more: TokenUsage | None) -> TokenUsage | None:
    if more is None:
        return total
    if total is None:
        return more
    return TokenUsage(
        total.input_tokens + more.input_tokens, total.output_tokens + more.output_tokens
    )


def raise_if_gemini_blocked(
    response: genai_types.GenerateContentResponse,
    billed: TokenUsage | None,
    *,
    what: str = "this video",
) -> None:
    """`CONTENT_BLOCKED` when the prompt was refused or the answer stopped on a safety filter."""
    feedback = response.prompt_feedback
    if feedback is not None and feedback.block_reason is not None:
        detail = feedback.block_reason_message or _enum_text(feedback.block_reason)
        raise AnalysisFailed(
            FailureCode.CONTENT_BLOCKED,
            f"Gemini's safety filter refused {what} ({detail}).",
            usage=billed,
        )
    if response.candidates:
        reason = _enum_text(response.candidates[0].finish_reason)
        if reason in _SAFETY_FINISH_REASONS:
            raise AnalysisFailed(
                FailureCode.CONTENT_BLOCKED,
                f"Gemini stopped on a safety filter while answering about {what} ({reason}).",
                usage=billed,
            )


def gemini_answer_text(response: genai_types.GenerateContentResponse) -> str:
    """The first candidate's answer text, without thought summaries."""
    if not response.candidates:
        return ""
    content = response.candidates[0].content
    if content is None or not content.parts:
        return ""
    # Thought summaries (thinking models) are not part of the answer.
    return "".join(part.text for part in content.parts if part.text and not part.thought)
