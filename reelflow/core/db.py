"""Database engine and sessions: built once per process and injected."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

SessionFactory = async_sessionmaker[AsyncSession]


def create_engine(database_url: str, *, pool_size: int = 10) -> AsyncEngine:
    """An async engine over psycopg 3; `pool_pre_ping` survives a Postgres restart."""
    return create_async_engine(
        database_url,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,
    )


def session_factory(engine: AsyncEngine) -> SessionFactory:
    """Sessions that keep loaded values after commit (we return them from handlers)."""
    return async_sessionmaker(engine, expire_on_commit=False)
