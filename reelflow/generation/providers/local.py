"""The local renderer: an ffmpeg "provider" that behaves like a remote one.

`LocalRenderer` renders the prompt over a moving gradient, with a tone, and presents it
through the same `VideoProvider` interface as the paid APIs: job ids derived from the
idempotency key, job state on disk (so another worker picks up where a dead one
stopped), simulated latency and injectable faults (`LocalRendererFaults`) for the tests
of validation and fallback. It costs nothing, so it is always registered.

`render_video` is the renderer itself, also used directly to make test clips.
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
import tempfile
import textwrap
import threading
import time
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from reelflow.core.cancellation import Cancelled, CancelScope
from reelflow.core.provider_errors import ProviderPermanentError
from reelflow.generation.capabilities import get_capabilities
from reelflow.generation.providers.base import (
    TERMINAL_STATES,
    GenerationJobRequest,
    JobState,
    JobStatus,
    check_job_request,
)
from reelflow.media.ffmpeg import (
    MediaToolError,
    atomic_output,
    require_tool,
    run_tool,
    stderr_tail,
)
from reelflow.media.validation import frame_size

logger = logging.getLogger(__name__)


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
_CANCEL_WATCH_S = 0.2
"""How often a render checks whether its job was canceled (it then stops ffmpeg)."""


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
        check_job_request(self.capabilities, request)
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

    # -- inspection: the event log, for tests --

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
            error = self._render_unless_canceled(record)
            self._update(job_id, lambda r: self._finish(r, error))
            if self._read(job_id).state == "canceled":
                self._output_path(job_id).unlink(missing_ok=True)
        except Cancelled:
            # `cancel` already recorded the job as canceled; drop what the render left.
            self._output_path(job_id).unlink(missing_ok=True)
        except Exception:
            # A background thread has nobody to raise to: record the failure as the job's.
            logger.exception("local job %s crashed", job_id)
            with contextlib.suppress(Exception):
                self._update(job_id, lambda r: self._finish(r, "the renderer crashed"))
        finally:
            os.close(lock_fd)

    def _render_unless_canceled(self, record: _JobRecord) -> str | None:
        """Produce the output in a cancel scope that a cancel of the job trips.

        `cancel` may run in another process (it only rewrites the job record), so a watcher
        re-reads the record while ffmpeg works and stops the render when it turns canceled.

        Raises:
            Cancelled: the job was canceled while it rendered.
        """
        scope = CancelScope()
        rendering = threading.Event()

        def watch() -> None:
            while not rendering.wait(_CANCEL_WATCH_S):
                with contextlib.suppress(Exception):
                    if self._read(record.job_id).state == "canceled":
                        scope.cancel()
                        return

        watcher = threading.Thread(target=watch, name=f"render-watch-{record.job_id}")
        watcher.start()
        try:
            return scope.run(lambda: self._produce_output(record))
        finally:
            rendering.set()
            watcher.join()

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
        # run_tool: input whitelist check, timeout, and stopped with a canceled scope.
        result = run_tool(args, timeout_s=timeout_s, what="ffmpeg (render)", cwd=workdir)
        if result.returncode != 0:
            raise MediaToolError(
                f"ffmpeg could not render {dest.name}: "
                f"{stderr_tail(result.stderr) or f'exit {result.returncode}'}"
            )
