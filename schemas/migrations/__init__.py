"""Alembic migrations of the reelflow database."""
