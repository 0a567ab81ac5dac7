"""RAG chat: ask about the tenant's videos; answers cite verified video moments and carry a cost.

`POST /v1/chat` answers as JSON, or as server-sent events when `stream` is true:
`content` events (`{"text": …}`) while the answer streams, then `done` (the same body as the
JSON answer) or `error` (`{"code", "message"}`; the partial answer is kept, marked
incomplete). Both forms send the session and answer ids in the `X-Chat-Session-Id` and
`X-Chat-Message-Id` headers before any answer text, so a client can find a cut-short answer.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response
from sse_starlette import EventSourceResponse, ServerSentEvent

from api.deps import AnswererDep, CurrentTenant, ResourcesDep, SessionDep
from api.errors import ERROR_RESPONSES, ApiError, not_found
from api.routers.billing import ai_credit_hold, warn
from reelflow.chat.retrieval import Retriever
from reelflow.chat.service import (
    ChatEvent,
    ChatNotFound,
    ChatService,
    ContentDelta,
    TurnDone,
    list_sessions,
    session_messages,
)
from reelflow.search.hybrid import FusionWeights
from schemas.api import ErrorResponse
from schemas.chat import (
    ChatContentEvent,
    ChatErrorEvent,
    ChatMessageList,
    ChatRequest,
    ChatResponse,
    ChatSessionList,
)

router = APIRouter(prefix="/v1/chat", tags=["chat"], responses=ERROR_RESPONSES)

_KEEPALIVE_S = 15


def get_chat_service(resources: ResourcesDep, answerer: AnswererDep) -> ChatService:
    """A service over the process's shared clients and cache (cheap to build per request)."""
    settings = resources.settings
    retriever = Retriever(
        resources.embedder,
        cache=resources.chat_cache,
        context_tokens=settings.chat_context_tokens,
        recency_boost=settings.chat_recency_boost,
        popularity_boost=settings.chat_popularity_boost,
        weights=FusionWeights(
            vector=settings.search_vector_weight, text=settings.search_text_weight
        ),
    )
    return ChatService(
        sessions=resources.sessions,
        embedder=resources.embedder,
        answerer=answerer,
        retriever=retriever,
        history_pairs=settings.chat_history_pairs,
    )


ChatServiceDep = Annotated[ChatService, Depends(get_chat_service)]


async def _server_sent(
    events: AsyncGenerator[ChatEvent, None],
) -> AsyncIterator[ServerSentEvent]:
    # aclosing: if the response stops early, the turn is closed now (stopping the answerer
    # and storing the partial answer), not whenever the generator is garbage collected.
    async with aclosing(events):
        async for event in events:
            if isinstance(event, ContentDelta):
                data = ChatContentEvent(text=event.text).model_dump_json()
                yield ServerSentEvent(event="content", data=data)
            elif isinstance(event, TurnDone):
                yield ServerSentEvent(event="done", data=event.response.model_dump_json())
            else:
                error = ChatErrorEvent(code=event.code, message=event.message)
                yield ServerSentEvent(event="error", data=error.model_dump_json())


@router.post(
    "",
    response_model=ChatResponse,
    responses={
        200: {"content": {"text/event-stream": {}}},
        402: {"model": ErrorResponse, "description": "quota_exceeded"},
        502: {"model": ErrorResponse, "description": "provider_error"},
        503: {"model": ErrorResponse, "description": "provider_unavailable"},
    },
)
async def chat(
    body: ChatRequest,
    tenant: CurrentTenant,
    resources: ResourcesDep,
    service: ChatServiceDep,
    response: Response,
) -> ChatResponse | EventSourceResponse:
    """Answer a question from the tenant's video transcripts, with verified references."""
    limit = resources.settings.chat_max_message_chars
    if len(body.message) > limit:
        raise ApiError(
            422,
            "invalid_request",
            f"message: is {len(body.message)} characters long; the limit is {limit}",
        )
    # AI credits: a hold while the answer is written; the ledger then has its real cost.
    hold = await ai_credit_hold(resources, tenant.id)
    warn(response, hold.warnings)
    try:
        turn = await service.prepare(tenant.id, body)
    except ChatNotFound as exc:
        await hold.release()
        raise not_found(exc.what, exc.ident) from None
    except BaseException:
        await hold.release()
        raise
    headers = {
        "X-Chat-Session-Id": str(turn.session_id),
        "X-Chat-Message-Id": str(turn.message_id),
    }
    if body.stream:
        return EventSourceResponse(
            hold.released_after(_server_sent(service.run(turn))),
            headers={**headers, **hold.headers()},
            ping=_KEEPALIVE_S,
        )
    try:
        async with aclosing(service.run(turn)) as events:
            async for event in events:
                if isinstance(event, TurnDone):
                    response.headers.update(headers)
                    return event.response
                if not isinstance(event, ContentDelta):
                    raise ApiError(event.status_code, event.code, event.message, headers=headers)
    finally:
        await hold.release()
    raise RuntimeError("the chat turn ended without a result")  # pragma: no cover


@router.get("/sessions", response_model=ChatSessionList)
async def get_sessions(
    tenant: CurrentTenant,
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> ChatSessionList:
    """The tenant's chat sessions, most recently active first, with each one's total cost."""
    return await list_sessions(session, tenant.id, limit=limit, offset=offset)


@router.get("/sessions/{session_id}/messages", response_model=ChatMessageList)
async def get_session_messages(
    session_id: uuid.UUID, tenant: CurrentTenant, session: SessionDep
) -> ChatMessageList:
    """A session's questions and answers, oldest first, each with its references and cost."""
    try:
        return await session_messages(session, tenant.id, session_id)
    except ChatNotFound as exc:
        raise not_found(exc.what, exc.ident) from None
