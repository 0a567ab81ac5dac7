"""Insights cache, fresh-generation counts and improvements; video version links.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "insight_cache",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("tenant_id", sa.UUID(), nullable=False),
        sa.Column("subject_kind", sa.String(length=20), nullable=False),
        sa.Column("subject_id", sa.UUID(), nullable=False),
        sa.Column("metrics_fingerprint", sa.String(length=128), nullable=False),
        sa.Column("analyst", sa.String(length=160), nullable=False),
        sa.Column("statistical", sa.Boolean(), nullable=False),
        sa.Column("insights", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("generated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint(
            "tenant_id",
            "subject_kind",
            "subject_id",
            "metrics_fingerprint",
            "analyst",
            name="uq_insight_cache_key",
        ),
    )
    op.create_table(
        "insight_generations",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("tenant_id", sa.UUID(), nullable=False),
        sa.Column("subject_kind", sa.String(length=20), nullable=False),
        sa.Column("subject_id", sa.UUID(), nullable=False),
        sa.Column("analyst", sa.String(length=160), nullable=False),
        sa.Column("generated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ix_insight_generations_tenant_at",
        "insight_generations",
        ["tenant_id", "generated_at"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index("ix_insight_generations_tenant_at", table_name="insight_generations")
    op.drop_table("insight_generations")
    op.drop_table("insight_cache")
