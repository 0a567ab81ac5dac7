"""The platform operator's credential for `/v1/admin/*`: one secret from the settings.

Not a tenant key and never accepted as one: a tenant's key on an admin route is refused
(403) even though it is valid elsewhere, and with no admin key configured every admin
request is refused. The comparison takes the same time whatever the guess.
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from api.deps import SettingsDep
from api.errors import ApiError

_admin_bearer = HTTPBearer(
    auto_error=False, scheme_name="AdminKey", description="The operator's admin key"
)


def require_admin(
    settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_admin_bearer)],
) -> None:
    """Let the request through only with the admin key: 401 without a key, 403 with another."""
    if credentials is None:
        raise ApiError(
            401,
            "unauthorized",
            "missing admin key: send `Authorization: Bearer <admin key>`",
            headers={"WWW-Authenticate": "Bearer"},
        )
    configured = settings.admin_api_key.get_secret_value() if settings.admin_api_key else ""
    given = credentials.credentials.encode()
    if not configured or not hmac.compare_digest(given, configured.encode()):
        raise ApiError(403, "forbidden", "admin routes need the platform's admin key")


AdminDep = Annotated[None, Depends(require_admin)]
