"""Improvement runs and video version links.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("videos", sa.Column("improved_from_video_id", sa.UUID(), nullable=True))
    op.add_column(
        "videos",
        sa.Column("improvement_iteration", sa.Integer(), server_default="0", nullable=False),
    )
    op.create_foreign_key(
        "videos_improved_from_video_id_fkey",
        "videos",
        "videos",
        ["improved_from_video_id"],
        ["id"],
        ondelete="SET NULL",
    )
    op.create_index(op.f("ix_videos_improved_from_video_id"), "videos", ["improved_from_video_id"])
    op.create_table(
        "improvements",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("tenant_id", sa.UUID(), nullable=False),
        sa.Column("video_id", sa.UUID(), nullable=False),
        sa.Column("generation_id", sa.UUID(), nullable=True),
        sa.Column("new_video_id", sa.UUID(), nullable=True),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("iteration", sa.Integer(), nullable=False),
        sa.Column("requested_provider", sa.String(length=40), nullable=False),
        sa.Column("max_cost_usd", sa.Numeric(14, 8), nullable=True),
        sa.Column("approve_over_budget", sa.Boolean(), nullable=False),
        sa.Column("approval", sa.String(length=20), nullable=False),
        sa.Column("insights", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("source_kind", sa.String(length=20), nullable=True),
        sa.Column("original_prompt", sa.Text(), nullable=True),
        sa.Column("improved_prompt", sa.Text(), nullable=True),
        sa.Column("changes", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("writer", sa.String(length=120), nullable=True),
        sa.Column("workflow_id", sa.String(length=200), nullable=True),
        sa.Column("error_code", sa.String(length=60), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["video_id"], ["videos.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["generation_id"], ["generations.id"], ondelete="SET NULL"),
        sa.ForeignKeyConstraint(["new_video_id"], ["videos.id"], ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(op.f("ix_improvements_video_id"), "improvements", ["video_id"])
    op.create_index(op.f("ix_improvements_status"), "improvements", ["status"])
    op.create_index("ix_improvements_tenant_created", "improvements", ["tenant_id", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_improvements_tenant_created", table_name="improvements")
    op.drop_index(op.f("ix_improvements_status"), table_name="improvements")
    op.drop_index(op.f("ix_improvements_video_id"), table_name="improvements")
    op.drop_table("improvements")
    op.drop_index(op.f("ix_videos_improved_from_video_id"), table_name="videos")
    op.drop_constraint("videos_improved_from_video_id_fkey", "videos", type_="foreignkey")
    op.drop_column("videos", "improvement_iteration")
    op.drop_column("videos", "improved_from_video_id")
