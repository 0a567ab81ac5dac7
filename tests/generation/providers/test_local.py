"""LocalRenderer: renders what was asked, behaves like an async provider, fails on demand."""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path

import pytest

from reelflow.core.provider_errors import ProviderPermanentError
from reelflow.generation.capabilities import UnsupportedRequest
from reelflow.generation.providers.base import VideoProvider
from reelflow.generation.providers.local import LocalRenderer, LocalRendererFaults
from reelflow.media.validation import ExpectedVideo, ValidationReport, validate_video
from tests.generation.helpers import PROMPT, job_request, wait_for

MAX_BYTES = 50 * 1024 * 1024


def _render(
    jobs: Path,
    tmp_path: Path,
    faults: LocalRendererFaults,
    *,
    duration_s: int = 1,
    aspect_ratio: str = "16:9",
    resolution: str = "480p",
) -> ValidationReport:
    """Submit, wait, download and validate one job; the job itself must succeed."""
    renderer = LocalRenderer(jobs, faults=faults, fps=12)
    req = job_request(duration_s=duration_s, aspect_ratio=aspect_ratio, resolution=resolution)
    job_id = renderer.submit(req)
    status = wait_for(renderer, job_id, timeout_s=60)
    assert status.state == "succeeded", status
    video = renderer.download(job_id, tmp_path / "out.mp4")
    expected = ExpectedVideo(req.duration_s, req.aspect_ratio, req.resolution)
    return validate_video(video, expected, max_bytes=MAX_BYTES)


def test_is_a_video_provider(tmp_path: Path) -> None:
    provider: VideoProvider = LocalRenderer(tmp_path)
    assert provider.capabilities.key == "local/ffmpeg"


@pytest.mark.parametrize(
    ("duration_s", "aspect_ratio", "resolution", "size"),
    [
        (2, "16:9", "480p", (854, 480)),
        (1, "9:16", "480p", (480, 854)),
        (1, "1:1", "720p", (720, 720)),
    ],
)
def test_renders_requested_shape_with_audio_and_passes_validation(
    tmp_path: Path, duration_s: int, aspect_ratio: str, resolution: str, size: tuple[int, int]
) -> None:
    report = _render(
        tmp_path / "jobs",
        tmp_path,
        LocalRendererFaults(),
        duration_s=duration_s,
        aspect_ratio=aspect_ratio,
        resolution=resolution,
    )

    assert report.passed, report.summary()
    assert [c.name for c in report.checks] == [
        "file_size",
        "readable",
        "duration",
        "aspect_ratio",
        "resolution",
        "audio_track",
        "black_frames",
    ]
    aspect = report.check("aspect_ratio")
    assert aspect is not None and aspect.actual.startswith(f"{size[0]}x{size[1]} ")
    duration = report.check("duration")
    assert duration is not None and duration.actual == f"{duration_s:.2f} s"
    audio = report.check("audio_track")
    assert audio is not None and audio.actual == "aac"
    black = report.check("black_frames")
    assert black is not None and black.actual.startswith("0% black")


def test_prompt_is_drawn_as_text_not_parsed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # PROMPT holds ':', ';', '%{...}', quotes and backslashes: drawtext must show it, not
    # fail and fall back to a video without the caption.
    outputs = []
    with caplog.at_level(logging.WARNING, logger="reelflow.generation.providers.local"):
        for name, prompt in (("nasty", PROMPT), ("plain", "Another prompt")):
            renderer = LocalRenderer(tmp_path / name, fps=12)
            job_id = renderer.submit(job_request(prompt=prompt))
            assert wait_for(renderer, job_id).state == "succeeded"
            outputs.append((tmp_path / name / f"{job_id}.out").read_bytes())

    assert not caplog.records, [r.getMessage() for r in caplog.records]
    # Same settings, different text: the caption is part of the picture.
    assert outputs[0] != outputs[1]


def test_empty_prompt_and_unsupported_requests_are_refused_before_a_job(tmp_path: Path) -> None:
    renderer = LocalRenderer(tmp_path)
    with pytest.raises(UnsupportedRequest, match="allowed: 1–60"):
        renderer.submit(job_request(duration_s=90))
    with pytest.raises(UnsupportedRequest, match="allowed: 480p, 720p, 1080p"):
        renderer.submit(job_request(resolution="4k"))
    with pytest.raises(ValueError, match="prompt"):
        renderer.submit(job_request(prompt=""))
    assert not list(tmp_path.glob("*.json"))


