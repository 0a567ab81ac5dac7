"""The base of every failure the product explains to a person.

Domain code raises a `DomainError` (or a subclass) with a `FailureCode`; the activity
interceptor (`activities/_errors.py`) turns it into a Temporal `ApplicationError` whose type
is the code, retryable exactly when the code is, with Retry-After as the next delay. The API
maps the same codes to HTTP statuses. Anything else an activity raises is a bug or an
infrastructure hiccup, and the interceptor classifies it as one.
"""

from __future__ import annotations

from schemas.failures import FailureCode, is_retryable


class DomainError(Exception):
    """A failure with a product code and a message a person can act on.

    Args:
        code: the failure code; it decides whether a retry may help.
        message: what went wrong and, where possible, what to do about it. Never a Python
            exception name, a stack frame or a secret.
        retry_after_s: for retryable codes, how long the other side asked us to wait.
    """

    def __init__(
        self, code: FailureCode, message: str, *, retry_after_s: float | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retry_after_s = retry_after_s

    @property
    def retryable(self) -> bool:
        return is_retryable(self.code)

    def __str__(self) -> str:
        return self.message
