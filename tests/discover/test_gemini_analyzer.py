"""GeminiAnalyzer through the real google-genai SDK against a local Gemini server."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from reelflow.chat.structured import TokenUsage
from reelflow.core.cancellation import Cancelled, CancelScope
from reelflow.core.errors import DomainError
from reelflow.core.provider_errors import ProviderTransientError
from reelflow.core.settings import Settings
from reelflow.discover.analyzers import (
    AnalysisFailed,
    TranscriptForAnalysis,
    build_analyzer,
)
from reelflow.discover.gemini_analyzer import (
    PROMPT_VERSION,
    GeminiAnalyzer,
    build_gemini_analysis_client,
)
from schemas.discover import Hook, Pacing, Scene, Score, UnfilledField, VideoAnalysis
from schemas.failures import FailureCode
from tests.chat.answerers.servers import Drop
from tests.discover.gemini_server import (
    FakeGeminiServer,
    gemini_error_reply,
    generate_reply,
    prompt_blocked_reply,
)

MODEL = "gemini-2.5-flash"


def sample_analysis() -> VideoAnalysis:
    scenes = [
        Scene(
            start_s=i * 2.0,
            end_s=(i + 1) * 2.0,
            shot="close-up" if i % 2 else "wide",
            description=f"beat {i + 1}",
            on_screen_text="3 mistakes" if i == 0 else None,
            audio="voice-over",
        )
        for i in range(8)
    ]
    return VideoAnalysis(
        hook=Hook(start_s=0, end_s=3, text="Stop making these 3 mistakes", technique="bold claim"),
        scenes=scenes,
        transcript_excerpt="Stop making these 3 mistakes with your skin.",
        emotional_triggers=["curiosity", "fear of missing out"],
        viral_patterns=["listicle"],
        pacing=Pacing(cuts_per_minute=30, words_per_minute=170, average_scene_s=2),
        call_to_action="Follow for part two",
        viral_score=Score(score=8, reasons=["fast cuts", "clear promise"]),
        hook_score=Score(score=9, reasons=["bold claim in the first second"]),
    )


VALID = sample_analysis().model_dump_json()


@pytest.fixture
def server() -> Iterator[FakeGeminiServer]:
    fake = FakeGeminiServer()
    fake.start()
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture
def video(tmp_path: Path) -> Path:
    path = tmp_path / "reel.mp4"
    path.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)
    return path


def make_analyzer(server: FakeGeminiServer, *, api_version: str = "v1beta") -> GeminiAnalyzer:
    client = build_gemini_analysis_client("gm-key", server.url, api_version=api_version)
    return GeminiAnalyzer(client, model=MODEL, poll_interval_s=0.01, max_wait_s=0.5)


def analyze(analyzer: GeminiAnalyzer, video: Path, transcript: TranscriptForAnalysis | None = None):  # type: ignore[no-untyped-def]
    return analyzer.analyze(video, duration_s=16.0, transcript=transcript, keyframe_sink=None)


def test_uploads_waits_until_active_generates_and_deletes(
    server: FakeGeminiServer, video: Path
) -> None:
    server.generate_replies.append(
        generate_reply(VALID, prompt_tokens=5200, candidates_tokens=700, thoughts_tokens=300)
    )
    transcript = TranscriptForAnalysis(
        text="Stop making these 3 mistakes with your skin.",
        segments=[(0.4, 2.9, "Stop making these 3 mistakes with your skin.")],
    )

    result = analyze(make_analyzer(server), video, transcript)

    assert result.analysis == sample_analysis()
    assert (result.analyzer, result.model, result.prompt_version) == (
        "gemini",
        MODEL,
        PROMPT_VERSION,
    )
    # Thinking tokens are billed as output.
    assert result.usage == TokenUsage(input_tokens=5200, output_tokens=1000)

    posts = server.paths("POST")
    assert posts[0] == "/upload/v1beta/files"
    assert posts[1].startswith("/upload/v1beta/files?upload_id=")
    assert posts[2] == f"/v1beta/models/{MODEL}:generateContent"
    # PROCESSING at upload and at the first poll, ACTIVE at the second.
    assert server.paths("GET") == ["/v1beta/files/fileup1"] * 2
    assert server.deleted == ["files/fileup1"]
    assert server.uploaded["fileup1"] == video.read_bytes()

    start = server.requests[0]
    assert start.headers["x-goog-upload-protocol"] == "resumable"
    assert start.headers["x-goog-api-key"] == "gm-key"
    body = server.generate_requests()[0].json
    parts = body["contents"][0]["parts"]
    file_data = parts[0]["fileData"]
    assert (file_data.get("fileUri") or file_data["file_uri"]).endswith("/v1beta/files/fileup1")
    assert (file_data.get("mimeType") or file_data["mime_type"]) == "video/mp4"
    assert "8 to 15 scenes" in parts[1]["text"]
    assert "[0.4-2.9] Stop making these 3 mistakes" in parts[1]["text"]
    config = body["generationConfig"]
    assert config["responseMimeType"] == "application/json"
    assert config["temperature"] <= 0.3
    schema = config["responseJsonSchema"]
    assert "$ref" not in json.dumps(schema)
    assert schema["properties"]["hook_score"]["anyOf"][0]["properties"]["score"]["maximum"] == 10


def test_the_v1_api_is_spoken_too(server: FakeGeminiServer, video: Path) -> None:
    server.generate_replies.append(generate_reply(VALID))

    result = analyze(make_analyzer(server, api_version="v1"), video)

    assert result.analysis.hook.text == "Stop making these 3 mistakes"
    assert server.paths("POST")[0] == "/upload/v1/files"
    assert f"/v1/models/{MODEL}:generateContent" in server.paths("POST")


def test_invalid_json_is_asked_for_again_without_uploading_again(
    server: FakeGeminiServer, video: Path
) -> None:
    server.generate_replies += [
        generate_reply(
            "Here is the analysis: hook was strong", prompt_tokens=100, candidates_tokens=10
        ),
        generate_reply(VALID, prompt_tokens=100, candidates_tokens=20),
    ]

    result = analyze(make_analyzer(server), video)

    assert result.analysis == sample_analysis()
    assert len(server.generate_requests()) == 2
    assert sum(p == "/upload/v1beta/files" for p in server.paths("POST")) == 1
    assert result.usage == TokenUsage(200, 30)  # both generations are billed


def test_invalid_twice_is_refused_with_the_billed_tokens(
    server: FakeGeminiServer, video: Path
) -> None:
    wrong_shape = json.dumps({"hook": {"text": "hi"}, "viral_score": {"score": 42}})
    server.generate_replies += [
        generate_reply(wrong_shape, prompt_tokens=100, candidates_tokens=10),
        generate_reply("{not json", prompt_tokens=100, candidates_tokens=10),
    ]

    with pytest.raises(AnalysisFailed) as raised:
        analyze(make_analyzer(server), video)

    assert raised.value.code == FailureCode.ANALYSIS_INVALID
    assert raised.value.usage == TokenUsage(200, 20)
    assert server.deleted == ["files/fileup1"]


def test_a_truncated_answer_closable_after_every_field_is_kept(
    server: FakeGeminiServer, video: Path
) -> None:
    # Cut inside the last `unfilled` entry: every field was written, and the partial entry
    # is dropped whole, never completed.
    full = sample_analysis().model_copy(
        update={
            "unfilled": [
                UnfilledField(field="loudness_lufs", reason="measured separately"),
                UnfilledField(field="scenes.on_screen_text", reason="no text shown"),
            ]
        }
    )
    text = full.model_dump_json()
    cut = text[: text.index('"no text') + len('"no text')]
    server.generate_replies.append(generate_reply(f"```json\n{cut}", finish_reason="MAX_TOKENS"))

    result = analyze(make_analyzer(server), video)

    assert result.analysis.unfilled == full.unfilled[:1]
    assert result.analysis.model_copy(update={"unfilled": []}) == sample_analysis()
    assert len(server.generate_requests()) == 1


def test_a_truncated_answer_missing_required_parts_is_retried(
    server: FakeGeminiServer, video: Path
) -> None:
    server.generate_replies += [
        generate_reply('{"hook": {"start_s": 0, "end_s": 3, "te', finish_reason="MAX_TOKENS"),
        generate_reply(VALID),
    ]

    result = analyze(make_analyzer(server), video)

    assert result.analysis == sample_analysis()
    assert len(server.generate_requests()) == 2


@pytest.mark.parametrize(
    "reply",
    [prompt_blocked_reply("PROHIBITED_CONTENT"), generate_reply("", finish_reason="SAFETY")],
    ids=["prompt_feedback", "finish_reason"],
)
def test_a_safety_block_is_content_blocked_and_not_retried(
    server: FakeGeminiServer, video: Path, reply: object
) -> None:
    server.generate_replies.append(reply)  # type: ignore[arg-type]

    with pytest.raises(DomainError) as raised:
        analyze(make_analyzer(server), video)

    assert raised.value.code == FailureCode.CONTENT_BLOCKED
    assert not raised.value.retryable
    assert len(server.generate_requests()) == 1
    assert server.deleted == ["files/fileup1"]


def test_429_is_transient_with_retry_after(server: FakeGeminiServer, video: Path) -> None:
    server.generate_replies.append(
        gemini_error_reply(429, "RESOURCE_EXHAUSTED", {"Retry-After": "17"})
    )

    with pytest.raises(ProviderTransientError) as raised:
        analyze(make_analyzer(server), video)

    assert raised.value.status_code == 429
    assert raised.value.retry_after_s == 17
    assert server.deleted == ["files/fileup1"]


def test_a_dropped_connection_is_transient(server: FakeGeminiServer, video: Path) -> None:
    server.generate_replies.append(Drop())

    with pytest.raises(ProviderTransientError):
        analyze(make_analyzer(server), video)

    assert server.deleted == ["files/fileup1"]


def test_503_at_upload_is_transient(server: FakeGeminiServer, video: Path) -> None:
    server.upload_replies.append(gemini_error_reply(503, "UNAVAILABLE"))

    with pytest.raises(ProviderTransientError):
        analyze(make_analyzer(server), video)

    assert server.generate_requests() == []


def test_a_file_stuck_processing_is_file_not_ready(video: Path) -> None:
    stuck = FakeGeminiServer(file_states=["PROCESSING"])
    stuck.start()
    try:
        with pytest.raises(DomainError) as raised:
            analyze(make_analyzer(stuck), video)
        assert raised.value.code == FailureCode.FILE_NOT_READY
        assert len(stuck.paths("GET")) >= 2
        assert stuck.generate_requests() == []
        assert stuck.deleted == ["files/fileup1"]
    finally:
        stuck.stop()


def test_a_failed_file_is_refused_for_good(video: Path) -> None:
    failed = FakeGeminiServer(file_states=["FAILED"])
    failed.start()
    try:
        with pytest.raises(DomainError) as raised:
            analyze(make_analyzer(failed), video)
        assert raised.value.code == FailureCode.PROVIDER_REJECTED
        assert "could not be decoded" in raised.value.message
    finally:
        failed.stop()


def test_cancellation_stops_polling(video: Path) -> None:
    stuck = FakeGeminiServer(file_states=["PROCESSING"])
    stuck.start()
    try:
        client = build_gemini_analysis_client("gm-key", stuck.url)
        analyzer = GeminiAnalyzer(client, model=MODEL, poll_interval_s=0.05, max_wait_s=600)
        scope = CancelScope(on_progress=None)
        # Cancel from the server side as soon as the analyzer starts polling.
        original = stuck._file_now

        def cancel_on_poll(file_id: str) -> dict[str, object]:
            scope.cancel()
            return original(file_id)

        stuck._file_now = cancel_on_poll  # type: ignore[method-assign]
        with pytest.raises(Cancelled):
            scope.run(lambda: analyze(analyzer, video))
        assert stuck.generate_requests() == []
        assert stuck.deleted == ["files/fileup1"]
    finally:
        stuck.stop()


def test_build_analyzer_picks_gemini_only_when_configured(server: FakeGeminiServer) -> None:
    offline = build_analyzer(Settings(discover_analyzer="offline"))
    assert type(offline).__name__ == "OfflineAnalyzer"
    gemini = build_analyzer(
        Settings(
            discover_analyzer="gemini",
            gemini_api_key="gm-key",
            gemini_base_url=server.url,
            discover_analysis_model="gemini-2.5-pro",
        )
    )
    assert isinstance(gemini, GeminiAnalyzer)
    assert gemini.model == "gemini-2.5-pro"
