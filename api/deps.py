"""Request dependencies: the shared clients built at startup, sessions and the caller's tenant."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from temporalio.client import Client

from api.errors import ApiError
from reelflow.chat.answerers import Answerer
from reelflow.chat.retrieval import RetrievalCache
from reelflow.core.db import SessionFactory
from reelflow.core.settings import Settings
from reelflow.core.storage import Storage
from reelflow.core.tenants import tenant_for_api_key
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


async def get_current_tenant(
    sessions: SessionFactoryDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> TenantContext:
    """The tenant owning the bearer API key, or 401."""
    if credentials is None:
        raise ApiError(
            401,
            "unauthorized",
            "missing API key: send `Authorization: Bearer <api key>`",
            headers=_UNAUTHORIZED_HEADERS,
        )
    # A short session of its own: uploads stream for minutes and must not hold a pooled
    # connection just because authentication touched the database.
    async with sessions() as session:
        tenant = await tenant_for_api_key(session, credentials.credentials)
        if tenant is None:
            # The key itself is never echoed or logged.
            raise ApiError(
                401, "unauthorized", "invalid or revoked API key", headers=_UNAUTHORIZED_HEADERS
            )
        return TenantContext(id=tenant.id, name=tenant.name, plan=tenant.plan)


CurrentTenant = Annotated[TenantContext, Depends(get_current_tenant)]
