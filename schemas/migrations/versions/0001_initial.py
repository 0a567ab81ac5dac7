"""Tenants, API keys, video assets, transcripts, chunks with vectors, and the cost ledger.

Revision ID: 0001
Revises:
Create Date: 2026-11-21
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from pgvector.sqlalchemy import Vector
from sqlalchemy.dialects.postgresql import UUID

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_MONEY = sa.Numeric(14, 8)


def _created_at() -> sa.Column[object]:
    return sa.Column(
        "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
    )


def upgrade() -> None:
    op.execute("CREATE EXTENSION IF NOT EXISTS vector")
    op.create_table(
        "tenants",
        sa.Column("id", UUID(as_uuid=True), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("plan", sa.String(40), nullable=False),
        _created_at(),
    )
    op.create_table(
        "api_keys",
        sa.Column("id", UUID(as_uuid=True), primary_key=True),
        sa.Column(
            "tenant_id",
            UUID(as_uuid=True),
            sa.ForeignKey("tenants.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("prefix", sa.String(16), nullable=False),
        sa.Column("key_hash", sa.String(64), nullable=False, unique=True),
        _created_at(),
        sa.Column("revoked_at", sa.DateTime(timezone=True)),
    )
    op.create_index("ix_api_keys_tenant_id", "api_keys", ["tenant_id"])
    op.create_table(
        "videos",
        sa.Column("id", UUID(as_uuid=True), primary_key=True),
        sa.Column(
            "tenant_id",
            UUID(as_uuid=True),
            sa.ForeignKey("tenants.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("collection_id", UUID(as_uuid=True)),
        sa.Column("title", sa.String(300), nullable=False),
        sa.Column("origin", sa.String(20), nullable=False),
        sa.Column("source_url", sa.Text),
        sa.Column("filename", sa.String(300)),
        sa.Column("content_type", sa.String(120)),
        sa.Column("declared_size_bytes", sa.BigInteger),
        sa.Column("size_bytes", sa.BigInteger),
        sa.Column("source_key", sa.Text, nullable=False),
        sa.Column("audio_key", sa.Text),
        sa.Column("thumbnail_key", sa.Text),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("stage", sa.String(20), nullable=False),
        sa.Column("progress", sa.Float, nullable=False),
        sa.Column("error_code", sa.String(60)),
        sa.Column("error_message", sa.Text),
        sa.Column("note", sa.Text),
        sa.Column("duration_s", sa.Float),
        sa.Column("width", sa.Integer),
        sa.Column("height", sa.Integer),
        sa.Column("has_audio", sa.Boolean),
        sa.Column("container", sa.String(60)),
        sa.Column("video_codec", sa.String(40)),
        sa.Column("audio_codec", sa.String(40)),
        sa.Column("chunk_count", sa.Integer),
        sa.Column("embedding_model", sa.String(120)),
        sa.Column("cost_usd", _MONEY, nullable=False),
        sa.Column("workflow_id", sa.String(200)),
        sa.Column("upload_expires_at", sa.DateTime(timezone=True)),
        _created_at(),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column("completed_at", sa.DateTime(timezone=True)),
    )
    op.create_index("ix_videos_tenant_id", "videos", ["tenant_id"])
    op.create_index("ix_videos_collection_id", "videos", ["collection_id"])
    op.create_index("ix_videos_status", "videos", ["status"])
    op.create_table(
        "transcript_windows",
        sa.Column(
            "video_id",
            UUID(as_uuid=True),
            sa.ForeignKey("videos.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("window_index", sa.Integer, primary_key=True),
        sa.Column("tenant_id", UUID(as_uuid=True), nullable=False),
        sa.Column("start_s", sa.Float, nullable=False),
        sa.Column("end_s", sa.Float, nullable=False),
        sa.Column("model", sa.String(120), nullable=False),
        sa.Column(
            "completed_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
    )
    op.create_table(
        "transcript_segments",
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=True),
        sa.Column("tenant_id", UUID(as_uuid=True), nullable=False),
        sa.Column(
            "video_id",
            UUID(as_uuid=True),
            sa.ForeignKey("videos.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("window_index", sa.Integer, nullable=False),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("start_s", sa.Float, nullable=False),
        sa.Column("end_s", sa.Float, nullable=False),
        sa.Column("text", sa.Text, nullable=False),
        sa.UniqueConstraint("video_id", "window_index", "seq"),
    )
    op.create_index("ix_transcript_segments_tenant_id", "transcript_segments", ["tenant_id"])
    op.create_table(
        "chunks",
        sa.Column("id", UUID(as_uuid=True), primary_key=True),
        sa.Column("tenant_id", UUID(as_uuid=True), nullable=False),
        sa.Column(
            "video_id",
            UUID(as_uuid=True),
            sa.ForeignKey("videos.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("collection_id", UUID(as_uuid=True)),
        sa.Column("chunk_index", sa.Integer, nullable=False),
        sa.Column("start_s", sa.Float, nullable=False),
        sa.Column("end_s", sa.Float, nullable=False),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("word_count", sa.Integer, nullable=False),
        sa.Column("embedding_model", sa.String(120)),
        sa.Column("embedding", Vector(384)),
        _created_at(),
        sa.UniqueConstraint("video_id", "chunk_index"),
    )
    op.create_index("ix_chunks_tenant_id", "chunks", ["tenant_id"])
    op.create_index("ix_chunks_embedding_model", "chunks", ["embedding_model"])
    op.create_index(
        "ix_chunks_embedding_hnsw",
        "chunks",
        ["embedding"],
        postgresql_using="hnsw",
        postgresql_with={"m": 16, "ef_construction": 64},
        postgresql_ops={"embedding": "vector_cosine_ops"},
    )
    op.create_table(
        "cost_ledger",
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=True),
        sa.Column("idempotency_key", sa.String(300), nullable=False, unique=True),
        sa.Column(
            "tenant_id",
            UUID(as_uuid=True),
            sa.ForeignKey("tenants.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("run_id", sa.String(200)),
        sa.Column("step", sa.String(80), nullable=False),
        sa.Column("video_id", UUID(as_uuid=True)),
        sa.Column("provider", sa.String(40), nullable=False),
        sa.Column("operation", sa.String(60), nullable=False),
        sa.Column("model", sa.String(120), nullable=False),
        sa.Column("units", sa.Numeric(20, 6), nullable=False),
        sa.Column("unit", sa.String(30), nullable=False),
        sa.Column("unit_price_usd", _MONEY, nullable=False),
        sa.Column("price_version", sa.String(40), nullable=False),
        sa.Column("cost_usd", _MONEY, nullable=False),
        sa.Column("compute_seconds", sa.Float, nullable=False),
        _created_at(),
    )
    op.create_index("ix_cost_ledger_tenant_created", "cost_ledger", ["tenant_id", "created_at"])
    op.create_index("ix_cost_ledger_run_id", "cost_ledger", ["run_id"])
    op.create_index("ix_cost_ledger_video_id", "cost_ledger", ["video_id"])


def downgrade() -> None:
    for table in (
        "cost_ledger",
        "chunks",
        "transcript_segments",
        "transcript_windows",
        "videos",
        "api_keys",
        "tenants",
    ):
        op.drop_table(table)
