"""The migrations build exactly the schema the table classes describe, and run backwards."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect

from reelflow.core.migrate import alembic_config, upgrade_database
from schemas.tables import Base


def test_migrations_match_the_table_classes(database_url: str) -> None:
    upgrade_database(database_url)
    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    finally:
        engine.dispose()
    assert differences == [], (
        f"schema drift between migrations and schemas/tables.py: {differences}"
    )


def test_upgrading_twice_is_a_no_op_and_downgrade_removes_the_tables(database_url: str) -> None:
    from alembic import command

    upgrade_database(database_url)
    upgrade_database(database_url)
    command.downgrade(alembic_config(database_url), "base")
    engine = create_engine(database_url)
    try:
        tables = set(inspect(engine).get_table_names()) - {"alembic_version"}
    finally:
        engine.dispose()
    assert tables == set()
    upgrade_database(database_url)
