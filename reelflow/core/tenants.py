"""Tenants and their API keys. Keys are random, shown once, and stored as SHA-256 hashes.

A tenant has any number of keys, each with a name and scopes (`read` < `write` < `admin`:
each scope includes the ones before it). Rotating a key makes a new one with the same name
and scopes; the old one keeps working until the end of its grace period. Revoking a key
ends it at once. Nothing here caches a key, so a revocation written by one API process is
seen by every other process on its next request.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from sqlalchemy import func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from schemas.tables import ApiKey, Tenant

API_KEY_PREFIX = "rf_"
SCOPES: tuple[str, ...] = ("read", "write", "admin")
"""Ordered: a key holding a scope may do everything the scopes before it allow."""
MAX_KEY_NAME_CHARS = 100
MAX_ROTATION_GRACE = timedelta(days=30)
_VISIBLE_PREFIX_CHARS = 10
"""`rf_` and 7 random characters: enough to tell keys apart in a list, useless to an attacker."""


KeyStatus = Literal["active", "expiring", "expired", "revoked"]


class KeyNotFound(LookupError):
    """No such key for this tenant (also raised for another tenant's key)."""


class KeyNotActive(ValueError):
    """The key was revoked or already rotated, so it cannot be rotated (again)."""


class LastAdminKey(ValueError):
    """Revoking this key would leave the tenant with no key that can manage keys."""


@dataclass(frozen=True)
class NewTenant:
    """A created tenant and the only copy of its first API key."""

    tenant_id: uuid.UUID
    name: str
    plan: str
    api_key: str


@dataclass(frozen=True)
class KeyInfo:
    """What may be shown about a key: never the key itself."""

    id: uuid.UUID
    tenant_id: uuid.UUID
    name: str
    scopes: tuple[str, ...]
    prefix: str
    created_at: datetime
    last_used_at: datetime | None
    expires_at: datetime | None
    replaced_by_id: uuid.UUID | None
    revoked_at: datetime | None

    def status_at(self, now: datetime) -> KeyStatus:
        """`active`, `expiring` (rotated, still in its grace period), `expired` or `revoked`."""
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None:
            return "expiring" if self.expires_at > now else "expired"
        return "active"


@dataclass(frozen=True)
class NewKey:
    """A created key and the only copy of its secret."""

    info: KeyInfo
    api_key: str
    previous: KeyInfo | None = None
    """For a rotation: the rotated key, with the end of its grace period."""


@dataclass(frozen=True)
class KeyIdentity:
    """Who a presented key authenticates: the key, its scopes and its tenant."""

    key_id: uuid.UUID
    key_prefix: str
    scopes: tuple[str, ...]
    last_used_at: datetime | None
    tenant_id: uuid.UUID
    tenant_name: str
    plan: str


def hash_api_key(api_key: str) -> str:
    """SHA-256 is enough here: keys carry 256 bits of randomness, so no key stretching."""
    return hashlib.sha256(api_key.encode()).hexdigest()


def _new_api_key() -> str:
    return API_KEY_PREFIX + secrets.token_urlsafe(32)


def normalize_scopes(scopes: Iterable[str]) -> tuple[str, ...]:
    """The scopes in their canonical order, without repeats.

    Raises:
        ValueError: An unknown scope, or none at all.
    """
    wanted = set(scopes)
    unknown = wanted - set(SCOPES)
    if unknown:
        raise ValueError(
            f"unknown scope(s) {', '.join(sorted(unknown))}; choose from {', '.join(SCOPES)}"
        )
    if not wanted:
        raise ValueError(f"a key needs at least one scope of {', '.join(SCOPES)}")
    return tuple(scope for scope in SCOPES if scope in wanted)


def has_scope(granted: Sequence[str], needed: str) -> bool:
    """Whether scopes `granted` allow `needed`: a higher scope includes the lower ones."""
    rank = SCOPES.index(needed)
    return any(scope in SCOPES and SCOPES.index(scope) >= rank for scope in granted)


def _check_name(name: str) -> str:
    cleaned = name.strip()
    if not cleaned:
        raise ValueError("a key name must not be empty")
    if len(cleaned) > MAX_KEY_NAME_CHARS:
        raise ValueError(f"a key name has at most {MAX_KEY_NAME_CHARS} characters")
    if any(not char.isprintable() for char in cleaned):
        raise ValueError("a key name must not contain control characters")
    return cleaned


def _info(row: ApiKey) -> KeyInfo:
    return KeyInfo(
        id=row.id,
        tenant_id=row.tenant_id,
        name=row.name,
        scopes=tuple(row.scopes),
        prefix=row.prefix,
        created_at=row.created_at,
        last_used_at=row.last_used_at,
        expires_at=row.expires_at,
        replaced_by_id=row.replaced_by_id,
        revoked_at=row.revoked_at,
    )


async def create_tenant(session: AsyncSession, *, name: str, plan: str = "free") -> NewTenant:
    """Create a tenant with one API key holding every scope; the caller commits.

    `plan` is stored as given: the plan table (`reelflow.billing.plans`) is the caller's to
    check, as core imports no domain.
    """
    if not plan.strip():
        raise ValueError("a tenant needs a plan")
    if not name.strip():
        raise ValueError("tenant name must not be empty")
    tenant = Tenant(id=uuid.uuid4(), name=name.strip(), plan=plan)
    session.add(tenant)
    await session.flush()
    api_key = await add_api_key(session, tenant_id=tenant.id)
    return NewTenant(tenant_id=tenant.id, name=tenant.name, plan=plan, api_key=api_key)


async def add_api_key(
    session: AsyncSession,
    *,
    tenant_id: uuid.UUID,
    name: str = "default",
    scopes: Iterable[str] = SCOPES,
) -> str:
    """Add a key to a tenant and return it; only its hash is stored. The caller commits."""
    created = await create_api_key(session, tenant_id=tenant_id, name=name, scopes=scopes)
    return created.api_key


async def create_api_key(
    session: AsyncSession,
    *,
    tenant_id: uuid.UUID,
    name: str,
    scopes: Iterable[str],
) -> NewKey:
    """Add a named key with `scopes` to a tenant; the caller commits.

    Raises:
        ValueError: An empty or overlong name, an unknown scope or no scope.
    """
    api_key = _new_api_key()
    row = ApiKey(
        id=uuid.uuid4(),
        tenant_id=tenant_id,
        name=_check_name(name),
        scopes=list(normalize_scopes(scopes)),
        prefix=api_key[:_VISIBLE_PREFIX_CHARS],
        key_hash=hash_api_key(api_key),
    )
    session.add(row)
    await session.flush()
    await session.refresh(row)
    return NewKey(info=_info(row), api_key=api_key)


async def list_api_keys(session: AsyncSession, tenant_id: uuid.UUID) -> list[KeyInfo]:
    """Every key of the tenant, revoked and expired ones included, newest first."""
    rows = await session.scalars(
        select(ApiKey)
        .where(ApiKey.tenant_id == tenant_id)
        .order_by(ApiKey.created_at.desc(), ApiKey.id.desc())
    )
    return [_info(row) for row in rows]


async def _locked_key(session: AsyncSession, tenant_id: uuid.UUID, key_id: uuid.UUID) -> ApiKey:
    row = await session.scalar(
        select(ApiKey).where(ApiKey.id == key_id, ApiKey.tenant_id == tenant_id).with_for_update()
    )
    if row is None:
        raise KeyNotFound(str(key_id))
    return row


async def rotate_api_key(
    session: AsyncSession,
    *,
    tenant_id: uuid.UUID,
    key_id: uuid.UUID,
    grace: timedelta,
) -> NewKey:
    """Replace a key with a new one (same name and scopes); the old one ends after `grace`.

    The caller commits. A grace of zero ends the old key at once.

    Raises:
        KeyNotFound: No such key for this tenant.
        KeyNotActive: The key is revoked, expired or was already rotated.
        ValueError: A negative grace, or one over `MAX_ROTATION_GRACE`.
    """
    if grace < timedelta(0) or grace > MAX_ROTATION_GRACE:
        raise ValueError(
            f"the grace period is 0 to {int(MAX_ROTATION_GRACE.total_seconds())} seconds"
        )
    old = await _locked_key(session, tenant_id, key_id)
    if old.revoked_at is not None:
        raise KeyNotActive(f"key {key_id} is revoked; create a new key instead")
    if old.replaced_by_id is not None or old.expires_at is not None:
        raise KeyNotActive(f"key {key_id} was already rotated; rotate its replacement instead")
    new = await create_api_key(session, tenant_id=tenant_id, name=old.name, scopes=old.scopes)
    now = await session.scalar(select(func.now()))
    assert now is not None
    old.replaced_by_id = new.info.id
    old.expires_at = now + grace
    await session.flush()
    return NewKey(info=new.info, api_key=new.api_key, previous=_info(old))


async def revoke_api_key(
    session: AsyncSession, *, tenant_id: uuid.UUID, key_id: uuid.UUID
) -> KeyInfo:
    """End a key at once; revoking a revoked key is a no-op. The caller commits.

    Raises:
        KeyNotFound: No such key for this tenant.
        LastAdminKey: It is the tenant's last usable admin key.
    """
    row = await _locked_key(session, tenant_id, key_id)
    if row.revoked_at is not None:
        return _info(row)
    if "admin" in row.scopes:
        # Lock the tenant's keys in a fixed order so two revocations cannot each see the
        # other's key as the one that remains.
        others = await session.scalars(
            select(ApiKey.id)
            .where(
                ApiKey.tenant_id == tenant_id,
                ApiKey.id != key_id,
                ApiKey.revoked_at.is_(None),
                or_(ApiKey.expires_at.is_(None), ApiKey.expires_at > func.now()),
                ApiKey.scopes.contains(["admin"]),
            )
            .order_by(ApiKey.id)
            .with_for_update()
        )
        if not others.first():
            raise LastAdminKey(
                "this is the tenant's last admin key; create another admin key first"
            )
    row.revoked_at = await session.scalar(select(func.now()))
    await session.flush()
    return _info(row)


_ACTIVE = (
    ApiKey.revoked_at.is_(None),
    or_(ApiKey.expires_at.is_(None), ApiKey.expires_at > func.now()),
)


async def authenticate(session: AsyncSession, api_key: str) -> KeyIdentity | None:
    """The key and tenant `api_key` authenticates, or None (unknown, revoked or expired)."""
    if not api_key.startswith(API_KEY_PREFIX):
        return None
    row = (
        await session.execute(
            select(
                ApiKey.id,
                ApiKey.prefix,
                ApiKey.scopes,
                ApiKey.last_used_at,
                Tenant.id,
                Tenant.name,
                Tenant.plan,
            )
            .join(Tenant, ApiKey.tenant_id == Tenant.id)
            .where(ApiKey.key_hash == hash_api_key(api_key), *_ACTIVE)
        )
    ).first()
    if row is None:
        return None
    key_id, prefix, scopes, last_used_at, tenant_id, tenant_name, plan = row
    return KeyIdentity(
        key_id=key_id,
        key_prefix=prefix,
        scopes=tuple(scopes),
        last_used_at=last_used_at,
        tenant_id=tenant_id,
        tenant_name=tenant_name,
        plan=plan,
    )


async def touch_last_used(
    session: AsyncSession, key_id: uuid.UUID, *, at_most_every: timedelta
) -> None:
    """Record that a key was used, unless that was recorded less than `at_most_every` ago.

    The condition is in the statement, so processes racing on one key write once.
    """
    await session.execute(
        update(ApiKey)
        .where(
            ApiKey.id == key_id,
            or_(
                ApiKey.last_used_at.is_(None),
                ApiKey.last_used_at < func.now() - at_most_every,
            ),
        )
        .values(last_used_at=func.now())
    )


async def tenant_for_api_key(session: AsyncSession, api_key: str) -> Tenant | None:
    """The tenant an API key belongs to, or None for an unknown, revoked or expired key."""
    if not api_key.startswith(API_KEY_PREFIX):
        return None
    return await session.scalar(
        select(Tenant)
        .join(ApiKey, ApiKey.tenant_id == Tenant.id)
        .where(ApiKey.key_hash == hash_api_key(api_key), *_ACTIVE)
    )
