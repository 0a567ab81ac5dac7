"""Fixtures for provider tests: a local server speaking OpenAI's wire format, and test audio.

The OpenAI provider classes are exercised through the real ``openai`` SDK pointed at
``FakeOpenAIServer``; the server records every request so tests can assert what went over
the wire, and answers like the API does (JSON bodies, error envelopes, base64 embeddings).
"""

from __future__ import annotations

import base64
import email.parser
import email.policy
import hashlib
import io
import json
import shutil
import subprocess
import threading
import time
import wave
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest


@dataclass
class UploadedFile:
    filename: str
    content_type: str
    data: bytes


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    json: Any = None
    form: dict[str, list[str]] = field(default_factory=dict)
    files: dict[str, UploadedFile] = field(default_factory=dict)


@dataclass
class ScriptedResponse:
    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0


def _parse_multipart(
    content_type: str, body: bytes
) -> tuple[dict[str, list[str]], dict[str, UploadedFile]]:
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body
    )
    form: dict[str, list[str]] = {}
    files: dict[str, UploadedFile] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        filename = part.get_filename()
        payload = part.get_payload(decode=True)
        assert isinstance(name, str) and isinstance(payload, bytes)
        if filename is not None:
            files[name] = UploadedFile(filename, part.get_content_type(), payload)
        else:
            form.setdefault(name, []).append(payload.decode())
    return form, files


def fake_vector(text: str, dimensions: int) -> list[float]:
    """A deterministic, deliberately un-normalized vector standing in for a model's output."""
    seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
    values = np.random.default_rng(seed).normal(size=dimensions) * 3.0
    return [float(v) for v in values.astype(np.float32)]


def openai_error(status: int, message: str, *, type_: str, code: str | None) -> ScriptedResponse:
    return ScriptedResponse(
        status, {"error": {"message": message, "type": type_, "param": None, "code": code}}
    )


class FakeOpenAIServer:
    """Answers ``POST /v1/embeddings`` and ``POST /v1/audio/transcriptions``.

    Scripted responses (``enqueue``) are served first, in order; otherwise the server answers
    like the real API would for the request it received.
    """

    def __init__(self) -> None:
        self.requests: list[RecordedRequest] = []
        self.scripted: list[ScriptedResponse] = []
        self.transcription_segments: list[tuple[float, float, str]] = [
            (0.0, 2.5, " Hello and welcome."),
            (2.5, 4.75, " Today we talk about durable pipelines."),
        ]
        self.transcription_language = "english"
        self.reverse_embedding_order = True
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # quiet test output
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                body = self.rfile.read(length)
                record = RecordedRequest(
                    method="POST",
                    path=self.path,
                    headers={k.lower(): v for k, v in self.headers.items()},
                    body=body,
                )
                content_type = self.headers.get("content-type", "")
                if content_type.startswith("application/json"):
                    record.json = json.loads(body)
                elif content_type.startswith("multipart/form-data"):
                    record.form, record.files = _parse_multipart(content_type, body)
                with server._lock:
                    server.requests.append(record)
                    scripted = server.scripted.pop(0) if server.scripted else None
                response = scripted or server._answer(record)
                if response.delay_s:
                    time.sleep(response.delay_s)
                payload = json.dumps(response.body).encode()
                try:
                    self.send_response(response.status)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(payload)))
                    for key, value in response.headers.items():
                        self.send_header(key, value)
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout tests)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._stopped = False

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        self._httpd.shutdown()
        self._httpd.server_close()

    def enqueue(self, response: ScriptedResponse) -> None:
        with self._lock:
            self.scripted.append(response)

    def _answer(self, request: RecordedRequest) -> ScriptedResponse:
        if request.path == "/v1/embeddings":
            return self._embeddings(request.json)
        if request.path == "/v1/audio/transcriptions":
            return self._transcription(request)
        return openai_error(
            404, f"Unknown path {request.path}", type_="invalid_request_error", code=None
        )

    def _embeddings(self, params: dict[str, Any]) -> ScriptedResponse:
        inputs = params["input"]
        dimensions = params.get("dimensions", 1536)
        data = []
        for index, text in enumerate(inputs):
            vector = fake_vector(text, dimensions)
            if params.get("encoding_format") == "base64":
                encoded: Any = base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode()
            else:
                encoded = vector
            data.append({"object": "embedding", "index": index, "embedding": encoded})
        if self.reverse_embedding_order:
            # `index` is what ties a vector to its input; list order is not a promise.
            data.reverse()
        tokens = sum(len(text.split()) + 1 for text in inputs)
        return ScriptedResponse(
            200,
            {
                "object": "list",
                "data": data,
                "model": params["model"],
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            },
        )

    def _transcription(self, request: RecordedRequest) -> ScriptedResponse:
        upload = request.files["file"]
        with wave.open(io.BytesIO(upload.data), "rb") as wav:
            duration = wav.getnframes() / wav.getframerate()
        segments = [
            {
                "id": i,
                "seek": 0,
                "start": start,
                "end": end,
                "text": text,
                "tokens": [50364 + i, 2425, 293],
                "temperature": 0.0,
                "avg_logprob": -0.21,
                "compression_ratio": 1.1,
                "no_speech_prob": 0.01,
            }
            for i, (start, end, text) in enumerate(self.transcription_segments)
        ]
        return ScriptedResponse(
            200,
            {
                "task": "transcribe",
                "language": self.transcription_language,
                "duration": duration,
                "text": "".join(text for _, _, text in self.transcription_segments).strip(),
                "segments": segments,
            },
        )


@pytest.fixture
def fake_openai() -> Iterator[FakeOpenAIServer]:
    server = FakeOpenAIServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


# --- audio ----------------------------------------------------------------------------------


def write_silence_wav(path: Path, seconds: float, rate: int = 16_000) -> Path:
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(b"\x00\x00" * int(seconds * rate))
    return path


def _ffmpeg() -> str:
    found = shutil.which("ffmpeg")
    if found:
        return found
    import imageio_ffmpeg

    exe: str = imageio_ffmpeg.get_ffmpeg_exe()
    return exe


@pytest.fixture(scope="session")
def speak() -> Callable[[str, Path], Path]:
    """Synthesize ``text`` with espeak-ng into a 16 kHz mono 16-bit WAV at the given path."""
    espeak = shutil.which("espeak-ng")
    if espeak is None:
        # deploy/bootstrap.sh installs it; a skip here would hide a broken install.
        pytest.fail("espeak-ng is not installed: run deploy/bootstrap.sh")

    def _speak(text: str, out: Path) -> Path:
        raw = out.with_suffix(".espeak.wav")
        subprocess.run([espeak, "-w", str(raw), text], check=True, capture_output=True)
        subprocess.run(
            [_ffmpeg(), "-loglevel", "error", "-y", "-i", str(raw), "-ar", "16000", "-ac", "1",
             "-c:a", "pcm_s16le", str(out)],
            check=True,
            capture_output=True,
        )  # fmt: skip
        return out

    return _speak
