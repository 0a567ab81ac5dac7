"""RAG chat: one question in, a streamed answer with verified citations and a price out.

A turn has two parts, so the HTTP layer can turn every input problem into a 4xx before any
streaming starts:

* :meth:`ChatService.prepare` checks the scope (video ids must be the tenant's) and the
  session (must be the tenant's), creates the session when none was given (titled from the
  message), reads the history, and writes the question and an empty answer marked
  ``incomplete`` — so an answer cut short by anything, a crash included, is never lost.
* :meth:`ChatService.run` retrieves passages (``reelflow.chat.retrieval``), streams the answer
  (``reelflow.chat.answerers``) as :class:`ContentDelta` events, verifies the references
  (``reelflow.chat.citations``), prices everything in the ledger and completes the answer row;
  it ends with exactly one :class:`TurnDone` or :class:`TurnFailed`.

**Retries.** A transient provider failure (429, 5xx, overloaded, a dropped connection) is
retried with backoff, up to :data:`ANSWER_ATTEMPTS` attempts, as long as no text has reached
the client; after that, retrying would repeat text the client already has. Tokens of failed
attempts are priced too.

**Stopping.** When the consumer stops (the client disconnected, so the SSE response is
cancelled) the answerer's generator is closed, which closes the provider's HTTP stream, and
what was produced is stored as incomplete (``client_disconnected``) with its usage. The
answerer runs in a worker thread one event at a time, so the stop takes effect when the
provider's next event arrives (milliseconds while tokens flow).

**Cost.** Ledger rows per answer, keyed by the answer's message id so a repeated step is
counted once: ``chat/<id>/embedding`` (the question's embedding), ``chat/<id>/input`` and
``chat/<id>/output`` (the answerer's tokens, all attempts together). The message row's tokens
and dollars are recomputed from those rows. Local models cost $0 and record compute seconds.
A paid model without a price fails at startup (:func:`check_chat_pricing`), never at
request time and never as a free call.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncGenerator, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Literal

import anyio
import anyio.to_thread
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from reelflow.chat.answerers import (
    NOTHING_INDEXED,
    Answerer,
    AnswerEvent,
    AnswerInterrupted,
    AnswerRequest,
    ChatTurn,
    Finished,
    TextDelta,
    build_answerer,
    build_prompt,
    estimate_prompt_tokens,
    estimate_tokens,
    recent_history,
)
from reelflow.chat.citations import (
    Reference,
    narrow_to_quotes,
    select_references,
    verify_references,
)
from reelflow.chat.retrieval import (
    Retrieval,
    RetrievalScope,
    Retriever,
    answer_passages,
    missing_videos,
)
from reelflow.core.db import SessionFactory
from reelflow.core.ledger import Usage, record_usage
from reelflow.core.pricing import UnknownPrice, price_for, priced_model
from reelflow.core.provider_errors import ProviderError, ProviderTransientError
from reelflow.core.settings import Settings, SettingsError
from reelflow.search.embedding import Embedder
from schemas.chat import (
    ChatMessageList,
    ChatMessageOut,
    ChatReference,
    ChatRequest,
    ChatResponse,
    ChatSessionList,
    ChatSessionSummary,
    ChatUsage,
)
from schemas.chat_tables import ChatMessage, ChatSession
from schemas.tables import LedgerEntry

logger = logging.getLogger(__name__)

MAX_OUTPUT_TOKENS = 1024
"""Longest answer asked of a model (seed 004 estimates ~300 tokens for a typical one)."""
ANSWER_ATTEMPTS = 3
RETRY_BACKOFF_S = (0.5, 1.5)
"""Wait before the 2nd and 3rd attempt; a provider's Retry-After can lengthen it."""
MAX_RETRY_WAIT_S = 5.0
"""A Retry-After longer than this is not waited for: a chat client would give up first."""
TITLE_CHARS = 60

LedgerStep = Literal["embedding", "input", "output"]


# --- small helpers -----------------------------------------------------------------------------


