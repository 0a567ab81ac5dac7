"""`TranscriptionActivities` in `ActivityEnvironment`, with the bundled local Whisper model.

Transcription starts no child process: the model runs in the executor thread. A canceled
window still raises at once and writes nothing; its thread stops when the model hands over
its next segment (`LocalWhisperTranscriber` checks the cancel scope between segments).
That is coarse: faster-whisper decodes 30 s of audio in one native call, which no signal
interrupts, so the thread may run for one such call after the cancel.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, update

from activities.transcription import TranscriptionActivities
from reelflow.ingest.speech_plan import coverage_of, plan_speech
from reelflow.ingest.transcription import LocalWhisperTranscriber
from schemas.ingest import TranscribeWindowInput
from schemas.tables import LedgerEntry, TranscriptSegment, TranscriptWindow, Video
from tests.activities.conftest import World
from tests.activities.support import (
    CANCEL_BOUND_S,
    activity_env,
    cancel_and_wait,
    executor_is_free,
    start,
)
from tests.support.openai_server import speak

__all__ = ["speak"]

SENTENCE = "Durable video pipelines run on Temporal, and every upload becomes searchable text."


@pytest.fixture(scope="module")
def transcriber(
    speak: Callable[[str, Path], Path], tmp_path_factory: pytest.TempPathFactory
) -> LocalWhisperTranscriber:
    model = LocalWhisperTranscriber()
    # Load the model now, so a test's timings are about transcribing, not loading.
    model.transcribe(speak("Warming up.", tmp_path_factory.mktemp("warm") / "warm.wav"))
    return model


@pytest.fixture(scope="module")
def speech(speak: Callable[[str, Path], Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    return speak(SENTENCE, tmp_path_factory.mktemp("speech") / "speech.wav")


@pytest.fixture(scope="module")
def long_speech(
    speak: Callable[[str, Path], Path], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """About 25 s of speech: one 30 s decoding pass for the model."""
    text = " ".join(f"Sentence number {n}. {SENTENCE}" for n in range(4))
    return speak(text, tmp_path_factory.mktemp("speech") / "long.wav")


def transcription_activities(
    world: World, transcriber: LocalWhisperTranscriber
) -> TranscriptionActivities:
    return TranscriptionActivities(
        storage=world.storage,
        sessions=world.sessions,
        transcriber=transcriber,
        scratch_dir=world.scratch,
        executor=world.executor,
    )


async def window_input(world: World, wav: Path, end_s: float) -> TranscribeWindowInput:
    video_id, source_key = await world.add_video()
    audio_key = source_key.rsplit("/", 1)[0] + "/audio.wav"
    world.storage.put_file(audio_key, wav, content_type="audio/wav")
    return TranscribeWindowInput(
        tenant_id=str(world.tenant_id),
        video_id=video_id,
        audio_key=audio_key,
        window_index=0,
        start_s=0.0,
        end_s=end_s,
        run_id=f"ingest-{video_id}",
        ledger_key=f"ingest-{video_id}/transcribe/local/0",
    )


async def stored(world: World, video_id: str) -> tuple[int, int, int]:
    """(segments, windows, ledger rows) stored for the video."""
    vid = uuid.UUID(video_id)
    async with world.sessions() as session:
        counts = [
            await session.scalar(select(func.count()).select_from(table).where(column == vid))
            for table, column in (
                (TranscriptSegment, TranscriptSegment.video_id),
                (TranscriptWindow, TranscriptWindow.video_id),
                (LedgerEntry, LedgerEntry.video_id),
            )
        ]
    return counts[0] or 0, counts[1] or 0, counts[2] or 0


async def test_a_window_heartbeats_its_index_while_the_model_runs(
    world: World, transcriber: LocalWhisperTranscriber, speech: Path
) -> None:
    request = await window_input(world, speech, end_s=10.0)
    env, heartbeats = activity_env(heartbeat_timeout_s=0.15)

    out = await env.run(transcription_activities(world, transcriber).transcribe_window, request)

    assert out.segment_count >= 1 and out.word_count >= 5
    assert heartbeats.details, "decoding outlasts a 0.1 s heartbeat"
    assert set(heartbeats.steps) == {"window 0"}
    # Nothing partial is worth keeping: a window is one model call.
    assert all(d["done"] == {} for d in heartbeats.details)
    assert await stored(world, request.video_id) == (out.segment_count, 1, 1)


async def test_a_retried_window_is_transcribed_again_and_replaces_the_first(
    world: World, transcriber: LocalWhisperTranscriber, speech: Path
) -> None:
    request = await window_input(world, speech, end_s=10.0)
    env, heartbeats = activity_env(heartbeat_timeout_s=0.15)
    first = await env.run(transcription_activities(world, transcriber).transcribe_window, request)

    retry_env, _ = activity_env(heartbeat_details=[heartbeats.last], attempt=2)
    second = await retry_env.run(
        transcription_activities(world, transcriber).transcribe_window, request
    )

    assert second.segment_count == first.segment_count
    # Segments replaced, one window row, one ledger row (same idempotency key).
    assert await stored(world, request.video_id) == (first.segment_count, 1, 1)


async def test_cancel_returns_at_once_and_stores_nothing(
    world: World, transcriber: LocalWhisperTranscriber, long_speech: Path
) -> None:
    request = await window_input(world, long_speech, end_s=30.0)
    env, heartbeats = activity_env(heartbeat_timeout_s=0.15)

    run = start(env.run(transcription_activities(world, transcriber).transcribe_window, request))
    await heartbeats.wait_for(lambda d: d["step"] == "window 0")
    elapsed = await cancel_and_wait(env, run)

    assert elapsed < CANCEL_BOUND_S
    # The thread ends after the model's current 30 s pass (native code, not interruptible).
    await executor_is_free(world.executor, timeout=60)
    assert await stored(world, request.video_id) == (0, 0, 0)
    assert [f for f in world.scratch_files() if "window" in f] == []


class _LosesAllButTheFirstSegment(LocalWhisperTranscriber):
    """A decoder that drops every stretch after the first segment, even on its own."""

    def _fill_holes(self, audio: Any, segments: Any, offset_s: float) -> Any:
        return super()._fill_holes(audio, segments[:1], offset_s)

    def _decode_alone(self, clip: Any) -> Iterable[Any]:
        return []


async def test_voiced_audio_left_without_text_is_stored_as_a_gap_until_a_retry_fills_it(
    world: World, transcriber: LocalWhisperTranscriber, long_speech: Path
) -> None:
    request = await window_input(world, long_speech, end_s=60.0)
    plan = plan_speech(long_speech, target_s=120.0)
    async with world.sessions.begin() as session:
        await session.execute(
            update(Video)
            .where(Video.id == uuid.UUID(request.video_id))
            .values(transcription_plan=plan.to_json())
        )
    env, _ = activity_env()

    lossy = await env.run(
        transcription_activities(world, _LosesAllButTheFirstSegment()).transcribe_window, request
    )
    after_loss = coverage_of((await world.video(request.video_id)).transcription_plan)
    retry_env, _ = activity_env(attempt=2)
    full = await retry_env.run(
        transcription_activities(world, transcriber).transcribe_window, request
    )
    after_retry = coverage_of((await world.video(request.video_id)).transcription_plan)

    assert lossy.gap_count >= 1 and full.gap_count == 0
    assert after_loss is not None and after_loss.gaps
    assert after_loss.share < 0.9
    assert all(reason == "no_text_after_retry" for _, _, reason in after_loss.gaps)
    assert after_retry is not None and after_retry.gaps == [] and after_retry.share == 1.0
