"""Apply the database migrations (alembic) from code: `dev up`, the workers and tests call it."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

import schemas.migrations

_MIGRATIONS = Path(schemas.migrations.__file__).resolve().parent


def alembic_config(database_url: str) -> Config:
    """An alembic config for `database_url` without an alembic.ini on disk."""
    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS))
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def upgrade_database(database_url: str, revision: str = "head") -> None:
    """Bring the database to `revision`; safe to call from several processes at once."""
    command.upgrade(alembic_config(database_url), revision)
