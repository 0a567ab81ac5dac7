"""Alembic environment: runs migrations on the URL `reelflow.core.migrate` passes in."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, pool

from schemas.tables import Base

config = context.config
target_metadata = Base.metadata


def run_migrations_online() -> None:
    """Apply migrations over one connection, inside one transaction."""
    url = config.get_main_option("sqlalchemy.url")
    assert url, "reelflow.core.migrate sets sqlalchemy.url"
    engine = create_engine(url, poolclass=pool.NullPool)
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=target_metadata)
        with context.begin_transaction():
            # Concurrent `dev up`/worker starts must not race on the same migration.
            context.execute("SELECT pg_advisory_xact_lock(727274)")
            context.run_migrations()
    engine.dispose()


run_migrations_online()
