"""Video generation: requests, provider attempts, quota usage and reservations.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB, UUID

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_MONEY = sa.Numeric(14, 8)


def _timestamp(name: str) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False)


def _tenant_fk(*, primary_key: bool = False) -> sa.Column[object]:
    return sa.Column(
        "tenant_id",
        UUID(as_uuid=True),
        sa.ForeignKey("tenants.id", ondelete="CASCADE"),
        nullable=False,
        primary_key=primary_key,
    )


def upgrade() -> None:
    op.create_table(
        "generations",
        sa.Column("id", UUID(as_uuid=True), primary_key=True),
        _tenant_fk(),
        sa.Column("prompt", sa.Text, nullable=False),
        sa.Column("requested_provider", sa.String(40), nullable=False),
        sa.Column("provider", sa.String(40)),
        sa.Column("model", sa.String(120)),
        sa.Column("provider_job_id", sa.String(200)),
        sa.Column("duration_s", sa.Integer, nullable=False),
        sa.Column("aspect_ratio", sa.String(10), nullable=False),
        sa.Column("resolution", sa.String(10), nullable=False),
        sa.Column("max_cost_usd", _MONEY),
        sa.Column("estimated_cost_usd", _MONEY, nullable=False),
        sa.Column("cost_usd", _MONEY, nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("approval", sa.String(20), nullable=False),
        sa.Column("validation", JSONB),
        sa.Column("video_id", UUID(as_uuid=True)),
        sa.Column("improved_from_video_id", UUID(as_uuid=True)),
        sa.Column("workflow_id", sa.String(200)),
        sa.Column("error_code", sa.String(60)),
        sa.Column("error_message", sa.Text),
        _timestamp("created_at"),
        _timestamp("updated_at"),
        sa.Column("completed_at", sa.DateTime(timezone=True)),
    )
    op.create_index("ix_generations_status", "generations", ["status"])
    op.create_index("ix_generations_tenant_created", "generations", ["tenant_id", "created_at"])
    op.create_table(
        "generation_attempts",
        sa.Column(
            "generation_id",
            UUID(as_uuid=True),
            sa.ForeignKey("generations.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("attempt", sa.Integer, primary_key=True),
        sa.Column("tenant_id", UUID(as_uuid=True), nullable=False),
        sa.Column("provider", sa.String(40), nullable=False),
        sa.Column("model", sa.String(120), nullable=False),
        sa.Column("idempotency_key", sa.String(300), nullable=False),
        sa.Column("provider_job_id", sa.String(200)),
        sa.Column("job_state", sa.String(20), nullable=False),
        sa.Column("outcome", sa.String(20), nullable=False),
        sa.Column("error", sa.Text),
        sa.Column("output_key", sa.Text),
        sa.Column("size_bytes", sa.Integer),
        sa.Column("validation", JSONB),
        sa.Column("cost_usd", _MONEY, nullable=False),
        _timestamp("created_at"),
        sa.Column("finished_at", sa.DateTime(timezone=True)),
    )
    op.create_table(
        "quota_usage",
        _tenant_fk(primary_key=True),
        sa.Column("period", sa.String(7), primary_key=True),
        sa.Column("used_seconds", sa.Integer, nullable=False),
        sa.Column("reserved_seconds", sa.Integer, nullable=False),
        sa.Column("spent_usd", _MONEY, nullable=False),
        sa.Column("reserved_usd", _MONEY, nullable=False),
        _timestamp("updated_at"),
    )
    op.create_table(
        "quota_reservations",
        sa.Column("generation_id", UUID(as_uuid=True), primary_key=True),
        _tenant_fk(),
        sa.Column("period", sa.String(7), nullable=False),
        sa.Column("seconds", sa.Integer, nullable=False),
        sa.Column("cost_usd", _MONEY, nullable=False),
        sa.Column("state", sa.String(20), nullable=False),
        _timestamp("created_at"),
        _timestamp("updated_at"),
    )
    op.create_index("ix_quota_reservations_tenant_id", "quota_reservations", ["tenant_id"])


def downgrade() -> None:
    for table in ("quota_reservations", "quota_usage", "generation_attempts", "generations"):
        op.drop_table(table)