@pytest.mark.parametrize(
    ("faults", "failed_check", "message_part"),
    [
        (LocalRendererFaults(black_frames=True), "black_frames", "black frames"),
        (LocalRendererFaults(drop_audio=True), "audio_track", "no audio track"),
        (LocalRendererFaults(wrong_duration_s=1.0), "duration", "1.00 s long; 3 s was requested"),
        (LocalRendererFaults(empty_output=True), "file_size", "empty (0-byte) file"),
        (LocalRendererFaults(html_error_page=True), "file_size", "too small to be a video"),
        (LocalRendererFaults(random_bytes=True), "readable", "not a video"),
    ],
)
def test_each_fault_fails_the_matching_check(
    tmp_path: Path, faults: LocalRendererFaults, failed_check: str, message_part: str
) -> None:
    report = _render(tmp_path / "jobs", tmp_path, faults, duration_s=3)

    assert not report.passed
    assert [c.name for c in report.failed_checks] == [failed_check]
    check = report.check(failed_check)
    assert check is not None
    assert message_part in check.message
    assert message_part in report.summary()


def test_failed_job_reports_failure_and_cannot_be_downloaded(tmp_path: Path) -> None:
    renderer = LocalRenderer(tmp_path / "jobs", faults=LocalRendererFaults(job_failed=True))
    job_id = renderer.submit(job_request())

    status = wait_for(renderer, job_id)

    assert status.state == "failed"
    assert status.error is not None and "simulated failure" in status.error
    with pytest.raises(ProviderPermanentError, match="only a succeeded job"):
        renderer.download(job_id, tmp_path / "out.mp4")
    assert renderer.renders_started("gen-1/attempt-1") == 1


def test_same_key_gives_same_job_and_one_render(tmp_path: Path) -> None:
    renderer = LocalRenderer(tmp_path / "jobs", fps=12)
    first = renderer.submit(job_request("gen-7/attempt-1"))
    wait_for(renderer, first)

    again = LocalRenderer(tmp_path / "jobs", fps=12).submit(job_request("gen-7/attempt-1"))
    other = renderer.submit(job_request("gen-7/attempt-2"))
    wait_for(renderer, other)

    assert again == first
    assert other != first
    assert renderer.submit_count("gen-7/attempt-1") == 2
    assert renderer.jobs_created("gen-7/attempt-1") == 1
    assert renderer.renders_started("gen-7/attempt-1") == 1
    assert renderer.jobs_created("gen-7/attempt-2") == 1


