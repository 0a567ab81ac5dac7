"""Request dependencies: the shared clients built at startup, sessions and the caller's tenant."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, MutableMapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import Depends, FastAPI, Request, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from temporalio.client import Client

from api.errors import ApiError
from reelflow.billing.plans import plan_limits
from reelflow.chat.answerers import Answerer
from reelflow.chat.retrieval import RetrievalCache
from reelflow.core.db import SessionFactory
from reelflow.core.rate_limits import count_request, rate_limits_on
from reelflow.core.settings import Settings
from reelflow.core.storage import Storage
from reelflow.core.tenants import SCOPES, authenticate, has_scope, touch_last_used
from reelflow.generation.routing import ProviderRegistry
from reelflow.search.embedding import Embedder


@dataclass
class Resources:
    """Everything a request may need, built once per process by the app's lifespan."""

    settings: Settings
    engine: AsyncEngine
    sessions: SessionFactory
    temporal: Client
    storage: Storage
    embedder: Embedder
    video_providers: ProviderRegistry
    answerer: Answerer
    chat_cache: RetrievalCache


@dataclass(frozen=True)
class TenantContext:
    """The authenticated caller. A plain value, so no database session has to stay open."""

    id: uuid.UUID
    name: str
    plan: str
    key_id: uuid.UUID | None = None
    key_prefix: str = ""
    """The first characters of the key used (`rf_` + 7), safe to show and to log."""
    scopes: tuple[str, ...] = SCOPES


def get_resources(request: Request) -> Resources:
    resources: Resources = request.app.state.resources
    return resources


ResourcesDep = Annotated[Resources, Depends(get_resources)]


def get_settings(resources: ResourcesDep) -> Settings:
    return resources.settings


def get_session_factory(resources: ResourcesDep) -> SessionFactory:
    return resources.sessions


async def get_session(resources: ResourcesDep) -> AsyncIterator[AsyncSession]:
    """A session for the request; it rolls back whatever the route did not commit."""
    async with resources.sessions() as session:
        yield session


def get_temporal(resources: ResourcesDep) -> Client:
    return resources.temporal


def get_storage(resources: ResourcesDep) -> Storage:
    return resources.storage


def get_embedder(resources: ResourcesDep) -> Embedder:
    return resources.embedder


SettingsDep = Annotated[Settings, Depends(get_settings)]
SessionFactoryDep = Annotated[SessionFactory, Depends(get_session_factory)]
SessionDep = Annotated[AsyncSession, Depends(get_session)]
TemporalDep = Annotated[Client, Depends(get_temporal)]
StorageDep = Annotated[Storage, Depends(get_storage)]
EmbedderDep = Annotated[Embedder, Depends(get_embedder)]


def get_video_providers(resources: ResourcesDep) -> ProviderRegistry:
    return resources.video_providers


VideoProvidersDep = Annotated[ProviderRegistry, Depends(get_video_providers)]


def get_answerer(resources: ResourcesDep) -> Answerer:
    return resources.answerer


AnswererDep = Annotated[Answerer, Depends(get_answerer)]

# auto_error=False: a missing or malformed header gets our 401 envelope, not FastAPI's 403.
_bearer = HTTPBearer(auto_error=False, description="A tenant API key: `Bearer rf_…`")

_UNAUTHORIZED_HEADERS = {"WWW-Authenticate": "Bearer"}
_READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
RATE_LIMIT_HEADERS_STATE = "rate_limit_headers"
"""Where the request's `RateLimit-*` headers wait for `install_rate_limit_headers`."""


@dataclass(frozen=True)
class AccessLimits:
    """The limits the API enforces for a tenant's plan."""

    requests_per_10s: int
    concurrent_runs: int


def limits_for(plan: str) -> AccessLimits:
    """The request and run limits of `plan`, from the plan table (unknown plans get Free's).

    The one place the API reads plan limits for keys and runs.
    """
    limits = plan_limits(plan)
    return AccessLimits(
        requests_per_10s=limits.requests_per_10s, concurrent_runs=limits.concurrent_runs
    )


