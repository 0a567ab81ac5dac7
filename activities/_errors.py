"""The one translator from what an activity raised to a failure Temporal can act on.

Every worker runs every activity through `FailureTranslationInterceptor`, so no activity
builds its own `ApplicationError`. The rules:

* a domain failure (any exception with a `code` from `schemas/failures.py`: media
  rejections, provider refusals and 429/5xx with Retry-After, refused URLs, missing
  objects, unknown plans or prices, quotas, `DomainError`) becomes an `ApplicationError`
  whose type is the code, retryable exactly when the code is;
* our own infrastructure having a bad moment (database connection lost, storage or
  network unreachable, a media tool crashed or timed out) is `dependency_unavailable`
  and retried;
* anything else is a bug: `internal_error`, not retried, logged with its traceback on the
  worker, and described to the user without Python's names for it.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from typing import Any

from temporalio import activity
from temporalio.exceptions import ApplicationError, CancelledError
from temporalio.worker import (
    ActivityInboundInterceptor,
    ExecuteActivityInput,
    Interceptor,
)

from schemas.failures import FailureCode, is_retryable, known_code

logger = logging.getLogger(__name__)

# A refusal that says it may change by itself (a DNS failure while checking a URL, a remote
# host's 5xx during an import) is retried under the matching transient code.
_TRANSIENT_VARIANT = {
    FailureCode.URL_NOT_ALLOWED: FailureCode.IMPORT_UNAVAILABLE,
    FailureCode.IMPORT_FAILED: FailureCode.IMPORT_UNAVAILABLE,
}


def _is_infrastructure(exc: BaseException) -> bool:
    """Failures of our own dependencies that a later attempt may not meet."""
    # Imported here: the translator must not make every worker import every client library
    # at module load, and these are only consulted on the failure path.
    import httpx
    import sqlalchemy.exc

    from reelflow.core.storage import StorageError
    from reelflow.media.ffmpeg import MediaToolError, MediaToolMissing

    if isinstance(exc, MediaToolMissing):
        return False  # a broken deployment, not a hiccup: retrying cannot install ffmpeg
    infrastructure: tuple[type[BaseException], ...] = (
        sqlalchemy.exc.OperationalError,
        sqlalchemy.exc.InterfaceError,
        sqlalchemy.exc.TimeoutError,
        sqlalchemy.exc.DisconnectionError,
        httpx.TransportError,
        ConnectionError,
        TimeoutError,
        StorageError,
        MediaToolError,
    )
    if isinstance(exc, infrastructure):
        return True
    try:
        import botocore.exceptions
    except ImportError:  # pragma: no cover - boto3 is a dependency
        return False
    return isinstance(
        exc,
        botocore.exceptions.EndpointConnectionError
        | botocore.exceptions.ConnectionClosedError
        | botocore.exceptions.ReadTimeoutError,
    )


def translate(exc: BaseException, *, step: str) -> ApplicationError:
    """The `ApplicationError` that tells Temporal and the user what `exc` means.

    Args:
        exc: what the activity raised.
        step: the activity's name, for the message of an internal error.
    """
    if isinstance(exc, ApplicationError):
        code = known_code(exc.type)
        if code is not None:
            return ApplicationError(
                exc.message,
                *exc.details,
                type=code.value,
                non_retryable=not is_retryable(code),
                next_retry_delay=exc.next_retry_delay,
            )
        return _internal(exc, step)
    code = known_code(getattr(exc, "code", None))
    if code is not None:
        if getattr(exc, "retryable", False) and not is_retryable(code):
            code = _TRANSIENT_VARIANT.get(code, FailureCode.DEPENDENCY_UNAVAILABLE)
        retry_after = getattr(exc, "retry_after_s", None)
        return ApplicationError(
            _message(exc),
            type=code.value,
            non_retryable=not is_retryable(code),
            next_retry_delay=(
                timedelta(seconds=float(retry_after))
                if isinstance(retry_after, int | float) and retry_after > 0
                else None
            ),
        )
    if _is_infrastructure(exc):
        logger.warning("%s: a dependency failed, will retry: %s", step, exc)
        return ApplicationError(
            f"{step} could not reach a service it needs; it will be retried",
            type=FailureCode.DEPENDENCY_UNAVAILABLE.value,
        )
    return _internal(exc, step)


def _message(exc: BaseException) -> str:
    message = getattr(exc, "message", None)
    if isinstance(message, str) and message:
        return message
    return str(exc) or "the step failed"


def _internal(exc: BaseException, step: str) -> ApplicationError:
    logger.error("%s failed with an internal error", step, exc_info=exc)
    return ApplicationError(
        f"{step} failed because of an internal error; it was logged for the team and "
        "will not be retried automatically",
        type=FailureCode.INTERNAL_ERROR.value,
        non_retryable=True,
    )


_KEEP_CAUSE = frozenset(
    {FailureCode.INTERNAL_ERROR.value, FailureCode.DEPENDENCY_UNAVAILABLE.value}
)


class _TranslateFailures(ActivityInboundInterceptor):
    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        try:
            return await self.next.execute_activity(input)
        except (asyncio.CancelledError, CancelledError):
            raise
        except Exception as exc:
            failure = translate(exc, step=activity.info().activity_type)
            if failure.type in _KEEP_CAUSE:
                # The original exception travels as the cause, for the operator reading the
                # run in the Temporal UI; the user sees only the translated message.
                raise failure from exc
            raise failure from None


class FailureTranslationInterceptor(Interceptor):
    """Registered on every worker: activity failures leave in the failure vocabulary."""

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _TranslateFailures(next)