def test_concurrent_submits_with_one_key_make_one_job(tmp_path: Path) -> None:
    jobs = tmp_path / "jobs"
    faults = LocalRendererFaults(extra_latency_s=0.3)
    ids: list[str] = []
    barrier = threading.Barrier(6)

    def submit() -> None:
        renderer = LocalRenderer(jobs, faults=faults, fps=12)
        barrier.wait()
        ids.append(renderer.submit(job_request("race")))

    threads = [threading.Thread(target=submit) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    renderer = LocalRenderer(jobs)
    assert len(set(ids)) == 1
    assert wait_for(renderer, ids[0]).state == "succeeded"
    assert renderer.submit_count("race") == 6
    assert renderer.jobs_created("race") == 1
    assert renderer.renders_started("race") == 1


def test_reusing_a_key_for_another_request_is_refused(tmp_path: Path) -> None:
    renderer = LocalRenderer(tmp_path, faults=LocalRendererFaults(extra_latency_s=5))
    renderer.submit(job_request("k", duration_s=2))
    with pytest.raises(ProviderPermanentError, match="different request") as caught:
        renderer.submit(job_request("k", duration_s=3))
    assert caught.value.status_code == 409
    renderer.cancel(LocalRenderer.job_id_for("k"))


def test_state_survives_recreating_the_renderer(tmp_path: Path) -> None:
    jobs = tmp_path / "jobs"
    job_id = LocalRenderer(jobs, fps=12).submit(job_request("persist"))
    wait_for(LocalRenderer(jobs), job_id)

    fresh = LocalRenderer(jobs)
    status = fresh.status(job_id)
    video = fresh.download(job_id, tmp_path / "copy.mp4")

    assert status.state == "succeeded" and status.progress == 1.0
    assert video.stat().st_size > 0
    assert fresh.renders_started("persist") == 1


def test_a_job_whose_submitter_died_is_rendered_by_the_next_poller(tmp_path: Path) -> None:
    jobs = tmp_path / "jobs"
    # start_on_submit=False: the job is recorded, but its renderer never starts, as when
    # the worker dies right after submit.
    job_id = LocalRenderer(jobs, start_on_submit=False).submit(job_request("orphan"))
    assert LocalRenderer(jobs, start_on_submit=False).renders_started("orphan") == 0

    poller = LocalRenderer(jobs, fps=12)
    assert poller.status(job_id).state in ("queued", "running")
    assert wait_for(poller, job_id).state == "succeeded"
    assert poller.jobs_created("orphan") == 1
    assert poller.renders_started("orphan") == 1


def test_latency_keeps_the_job_running_with_progress(tmp_path: Path) -> None:
    now = [1_000.0]
    renderer = LocalRenderer(
        tmp_path,
        faults=LocalRendererFaults(extra_latency_s=1_200),  # a 20-minute provider
        fps=12,
        clock=lambda: now[0],
    )
    job_id = renderer.submit(job_request("slow"))

    now[0] += 600
    halfway = renderer.status(job_id)
    assert halfway.state in ("queued", "running")
    assert halfway.progress == pytest.approx(0.45)
    assert renderer.renders_started("slow") == 0

    now[0] += 600
    assert wait_for(renderer, job_id).state == "succeeded"
    assert renderer.renders_started("slow") == 1


def test_cancel_while_running_stops_the_job(tmp_path: Path) -> None:
    renderer = LocalRenderer(tmp_path, faults=LocalRendererFaults(extra_latency_s=30))
    job_id = renderer.submit(job_request("cancel-me"))

    assert renderer.cancel(job_id) is True
    assert renderer.cancel(job_id) is True  # idempotent

    status = wait_for(renderer, job_id, timeout_s=5)
    assert status.state == "canceled"
    assert status.progress is None
    assert renderer.renders_started("cancel-me") == 0
    with pytest.raises(ProviderPermanentError):
        renderer.download(job_id, tmp_path / "out.mp4")


def _ffmpeg_children() -> set[int]:
    """Live ffmpeg processes started by this test process."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            name = stat.read_text().split("(", 1)[1].rsplit(")", 1)[0]
        except (OSError, IndexError):
            continue
        # fields[0] is the state, fields[1] the parent pid; zombies are already stopped.
        if name == "ffmpeg" and int(fields[1]) == os.getpid() and fields[0] != "Z":
            found.add(int(stat.parent.name))
    return found


def test_cancel_while_rendering_stops_ffmpeg(tmp_path: Path) -> None:
    renderer = LocalRenderer(tmp_path)
    # A minute of 1080p keeps ffmpeg busy for many seconds on this machine.
    job_id = renderer.submit(job_request("long", duration_s=60, resolution="1080p"))
    deadline = time.monotonic() + 30
    while not _ffmpeg_children():
        assert time.monotonic() < deadline, "the render never started ffmpeg"
        time.sleep(0.05)

    assert renderer.cancel(job_id) is True
    stopped_by = time.monotonic() + 2.0
    while _ffmpeg_children():
        assert time.monotonic() < stopped_by, "ffmpeg still running 2 s after the cancel"
        time.sleep(0.05)
    assert wait_for(renderer, job_id, timeout_s=5).state == "canceled"
    with pytest.raises(ProviderPermanentError):
        renderer.download(job_id, tmp_path / "out.mp4")
    assert not list(tmp_path.glob(f"{job_id}.out*"))


def test_cancel_after_success_reports_false(tmp_path: Path) -> None:
    renderer = LocalRenderer(tmp_path, fps=12)
    job_id = renderer.submit(job_request("done"))
    wait_for(renderer, job_id)
    assert renderer.cancel(job_id) is False
    assert renderer.status(job_id).state == "succeeded"


@pytest.mark.parametrize("job_id", ["local_nope", "../../etc/passwd", "local_../x", ""])
def test_unknown_or_malformed_job_ids_are_permanent_errors(tmp_path: Path, job_id: str) -> None:
    renderer = LocalRenderer(tmp_path)
    with pytest.raises(ProviderPermanentError) as caught:
        renderer.status(job_id)
    assert caught.value.status_code == 404
    with pytest.raises(ProviderPermanentError):
        renderer.download(job_id, tmp_path / "x.mp4")
    assert renderer.cancel(job_id) is False