def session_title(message: str) -> str:
    """The first message on one line, cut at a word boundary near :data:`TITLE_CHARS`."""
    line = " ".join(message.split())
    if len(line) <= TITLE_CHARS:
        return line
    cut = line[: TITLE_CHARS - 1]
    if " " in cut[TITLE_CHARS // 2 :]:
        cut = cut[: cut.rfind(" ")]
    return cut.rstrip(" ,;:.-") + "…"


def ledger_key(message_id: uuid.UUID, step: LedgerStep) -> str:
    """The idempotency key of one priced step of an answer."""
    return f"chat/{message_id}/{step}"


def build_chat_answerer(settings: Settings) -> Answerer:
    """The answerer ``CHAT_PROVIDER`` selects, built once per process.

    Raises:
        SettingsError: The provider's API key is missing.
    """
    keys = {
        "anthropic": settings.anthropic_api_key,
        "openai": settings.openai_api_key,
        "gemini": settings.gemini_api_key,
    }
    key = keys.get(settings.chat_provider)
    base_url = settings.chat_base_url
    if settings.chat_provider == "openai" and base_url is None:
        base_url = settings.openai_base_url
    return build_answerer(
        settings.chat_provider,
        api_key=key.get_secret_value() if key is not None else None,
        base_url=base_url,
        model=settings.chat_model,
    )


def check_chat_pricing(answerer: Answerer, embedder: Embedder) -> None:
    """Fail at startup, readably, when a paid chat call would have no price.

    Raises:
        SettingsError: Names the missing price and what to do about it.
    """
    needed = (
        (answerer.provider, "chat_input", answerer.model, "CHAT_MODEL"),
        (answerer.provider, "chat_output", answerer.model, "CHAT_MODEL"),
        (embedder.provider, "embedding", priced_model(embedder.model_name), "the embedding model"),
    )
    for provider, operation, model, setting in needed:
        try:
            price_for(provider, operation, model)
        except UnknownPrice:
            raise SettingsError(
                f"no {operation} price for {provider} model {model!r} in reelflow/pricing.py: "
                f"add it (as a new PRICES_VERSION) or choose a priced model with {setting}; "
                "chat refuses to record a paid call as free"
            ) from None


# --- ledger steps ------------------------------------------------------------------------------


async def record_query_embedding(
    session: AsyncSession,
    *,
    tenant_id: uuid.UUID,
    session_id: uuid.UUID,
    message_id: uuid.UUID,
    embedder: Embedder,
    tokens: int,
    compute_seconds: float,
) -> None:
    """Ledger row for the question's embedding; a repeat with the same message id is a no-op."""
    await record_usage(
        session,
        Usage(
            idempotency_key=ledger_key(message_id, "embedding"),
            tenant_id=tenant_id,
            run_id=f"chat-{session_id}",
            step="chat.embedding",
            provider=embedder.provider,
            operation="embedding",
            model=priced_model(embedder.model_name),
            units=Decimal(tokens),
            compute_seconds=round(compute_seconds, 4) if embedder.provider == "local" else 0.0,
        ),
    )


async def record_answer_usage(
    session: AsyncSession,
    *,
    tenant_id: uuid.UUID,
    session_id: uuid.UUID,
    message_id: uuid.UUID,
    provider: str,
    model: str,
    input_tokens: int,
    output_tokens: int,
    compute_seconds: float = 0.0,
) -> None:
    """Ledger rows for an answer's input and output tokens, each recorded once per message.

    Local answers get both rows ($0, compute seconds on the output row) so usage shows the
    work done; a paid provider gets a row only for tokens it actually billed.
    """
    local = provider == "local"
    steps: tuple[tuple[LedgerStep, str, int, float], ...] = (
        ("input", "chat_input", input_tokens, 0.0),
        ("output", "chat_output", output_tokens, round(compute_seconds, 4) if local else 0.0),
    )
    for step, operation, units, seconds in steps:
        if units <= 0 and not local:
            continue
        await record_usage(
            session,
            Usage(
                idempotency_key=ledger_key(message_id, step),
                tenant_id=tenant_id,
                run_id=f"chat-{session_id}",
                step=f"chat.{step}",
                provider=provider,
                operation=operation,
                model=model,
                units=Decimal(max(0, units)),
                compute_seconds=seconds,
            ),
        )


async def refresh_message_usage(session: AsyncSession, message_id: uuid.UUID) -> ChatUsage:
    """Copy the answer's ledger rows (tokens, dollars) onto its message row and return them."""
    keys = [ledger_key(message_id, step) for step in ("embedding", "input", "output")]
    rows = await session.execute(
        select(
            LedgerEntry.operation,
            func.sum(LedgerEntry.units).label("units"),
            func.sum(LedgerEntry.cost_usd).label("cost"),
        )
        .where(LedgerEntry.idempotency_key.in_(keys))
        .group_by(LedgerEntry.operation)
    )
    tokens = {"embedding": 0, "chat_input": 0, "chat_output": 0}
    cost = Decimal(0)
    for row in rows:
        tokens[row.operation] = int(row.units)
        cost += Decimal(row.cost)
    await session.execute(
        update(ChatMessage)
        .where(ChatMessage.id == message_id)
        .values(
            input_tokens=tokens["chat_input"],
            output_tokens=tokens["chat_output"],
            embedding_tokens=tokens["embedding"],
            cost_usd=cost,
        )
    )
    return ChatUsage(
        input_tokens=tokens["chat_input"],
        output_tokens=tokens["chat_output"],
        embedding_tokens=tokens["embedding"],
        cost_usd=float(cost),
    )


# --- events ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ContentDelta:
    """The next piece of the answer."""

    text: str


@dataclass(frozen=True)
class TurnDone:
    """The answer is complete (or was cut at the output limit) and stored."""

    response: ChatResponse


@dataclass(frozen=True)
class TurnFailed:
    """The answer failed; what was produced is stored, marked incomplete.

    Attributes:
        code: ``provider_unavailable`` (transient, retries exhausted), ``provider_error``
            (permanent) or ``internal_error``.
        message: For people.
        status_code: The HTTP status a non-streamed request answers with.
        response: The stored, incomplete answer.
    """

    code: str
    message: str
    status_code: int
    response: ChatResponse


ChatEvent = ContentDelta | TurnDone | TurnFailed


class ChatNotFound(LookupError):
    """A session or video that is not the tenant's (or does not exist)."""

    def __init__(self, what: str, ident: uuid.UUID) -> None:
        super().__init__(f"no {what} with id {ident}")
        self.what = what
        self.ident = ident


@dataclass(frozen=True)
class PreparedTurn:
    """A question stored and ready to be answered."""

    tenant_id: uuid.UUID
    session_id: uuid.UUID
    message_id: uuid.UUID
    """The answer's message id (ledger keys derive from it)."""
    question: str
    scope: RetrievalScope
    history: tuple[ChatTurn, ...]


@dataclass
class _TurnState:
    """What a turn has produced so far; written by the answer thread, read on the loop."""

    parts: list[str] = field(default_factory=list)
    retrieval: Retrieval | None = None
    request: AnswerRequest | None = None
    model_called: bool = False
    attempt_open: bool = False
    """An answerer stream is in flight whose usage no event has reported yet."""
    input_tokens: int = 0
    output_tokens: int = 0
    answer_seconds: float = 0.0
    stop_reason: str | None = None
    error: ProviderError | None = None
    error_code: str | None = None

    def pull(self, stream: Iterator[AnswerEvent]) -> AnswerEvent | None:
        """The next event of ``stream`` (in a worker thread), recorded as soon as it exists."""
        started = time.perf_counter()
        try:
            event = next(stream, None)
        finally:
            self.answer_seconds += time.perf_counter() - started
        if isinstance(event, TextDelta):
            self.parts.append(event.text)
        elif isinstance(event, Finished):
            self.attempt_open = False
            self.input_tokens += event.input_tokens
            self.output_tokens += event.output_tokens
            self.stop_reason = event.stop_reason
        return event

    def attempt_failed(self, exc: ProviderError) -> None:
        self.attempt_open = False
        if isinstance(exc, AnswerInterrupted):
            self.input_tokens += exc.input_tokens
            self.output_tokens += exc.output_tokens

    def abandon_attempt(self) -> None:
        """Price an attempt that was stopped before it reported usage, by estimate.

        The provider has (most likely) read the whole prompt and billed the text it sent,
        so the estimate errs on the side of charging.
        """
        if not self.attempt_open or self.request is None:
            return
        self.attempt_open = False
        self.input_tokens += estimate_prompt_tokens(build_prompt(self.request))
        self.output_tokens += estimate_tokens("".join(self.parts))


def _failure_code(exc: ProviderError) -> tuple[str, int]:
    cause = exc.error if isinstance(exc, AnswerInterrupted) else exc
    if isinstance(cause, ProviderTransientError):
        return "provider_unavailable", 503
    return "provider_error", 502


# --- the service -------------------------------------------------------------------------------


class ChatService:
    """Answers questions for the HTTP layer; cheap to build, so one per request is fine."""

    def __init__(
        self,
        *,
        sessions: SessionFactory,
        embedder: Embedder,
        answerer: Answerer,
        retriever: Retriever,
        history_pairs: int = 5,
        max_output_tokens: int = MAX_OUTPUT_TOKENS,
        attempts: int = ANSWER_ATTEMPTS,
        backoff_s: Sequence[float] = RETRY_BACKOFF_S,
    ) -> None:
        """Wire the service.

        Args:
            sessions: Database sessions.
            embedder: The query embedder (the model the chunks were indexed with).
            answerer: The language model side, shared by the process.
            retriever: Finds the passages.
            history_pairs: Earlier question/answer pairs sent along.
            max_output_tokens: Longest answer asked for.
            attempts: Tries per answer while nothing has been streamed.
            backoff_s: Waits between tries; the last one repeats.
        """
        if attempts < 1:
            raise ValueError("attempts must be at least 1")
        self._sessions = sessions
        self._embedder = embedder
        self._answerer = answerer
        self._retriever = retriever
        self._history_pairs = history_pairs
        self._max_output_tokens = max_output_tokens
        self._attempts = attempts
        self._backoff_s = tuple(backoff_s) or (0.0,)

    # --- before the answer -------------------------------------------------------------------

    async def prepare(self, tenant_id: uuid.UUID, request: ChatRequest) -> PreparedTurn:
        """Validate the scope and session, and store the question and an empty answer.

        Raises:
            ChatNotFound: The session or one of the videos is not the tenant's.
        """
        scope = RetrievalScope(
            collection_id=request.collection_id,
            video_ids=tuple(request.video_ids) if request.video_ids else None,
        )
        async with self._sessions.begin() as db:
            if scope.video_ids:
                missing = await missing_videos(db, tenant_id, scope.video_ids)
                if missing:
                    raise ChatNotFound("video", missing[0])
            history: list[ChatTurn] = []
            if request.session_id is not None:
                # Locked, so concurrent questions in one session get distinct positions.
                chat = await db.scalar(
                    select(ChatSession)
                    .where(ChatSession.id == request.session_id, ChatSession.tenant_id == tenant_id)
                    .with_for_update()
                )
                if chat is None:
                    raise ChatNotFound("chat session", request.session_id)
                history = await self._history(db, chat.id)
                last_seq = await db.scalar(
                    select(func.max(ChatMessage.seq)).where(ChatMessage.session_id == chat.id)
                )
                seq = (last_seq or 0) + 1
            else:
                chat = ChatSession(
                    id=uuid.uuid4(), tenant_id=tenant_id, title=session_title(request.message)
                )
                db.add(chat)
                await db.flush()
                seq = 1
            answer_id = uuid.uuid4()
            db.add_all(
                [
                    self._message(chat.id, tenant_id, uuid.uuid4(), seq, "user", request.message),
                    self._message(chat.id, tenant_id, answer_id, seq + 1, "assistant", ""),
                ]
            )
            if request.session_id is not None:
                await db.execute(
                    update(ChatSession)
                    .where(ChatSession.id == chat.id)
                    .values(last_message_at=func.now())
                )
        return PreparedTurn(
            tenant_id=tenant_id,
            session_id=chat.id,
            message_id=answer_id,
            question=request.message,
            scope=scope,
            history=tuple(history),
        )

    def _message(
        self,
        session_id: uuid.UUID,
        tenant_id: uuid.UUID,
        message_id: uuid.UUID,
        seq: int,
        role: Literal["user", "assistant"],
        content: str,
    ) -> ChatMessage:
        answer = role == "assistant"
        return ChatMessage(
            id=message_id,
            session_id=session_id,
            tenant_id=tenant_id,
            seq=seq,
            role=role,
            content=content,
            # An answer is incomplete until `run` completes it.
            incomplete=answer,
            references=[],
            dropped_references=0,
            provider=self._answerer.provider if answer else None,
            model=self._answerer.model if answer else None,
            input_tokens=0,
            output_tokens=0,
            embedding_tokens=0,
            cost_usd=Decimal(0),
            # Set when an answer is completed; a question is complete when written.
            completed_at=None if answer else datetime.now(UTC),
        )

    async def _history(self, db: AsyncSession, session_id: uuid.UUID) -> list[ChatTurn]:
        """The last complete question/answer pairs of the session, oldest first.

        Incomplete answers are left out (a half answer would mislead the model), and so, by
        :func:`recent_history`, is the question they belonged to.
        """
        if self._history_pairs <= 0:
            return []
        rows = (
            await db.execute(
                select(ChatMessage.role, ChatMessage.content, ChatMessage.incomplete)
                .where(ChatMessage.session_id == session_id)
                .order_by(ChatMessage.seq.desc())
                # Room for skipped incomplete answers without reading the whole session.
                .limit(self._history_pairs * 4 + 2)
            )
        ).all()
        turns = [
            ChatTurn("user" if row.role == "user" else "assistant", row.content)
            for row in reversed(rows)
            if row.role == "user" or not row.incomplete
        ]
        return recent_history(turns, self._history_pairs)

    # --- the answer --------------------------------------------------------------------------

    def _wait_before(self, attempt: int, exc: ProviderError) -> float:
        base = self._backoff_s[min(attempt - 1, len(self._backoff_s) - 1)]
        suggested = exc.retry_after_s or 0.0
        return min(max(base, suggested), MAX_RETRY_WAIT_S)

    async def run(self, turn: PreparedTurn) -> AsyncGenerator[ChatEvent, None]:
        """Answer a turn: content deltas, then one :class:`TurnDone` or :class:`TurnFailed`.

        Stopping the iteration (``aclose``, or cancelling the task that iterates) stops the
        answerer and stores the partial answer as incomplete; cleanup is shielded from the
        cancellation so the record is always written.
        """
        state = _TurnState()
        try:
            retrieval = await self._retriever.retrieve(
                self._sessions,
                tenant_id=turn.tenant_id,
                question=turn.question,
                scope=turn.scope,
            )
            state.retrieval = retrieval
            if retrieval.embedding_tokens:
                async with self._sessions.begin() as db:
                    await record_query_embedding(
                        db,
                        tenant_id=turn.tenant_id,
                        session_id=turn.session_id,
                        message_id=turn.message_id,
                        embedder=self._embedder,
                        tokens=retrieval.embedding_tokens,
                        compute_seconds=retrieval.embedding_seconds,
                    )
            if not retrieval.passages:
                # Nothing to answer from: say so, without calling (and paying) a model.
                state.parts.append(NOTHING_INDEXED)
                yield ContentDelta(NOTHING_INDEXED)
            else:
                state.request = AnswerRequest(
                    question=turn.question,
                    passages=answer_passages(retrieval.passages),
                    history=turn.history,
                    max_output_tokens=self._max_output_tokens,
                )
                for attempt in range(1, self._attempts + 1):
                    stream = self._answerer.stream(state.request)
                    state.model_called = True
                    state.attempt_open = True
                    try:
                        while True:
                            event = await anyio.to_thread.run_sync(state.pull, stream)
                            if isinstance(event, TextDelta):
                                yield ContentDelta(event.text)
                            elif isinstance(event, Finished):
                                break
                            else:
                                # Answerers always end with Finished; estimate if one did not.
                                state.abandon_attempt()
                                break
                        break
                    except ProviderError as exc:
                        state.attempt_failed(exc)
                        transient = isinstance(exc, ProviderTransientError) or (
                            isinstance(exc, AnswerInterrupted) and exc.transient
                        )
                        if not transient or state.parts or attempt == self._attempts:
                            state.error = exc
                            break
                        wait = self._wait_before(attempt, exc)
                        logger.info(
                            "chat answer attempt %d failed (%s); retrying in %.1fs",
                            attempt,
                            type(exc).__name__,
                            wait,
                        )
                        await anyio.sleep(wait)
                    finally:
                        # Closing the generator closes the provider's HTTP stream. It may block
                        # briefly, and must happen even while this task is being cancelled.
                        with anyio.CancelScope(shield=True):
                            await anyio.to_thread.run_sync(stream.close)
        except ProviderError as exc:
            # From retrieval: the embedding provider failed before any answer text.
            state.error = exc
        except BaseException as exc:
            # The client went away (cancellation, or the consumer closed us) or a bug.
            state.abandon_attempt()
            state.error_code = (
                "internal_error" if isinstance(exc, Exception) else "client_disconnected"
            )
            with anyio.CancelScope(shield=True):
                response = await self._finalize(turn, state)
            if isinstance(exc, Exception):
                logger.exception("chat turn %s failed", turn.message_id)
                yield TurnFailed(
                    "internal_error", "something went wrong on our side", 500, response
                )
                return
            raise
        with anyio.CancelScope(shield=True):
            response = await self._finalize(turn, state)
        if state.error is not None:
            code, status = _failure_code(state.error)
            kept = "the partial answer was kept" if state.parts else "no answer was produced"
            yield TurnFailed(
                code,
                f"the {state.error.provider} provider failed: {state.error}; {kept}",
                status,
                response,
            )
        else:
            yield TurnDone(response)

    async def _finalize(self, turn: PreparedTurn, state: _TurnState) -> ChatResponse:
        """Verify references, price the answer and complete its message row (idempotent)."""
        content = "".join(state.parts)
        error_code = state.error_code
        if error_code is None and state.error is not None:
            error_code = _failure_code(state.error)[0]
        if error_code is None and state.stop_reason in ("max_tokens", "length", "MAX_TOKENS"):
            error_code = "max_output_tokens"
        retrieval = state.retrieval
        passages = [
            Reference(
                video_id=p.video_id,
                title=p.title,
                start_s=p.start_s,
                end_s=p.end_s,
                text=p.text,
                score=p.score,
            )
            for p in (retrieval.passages if retrieval else ())
        ]
        async with self._sessions.begin() as db:
            # An answer with no text rests on nothing, so it gets no fallback references.
            selected = select_references(content, passages) if content.strip() else []
            verified, dropped = await verify_references(db, turn.tenant_id, selected)
            # Only a confirmed chunk is narrowed to the sentence the answer quotes: narrowing
            # replaces its text with the transcript's, which would hide a forged chunk.
            verified = await narrow_to_quotes(db, turn.tenant_id, content, passages, verified)
            if dropped:
                logger.warning(
                    "chat answer %s: %d reference(s) not found in the transcript, dropped",
                    turn.message_id,
                    dropped,
                )
            if state.model_called:
                await record_answer_usage(
                    db,
                    tenant_id=turn.tenant_id,
                    session_id=turn.session_id,
                    message_id=turn.message_id,
                    provider=self._answerer.provider,
                    model=self._answerer.model,
                    input_tokens=state.input_tokens,
                    output_tokens=state.output_tokens,
                    compute_seconds=state.answer_seconds,
                )
            usage = await refresh_message_usage(db, turn.message_id)
            references = [
                ChatReference(
                    video_id=ref.video_id,
                    title=ref.title,
                    start_s=round(ref.start_s, 3),
                    end_s=round(ref.end_s, 3),
                    timestamp=ref.timestamp,
                    text=ref.text,
                    score=round(ref.score, 6),
                )
                for ref in verified
            ]
            await db.execute(
                update(ChatMessage)
                .where(ChatMessage.id == turn.message_id)
                .values(
                    content=content,
                    incomplete=error_code is not None,
                    error_code=error_code,
                    references=[r.model_dump(mode="json") for r in references],
                    dropped_references=dropped,
                    completed_at=func.now(),
                )
            )
            await db.execute(
                update(ChatSession)
                .where(ChatSession.id == turn.session_id)
                .values(last_message_at=func.now())
            )
        return ChatResponse(
            session_id=turn.session_id,
            message_id=turn.message_id,
            content=content,
            incomplete=error_code is not None,
            references=references,
            dropped_references=dropped,
            usage=usage,
            cached=bool(retrieval and retrieval.cached),
        )


# --- reading sessions --------------------------------------------------------------------------


def _usage_of(
    input_tokens: object, output_tokens: object, embedding_tokens: object, cost: object
) -> ChatUsage:
    return ChatUsage(
        input_tokens=int(str(input_tokens or 0)),
        output_tokens=int(str(output_tokens or 0)),
        embedding_tokens=int(str(embedding_tokens or 0)),
        cost_usd=float(str(cost or 0)),
    )


async def list_sessions(
    db: AsyncSession, tenant_id: uuid.UUID, *, limit: int, offset: int
) -> ChatSessionList:
    """The tenant's sessions, most recently active first, each with its totals."""
    rows = await db.execute(
        select(
            ChatSession.id,
            ChatSession.title,
            ChatSession.created_at,
            ChatSession.last_message_at,
            func.count(ChatMessage.id).label("messages"),
            func.sum(ChatMessage.input_tokens).label("input_tokens"),
            func.sum(ChatMessage.output_tokens).label("output_tokens"),
            func.sum(ChatMessage.embedding_tokens).label("embedding_tokens"),
            func.sum(ChatMessage.cost_usd).label("cost"),
        )
        .outerjoin(ChatMessage, ChatMessage.session_id == ChatSession.id)
        .where(ChatSession.tenant_id == tenant_id)
        .group_by(ChatSession.id)
        .order_by(ChatSession.last_message_at.desc(), ChatSession.id)
        .limit(limit)
        .offset(offset)
    )
    return ChatSessionList(
        sessions=[
            ChatSessionSummary(
                session_id=row.id,
                title=row.title,
                created_at=row.created_at,
                last_message_at=row.last_message_at,
                message_count=int(row.messages),
                usage=_usage_of(
                    row.input_tokens, row.output_tokens, row.embedding_tokens, row.cost
                ),
            )
            for row in rows
        ]
    )


async def session_messages(
    db: AsyncSession, tenant_id: uuid.UUID, session_id: uuid.UUID
) -> ChatMessageList:
    """A session's messages, oldest first, with each one's cost and the session's totals.

    Raises:
        ChatNotFound: The session is not the tenant's.
    """
    chat = await db.scalar(
        select(ChatSession).where(ChatSession.id == session_id, ChatSession.tenant_id == tenant_id)
    )
    if chat is None:
        raise ChatNotFound("chat session", session_id)
    messages = (
        await db.scalars(
            select(ChatMessage).where(ChatMessage.session_id == chat.id).order_by(ChatMessage.seq)
        )
    ).all()
    out = [
        ChatMessageOut(
            message_id=m.id,
            role="user" if m.role == "user" else "assistant",
            content=m.content,
            incomplete=m.incomplete,
            error_code=m.error_code,
            references=[ChatReference.model_validate(r) for r in m.references],
            dropped_references=m.dropped_references,
            provider=m.provider,
            model=m.model,
            usage=_usage_of(m.input_tokens, m.output_tokens, m.embedding_tokens, m.cost_usd),
            created_at=m.created_at,
        )
        for m in messages
    ]
    total = ChatUsage(
        input_tokens=sum(m.usage.input_tokens for m in out),
        output_tokens=sum(m.usage.output_tokens for m in out),
        embedding_tokens=sum(m.usage.embedding_tokens for m in out),
        # Summed as decimals: float sums of many small prices drift.
        cost_usd=float(sum((m.cost_usd for m in messages), Decimal(0))),
    )
    return ChatMessageList(session_id=chat.id, title=chat.title, usage=total, messages=out)
