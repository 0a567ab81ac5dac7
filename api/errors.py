"""One error shape for every failure: `{"error": {"code": ..., "message": ...}}`.

Routes raise :class:`ApiError`; the handlers installed by :func:`install_error_handlers`
also turn FastAPI's validation errors, Starlette's 404/405 and anything unexpected into the
same envelope, so clients only ever parse one format.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from schemas.api import ErrorResponse

logger = logging.getLogger(__name__)

_STATUS_CODES: dict[int, str] = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    411: "length_required",
    413: "payload_too_large",
    415: "unsupported_media_type",
    416: "range_not_satisfiable",
    422: "invalid_request",
    429: "rate_limited",
    503: "service_unavailable",
}


class ApiError(Exception):
    """A failure the client should see as-is: status, stable code and readable message."""

    def __init__(
        self,
        status_code: int,
        code: str,
        message: str,
        *,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.code = code
        self.message = message
        self.headers = dict(headers or {})


_MAX_ECHO_CHARS = 100


def echo(value: object) -> str:
    """A client-supplied value as it may appear in a message: shortened when long."""
    text = str(value)
    return text if len(text) <= _MAX_ECHO_CHARS else f"{text[:_MAX_ECHO_CHARS]}…"


def not_found(what: str, ident: object) -> ApiError:
    """404 for a missing object, and equally for another tenant's object."""
    return ApiError(404, "not_found", f"no {what} with id {echo(ident)}")


def temporal_unavailable() -> ApiError:
    """503 when the workflow engine does not answer (down, or not reachable yet)."""
    return ApiError(
        503, "temporal_unavailable", "the workflow engine did not answer; try again shortly"
    )


def payload_too_large(limit: int) -> ApiError:
    return ApiError(
        413, "payload_too_large", f"the upload is larger than the limit of {limit} bytes"
    )


def error_response(
    status_code: int, code: str, message: str, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    """The JSON envelope as a response."""
    body = ErrorResponse.model_validate({"error": {"code": code, "message": message}})
    return JSONResponse(body.model_dump(), status_code=status_code, headers=headers)


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": code}
    for status, code in ((401, "unauthorized"), (404, "not_found"), (422, "invalid_request"))
}
"""The errors (almost) every v1 route can answer, for the OpenAPI document."""


# Pydantic prefixes what a validator raised with the exception's kind; clients get the reason.
_VALIDATOR_PREFIXES = ("Value error, ", "Assertion failed, ")


def _describe_validation(errors: Sequence[Any]) -> str:
    parts: list[str] = []
    for error in errors[:5]:
        loc = ".".join(echo(p) for p in error.get("loc", ()) if p != "body") or "request"
        message = str(error.get("msg", "invalid value"))
        for prefix in _VALIDATOR_PREFIXES:
            message = message.removeprefix(prefix)
        parts.append(f"{loc}: {message}")
    if len(errors) > 5:
        parts.append(f"and {len(errors) - 5} more")
    return "; ".join(parts) or "the request is invalid"


async def _api_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return error_response(exc.status_code, exc.code, exc.message, exc.headers)


async def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return error_response(422, "invalid_request", _describe_validation(exc.errors()))


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = _STATUS_CODES.get(exc.status_code, "error" if exc.status_code < 500 else "internal")
    if exc.status_code == 404:
        message = f"no route for {request.method} {request.url.path}"
    elif exc.status_code == 405:
        message = f"{request.method} is not allowed on {request.url.path}"
    else:
        message = str(exc.detail)
    return error_response(exc.status_code, code, message, exc.headers)


async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    # Logged with the traceback; the client gets no internals.
    logger.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(500, "internal_error", "something went wrong on our side")


def install_error_handlers(app: FastAPI) -> None:
    """Route every kind of failure through the envelope."""
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected_error)
