"""API keys with names, scopes and rotation; request rate windows; run admissions.

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB, UUID

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Keys made before names and scopes existed were each a tenant's only key: they keep
    # every right they had.
    op.add_column(
        "api_keys",
        sa.Column("name", sa.String(100), server_default="default", nullable=False),
    )
    op.add_column(
        "api_keys",
        sa.Column("scopes", JSONB, server_default='["read", "write", "admin"]', nullable=False),
    )
    op.add_column("api_keys", sa.Column("last_used_at", sa.DateTime(timezone=True)))
    op.add_column("api_keys", sa.Column("expires_at", sa.DateTime(timezone=True)))
    op.add_column(
        "api_keys",
        sa.Column(
            "replaced_by_id",
            UUID(as_uuid=True),
            sa.ForeignKey("api_keys.id", ondelete="SET NULL"),
        ),
    )
    op.create_table(
        "rate_limit_windows",
        sa.Column(
            "key_id",
            UUID(as_uuid=True),
            sa.ForeignKey("api_keys.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("window_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("hits", sa.Integer, nullable=False),
    )
    op.create_table(
        "run_admissions",
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=True),
        sa.Column("workflow_id", sa.String(200), nullable=False, unique=True),
        sa.Column(
            "tenant_id",
            UUID(as_uuid=True),
            sa.ForeignKey("tenants.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("pipeline", sa.String(40), nullable=False),
        sa.Column("state", sa.String(10), nullable=False),
        sa.Column("start", JSONB, nullable=False),
        sa.Column(
            "queued_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column("started_at", sa.DateTime(timezone=True)),
    )
    op.create_index(
        "ix_run_admissions_tenant_state", "run_admissions", ["tenant_id", "state", "id"]
    )


def downgrade() -> None:
    op.drop_index("ix_run_admissions_tenant_state", table_name="run_admissions")
    op.drop_table("run_admissions")
    op.drop_table("rate_limit_windows")
    for column in ("replaced_by_id", "expires_at", "last_used_at", "scopes", "name"):
        op.drop_column("api_keys", column)