def insufficient_scope(needed: str) -> ApiError:
    return ApiError(
        403,
        "insufficient_scope",
        f"this API key lacks the `{needed}` scope this request needs",
    )


async def get_current_tenant(
    request: Request,
    response: Response,
    resources: ResourcesDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> TenantContext:
    """The tenant owning the bearer API key, after its rate limit and scope checks.

    401 for a missing, unknown, revoked or expired key; 429 (with `Retry-After`) past the
    plan's requests per 10 s for this key; 403 `insufficient_scope` for a read-only key on
    anything but GET/HEAD/OPTIONS. The key is looked up on every request (no cache), so a
    revocation made through any API process is seen by all of them at once.
    """
    if credentials is None:
        raise ApiError(
            401,
            "unauthorized",
            "missing API key: send `Authorization: Bearer <api key>`",
            headers=_UNAUTHORIZED_HEADERS,
        )
    settings = resources.settings
    # A short session of its own: uploads stream for minutes and must not hold a pooled
    # connection just because authentication touched the database.
    async with resources.sessions() as session:
        identity = await authenticate(session, credentials.credentials)
        if identity is None:
            # The key itself is never echoed or logged.
            raise ApiError(
                401, "unauthorized", "invalid or revoked API key", headers=_UNAUTHORIZED_HEADERS
            )
        decision = None
        if rate_limits_on(settings):
            decision = await count_request(
                session,
                identity.key_id,
                limit=limits_for(identity.plan).requests_per_10s,
            )
        every = timedelta(seconds=settings.api_key_last_used_every_s)
        last_used = identity.last_used_at
        # Checked here first so a busy key costs no statement for it; the update's own
        # condition settles races between processes.
        if (decision is None or decision.allowed) and (
            last_used is None or last_used < datetime.now(UTC) - every
        ):
            await touch_last_used(
                session,
                identity.key_id,
                at_most_every=every,
            )
        await session.commit()
    if decision is not None:
        headers = decision.headers()
        if not decision.allowed:
            raise ApiError(
                429,
                "rate_limited",
                f"more than {decision.limit} requests in 10 s with this API key; "
                f"retry in {decision.reset_s} s",
                headers=headers,
            )
        response.headers.update(headers)
        setattr(request.state, RATE_LIMIT_HEADERS_STATE, headers)
    needed = "read" if request.method in _READ_METHODS else "write"
    if not has_scope(identity.scopes, needed):
        raise insufficient_scope(needed)
    return TenantContext(
        id=identity.tenant_id,
        name=identity.tenant_name,
        plan=identity.plan,
        key_id=identity.key_id,
        key_prefix=identity.key_prefix,
        scopes=identity.scopes,
    )


CurrentTenant = Annotated[TenantContext, Depends(get_current_tenant)]


def get_admin_tenant(tenant: CurrentTenant) -> TenantContext:
    """The caller, when its key holds the `admin` scope (managing keys); else 403."""
    if not has_scope(tenant.scopes, "admin"):
        raise insufficient_scope("admin")
    return tenant


AdminTenant = Annotated[TenantContext, Depends(get_admin_tenant)]


class _RateLimitHeaders:
    """Adds the request's `RateLimit-*` headers to responses a dependency cannot reach.

    Routes returning a `Response` themselves (media, SSE) and error envelopes do not carry
    the headers `get_current_tenant` set on FastAPI's response; this puts them on every
    response of an authenticated request.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                state: MutableMapping[str, object] = scope.get("state") or {}
                extra = state.get(RATE_LIMIT_HEADERS_STATE)
                if isinstance(extra, dict):
                    raw = list(message.get("headers", []))
                    present = {name.lower() for name, _ in raw}
                    for name, value in extra.items():
                        encoded = name.lower().encode("latin-1")
                        if encoded not in present:
                            raw.append((encoded, str(value).encode("latin-1")))
                    message["headers"] = raw
            await send(message)

        await self.app(scope, receive, send_with_headers)


def install_rate_limit_headers(app: FastAPI) -> None:
    """Put `RateLimit-*` headers on every response of an authenticated request."""
    app.add_middleware(_RateLimitHeaders)
