"""Generations remember whether their video is to be indexed when it is stored.

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable without a default: every generation made before the option was not indexed.
    op.add_column("generations", sa.Column("index_result", JSONB))


def downgrade() -> None:
    op.drop_column("generations", "index_result")
