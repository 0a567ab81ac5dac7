"""Tables of RAG chat: sessions and their messages (migration `0002`).

They live on :class:`schemas.tables.Base`, and `schemas/tables.py` imports this module, so
one metadata describes every table for migrations and their test.

A message's tokens and dollars are copies of its ledger rows (keys ``chat/<message_id>/…``),
rewritten from the ledger whenever a row is added: the ledger stays the one source of truth
and a retried step can never make the two disagree.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    func,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import Mapped, mapped_column

from schemas.tables import Base, Money


class ChatSession(Base):
    """A conversation of one tenant with its videos."""

    __tablename__ = "chat_sessions"
    __table_args__ = (Index("ix_chat_sessions_tenant_last", "tenant_id", "last_message_at"),)

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    title: Mapped[str] = mapped_column(String(200))
    """The first message, trimmed to about 60 characters."""
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    last_message_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )


class ChatMessage(Base):
    """One question (`user`) or answer (`assistant`) of a session, in `seq` order.

    An answer row is written before the answer starts (`incomplete` true, empty content) and
    completed when it ends, so an answer cut short by a provider error, a disconnecting
    client or a crash is still there, marked incomplete, with what it cost.
    """

    __tablename__ = "chat_messages"
    __table_args__ = (UniqueConstraint("session_id", "seq"),)

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    session_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("chat_sessions.id", ondelete="CASCADE")
    )
    tenant_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("tenants.id", ondelete="CASCADE"), index=True
    )
    seq: Mapped[int] = mapped_column(Integer)
    role: Mapped[str] = mapped_column(String(16))  # user | assistant
    content: Mapped[str] = mapped_column(Text)
    incomplete: Mapped[bool] = mapped_column(Boolean, default=False)
    error_code: Mapped[str | None] = mapped_column(String(60))
    """Why an answer is incomplete: `provider_error`, `client_disconnected`, ..."""
    references: Mapped[list[dict[str, Any]]] = mapped_column(JSONB, default=list)
    """Verified references, as the API returns them."""
    dropped_references: Mapped[int] = mapped_column(Integer, default=0)
    provider: Mapped[str | None] = mapped_column(String(40))
    model: Mapped[str | None] = mapped_column(String(120))
    input_tokens: Mapped[int] = mapped_column(Integer, default=0)
    output_tokens: Mapped[int] = mapped_column(Integer, default=0)
    embedding_tokens: Mapped[int] = mapped_column(Integer, default=0)
    cost_usd: Mapped[Decimal] = mapped_column(Money, default=Decimal(0))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    completed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
