"""Tenants and their API keys. Keys are random, shown once, and stored as SHA-256 hashes."""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from schemas.tables import ApiKey, Tenant

API_KEY_PREFIX = "rf_"
PLANS = ("free", "creator", "pro", "enterprise")


@dataclass(frozen=True)
class NewTenant:
    """A created tenant and the only copy of its first API key."""

    tenant_id: uuid.UUID
    name: str
    plan: str
    api_key: str


def hash_api_key(api_key: str) -> str:
    """SHA-256 is enough here: keys carry 256 bits of randomness, so no key stretching."""
    return hashlib.sha256(api_key.encode()).hexdigest()


def _new_api_key() -> str:
    return API_KEY_PREFIX + secrets.token_urlsafe(32)


async def create_tenant(session: AsyncSession, *, name: str, plan: str = "free") -> NewTenant:
    """Create a tenant with one API key; the caller commits."""
    if plan not in PLANS:
        raise ValueError(f"unknown plan {plan!r}; choose one of {', '.join(PLANS)}")
    if not name.strip():
        raise ValueError("tenant name must not be empty")
    tenant = Tenant(id=uuid.uuid4(), name=name.strip(), plan=plan)
    session.add(tenant)
    await session.flush()
    api_key = await add_api_key(session, tenant_id=tenant.id)
    return NewTenant(tenant_id=tenant.id, name=tenant.name, plan=plan, api_key=api_key)


async def add_api_key(session: AsyncSession, *, tenant_id: uuid.UUID) -> str:
    """Add a key to a tenant and return it; only its hash is stored."""
    api_key = _new_api_key()
    session.add(
        ApiKey(
            id=uuid.uuid4(),
            tenant_id=tenant_id,
            prefix=api_key[:10],
            key_hash=hash_api_key(api_key),
        )
    )
    await session.flush()
    return api_key


async def tenant_for_api_key(session: AsyncSession, api_key: str) -> Tenant | None:
    """The tenant an API key belongs to, or None for an unknown or revoked key."""
    if not api_key.startswith(API_KEY_PREFIX):
        return None
    return await session.scalar(
        select(Tenant)
        .join(ApiKey, ApiKey.tenant_id == Tenant.id)
        .where(ApiKey.key_hash == hash_api_key(api_key), ApiKey.revoked_at.is_(None))
    )
