"""A local HTTP server speaking the wire format of OpenAI's video API (Sora).

It answers ``POST /v1/videos`` (multipart form, as the SDK sends it), ``GET
/v1/videos/{id}``, ``GET /v1/videos/{id}/content`` and ``DELETE /v1/videos/{id}`` with the
JSON bodies and error envelopes the API uses, and records every request, so tests run
the real ``openai`` SDK against it and assert what went over the wire.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tests.generation.providers.fake_http import Answer, FakeHTTPServer, Recorded


def openai_error(
    status: int,
    message: str,
    *,
    type_: str = "invalid_request_error",
    code: str | None = None,
    headers: dict[str, str] | None = None,
) -> Answer:
    return Answer(
        status,
        {"error": {"message": message, "type": type_, "param": None, "code": code}},
        headers or {},
    )


@dataclass
class FakeVideo:
    id: str
    model: str
    prompt: str
    seconds: str
    size: str
    created_at: int
    statuses: list[tuple[str, int]]
    """What successive retrieves report; the last entry repeats."""
    error: dict[str, str] | None = None
    content: bytes = b""

    @property
    def current(self) -> tuple[str, int]:
        return self.statuses[0]

    def advance(self) -> None:
        if len(self.statuses) > 1:
            self.statuses.pop(0)

    def to_json(self) -> dict[str, Any]:
        status, progress = self.current
        return {
            "id": self.id,
            "object": "video",
            "created_at": self.created_at,
            "completed_at": self.created_at + 60 if status == "completed" else None,
            "expires_at": None,
            "error": self.error if status == "failed" else None,
            "model": self.model,
            "progress": progress,
            "prompt": self.prompt,
            "remixed_from_video_id": None,
            "seconds": self.seconds,
            "size": self.size,
            "status": status,
        }


class FakeSoraServer:
    """The video endpoints of the OpenAI API, in memory.

    New videos walk through `status_script` (one step per retrieve) and then serve
    `content`; `enqueue` overrides the next answer (errors, delays).
    """

    def __init__(self) -> None:
        self.videos: dict[str, FakeVideo] = {}
        self.status_script: list[tuple[str, int]] = [
            ("queued", 0),
            ("in_progress", 40),
            ("completed", 100),
        ]
        self.failure: dict[str, str] | None = None
        self.content = b"\x00\x00\x00\x18ftypmp42 not a real video"
        self._counter = 0
        self._http = FakeHTTPServer(self._answer)
        self.base_url = f"{self._http.base_url}/v1"

    @property
    def requests(self) -> list[Recorded]:
        return self._http.requests

    def __enter__(self) -> FakeSoraServer:
        self._http.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._http.stop()

    def enqueue(self, answer: Answer) -> None:
        self._http.enqueue(answer)

    def requests_to(self, method: str, path_prefix: str = "/v1/videos") -> list[Recorded]:
        return [r for r in self.requests if r.method == method and r.path.startswith(path_prefix)]

    # -- answers (called under the lock) --

    def _answer(self, request: Recorded) -> Answer:
        parts = request.path.strip("/").split("/")
        if parts[:2] != ["v1", "videos"]:
            return openai_error(404, f"Unknown path {request.path}")
        if request.method == "POST" and len(parts) == 2:
            return self._create(request.form)
        video = self.videos.get(parts[2]) if len(parts) >= 3 else None
        if video is None:
            return openai_error(404, "Video not found", code="video_not_found")
        if request.method == "GET" and len(parts) == 3:
            answer = Answer(200, video.to_json())
            video.advance()
            return answer
        if request.method == "GET" and parts[3:] == ["content"]:
            if video.current[0] != "completed":
                return openai_error(400, "Video is not ready yet", code="video_not_ready")
            return Answer(200, video.content)
        if request.method == "DELETE" and len(parts) == 3:
            if video.current[0] in ("queued", "in_progress"):
                return openai_error(400, "Video is still being generated")
            del self.videos[video.id]
            return Answer(200, {"id": video.id, "object": "video.deleted", "deleted": True})
        return openai_error(404, f"Unknown path {request.path}")

    def _create(self, form: dict[str, str]) -> Answer:
        if not form.get("prompt"):
            return openai_error(400, "Missing required parameter: 'prompt'.", code="missing")
        self._counter += 1
        video = FakeVideo(
            id=f"video_{self._counter:04d}",
            model=form.get("model", "sora-2"),
            prompt=form["prompt"],
            seconds=form.get("seconds", "4"),
            size=form.get("size", "720x1280"),
            created_at=1_790_000_000,
            statuses=list(self.status_script),
            error=self.failure,
            content=self.content,
        )
        self.videos[video.id] = video
        answer = video.to_json()
        return Answer(200, answer)
