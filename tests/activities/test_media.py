"""`MediaActivities` in `ActivityEnvironment`: heartbeats, resume, cancellation, bad files."""

from __future__ import annotations

import asyncio
import struct
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from activities._errors import translate
from activities.media import MediaActivities
from reelflow.ingest.speech_plan import SpeechPlan
from reelflow.media import ffmpeg
from reelflow.media.ffmpeg import MediaRejected
from schemas.ingest import ExtractMediaInput, ExtractMediaOutput, ProbeVideoInput
from tests.activities.conftest import World
from tests.activities.support import (
    CANCEL_BOUND_S,
    activity_env,
    assert_stopped,
    cancel_and_wait,
    executor_is_free,
    ffmpeg_writing,
    recording_processes,
    start,
)
from tests.media import media_helpers
from tests.media.media_helpers import point_track_at_external_file


def media_activities(world: World) -> MediaActivities:
    return MediaActivities(
        storage=world.storage,
        sessions=world.sessions,
        settings=world.settings,
        scratch_dir=world.scratch,
        executor=world.executor,
    )


def extract_input(world: World, video_id: str, source_key: str) -> ExtractMediaInput:
    return ExtractMediaInput(
        tenant_id=str(world.tenant_id),
        video_id=video_id,
        source_key=source_key,
        duration_s=2.0,
        has_audio=True,
    )


def is_done_with(*parts: str) -> Callable[[Any], bool]:
    return lambda details: set(parts) <= set(details.get("done", {}))


# --- heartbeats -----------------------------------------------------------------------------


async def test_probe_heartbeats_its_step_while_it_works(world: World, long_media: Path) -> None:
    video_id, key = await world.add_video(long_media)
    env, heartbeats = activity_env(heartbeat_timeout_s=0.15)  # a beat every 0.1 s

    probed = await env.run(
        media_activities(world).probe_video,
        ProbeVideoInput(tenant_id=str(world.tenant_id), video_id=video_id, source_key=key),
    )

    assert probed.has_audio and probed.duration_s == pytest.approx(1800, abs=1)
    assert heartbeats.details, "a probe of a 30-minute file outlasts a 0.1 s heartbeat"
    for details in heartbeats.details:
        assert details["step"] == "probe" and details["done"] == {}
        assert details["elapsed_s"] >= 0
    assert (await world.video(video_id)).duration_s == pytest.approx(1800, abs=1)


async def test_extract_reports_each_part_it_has_stored(world: World, short_clip: Path) -> None:
    video_id, key = await world.add_video(short_clip)
    env, heartbeats = activity_env()

    out = await env.run(media_activities(world).extract_media, extract_input(world, video_id, key))

    # Each stored part is heartbeated at once (not at the next tick), audio first.
    audio_beat = await heartbeats.wait_for(is_done_with("audio"), timeout=5)
    final = await heartbeats.wait_for(is_done_with("audio", "thumbnail"), timeout=5)
    assert audio_beat["step"] == "extract"
    audio = final["done"]["audio"]
    assert audio == {
        "key": out.audio_key,
        "size_bytes": world.storage.size(str(out.audio_key)),
        "seconds": out.audio_duration_s,
    }
    assert final["done"]["thumbnail"] == {
        "key": out.thumbnail_key,
        "size_bytes": world.storage.size(out.thumbnail_key),
    }
    row = await world.video(video_id)
    assert (row.audio_key, row.thumbnail_key) == (out.audio_key, out.thumbnail_key)


# --- resume ---------------------------------------------------------------------------------


async def first_attempt(
    world: World, clip: Path
) -> tuple[str, str, ExtractMediaOutput, dict[str, Any]]:
    video_id, key = await world.add_video(clip)
    env, heartbeats = activity_env()
    out = await env.run(media_activities(world).extract_media, extract_input(world, video_id, key))
    details = await heartbeats.wait_for(is_done_with("audio", "thumbnail"), timeout=5)
    return video_id, key, out, details


