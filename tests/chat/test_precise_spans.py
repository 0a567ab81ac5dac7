"""Search results and chat references point at the sentence, not at the start of the chunk.

A video of eight 4-second sentences is chunked about three sentences a chunk, as ingest
would; each answer sentence is somewhere inside its chunk. `GET /v1/search` must give the
span of the segments carrying the query's words, and a chat reference must start where the
sentence it quotes starts, on the real app with the local embedder and offline answerer.
"""

from __future__ import annotations

import re

import pytest
import pytest_asyncio
from sqlalchemy.ext.asyncio import AsyncEngine

from reelflow.chat.citations import citing_text
from reelflow.search.minilm import LocalMiniLMEmbedder
from reelflow.search.spans import Segment, best_span
from tests.chat.chat_support import (
    AppFactory,
    IndexedVideo,
    Tenant,
    index_transcript,
    new_tenant,
    timed_lines,
)

BREAD = [
    "Good morning, today we bake a crusty loaf of bread in a home oven.",
    "Mix the flour with warm water, salt and a spoon of dry yeast.",
    "Knead the dough for ten minutes until it feels smooth and elastic.",
    "Let the dough rise in a warm place until it doubles in size.",
    "Heat the oven to two hundred and thirty degrees before baking.",
    "Bake the loaf for forty minutes until the crust is dark brown.",
    "Let the bread cool on a rack before you slice it.",
    "Store the loaf in a paper bag so the crust stays crisp.",
]


@pytest_asyncio.fixture(loop_scope="session")
async def bread(
    chat_engine: AsyncEngine, minilm: LocalMiniLMEmbedder
) -> tuple[Tenant, IndexedVideo]:
    tenant = await new_tenant(chat_engine, "spans")
    video = await index_transcript(
        chat_engine, minilm, tenant.tenant_id, "Baking bread", timed_lines(BREAD)
    )
    return tenant, video


@pytest.mark.parametrize(
    ("query", "sentence"),
    [
        ("knead the dough for ten minutes", 2),
        ("oven temperature two hundred thirty degrees", 4),
        ("paper bag", 7),
    ],
)
@pytest.mark.parametrize("mode", ["hybrid", "vector", "text"])
async def test_search_results_give_the_span_of_the_matching_sentence(
    apps: AppFactory,
    bread: tuple[Tenant, IndexedVideo],
    query: str,
    sentence: int,
    mode: str,
) -> None:
    tenant, video = bread
    line = video.lines[sentence]
    async with apps.client() as api:
        response = await api.get(
            "/v1/search", params={"q": query, "mode": mode, "k": 1}, headers=tenant.headers
        )
    assert response.status_code == 200, response.text
    (hit,) = response.json()["results"]
    # Still the chunk (it holds the sentence), and the match is that sentence exactly.
    assert hit["start_s"] <= line.start_s and line.end_s <= hit["end_s"]
    assert (hit["match_start_s"], hit["match_end_s"]) == (line.start_s, line.end_s)
    assert (hit["end_s"] - hit["start_s"]) > (line.end_s - line.start_s)


async def test_a_chat_reference_starts_at_the_sentence_it_quotes(
    apps: AppFactory, bread: tuple[Tenant, IndexedVideo]
) -> None:
    tenant, video = bread
    async with apps.client() as api:
        response = await api.post(
            "/v1/chat",
            json={"message": "How long should the loaf bake in the oven?"},
            headers=tenant.headers,
        )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["dropped_references"] == 0
    # The offline answerer quotes whole sentences, each followed by its passage's number.
    quoted = re.findall(r'^- "(.+?)" \(.*\) \[1\]$', body["content"], flags=re.MULTILINE)
    lines = [line for line in video.lines if line.text in quoted]
    assert lines and len(lines) == len(quoted)
    first = body["references"][0]
    # The reference spans exactly the quoted sentences: it starts where the first one does,
    # which is not where its 3-sentence chunk starts.
    assert (first["start_s"], first["end_s"]) == (lines[0].start_s, lines[-1].end_s)
    assert first["text"] == " ".join(line.text for line in lines)
    # The passage as the answer was given it (its chunk's span) starts earlier.
    shown = re.search(r"(\d+):(\d\d)–\d+:\d\d\) \[1\]", body["content"])
    assert shown is not None
    assert int(shown[1]) * 60 + int(shown[2]) < first["start_s"]


def test_the_span_is_the_segment_with_most_words_and_neighbours_that_continue_it() -> None:
    segments = [
        Segment(0.0, 4.0, "Welcome to the shop."),
        Segment(4.0, 8.0, "The XK-4471 driver has"),
        Segment(8.0, 12.0, "two batteries"),
        Segment(12.0, 16.0, "Now about paint."),
    ]
    assert best_span(segments, "XK-4471 driver") == best_span(segments, "the XK-4471 drivers")
    span = best_span(segments, "the XK-4471 driver has two batteries")
    assert span is not None and (span.start_s, span.end_s) == (4.0, 12.0)
    assert span.text == "The XK-4471 driver has two batteries"
    only = best_span(segments, "paint")
    assert only is not None and (only.start_s, only.end_s) == (12.0, 16.0)
    assert best_span(segments, "nothing in common here") is None
    assert best_span(segments, "the and of") is None
    assert best_span([], "paint") is None


def test_the_text_a_citation_is_made_with() -> None:
    answer = (
        "Knead it for ten minutes [1]. Then bake it [2][3], and cool it [1, 4].\n"
        '- "Store the loaf in a bag" (Baking, 0:28–0:32) [5]'
    )
    claims = citing_text(answer)
    assert claims[1] == "Knead it for ten minutes  , and cool it "
    assert claims[2] == claims[3] == ". Then bake it "
    assert claims[4] == ", and cool it "
    assert claims[5] == '- "Store the loaf in a bag" (Baking, 0:28–0:32) '
