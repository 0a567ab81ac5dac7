"""`POST /v1/chat` with `stream: true`, over a real uvicorn server and TCP.

httpx's ASGI transport buffers whole responses, so these tests read the event stream as a
client on a socket does: `content` events as the answer is generated, then `done` or
`error`; and a client that hangs up mid-answer.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from reelflow.chat.answerers import estimate_tokens
from reelflow.chat.offline import OFFLINE_NOTICE
from reelflow.core.db import session_factory
from reelflow.search.minilm import LocalMiniLMEmbedder
from schemas.chat_tables import ChatMessage
from tests.chat.answerers.servers import (
    SSE,
    FakeLLMServer,
    Hold,
    StreamReply,
    anthropic_deltas,
    anthropic_error,
    anthropic_error_body,
    anthropic_stream,
    anthropic_stream_head,
    anthropic_stream_tail,
)
from tests.chat.chat_support import (
    HAIKU,
    AppFactory,
    Event,
    Tenant,
    anthropic_answerer,
    index_transcript,
    ledger_rows,
    read_events,
    timed_lines,
)
from tests.support import assert_eventually

BREAD = [
    "Good morning, today we bake a crusty loaf of bread in a home oven.",
    "Mix the flour with warm water, salt and a spoon of dry yeast.",
    "Knead the dough for ten minutes until it feels smooth and elastic.",
    "Let the dough rise in a warm place until it doubles in size.",
    "Bake the loaf at two hundred and thirty degrees for forty minutes.",
]


def ask(question: str, **extra: Any) -> dict[str, Any]:
    return {"message": question, "stream": True, **extra}


async def stored_answer(engine: AsyncEngine, message_id: str) -> ChatMessage:
    async with session_factory(engine)() as session:
        message = await session.scalar(
            select(ChatMessage).where(ChatMessage.id == uuid.UUID(message_id))
        )
    assert message is not None
    return message


async def test_the_offline_answer_streams_content_then_done(
    apps: AppFactory, chat_engine: AsyncEngine, minilm: LocalMiniLMEmbedder, alice: Tenant
) -> None:
    await index_transcript(chat_engine, minilm, alice.tenant_id, "Bread", timed_lines(BREAD))
    async with (
        apps.served() as url,
        httpx.AsyncClient(base_url=url, headers=alice.headers, timeout=30) as client,
        client.stream("POST", "/v1/chat", json=ask("How long do I knead the dough?")) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        message_id = response.headers["x-chat-message-id"]
        events = await read_events(response)
    names = [e.event for e in events]
    assert names[-1] == "done" and set(names[:-1]) == {"content"} and len(names) > 2
    done = events[-1].data
    streamed = "".join(e.data["text"] for e in events[:-1])
    assert streamed == done["content"] and streamed.startswith(OFFLINE_NOTICE)
    assert done["message_id"] == message_id and done["incomplete"] is False
    assert done["references"] and done["dropped_references"] == 0
    assert (await stored_answer(chat_engine, message_id)).content == streamed


async def test_claude_deltas_arrive_as_content_events(
    apps: AppFactory,
    chat_engine: AsyncEngine,
    minilm: LocalMiniLMEmbedder,
    llm_server: FakeLLMServer,
    alice: Tenant,
) -> None:
    await index_transcript(chat_engine, minilm, alice.tenant_id, "Bread", timed_lines(BREAD))
    parts = ["Knead ", "for ten ", "minutes [1]."]
    llm_server.enqueue(anthropic_stream(HAIKU, parts, input_tokens=800, output_tokens=12))
    async with (
        apps.served(anthropic_answerer(llm_server.url)) as url,
        httpx.AsyncClient(base_url=url, headers=alice.headers, timeout=30) as client,
        client.stream("POST", "/v1/chat", json=ask("Knead how long?")) as response,
    ):
        events = await read_events(response)
    assert [(e.event, e.data.get("text")) for e in events[:-1]] == [("content", p) for p in parts]
    done = events[-1]
    assert done.event == "done"
    assert done.data["usage"]["input_tokens"] == 800 and done.data["usage"]["output_tokens"] == 12
    assert len(done.data["references"]) == 1


async def test_a_provider_error_mid_stream_ends_with_error_and_keeps_the_priced_partial(
    apps: AppFactory,
    chat_engine: AsyncEngine,
    minilm: LocalMiniLMEmbedder,
    llm_server: FakeLLMServer,
    alice: Tenant,
) -> None:
    bread = await index_transcript(
        chat_engine, minilm, alice.tenant_id, "Bread", timed_lines(BREAD)
    )
    partial = ["Knead the dough ", "for ten minutes [1]"]
    llm_server.enqueue(
        StreamReply(
            [
                *anthropic_stream_head(HAIKU, input_tokens=900),
                *anthropic_deltas(partial),
                SSE(anthropic_error_body("overloaded_error", "Overloaded"), event="error"),
            ]
        )
    )
    async with (
        apps.served(anthropic_answerer(llm_server.url)) as url,
        httpx.AsyncClient(base_url=url, headers=alice.headers, timeout=30) as client,
        client.stream("POST", "/v1/chat", json=ask("Knead how long?")) as response,
    ):
        assert response.status_code == 200
        message_id = response.headers["x-chat-message-id"]
        events = await read_events(response)
    assert [e.event for e in events] == ["content", "content", "error"]
    assert events[-1].data["code"] == "provider_unavailable"
    assert "partial answer was kept" in events[-1].data["message"]
    # Text had reached the client, so the request was not repeated.
    assert len(llm_server.requests) == 1

    answer = await stored_answer(chat_engine, message_id)
    assert answer.incomplete is True and answer.error_code == "provider_unavailable"
    assert answer.content == "".join(partial)
    assert [r["video_id"] for r in answer.references] == [str(bread.video_id)]
    rows = {r.operation: r for r in await ledger_rows(chat_engine, f"chat/{message_id}/")}
    # The prompt as reported by message_start; the partial output by estimate.
    assert rows["chat_input"].units == 900 and float(rows["chat_input"].cost_usd) == 0.0009
    assert rows["chat_output"].units == estimate_tokens("".join(partial))
    assert float(answer.cost_usd) == float(
        rows["chat_input"].cost_usd + rows["chat_output"].cost_usd
    )


async def test_a_rate_limit_that_persists_ends_with_one_error_event(
    apps: AppFactory,
    chat_engine: AsyncEngine,
    minilm: LocalMiniLMEmbedder,
    llm_server: FakeLLMServer,
    alice: Tenant,
) -> None:
    await index_transcript(chat_engine, minilm, alice.tenant_id, "Bread", timed_lines(BREAD))
    for _ in range(3):
        llm_server.enqueue(anthropic_error(429, "rate_limit_error"))
    async with (
        apps.served(anthropic_answerer(llm_server.url)) as url,
        httpx.AsyncClient(base_url=url, headers=alice.headers, timeout=30) as client,
        client.stream("POST", "/v1/chat", json=ask("Knead how long?")) as response,
    ):
        message_id = response.headers["x-chat-message-id"]
        events = await read_events(response)
    assert [e.event for e in events] == ["error"]
    assert events[0].data["code"] == "provider_unavailable"
    assert len(llm_server.requests) == 3
    answer = await stored_answer(chat_engine, message_id)
    assert (
        answer.incomplete and answer.content == "" and answer.error_code == "provider_unavailable"
    )


async def test_a_client_that_hangs_up_stops_the_answer_and_its_usage_is_kept(
    apps: AppFactory,
    chat_engine: AsyncEngine,
    minilm: LocalMiniLMEmbedder,
    llm_server: FakeLLMServer,
    alice: Tenant,
) -> None:
    bread = await index_transcript(
        chat_engine, minilm, alice.tenant_id, "Bread", timed_lines(BREAD)
    )
    # The provider pauses after each of the first two deltas; the server notices a hang-up
    # during a pause, and never sends the rest if the answer was stopped.
    llm_server.enqueue(
        StreamReply(
            [
                *anthropic_stream_head(HAIKU, input_tokens=700),
                *anthropic_deltas(["First part [1] "]),
                Hold(1.0),
                *anthropic_deltas(["second part "]),
                Hold(10.0),
                *anthropic_deltas(["never sent "] * 50),
                *anthropic_stream_tail(400),
            ]
        )
    )
    async with (
        apps.served(anthropic_answerer(llm_server.url)) as url,
        httpx.AsyncClient(base_url=url, headers=alice.headers, timeout=30) as client,
    ):
        async with client.stream("POST", "/v1/chat", json=ask("Knead how long?")) as response:
            message_id = response.headers["x-chat-message-id"]
            first = await read_events(response, stop_after=1)
            assert first == [Event("content", {"text": "First part [1] "})]
        # Leaving the block closed the connection in the middle of the answer. (The server
        # runs on this event loop: wait in a thread, not by blocking the loop.)
        closed = await asyncio.to_thread(llm_server.client_disconnected.wait, 5)
        assert closed, "the provider stream was left open"

        async def stored_as_disconnected() -> ChatMessage:
            answer = await stored_answer(chat_engine, message_id)
            assert answer.error_code == "client_disconnected", answer.error_code
            return answer

        answer = await assert_eventually(stored_as_disconnected, timeout=10)
    assert not llm_server.stream_finished.is_set()
    assert answer.incomplete is True
    # What the provider had produced when the answer was stopped, and nothing after.
    assert answer.content in ("First part [1] ", "First part [1] second part ")
    assert [r["video_id"] for r in answer.references] == [str(bread.video_id)]
    rows = {r.operation: r for r in await ledger_rows(chat_engine, f"chat/{message_id}/")}
    assert set(rows) == {"embedding", "chat_input", "chat_output"}
    # No usage was reported before the stop, so the prompt and the text are estimated.
    assert rows["chat_input"].units > 0 and rows["chat_input"].cost_usd > 0
    assert rows["chat_output"].units == estimate_tokens(answer.content)
    assert answer.cost_usd == sum(r.cost_usd for r in rows.values())
