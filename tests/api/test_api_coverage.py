"""`coverage` in a video's detail and transcript: how much of the speech has text."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncEngine

from reelflow.core.db import session_factory
from reelflow.ingest.speech_plan import SpeechPlan
from schemas.tables import Video
from tests.api.api_support import TenantKey
from tests.api.test_api_video_reads import upload

PLAN = SpeechPlan(
    audio_duration_s=200.0,
    voiced=[(0.0, 60.0), (70.0, 130.0), (140.0, 200.0)],  # 180 voiced seconds
    windows=[(0.0, 135.0), (135.0, 200.0)],
)


async def store_plan(engine: AsyncEngine, video_id: str, stored: dict[str, Any]) -> None:
    async with session_factory(engine)() as session:
        await session.execute(
            update(Video).where(Video.id == uuid.UUID(video_id)).values(transcription_plan=stored)
        )
        await session.commit()


async def test_gaps_and_the_share_of_speech_with_text_are_shown(
    api: httpx.AsyncClient, alice: TenantKey, api_engine: AsyncEngine
) -> None:
    video_id = await upload(api, alice)
    stored = PLAN.to_json()
    stored["gaps"] = {"0": [[80.0, 98.0, "no_text_after_retry"]], "1": []}
    await store_plan(api_engine, video_id, stored)

    detail = (await api.get(f"/v1/videos/{video_id}", headers=alice.headers)).json()
    transcript = (await api.get(f"/v1/videos/{video_id}/transcript", headers=alice.headers)).json()

    expected = {
        "share": 0.9,  # 18 of 180 voiced seconds have no text
        "gaps": [{"start_s": 80.0, "end_s": 98.0, "reason": "no_text_after_retry"}],
    }
    assert detail["coverage"] == expected
    assert transcript["coverage"] == expected


async def test_coverage_is_unknown_until_every_window_is_decoded(
    api: httpx.AsyncClient, alice: TenantKey, api_engine: AsyncEngine
) -> None:
    video_id = await upload(api, alice)
    assert (await api.get(f"/v1/videos/{video_id}", headers=alice.headers)).json()[
        "coverage"
    ] is None

    stored = PLAN.to_json()
    stored["gaps"] = {"1": []}  # window 0 is still being decoded
    await store_plan(api_engine, video_id, stored)
    detail = (await api.get(f"/v1/videos/{video_id}", headers=alice.headers)).json()
    assert detail["coverage"] is None

    stored["gaps"]["0"] = []
    await store_plan(api_engine, video_id, stored)
    detail = (await api.get(f"/v1/videos/{video_id}", headers=alice.headers)).json()
    assert detail["coverage"] == {"share": 1.0, "gaps": []}
