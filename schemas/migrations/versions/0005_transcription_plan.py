"""Transcription plan: voiced regions and speech-aligned windows stored on each video.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable: videos extracted before this revision have no plan and keep the fixed
    # windows they were (or will be) transcribed in.
    op.add_column("videos", sa.Column("transcription_plan", JSONB, nullable=True))


def downgrade() -> None:
    op.drop_column("videos", "transcription_plan")
