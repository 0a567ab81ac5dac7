"""Signed upload URLs: the `PUT` of a video's bytes is authorized by an HMAC, not an API key.

The client that uploads the bytes (a browser, a mobile app) never needs the tenant's API
key; the URL carries `expires` and an HMAC-SHA256 of the video id and that expiry, keyed
with `SECRET_KEY`. Changing either invalidates the signature.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import uuid
from datetime import UTC, datetime
from urllib.parse import urlencode

from pydantic import SecretStr

_DIGITS = re.compile(r"[0-9]+")


def upload_signature(secret_key: SecretStr, video_id: uuid.UUID, expires: int) -> str:
    """Hex HMAC-SHA256 of `<video_id>:<expires>`."""
    message = f"{video_id}:{expires}".encode()
    return hmac.new(secret_key.get_secret_value().encode(), message, hashlib.sha256).hexdigest()


def signed_upload_url(
    base_url: str, secret_key: SecretStr, video_id: uuid.UUID, expires_at: datetime
) -> str:
    """The absolute URL a client `PUT`s the bytes of `video_id` to."""
    expires = int(expires_at.timestamp())
    query = urlencode(
        {"expires": expires, "signature": upload_signature(secret_key, video_id, expires)}
    )
    return f"{base_url.rstrip('/')}/v1/videos/{video_id}/upload?{query}"


def check_upload_signature(
    secret_key: SecretStr,
    video_id: uuid.UUID,
    expires: str | None,
    signature: str | None,
    *,
    now: datetime | None = None,
) -> str | None:
    """Why the signed URL is not acceptable, as an error code; None when it is.

    The signature is checked before the expiry so that an attacker learns nothing from
    tampering with `expires`.
    """
    # ASCII digits only: str.isdigit() also accepts "²", which int() refuses.
    if not signature or not expires or len(expires) > 12 or not _DIGITS.fullmatch(expires):
        return "invalid_signature"
    expected = upload_signature(secret_key, video_id, int(expires))
    # Constant-time: timing must not reveal how much of a guessed signature was right.
    if not hmac.compare_digest(expected.encode(), signature.encode()):
        return "invalid_signature"
    current = now or datetime.now(UTC)
    if int(expires) < current.timestamp():
        return "upload_expired"
    return None
