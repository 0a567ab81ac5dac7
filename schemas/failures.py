"""The one vocabulary of failure codes, shared by activities, workflows, the API and the CLI.

A code is what a person reads on a failed run (`videos.error_code`, `GET /v1/runs/{id}`,
the Temporal UI) and what Temporal's retry policies are built from: a code is either worth
retrying (the same call may succeed later) or not (the same input fails the same way, or
it is a bug). Python exception names never reach a user or a retry policy.
"""

from __future__ import annotations

from enum import StrEnum


class FailureCode(StrEnum):
    """Why a step or a run failed, in snake_case."""

    # --- the input itself: the same file or request fails the same way -------------------
    EMPTY_FILE = "empty_file"
    NOT_A_VIDEO = "not_a_video"
    TRUNCATED_FILE = "truncated_file"
    UNREADABLE_MEDIA = "unreadable_media"
    """ffmpeg cannot decode it, or it refers to data outside the file (external tracks)."""
    UNSUPPORTED_CODEC = "unsupported_codec"
    UNSUPPORTED_CONTAINER = "unsupported_container"
    TOO_LARGE = "too_large"
    TOO_LONG = "too_long"
    TOO_MANY_STREAMS = "too_many_streams"
    RESOLUTION_TOO_HIGH = "resolution_too_high"
    NO_AUDIO = "no_audio"
    DURATION_MISMATCH = "duration_mismatch"
    """The container's declared duration disagrees with what its streams hold."""
    URL_NOT_ALLOWED = "url_not_allowed"
    IMPORT_FAILED = "import_failed"
    UNSUPPORTED_REQUEST = "unsupported_request"

    # --- what the request names does not exist (here, for this tenant) --------------------
    VIDEO_NOT_FOUND = "video_not_found"
    GENERATION_NOT_FOUND = "generation_not_found"
    OBJECT_NOT_FOUND = "object_not_found"
    """A stored file the step needs is gone (deleted, or the upload never finished)."""
    PLAN_UNKNOWN = "plan_unknown"
    PRICE_UNKNOWN = "price_unknown"

    # --- limits and decisions -------------------------------------------------------------
    QUOTA_EXCEEDED = "quota_exceeded"
    NO_PROVIDER_AVAILABLE = "no_provider_available"
    PROVIDER_REJECTED = "provider_rejected"
    """The provider refused this request (policy, bad parameters, unknown model)."""
    PROVIDER_UNAVAILABLE_HERE = "provider_unavailable_here"
    """The provider is not configured on this deployment (no key)."""
    NOT_AWAITING_APPROVAL = "not_awaiting_approval"
    APPROVAL_REJECTED = "approval_rejected"
    APPROVAL_TIMED_OUT = "approval_timed_out"
    GENERATION_FAILED = "generation_failed"
    VALIDATION_FAILED = "validation_failed"

    # --- discover -------------------------------------------------------------------------
    INVALID_DATASET = "invalid_dataset"
    """A dataset file that is not JSON, JSONL or CSV in Apify's export shapes."""
    SCRAPE_FAILED = "scrape_failed"
    """The Apify run ended FAILED, TIMED-OUT or ABORTED (its status message says why)."""
    POST_UNAVAILABLE = "post_unavailable"
    """The post was deleted or made private before its video could be downloaded."""
    PROJECT_NOT_FOUND = "project_not_found"
    ANALYSIS_INVALID = "analysis_invalid"
    """The analyzer's answer did not fit the analysis schema, even after repair and retry."""
    CONTENT_BLOCKED = "content_blocked"
    """The provider's safety filter refused the video or the prompt."""
    FILE_NOT_READY = "file_not_ready"
    """An uploaded file never left PROCESSING at the provider."""

    # --- improve: performance metrics ---------------------------------------------------
    INVALID_METRICS = "invalid_metrics"
    """A performance snapshot that cannot be true (negative counts, a future time, …)."""
    DUPLICATE_SNAPSHOT = "duplicate_snapshot"
    """The video already has a snapshot on that platform at that `recorded_at`."""
    SNAPSHOT_NOT_FOUND = "snapshot_not_found"
    COLLECTION_NOT_FOUND = "collection_not_found"
    """No video of the tenant belongs to the collection."""
    POST_NOT_FOUND = "post_not_found"

    # --- improve: insights ------------------------------------------------------------------
    INSIGHTS_RATE_LIMITED = "insights_rate_limited"
    """The tenant asked for more fresh insights this hour than its limit allows."""

    # --- improve: improvement runs ---------------------------------------------------------
    IMPROVEMENT_NOT_FOUND = "improvement_not_found"
    IMPROVEMENT_SOURCE_MISSING = "improvement_source_missing"
    """The video has no prompt, script, transcript or analysis to write a new version from."""
    NO_INSIGHTS = "no_insights"
    """The video has no performance metrics yet, so there is nothing to improve on."""

    # --- worth retrying: the same call may succeed later ----------------------------------
    PROVIDER_UNAVAILABLE = "provider_unavailable"
    """429, 5xx, timeouts and connection errors from a provider (Retry-After honoured)."""
    IMPORT_UNAVAILABLE = "import_unavailable"
    """The remote host of a URL import did not answer or answered 5xx."""
    DEPENDENCY_UNAVAILABLE = "dependency_unavailable"
    """Our own database, storage or network had a hiccup."""

    # --- the run as a whole ---------------------------------------------------------------
    STEP_TIMED_OUT = "step_timed_out"
    STEP_FAILED = "step_failed"
    CANCELED = "canceled"
    INTERNAL_ERROR = "internal_error"
    """A bug: reported, never retried as if it were transient."""


RETRYABLE_CODES: frozenset[FailureCode] = frozenset(
    {
        FailureCode.PROVIDER_UNAVAILABLE,
        FailureCode.IMPORT_UNAVAILABLE,
        FailureCode.DEPENDENCY_UNAVAILABLE,
    }
)
"""Codes an activity retry may cure. Every other code is final for that input."""

NON_RETRYABLE_ERROR_TYPES: tuple[str, ...] = tuple(
    code.value for code in FailureCode if code not in RETRYABLE_CODES
)
"""What every retry policy lists as `non_retryable_error_types`."""


_BY_VALUE = {code.value: code for code in FailureCode}


def known_code(value: object) -> FailureCode | None:
    """`value` as a failure code, or None when it is not one of ours."""
    return _BY_VALUE.get(value) if isinstance(value, str) else None


def is_retryable(code: str) -> bool:
    """Whether an activity that failed with `code` may succeed when tried again."""
    return code in RETRYABLE_CODES
