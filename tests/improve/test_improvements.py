"""Writing the improved prompt: what the original is made of, the template, the providers
through their official SDKs against the chat tests' local wire-format server."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from typing import Any

import pytest
import pytest_asyncio
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.testing import ActivityEnvironment

from activities.improve import ImproveActivities
from reelflow.chat.structured import TokenUsage
from reelflow.core.db import SessionFactory, create_engine, session_factory
from reelflow.core.errors import DomainError
from reelflow.core.migrate import upgrade_database
from reelflow.core.provider_errors import ProviderTransientError
from reelflow.core.settings import Settings
from reelflow.generation import quotas
from reelflow.generation.routing import build_provider_registry
from reelflow.improve.analysts import build_analyst
from reelflow.improve.improvements import (
    TEMPLATE_WRITER,
    ModelPromptWriter,
    OriginalContent,
    TemplatePromptWriter,
    WritingFailed,
    build_prompt_writer,
    original_content,
    request_improvement,
)
from schemas.discover_tables import Analysis, Script
from schemas.failures import FailureCode
from schemas.generation_tables import Generation, QuotaReservation
from schemas.improve import Insights
from schemas.improvement import (
    MAX_IMPROVED_PROMPT_CHARS,
    ChangeKind,
    FinishImprovementInput,
    ImprovementStatus,
    ImprovementStepInput,
    LinkVersionInput,
    SourceKind,
    improvement_generation_id,
)
from schemas.improvement_run_tables import Improvement
from schemas.tables import TranscriptSegment, Video
from tests.chat.answerers.servers import FakeLLMServer, JsonReply, anthropic_error
from tests.improve.test_analysts import (
    anthropic_message,
    gemini_response,
    openai_completion,
    settings_for,
)
from tests.improve.test_insights import add_metrics, new_tenant, new_video

INSIGHTS = Insights(
    strengths=["The hook lands in the first second", "Completion is 2x the usual"],
    weaknesses=["Almost nobody shares it"],
    traffic_insights="Nearly all views come from the For You feed.",
    patterns="Views grow for three days, then stop.",
    recommendations=["End on a question viewers want to send to a friend"],
    next_video_suggestions=["A part two that answers the question"],
)
ORIGINAL = OriginalContent(
    SourceKind.PROMPT,
    "A ten-second smoothie made in one shot, top-down, bright kitchen light.",
    "Ten-second smoothie",
)
ANSWER_JSON: dict[str, Any] = {
    "prompt": "A ten-second smoothie, top-down, bright light, ending on a question card.",
    "changes": [
        {"kind": "kept", "what": "the one-shot hook", "because": "the hook lands in 1 s"},
        {"kind": "changed", "what": "ends on a question", "because": "nobody shares it"},
    ],
}


# --- the template -------------------------------------------------------------------------


def test_the_template_keeps_strengths_and_answers_each_weakness() -> None:
    written = TemplatePromptWriter().write(ORIGINAL, INSIGHTS)

    assert (written.writer, written.is_template, written.usage) == (TEMPLATE_WRITER, True, None)
    assert "The hook lands in the first second" in written.prompt
    assert "End on a question viewers want to send to a friend" in written.prompt
    assert "A part two that answers the question" in written.prompt
    assert "ten-second smoothie made in one shot" in written.prompt, "the original's subject"
    kinds = [(c.kind, c.because) for c in written.changes]
    assert (ChangeKind.KEPT, "a strength") in kinds
    assert (ChangeKind.CHANGED, "weakness: Almost nobody shares it") in kinds


def test_the_template_fits_the_generation_limit_without_cutting_what_changes() -> None:
    long = OriginalContent(SourceKind.TRANSCRIPT, "word " * 2000, "A long talk")

    written = TemplatePromptWriter().write(long, INSIGHTS)

    assert len(written.prompt) <= MAX_IMPROVED_PROMPT_CHARS
    assert "End on a question viewers want to send to a friend" in written.prompt


def test_a_weakness_without_a_recommendation_still_gets_a_change() -> None:
    insights = Insights(weaknesses=["Viewers leave at second three"])

    written = TemplatePromptWriter().write(ORIGINAL, insights)

    assert "fix: Viewers leave at second three" in written.prompt
    assert written.changes[0].kind == ChangeKind.CHANGED


def test_local_insights_mean_the_template_writer() -> None:
    assert isinstance(
        build_prompt_writer(Settings(insights_provider="local")), TemplatePromptWriter
    )


# --- providers ----------------------------------------------------------------------------


@pytest.fixture
def llm_server() -> Iterator[FakeLLMServer]:
    server = FakeLLMServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


def anthropic_tool(tool_input: object, *, stop_reason: str = "tool_use") -> JsonReply:
    reply = anthropic_message(tool_input, stop_reason=stop_reason)
    for block in reply.body["content"]:
        block["name"] = "write_prompt"
    return reply


def test_anthropic_writes_through_a_forced_tool_call(llm_server: FakeLLMServer) -> None:
    llm_server.enqueue(anthropic_tool(ANSWER_JSON))
    writer = build_prompt_writer(settings_for("anthropic", llm_server))
    assert isinstance(writer, ModelPromptWriter) and writer.provider == "anthropic"

    written = writer.write(ORIGINAL, INSIGHTS)

    assert written.prompt == ANSWER_JSON["prompt"]
    assert written.writer == "anthropic/claude-haiku-4-5" and not written.is_template
    assert [c.kind for c in written.changes] == [ChangeKind.KEPT, ChangeKind.CHANGED]
    assert written.usage == TokenUsage(1000, 200)
    body = llm_server.requests[0].json
    assert body["tool_choice"] == {"type": "tool", "name": "write_prompt"}
    sent = body["messages"][0]["content"]
    assert "ten-second smoothie made in one shot" in sent and "Almost nobody shares it" in sent


def test_anthropic_refusal_is_content_blocked_with_its_tokens(llm_server: FakeLLMServer) -> None:
    llm_server.enqueue(anthropic_tool(None, stop_reason="refusal"))

    with pytest.raises(WritingFailed) as raised:
        build_prompt_writer(settings_for("anthropic", llm_server)).write(ORIGINAL, INSIGHTS)

    assert raised.value.code == FailureCode.CONTENT_BLOCKED
    assert raised.value.usage == TokenUsage(1000, 200)


def test_anthropic_overload_is_transient(llm_server: FakeLLMServer) -> None:
    llm_server.enqueue(anthropic_error(529, "overloaded_error"))

    with pytest.raises(ProviderTransientError):
        build_prompt_writer(settings_for("anthropic", llm_server)).write(ORIGINAL, INSIGHTS)


def test_openai_uses_a_strict_schema_and_asks_again_after_a_bad_answer(
    llm_server: FakeLLMServer,
) -> None:
    llm_server.enqueue(openai_completion('{"prompt": "cut'))
    llm_server.enqueue(openai_completion(json.dumps(ANSWER_JSON)))
    writer = build_prompt_writer(settings_for("openai", llm_server))
    assert isinstance(writer, ModelPromptWriter) and writer.provider == "openai"

    written = writer.write(ORIGINAL, INSIGHTS)

    assert written.prompt == ANSWER_JSON["prompt"]
    assert written.usage == TokenUsage(1800, 300), "both answers were billed"
    response_format = llm_server.requests[0].json["response_format"]
    assert response_format["json_schema"]["strict"] is True


def test_openai_empty_prompts_twice_are_refused_as_invalid(llm_server: FakeLLMServer) -> None:
    llm_server.enqueue(openai_completion(json.dumps({"prompt": " ", "changes": []})))
    llm_server.enqueue(openai_completion(json.dumps({"prompt": "", "changes": []})))

    with pytest.raises(WritingFailed) as raised:
        build_prompt_writer(settings_for("openai", llm_server)).write(ORIGINAL, INSIGHTS)

    assert raised.value.code == FailureCode.ANALYSIS_INVALID
    assert raised.value.usage == TokenUsage(1800, 300)


def test_gemini_answers_with_a_response_json_schema(llm_server: FakeLLMServer) -> None:
    llm_server.enqueue(gemini_response(json.dumps(ANSWER_JSON)))
    writer = build_prompt_writer(settings_for("gemini", llm_server))
    assert isinstance(writer, ModelPromptWriter) and writer.provider == "gemini"

    written = writer.write(ORIGINAL, INSIGHTS)

    assert written.prompt == ANSWER_JSON["prompt"]
    assert written.usage == TokenUsage(700, 100)
    sent = llm_server.requests[0]
    assert sent.path == "/v1beta/models/gemini-2.5-flash:generateContent"
    assert sent.json["generationConfig"]["responseMimeType"] == "application/json"


def test_a_long_answer_is_cut_to_the_generation_limit(llm_server: FakeLLMServer) -> None:
    llm_server.enqueue(gemini_response(json.dumps({"prompt": "shot. " * 600, "changes": []})))

    written = build_prompt_writer(settings_for("gemini", llm_server)).write(ORIGINAL, INSIGHTS)

    assert 0 < len(written.prompt) <= MAX_IMPROVED_PROMPT_CHARS


# --- what the original is made of -----------------------------------------------------------


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    upgrade_database(database_url)
    engine = create_engine(database_url, pool_size=4)
    try:
        yield engine
    finally:
        await engine.dispose()


@pytest.fixture
def sessions(engine: AsyncEngine) -> SessionFactory:
    return session_factory(engine)


async def _content(sessions: SessionFactory, tenant_id: uuid.UUID, video_id: uuid.UUID) -> Any:
    async with sessions() as session:
        video = await session.get(Video, video_id)
        assert video is not None
        return await original_content(session, tenant_id=tenant_id, video=video)


async def test_a_generated_video_is_improved_from_its_prompt(sessions: SessionFactory) -> None:
    tenant = await new_tenant(sessions, "improve-src")
    video = await new_video(sessions, tenant)
    async with sessions.begin() as session:
        session.add(
            Generation(
                id=uuid.uuid4(),
                tenant_id=tenant,
                prompt="A cat skateboarding at sunset",
                requested_provider="local",
                duration_s=4,
                aspect_ratio="9:16",
                resolution="720p",
                estimated_cost_usd=Decimal(0),
                status="completed",
                video_id=video,
            )
        )

    content = await _content(sessions, tenant, video)

    assert (content.kind, content.text) == (SourceKind.PROMPT, "A cat skateboarding at sunset")


async def test_a_produced_script_is_the_source_when_no_generation_made_the_video(
    sessions: SessionFactory,
) -> None:
    tenant = await new_tenant(sessions, "improve-src")
    video = await new_video(sessions, tenant)
    async with sessions.begin() as session:
        session.add(
            Script(
                id=uuid.uuid4(),
                tenant_id=tenant,
                title="Morning routine",
                content={
                    "hook": "You are making coffee wrong",
                    "scenes": [
                        {"start_s": 0, "end_s": 3, "direction": "Close-up of the kettle"},
                    ],
                    "call_to_action": "Follow for part two",
                },
                status="produced",
                status_history=[],
                produced_video_id=video,
            )
        )

    content = await _content(sessions, tenant, video)

    assert content.kind == SourceKind.SCRIPT
    assert "You are making coffee wrong" in content.text
    assert "[0–3 s] Close-up of the kettle" in content.text
    assert content.title == "Morning routine"


async def test_an_upload_is_improved_from_its_transcript_and_analysis(
    sessions: SessionFactory,
) -> None:
    tenant = await new_tenant(sessions, "improve-src")
    video = await new_video(sessions, tenant)
    async with sessions.begin() as session:
        session.add_all(
            [
                TranscriptSegment(
                    tenant_id=tenant,
                    video_id=video,
                    window_index=0,
                    seq=seq,
                    start_s=float(seq),
                    end_s=float(seq + 1),
                    text=text,
                )
                for seq, text in enumerate(["Blend the banana first.", "Then the ice."])
            ]
        )
        session.add(
            Analysis(
                id=uuid.uuid4(),
                tenant_id=tenant,
                video_id=video,
                analyzer="offline",
                model="offline",
                prompt_version="v1",
                analysis={
                    "hook": {"text": "Stop blending like this", "technique": "pattern interrupt"},
                    "viral_patterns": ["before/after"],
                },
            )
        )

    content = await _content(sessions, tenant, video)

    assert content.kind == SourceKind.TRANSCRIPT
    assert "Blend the banana first. Then the ice." in content.text
    assert "pattern interrupt" in content.text and "before/after" in content.text


async def test_an_upload_with_nothing_to_read_says_what_is_missing(
    sessions: SessionFactory,
) -> None:
    tenant = await new_tenant(sessions, "improve-src")
    video = await new_video(sessions, tenant)

    with pytest.raises(DomainError) as raised:
        await _content(sessions, tenant, video)

    assert raised.value.code == FailureCode.IMPROVEMENT_SOURCE_MISSING
    for missing in ("prompt", "script", "transcript", "analysis"):
        assert missing in raised.value.message


# --- the steps on Postgres --------------------------------------------------------------------


async def generated_original(
    sessions: SessionFactory, tenant: uuid.UUID, *, seconds: int
) -> uuid.UUID:
    """A video a local generation made, with metrics, as an improvement starts from."""
    video = await new_video(sessions, tenant, "Balloon")
    await add_metrics(sessions, tenant, video, views=40_000, completion=35.0)
    async with sessions.begin() as session:
        session.add(
            Generation(
                id=uuid.uuid4(),
                tenant_id=tenant,
                prompt="A hot-air balloon at sunrise",
                requested_provider="local",
                provider="local",
                duration_s=seconds,
                aspect_ratio="9:16",
                resolution="480p",
                estimated_cost_usd=Decimal(0),
                status="completed",
                video_id=video,
            )
        )
    return video


def steps(sessions: SessionFactory) -> ImproveActivities:
    settings = Settings(environment="test")
    return ImproveActivities(
        sessions=sessions,
        settings=settings,
        registry=build_provider_registry(settings),
        analyst=lambda: build_analyst(settings),
        writer=TemplatePromptWriter,
        executor=ThreadPoolExecutor(1),
    )


async def requested(sessions: SessionFactory, tenant: uuid.UUID, video: uuid.UUID) -> str:
    async with sessions.begin() as session:
        row = await request_improvement(
            session,
            tenant_id=tenant,
            video_id=video,
            provider=None,
            max_cost_usd=None,
            approve_over_budget=False,
        )
    return str(row.id)


async def test_admission_reserves_once_however_often_it_is_retried(
    sessions: SessionFactory,
) -> None:
    tenant = await new_tenant(sessions, "improve-steps")
    original = await generated_original(sessions, tenant, seconds=60)
    improvement = await requested(sessions, tenant, original)
    run = steps(sessions)
    env = ActivityEnvironment()
    ids = ImprovementStepInput(tenant_id=str(tenant), improvement_id=improvement)

    loaded = await env.run(run.load_improvement_insights, ids)
    written = await env.run(run.write_improved_prompt, ids)
    again = await env.run(run.write_improved_prompt, ids)
    first = await env.run(run.admit_improvement_generation, ids)
    second = await env.run(run.admit_improvement_generation, ids)

    assert (loaded.analyst, loaded.statistical) == ("statistical", True)
    assert (written.source_kind, written.is_template) == (SourceKind.PROMPT, True)
    assert again.prompt_chars == written.prompt_chars, "a written prompt is kept, not rewritten"
    assert first == second
    assert first.generation_id == str(improvement_generation_id(improvement))
    async with sessions() as session:
        reservations = (
            await session.scalars(
                select(QuotaReservation).where(
                    QuotaReservation.generation_id == uuid.UUID(first.generation_id)
                )
            )
        ).all()
        generation = await session.get(Generation, uuid.UUID(first.generation_id))
        row = await session.get(Improvement, uuid.UUID(improvement))
    assert [(r.seconds, r.state) for r in reservations] == [(60, "reserved")]
    assert generation is not None and row is not None
    assert (generation.duration_s, generation.resolution, generation.provider) == (
        60,
        "480p",
        "local",
    )
    assert generation.improved_from_video_id == original
    assert generation.prompt == row.improved_prompt
    assert row.status == "generating" and row.generation_id == generation.id


async def test_admission_over_the_plans_seconds_is_refused_and_writes_nothing(
    sessions: SessionFactory,
) -> None:
    tenant = await new_tenant(sessions, "improve-quota")  # free: 80 s a month
    run = steps(sessions)
    env = ActivityEnvironment()
    admitted = []
    for _ in range(2):
        original = await generated_original(sessions, tenant, seconds=60)
        improvement = await requested(sessions, tenant, original)
        ids = ImprovementStepInput(tenant_id=str(tenant), improvement_id=improvement)
        await env.run(run.load_improvement_insights, ids)
        await env.run(run.write_improved_prompt, ids)
        admitted.append((improvement, ids))

    await env.run(run.admit_improvement_generation, admitted[0][1])
    with pytest.raises(quotas.QuotaExceeded) as refused:
        await env.run(run.admit_improvement_generation, admitted[1][1])

    assert refused.value.code == "quota_exceeded"
    async with sessions() as session:
        refused_generation = await session.get(
            Generation, improvement_generation_id(admitted[1][0])
        )
    assert refused_generation is None


async def test_linking_makes_the_new_video_the_next_version(sessions: SessionFactory) -> None:
    tenant = await new_tenant(sessions, "improve-link")
    original = await generated_original(sessions, tenant, seconds=4)
    async with sessions.begin() as session:
        video = await session.get(Video, original)
        assert video is not None
        video.improvement_iteration = 2  # the original is itself a third version
    improvement = await requested(sessions, tenant, original)
    new = await new_video(sessions, tenant, "generated")
    run = steps(sessions)
    env = ActivityEnvironment()

    linked = await env.run(
        run.link_improved_version,
        LinkVersionInput(
            tenant_id=str(tenant),
            improvement_id=improvement,
            generation_id=str(uuid.uuid4()),
            new_video_id=str(new),
            cost_usd=0.0,
        ),
    )
    finished = await env.run(
        run.finish_improvement,
        FinishImprovementInput(
            tenant_id=str(tenant),
            improvement_id=improvement,
            status=ImprovementStatus.CANCELED,
            error_code="canceled",
            error_message="late cancel",
        ),
    )

    assert linked.iteration == 3 and not finished.updated, "a completion is never undone"
    async with sessions() as session:
        video = await session.get(Video, new)
        row = await session.get(Improvement, uuid.UUID(improvement))
    assert video is not None and row is not None
    assert (video.improved_from_video_id, video.improvement_iteration) == (original, 3)
    assert video.title == "Balloon · v4"
    assert (row.status, row.new_video_id, row.iteration) == ("completed", new, 3)


async def test_insights_that_name_nothing_write_no_copy_of_the_original(
    sessions: SessionFactory,
) -> None:
    tenant = await new_tenant(sessions, "improve-empty")
    original = await generated_original(sessions, tenant, seconds=4)
    improvement = await requested(sessions, tenant, original)
    async with sessions.begin() as session:
        row = await session.get(Improvement, uuid.UUID(improvement))
        assert row is not None
        row.insights = Insights().model_dump(mode="json")

    with pytest.raises(DomainError) as refused:
        await ActivityEnvironment().run(
            steps(sessions).write_improved_prompt,
            ImprovementStepInput(tenant_id=str(tenant), improvement_id=improvement),
        )

    assert refused.value.code == FailureCode.NO_INSIGHTS
    assert "nothing to keep, fix or try" in refused.value.message
