"""Retrieval quality on a corpus built here: speech videos ingested by the real pipeline.

Five espeak-ng videos on distinct topics go through the real ingest (ffmpeg, faster-whisper
tiny.en, chunking, the local MiniLM embedder, pgvector) once for the module. Questions are
paraphrases whose answers are single sentences at known times (`SpeechVideo.spoken`). A hit
is a passage among chat retrieval's top 3 that belongs to the right video and whose span
contains the moment the answer is spoken (the sentence's midpoint).

Chunks are set to about three sentences here (30-word target instead of 500), so each video
has several and a hit means finding the right part of the right video, not just the video.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.testing import WorkflowEnvironment

from reelflow.chat.retrieval import RetrievalScope, Retriever
from reelflow.core.db import create_engine, session_factory
from reelflow.core.migrate import upgrade_database
from reelflow.core.tenants import create_tenant
from reelflow.dev.samples import SpeechVideo, make_speech_video
from reelflow.search.embedding import Embedder
from schemas.ingest import VideoStatus
from tests.chat.chat_support import AppFactory
from tests.e2e.conftest import Pipeline, pipeline_settings
from tests.e2e.test_ingest_pipeline import add_video, ingest, running_workers

logger = logging.getLogger(__name__)

TOPICS: dict[str, tuple[str, ...]] = {
    "Baking bread at home": (
        "Welcome back to the kitchen, today we are baking a simple loaf of bread.",
        "Start by mixing five hundred grams of flour with warm water and salt.",
        "Add one small spoon of dry yeast so the dough can rise.",
        "Knead the dough on the table for ten minutes until it is smooth.",
        "Cover the bowl with a towel and let it rest for one hour.",
        "Heat the oven to two hundred and thirty degrees before baking.",
        "Bake the loaf for forty minutes until the crust is dark brown.",
        "Let the bread cool on a rack before you slice it.",
    ),
    "Fixing a flat bicycle tire": (
        "In this video I will show you how to fix a flat tire on your bike.",
        "First, open the brake and take the wheel out of the frame.",
        "Use two plastic levers to pull the tire away from the rim.",
        "Pull out the inner tube and pump some air into it.",
        "Listen for the hiss of air to find the small hole.",
        "Clean the area with sandpaper and press a rubber patch over the hole.",
        "Put the tube back inside the tire and push the tire onto the rim.",
        "Finally pump the tire to the pressure written on its side.",
    ),
    "Stargazing for beginners": (
        "Tonight we look at the night sky with a small telescope.",
        "The moon is the easiest target, and its craters are clear even at low power.",
        "Jupiter appears as a bright dot with four tiny moons lined up beside it.",
        "Saturn is famous for its rings, which you can see with a modest lens.",
        "Stars twinkle because their light passes through moving layers of air.",
        "Find a dark place far from city lights for the best view.",
        "Let your eyes adapt to the darkness for about twenty minutes.",
        "A red flashlight helps you read star maps without ruining your night vision.",
    ),
    "Growing tomatoes": (
        "Today we plant tomatoes in the vegetable garden.",
        "Tomatoes need at least six hours of direct sunlight every day.",
        "Dig a deep hole and bury the stem up to the first leaves.",
        "Water the plants deeply at the base, but keep the leaves dry.",
        "Put a wooden stake next to each plant so it can climb.",
        "Pinch off the small side shoots that grow between the stem and the branches.",
        "Yellow leaves near the bottom often mean the soil needs more nitrogen.",
        "Pick the fruit when it is fully red and slightly soft.",
    ),
    "Saving money every month": (
        "Let us talk about how to save money every month.",
        "Write down every expense for thirty days to see where your money goes.",
        "Pay yourself first by moving ten percent of your salary into savings.",
        "Keep an emergency fund that covers three to six months of expenses.",
        "Pay off the credit card with the highest interest rate first.",
        "Cancel subscriptions you have not used in the last month.",
        "Cooking at home instead of eating out can save hundreds each year.",
        "Index funds are a simple low cost way to invest for the long term.",
    ),
}

# (question, video title, index of the sentence that answers it)
QUESTIONS: tuple[tuple[str, str, int], ...] = (
    ("How long do I have to knead the dough?", "Baking bread at home", 3),
    ("What temperature should the oven be set to?", "Baking bread at home", 5),
    ("How much flour goes into the loaf?", "Baking bread at home", 1),
    ("What tools get the tire off the wheel rim?", "Fixing a flat bicycle tire", 2),
    ("How can I locate the puncture in the tube?", "Fixing a flat bicycle tire", 4),
    ("How hard should I inflate the tyre?", "Fixing a flat bicycle tire", 7),
    ("Why do stars seem to flicker?", "Stargazing for beginners", 4),
    ("Which planet has rings around it?", "Stargazing for beginners", 3),
    ("How long until my eyes get used to the dark?", "Stargazing for beginners", 6),
    ("How many hours of sun do tomato plants need?", "Growing tomatoes", 1),
    ("What do yellowing lower leaves tell me?", "Growing tomatoes", 6),
    ("When are the tomatoes ready to pick?", "Growing tomatoes", 7),
    ("How big should my rainy day fund be?", "Saving money every month", 3),
    ("Which debt should I pay back first?", "Saving money every month", 4),
    ("What is an inexpensive way to invest for decades?", "Saving money every month", 7),
)
HIT_AT_3_TARGET = 0.9


@dataclass(frozen=True)
class Corpus:
    engine: AsyncEngine
    embedder: Embedder
    database_url: str
    home: Path
    tenant_id: uuid.UUID
    api_key: str
    videos: dict[str, tuple[uuid.UUID, SpeechVideo]]


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def corpus(
    database_url: str, local_env: WorkflowEnvironment, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Corpus]:
    upgrade_database(database_url)
    home = tmp_path_factory.mktemp("chat-corpus")
    settings = pipeline_settings(
        database_url,
        home,
        chunk_target_words=30,
        chunk_max_words=60,
        chunk_overlap_words=8,
    )
    media = home / "sources"
    media.mkdir()

    def render(index: int, sentences: tuple[str, ...]) -> SpeechVideo:
        # Small frames: the picture does not matter here, the speech does.
        return make_speech_video(
            media / f"topic{index}.mp4", sentences, width=320, height=180, fps=10
        )

    renders = await asyncio.gather(
        *(asyncio.to_thread(render, i, lines) for i, lines in enumerate(TOPICS.values()))
    )
    engine = create_engine(database_url, pool_size=4)
    sessions = session_factory(engine)
    async with sessions.begin() as session:
        tenant = await create_tenant(session, name="chat-corpus")
    pipeline = Pipeline(settings, sessions, local_env.client, str(tenant.tenant_id))
    videos: dict[str, tuple[uuid.UUID, SpeechVideo]] = {}
    try:
        async with running_workers(pipeline) as deps:
            for title, speech in zip(TOPICS, renders, strict=True):
                video_id = await add_video(pipeline, speech.path, title=title)
                videos[title] = (uuid.UUID(video_id), speech)
            results = await asyncio.gather(*(ingest(pipeline, str(v)) for v, _ in videos.values()))
            embedder = deps.embedder
        assert all(r.status == VideoStatus.COMPLETED and r.chunk_count >= 2 for r in results)
        yield Corpus(engine, embedder, database_url, home, tenant.tenant_id, tenant.api_key, videos)
    finally:
        await engine.dispose()


def answer_moment(corpus: Corpus, title: str, sentence: int) -> tuple[uuid.UUID, float]:
    video_id, speech = corpus.videos[title]
    line = speech.spoken[sentence]
    return video_id, (line.start_s + line.end_s) / 2


async def test_hit_at_3_of_chat_retrieval_on_spoken_videos(corpus: Corpus) -> None:
    retriever = Retriever(corpus.embedder)
    sessions = session_factory(corpus.engine)
    hits = firsts = 0
    misses: list[str] = []
    for question, title, sentence in QUESTIONS:
        video_id, moment = answer_moment(corpus, title, sentence)
        result = await retriever.retrieve(
            sessions, tenant_id=corpus.tenant_id, question=question, scope=RetrievalScope()
        )
        top = result.passages[:3]
        found = [p.video_id == video_id and p.start_s <= moment <= p.end_s for p in top]
        firsts += bool(found[:1] == [True])
        if any(found):
            hits += 1
        else:
            got = ", ".join(f"{p.title}@{p.start_s:.1f}-{p.end_s:.1f}" for p in top)
            misses.append(f"{question!r} wants {title}@{moment:.1f}s, got {got}")
    hit_at_3 = hits / len(QUESTIONS)
    # hit@1 is reported, not asserted: the target is about the passages a prompt gets.
    report = (
        f"hit@3 = {hit_at_3:.3f} ({hits}/{len(QUESTIONS)}), target {HIT_AT_3_TARGET}; "
        f"hit@1 = {firsts / len(QUESTIONS):.3f}; misses: {misses}"
    )
    logger.info("chat retrieval %s", report)
    assert hit_at_3 >= HIT_AT_3_TARGET, report


async def test_chat_over_the_ingested_corpus_cites_whisper_verified_moments(
    corpus: Corpus,
) -> None:
    apps = AppFactory(corpus.engine, corpus.embedder, corpus.database_url, corpus.home)
    video_id, moment = answer_moment(corpus, "Stargazing for beginners", 4)
    async with apps.client() as api:
        response = await api.post(
            "/v1/chat",
            json={"message": "Why do stars twinkle?"},
            headers={"Authorization": f"Bearer {corpus.api_key}"},
        )
    assert response.status_code == 200, response.text
    body = response.json()
    # Quoted from Whisper's transcript of the answer sentence (which may mishear a word).
    assert "layers of air" in body["content"].lower()
    # Every reference survived the check against the segments Whisper stored.
    assert body["references"] and body["dropped_references"] == 0
    first = body["references"][0]
    assert first["video_id"] == str(video_id) and first["title"] == "Stargazing for beginners"
    assert first["start_s"] <= moment <= first["end_s"]
