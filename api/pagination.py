"""Cursor pagination for every list: `{items, next_cursor}` in a stable order.

A cursor is the sort key of the last item a page returned, signed with `SECRET_KEY` and
bound to the tenant and the list it came from. A cursor that was tampered with, is garbage,
or belongs to another tenant or another list is a 400, never a page of someone else's data
or a 500. Lists order by `(created_at, id)` descending (newest first); the id breaks ties so
that rows created in the same microsecond are neither skipped nor repeated.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import uuid
from datetime import datetime

from pydantic import SecretStr

from api.errors import ApiError
from reelflow.core.pagination import PageKey

__all__ = ["DEFAULT_PAGE_SIZE", "MAX_PAGE_SIZE", "PageKey", "decode_cursor", "encode_cursor"]

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 200
_MAX_CURSOR_CHARS = 512


def _signature(secret_key: SecretStr, body: bytes) -> str:
    digest = hmac.new(secret_key.get_secret_value().encode(), body, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest[:16]).decode().rstrip("=")


def encode_cursor(secret_key: SecretStr, tenant_id: uuid.UUID, list_name: str, key: PageKey) -> str:
    """An opaque cursor for the page after `key` of `list_name`, for `tenant_id` only."""
    body = json.dumps(
        {"t": str(tenant_id), "l": list_name, "c": key.created_at.isoformat(), "i": str(key.id)},
        separators=(",", ":"),
    ).encode()
    encoded = base64.urlsafe_b64encode(body).decode().rstrip("=")
    return f"{encoded}.{_signature(secret_key, body)}"


def decode_cursor(
    secret_key: SecretStr, tenant_id: uuid.UUID, list_name: str, cursor: str | None
) -> PageKey | None:
    """The key a cursor carries; None for the first page.

    Raises:
        ApiError: 400 `invalid_cursor` when the cursor is malformed, was not made by us,
            or was made for another tenant or another list.
    """
    if cursor is None or cursor == "":
        return None
    invalid = ApiError(400, "invalid_cursor", "next_cursor is not a cursor of this list")
    if len(cursor) > _MAX_CURSOR_CHARS or cursor.count(".") != 1:
        raise invalid
    encoded, signature = cursor.split(".")
    try:
        body = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
    except (binascii.Error, ValueError):
        raise invalid from None
    # Constant time: a forger learns nothing from how much of a signature was right.
    if not hmac.compare_digest(_signature(secret_key, body), signature):
        raise invalid
    try:
        fields = json.loads(body)
        if fields["t"] != str(tenant_id) or fields["l"] != list_name:
            raise invalid
        return PageKey(datetime.fromisoformat(fields["c"]), uuid.UUID(fields["i"]))
    except (KeyError, TypeError, ValueError):
        raise invalid from None
