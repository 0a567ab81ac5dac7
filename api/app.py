"""The HTTP API v1: app factory, lifespan and router wiring.

Run it with `uvicorn api.app:app_factory --factory` (or `reelflow api`).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import anyio.to_thread
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.client import Client

from api.deps import Resources, install_rate_limit_headers
from api.errors import install_error_handlers
from api.routers import (
    admin,
    billing,
    health,
    improvements,
    insights,
    keys,
    listings,
    performance,
    reindex,
    reports,
    runs,
    scrapes,
    scripts,
    search,
    uploads,
    usage,
    videos,
)
from api.routers import chat as chat_routes
from api.routers import discover as discover_routes
from api.routers import generations as generation_routes
from reelflow.chat.answerers import Answerer
from reelflow.chat.retrieval import RetrievalCache
from reelflow.chat.service import build_chat_answerer, check_chat_pricing
from reelflow.core.db import create_engine, session_factory
from reelflow.core.settings import Settings, get_settings
from reelflow.core.storage import Storage, build_storage
from reelflow.core.temporal_client import connect_temporal
from reelflow.generation.routing import ProviderRegistry, build_provider_registry
from reelflow.search.embedding import Embedder, WarmingEmbedder

logger = logging.getLogger(__name__)

API_VERSION = "1.0.0"


def create_app(
    settings: Settings,
    *,
    engine: AsyncEngine | None = None,
    temporal: Client | None = None,
    storage: Storage | None = None,
    embedder: Embedder | None = None,
    video_providers: ProviderRegistry | None = None,
    answerer: Answerer | None = None,
) -> FastAPI:
    """Build the API. Clients not injected are built once, at startup, and closed at shutdown.

    Args:
        settings: The process settings.
        engine: A database engine to use instead of one built from `DATABASE_URL`; the
            caller keeps ownership (it is not disposed at shutdown).
        temporal: A connected Temporal client (it must use the pydantic data converter).
        storage: The media storage.
        embedder: The query embedder for search; it must be the model chunks were
            indexed with, or search finds nothing.
        video_providers: The video generation providers requests are checked and
            routed against; by default those the settings configure (the local renderer,
            plus Sora with a key). The workers must be configured alike.
        answerer: The chat answerer; by default the one `CHAT_PROVIDER` selects. Startup
            fails with a readable `SettingsError` when its model has no price.
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            db_engine = engine
            if db_engine is None:
                db_engine = create_engine(settings.database_url)
                stack.push_async_callback(db_engine.dispose)
            # Lazy: the API can start while Temporal is still coming up; /healthz tells.
            client = temporal or await connect_temporal(
                settings, identity="reelflow-api", lazy=True
            )
            media = storage or build_storage(settings)
            # The model loads on its own thread while the API already answers; a search
            # that comes first waits for it.
            model: Embedder = embedder or WarmingEmbedder(settings)
            providers = video_providers
            if providers is None:
                providers = await anyio.to_thread.run_sync(build_provider_registry, settings)
            chat_answerer = answerer
            if chat_answerer is None:
                chat_answerer = await anyio.to_thread.run_sync(build_chat_answerer, settings)
            # A paid call without a price would be recorded as free: refuse to start instead.
            check_chat_pricing(chat_answerer, model)
            app.state.resources = Resources(
                settings=settings,
                engine=db_engine,
                sessions=session_factory(db_engine),
                temporal=client,
                storage=media,
                embedder=model,
                video_providers=providers,
                answerer=chat_answerer,
                chat_cache=RetrievalCache(settings.chat_cache_ttl_s),
            )
            logger.info("api ready: storage %r, embedder %s", media, model.model_name)
            yield

    app = FastAPI(
        title="reelflow",
        version=API_VERSION,
        summary="Durable video pipelines on Temporal.",
        openapi_url="/openapi.json",
        lifespan=lifespan,
    )
    install_error_handlers(app)
    app.include_router(health.router)
    # Uploads first: its fixed paths (/v1/videos/uploads) must win over /v1/videos/{id}.
    app.include_router(uploads.router)
    app.include_router(videos.router)
    app.include_router(search.router)
    app.include_router(runs.router)
    app.include_router(generation_routes.router)
    app.include_router(usage.router)
    app.include_router(chat_routes.router)
    app.include_router(discover_routes.router)
    app.include_router(scrapes.router)
    app.include_router(scripts.router)
    app.include_router(insights.router)
    app.include_router(reports.router)
    app.include_router(improvements.router)
    app.include_router(performance.router)
    app.include_router(billing.router)
    app.include_router(admin.router)
    app.include_router(keys.router)
    app.include_router(listings.router)
    app.include_router(reindex.router)
    install_rate_limit_headers(app)
    return app


def app_factory() -> FastAPI:
    """The app for uvicorn (`--factory`), configured from the environment."""
    return create_app(get_settings())