async def test_a_retry_after_the_audio_was_stored_only_makes_the_thumbnail(
    world: World, short_clip: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    video_id, key, first, details = await first_attempt(world, short_clip)
    # The first attempt died after storing the audio: its last heartbeat says only that.
    world.storage.delete(first.thumbnail_key)
    last_heartbeat = {**details, "done": {"audio": details["done"]["audio"]}}
    extracted: list[Path] = []
    real_extract_audio = ffmpeg.extract_audio

    def counting_extract_audio(source: Path, dest: Path, **kwargs: float) -> float:
        extracted.append(source)
        return real_extract_audio(source, dest, **kwargs)

    monkeypatch.setattr(ffmpeg, "extract_audio", counting_extract_audio)
    env, heartbeats = activity_env(heartbeat_details=[last_heartbeat], attempt=2)

    second = await env.run(
        media_activities(world).extract_media, extract_input(world, video_id, key)
    )

    assert extracted == [], "the stored audio was extracted again"
    assert second == first
    assert world.storage.size(first.thumbnail_key) > 0
    # The retry's own heartbeats still say the audio is done, for a third attempt.
    final = await heartbeats.wait_for(is_done_with("audio", "thumbnail"), timeout=5)
    assert final["done"]["audio"] == details["done"]["audio"]


async def test_a_retry_after_both_parts_were_stored_runs_no_tool(
    world: World, short_clip: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    video_id, key, first, details = await first_attempt(world, short_clip)
    env, _ = activity_env(heartbeat_details=[details], attempt=2)

    with recording_processes(monkeypatch) as processes:
        second = await env.run(
            media_activities(world).extract_media, extract_input(world, video_id, key)
        )

    assert second == first
    assert processes.started == []


@pytest.mark.parametrize(
    "lie",
    [
        {"size_bytes": 12},  # not what storage holds
        {"key": "tenants/x/videos/y/audio.wav"},  # another video's audio
        {"seconds": "a lot"},
    ],
)
async def test_a_heartbeat_is_a_claim_that_storage_must_confirm(
    world: World, short_clip: Path, monkeypatch: pytest.MonkeyPatch, lie: dict[str, object]
) -> None:
    video_id, key, first, details = await first_attempt(world, short_clip)
    claim = {"audio": {**details["done"]["audio"], **lie}}
    extracted: list[Path] = []
    real_extract_audio = ffmpeg.extract_audio

    def counting_extract_audio(source: Path, dest: Path, **kwargs: float) -> float:
        extracted.append(source)
        return real_extract_audio(source, dest, **kwargs)

    monkeypatch.setattr(ffmpeg, "extract_audio", counting_extract_audio)
    env, _ = activity_env(heartbeat_details=[{"step": "extract", "done": claim}], attempt=2)

    second = await env.run(
        media_activities(world).extract_media, extract_input(world, video_id, key)
    )

    assert len(extracted) == 1
    assert second == first


async def test_a_missing_stored_audio_is_extracted_again(world: World, short_clip: Path) -> None:
    video_id, key, first, details = await first_attempt(world, short_clip)
    world.storage.delete(str(first.audio_key))
    env, _ = activity_env(heartbeat_details=[details], attempt=2)

    second = await env.run(
        media_activities(world).extract_media, extract_input(world, video_id, key)
    )

    assert second == first
    assert world.storage.size(str(first.audio_key)) == details["done"]["audio"]["size_bytes"]


# --- cancellation ---------------------------------------------------------------------------


async def test_cancel_stops_audio_extraction_within_two_seconds(
    world: World, long_media: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    video_id, key = await world.add_video(long_media)
    env, heartbeats = activity_env()

    with recording_processes(monkeypatch) as processes:
        run = start(
            env.run(
                media_activities(world).extract_media,
                extract_input(world, video_id, key).model_copy(update={"duration_s": 1800.0}),
            )
        )
        extraction = await processes.wait_for(ffmpeg_writing("wav"))
        await heartbeats.wait_for(lambda d: d["step"] == "extract")  # it is really working
        elapsed = await cancel_and_wait(env, run, extraction)

    assert elapsed < CANCEL_BOUND_S
    assert_stopped(extraction)
    await executor_is_free(world.executor)
    assert len(processes.started) == 1, "nothing was started after the cancel"
    # Nothing half-done is left or recorded.
    assert not world.storage.exists(key.rsplit("/", 1)[0] + "/audio.wav")
    assert [f for f in world.scratch_files() if f.endswith((".part", ".wav"))] == []
    assert (await world.video(video_id)).audio_key is None
    assert "audio" not in heartbeats.last["done"]


async def test_cancel_while_queued_never_starts_the_work(
    world: World, short_clip: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    video_id, key = await world.add_video(short_clip)
    release = threading.Event()
    # The executor's one thread is busy with other work when the activity is canceled.
    other_work = world.executor.submit(release.wait, 10)
    env, _ = activity_env()

    with recording_processes(monkeypatch) as processes:
        run = start(
            env.run(media_activities(world).extract_media, extract_input(world, video_id, key))
        )
        await asyncio.sleep(0.2)  # let it queue behind the busy thread
        elapsed = await cancel_and_wait(env, run)
        release.set()
        await asyncio.wrap_future(other_work)
        await executor_is_free(world.executor)

    assert elapsed < CANCEL_BOUND_S
    assert processes.started == []
    assert world.scratch_files() == []


# --- bad input from outside -----------------------------------------------------------------


async def test_a_track_stored_in_another_file_fails_once_as_unreadable_media(
    world: World, short_clip: Path, tmp_path: Path
) -> None:
    secret = tmp_path / "secret.aac"
    secret.write_bytes(b"elsewhere" * 100)
    crafted = point_track_at_external_file(short_clip, tmp_path / "crafted.mp4", str(secret))
    video_id, key = await world.add_video(crafted)
    env, _ = activity_env(activity_type="probe_video")

    with pytest.raises(MediaRejected) as excinfo:
        await env.run(
            media_activities(world).probe_video,
            ProbeVideoInput(tenant_id=str(world.tenant_id), video_id=video_id, source_key=key),
        )
    with pytest.raises(MediaRejected) as extracted:
        await env.run(media_activities(world).extract_media, extract_input(world, video_id, key))

    # What the worker's interceptor makes of it: a final failure a person can read.
    for rejection in (excinfo.value, extracted.value):
        failure = translate(rejection, step="probe_video")
        assert failure.type == "unreadable_media"
        assert failure.non_retryable
        assert "another file" in failure.message
        assert "ValueError" not in failure.message


# --- a container that understates its length ----------------------------------------------


def _understating_container(dest: Path, *, holds_s: float, declares_s: float) -> Path:
    """An MP4 holding `holds_s` seconds with speech near the end, whose headers say `declares_s`.

    Rewrites the duration fields of `mvhd`, every `tkhd` and every `mdhd` (version-0 boxes);
    the sample tables are untouched, so every decoder still plays the whole file. Muxed
    without an edit list, which decoders would honour as a real cut.
    """
    spoken = dest.with_suffix(".speech.wav")
    subprocess.run(
        ["espeak-ng", "-w", str(spoken), "The storage room code is four seven nine."],
        check=True,
        capture_output=True,
    )
    speech_at_ms = int((holds_s - 12) * 1000)
    media_helpers.ffmpeg(
        "-f", "lavfi", "-i", f"testsrc2=s=160x120:r=5:d={holds_s}", "-i", str(spoken),
        "-filter_complex",
        f"[1:a]aresample=16000,adelay={speech_at_ms}:all=1,apad=whole_dur={holds_s}[a]",
        "-map", "0:v", "-map", "[a]", "-c:v", "libx264", "-preset", "ultrafast",
        "-c:a", "aac", "-t", str(holds_s), "-use_editlist", "0", str(dest),
    )  # fmt: skip
    data = bytearray(dest.read_bytes())

    def fields(kind: bytes) -> list[int]:
        found, at = [], data.find(kind)
        while at > 0:
            assert data[at + 4] == 0, f"expected a version-0 {kind!r}"
            found.append(at + 4)
            at = data.find(kind, at + 1)
        return found

    (mvhd,) = fields(b"mvhd")
    (movie_scale,) = struct.unpack(">I", data[mvhd + 12 : mvhd + 16])
    data[mvhd + 16 : mvhd + 20] = struct.pack(">I", int(declares_s * movie_scale))
    for tkhd in fields(b"tkhd"):
        data[tkhd + 20 : tkhd + 24] = struct.pack(">I", int(declares_s * movie_scale))
    for mdhd in fields(b"mdhd"):
        (scale,) = struct.unpack(">I", data[mdhd + 12 : mdhd + 16])
        data[mdhd + 16 : mdhd + 20] = struct.pack(">I", int(declares_s * scale))
    dest.write_bytes(bytes(data))
    return dest


async def test_a_container_that_understates_its_length_is_ingested_at_its_real_length(
    world: World, tmp_path: Path
) -> None:
    lying = _understating_container(tmp_path / "lying.mp4", holds_s=60.0, declares_s=5.0)
    assert ffmpeg.probe_video(lying, ffmpeg.MediaLimits.from_settings(world.settings)).duration_s
    video_id, key = await world.add_video(lying)
    env, _ = activity_env()
    declared = extract_input(world, video_id, key).model_copy(update={"duration_s": 5.0})

    out = await env.run(media_activities(world).extract_media, declared)

    assert out.audio_duration_s == pytest.approx(60.0, abs=0.5)
    assert out.duration_s == pytest.approx(60.0, abs=0.5)
    assert out.windows is not None and out.windows[0][0] == 0.0
    assert out.windows[-1][1] == pytest.approx(60.0, abs=0.5)
    video = await world.video(video_id)
    assert video.duration_s == pytest.approx(60.0, abs=0.5)
    assert video.transcription_plan is not None
    plan = SpeechPlan.from_json(video.transcription_plan)
    assert plan is not None and plan.windows == out.windows
    # The speech at 48 s, past the declared end, is found and covered by a window.
    assert any(start >= 46.0 and end <= 60.5 for start, end in plan.voiced)


async def test_a_container_hiding_more_than_the_limit_is_rejected_as_too_long(
    world: World, tmp_path: Path
) -> None:
    lying = _understating_container(tmp_path / "lying.mp4", holds_s=60.0, declares_s=5.0)
    video_id, key = await world.add_video(lying)
    limited = world.settings.model_copy(update={"max_duration_s": 30.0})
    activities = MediaActivities(
        storage=world.storage,
        sessions=world.sessions,
        settings=limited,
        scratch_dir=world.scratch,
        executor=world.executor,
    )
    env, _ = activity_env(activity_type="extract_media")
    declared = extract_input(world, video_id, key).model_copy(update={"duration_s": 5.0})

    with pytest.raises(MediaRejected) as rejected:
        await env.run(activities.extract_media, declared)

    failure = translate(rejected.value, step="extract_media")
    assert failure.type == "too_long" and failure.non_retryable
    assert "holds 60 s" in failure.message
    assert (await world.video(video_id)).transcription_plan is None
