"""API keys of the caller's tenant: create, list, rotate and revoke (admin scope).

A key's secret appears once, in the answer that created it; lists show its prefix only.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Response
from pydantic import BaseModel, Field

from api.deps import AdminTenant, SessionDep, SettingsDep
from api.errors import ERROR_RESPONSES, ApiError, not_found
from reelflow.core import tenants
from reelflow.core.tenants import KeyInfo
from schemas.api import ErrorResponse

router = APIRouter(prefix="/v1/keys", tags=["keys"], responses=ERROR_RESPONSES)

Scope = Literal["read", "write", "admin"]


def _errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {status: {"model": ErrorResponse} for status in statuses}


class KeyCreate(BaseModel):
    """A new key: a name to recognise it by and what it may do."""

    name: str = Field(min_length=1, max_length=tenants.MAX_KEY_NAME_CHARS)
    scopes: list[Scope] = Field(default=["read", "write"], min_length=1, max_length=3)
    """`read` allows GET; `write` also POST/PATCH/PUT/DELETE; `admin` also managing keys."""


class KeyRotate(BaseModel):
    grace_period_s: int | None = Field(
        default=None, ge=0, le=int(tenants.MAX_ROTATION_GRACE.total_seconds())
    )
    """How long the old key keeps working; by default `API_KEY_ROTATION_GRACE_S`."""


class KeyView(BaseModel):
    key_id: uuid.UUID
    name: str
    scopes: list[str]
    prefix: str
    """The key's first characters, to recognise it; never the key."""
    status: tenants.KeyStatus
    created_at: datetime
    last_used_at: datetime | None
    """Updated at most once a minute."""
    expires_at: datetime | None
    """When a rotated key stops working."""
    replaced_by: uuid.UUID | None
    revoked_at: datetime | None


class KeyCreated(BaseModel):
    key: KeyView
    api_key: str
    """The key itself: shown this once, stored only as a hash."""


class KeyRotated(KeyCreated):
    previous: KeyView
    """The rotated key, with the end of its grace period."""


class KeyList(BaseModel):
    items: list[KeyView]
    next_cursor: str | None = None
    """Always null: a tenant's keys fit on one page."""


def _view(info: KeyInfo) -> KeyView:
    return KeyView(
        key_id=info.id,
        name=info.name,
        scopes=list(info.scopes),
        prefix=info.prefix,
        status=info.status_at(datetime.now(UTC)),
        created_at=info.created_at,
        last_used_at=info.last_used_at,
        expires_at=info.expires_at,
        replaced_by=info.replaced_by_id,
        revoked_at=info.revoked_at,
    )


def _key_id(raw: str) -> uuid.UUID:
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise not_found("key", raw) from None


@router.post("", status_code=201, response_model=KeyCreated)
async def create_key(body: KeyCreate, tenant: AdminTenant, session: SessionDep) -> KeyCreated:
    """Create a key for the caller's tenant; its secret is in this answer only."""
    try:
        created = await tenants.create_api_key(
            session, tenant_id=tenant.id, name=body.name, scopes=body.scopes
        )
    except ValueError as exc:
        raise ApiError(422, "invalid_request", str(exc)) from None
    await session.commit()
    return KeyCreated(key=_view(created.info), api_key=created.api_key)


@router.get("", response_model=KeyList)
async def list_keys(tenant: AdminTenant, session: SessionDep) -> KeyList:
    """Every key of the tenant, newest first, revoked and expired ones included."""
    return KeyList(items=[_view(info) for info in await tenants.list_api_keys(session, tenant.id)])


@router.post("/{key_id}/rotate", status_code=201, response_model=KeyRotated, responses=_errors(409))
async def rotate_key(
    key_id: str,
    tenant: AdminTenant,
    session: SessionDep,
    settings: SettingsDep,
    body: Annotated[KeyRotate | None, Body()] = None,
) -> KeyRotated:
    """Replace a key: a new key (same name and scopes) now, the old one ends after the grace.

    409 `key_not_active` for a revoked, expired or already rotated key.
    """
    parsed = _key_id(key_id)
    grace_s = body.grace_period_s if body is not None else None
    grace = timedelta(seconds=settings.api_key_rotation_grace_s if grace_s is None else grace_s)
    try:
        created = await tenants.rotate_api_key(
            session, tenant_id=tenant.id, key_id=parsed, grace=grace
        )
    except tenants.KeyNotFound:
        raise not_found("key", key_id) from None
    except tenants.KeyNotActive as exc:
        raise ApiError(409, "key_not_active", str(exc)) from None
    await session.commit()
    assert created.previous is not None
    return KeyRotated(
        key=_view(created.info), api_key=created.api_key, previous=_view(created.previous)
    )


@router.delete("/{key_id}", status_code=204, responses=_errors(409))
async def revoke_key(key_id: str, tenant: AdminTenant, session: SessionDep) -> Response:
    """Revoke a key: every API process refuses it from the next request on.

    409 `last_admin_key` when it is the tenant's last usable admin key.
    """
    parsed = _key_id(key_id)
    try:
        await tenants.revoke_api_key(session, tenant_id=tenant.id, key_id=parsed)
    except tenants.KeyNotFound:
        raise not_found("key", key_id) from None
    except tenants.LastAdminKey as exc:
        raise ApiError(409, "last_admin_key", str(exc)) from None
    await session.commit()
    return Response(status_code=204)
