"""One translator turns whatever an activity raised into the failure vocabulary."""

from __future__ import annotations

import ast
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy.exc
from temporalio import activity, workflow
from temporalio.client import Client, WorkflowFailureError
from temporalio.exceptions import ActivityError, ApplicationError
from temporalio.worker import Worker

from activities._errors import FailureTranslationInterceptor, translate
from reelflow.core.errors import DomainError
from reelflow.core.netguard import UrlNotAllowed
from reelflow.core.pricing import UnknownPrice
from reelflow.core.provider_errors import ProviderPermanentError, ProviderTransientError
from reelflow.core.storage import ObjectNotFound
from reelflow.generation.capabilities import UnsupportedRequest
from reelflow.generation.quotas import QuotaExceeded, UnknownPlan, plan_named
from reelflow.generation.routing import NoRouteAvailable
from reelflow.ingest.url_import import ImportFailed
from reelflow.media.ffmpeg import MediaRejected, MediaToolError, MediaToolMissing
from schemas.contracts import PROVIDER_RETRY
from schemas.failures import RETRYABLE_CODES, FailureCode

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("raised", "code", "retryable"),
    [
        (MediaRejected("not_a_video", "the file is not a video"), "not_a_video", False),
        (MediaRejected("truncated_file", "the file is cut short"), "truncated_file", False),
        (
            ProviderPermanentError("bad model", provider="openai", status_code=400),
            "provider_rejected",
            False,
        ),
        (
            ProviderTransientError("busy", provider="openai", status_code=503),
            "provider_unavailable",
            True,
        ),
        (UrlNotAllowed("that address is private"), "url_not_allowed", False),
        (UrlNotAllowed("the name did not resolve", retryable=True), "import_unavailable", True),
        (ImportFailed("the page has no video"), "import_failed", False),
        (ImportFailed("the site answered 503", retryable=True), "import_unavailable", True),
        (ObjectNotFound("tenants/t/videos/v/source.mp4"), "object_not_found", False),
        (UnknownPrice("no price for sora-9"), "price_unknown", False),
        (QuotaExceeded("only 3 s are left"), "quota_exceeded", False),
        (UnsupportedRequest("duration_s", 99, [4, 8]), "unsupported_request", False),
        (NoRouteAvailable(["sora: over the cost limit"]), "no_provider_available", False),
        (
            DomainError(FailureCode.VIDEO_NOT_FOUND, "video v does not exist"),
            "video_not_found",
            False,
        ),
        (ConnectionError("connection reset"), "dependency_unavailable", True),
        (
            sqlalchemy.exc.OperationalError("SELECT 1", {}, Exception("server closed")),
            "dependency_unavailable",
            True,
        ),
        (MediaToolError("ffmpeg timed out after 60 s"), "dependency_unavailable", True),
        (MediaToolMissing("ffprobe is not installed"), "internal_error", False),
        (ValueError("invalid literal for int()"), "internal_error", False),
        (KeyError("window_index"), "internal_error", False),
        # A type outside the vocabulary is a bug in the activity, whatever it claims.
        (
            ApplicationError("legacy", type="ObjectNotFound", non_retryable=True),
            "internal_error",
            False,
        ),
        # The vocabulary, not the raiser, decides whether a code is retried.
        (ApplicationError("not a video", type="not_a_video"), "not_a_video", False),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, BaseException) else str(value),
)
def test_each_failure_gets_its_code_and_retryability(
    raised: BaseException, code: str, retryable: bool
) -> None:
    failure = translate(raised, step="probe_video")
    assert failure.type == code
    assert failure.non_retryable is (not retryable)
    assert failure.type in FailureCode.__members__.values()


def test_an_unknown_plan_is_refused_not_retried_for_half_an_hour() -> None:
    with pytest.raises(UnknownPlan) as raised:
        plan_named("platinum-plus")
    failure = translate(raised.value, step="prepare_generation")
    assert (failure.type, failure.non_retryable) == ("plan_unknown", True)
    assert "platinum-plus" in failure.message


def test_retry_after_becomes_the_next_retry_delay() -> None:
    failure = translate(
        ProviderTransientError("slow down", provider="openai", status_code=429, retry_after_s=7),
        step="transcribe_window",
    )
    assert failure.next_retry_delay == timedelta(seconds=7)


def test_a_bug_reaches_the_user_without_python_names_or_internals() -> None:
    failure = translate(
        ValueError("invalid literal for int() with base 10: 'x'"), step="embed_chunks"
    )
    assert "ValueError" not in failure.message and "invalid literal" not in failure.message
    assert failure.message.startswith("embed_chunks failed because of an internal error")


def _code_literals() -> list[tuple[str, str]]:
    """Every failure code written in the product's code: `code = "…"` in classes,
    `MediaRejected("…", …)`, `type="…"` and `FailureCode.X`."""
    found: list[tuple[str, str]] = []
    for package in ("reelflow", "activities", "workflows", "workers"):
        for path in (ROOT / package).rglob("*.py"):
            tree = ast.parse(path.read_text(), filename=str(path))
            where = str(path.relative_to(ROOT))
            for node in ast.walk(tree):
                if isinstance(node, ast.ClassDef):
                    for statement in node.body:
                        if (
                            isinstance(statement, ast.Assign)
                            and [getattr(t, "id", None) for t in statement.targets] == ["code"]
                            and isinstance(statement.value, ast.Constant)
                        ):
                            found.append((where, str(statement.value.value)))
                if isinstance(node, ast.Call):
                    name = getattr(node.func, "id", getattr(node.func, "attr", ""))
                    if name in {"MediaRejected", "ApplicationError"}:
                        if name == "MediaRejected" and node.args:
                            first = node.args[0]
                            if isinstance(first, ast.Constant):
                                found.append((where, str(first.value)))
                        for keyword in node.keywords:
                            if keyword.arg == "type" and isinstance(keyword.value, ast.Constant):
                                found.append((where, str(keyword.value.value)))
                if (
                    isinstance(node, ast.Attribute)
                    and isinstance(node.value, ast.Name)
                    and node.value.id == "FailureCode"
                    and not node.attr.startswith("_")
                ):
                    found.append((where, FailureCode[node.attr].value))
    return found


def test_every_code_the_product_raises_is_in_the_vocabulary() -> None:
    literals = _code_literals()
    assert len(literals) > 20  # the scan found the raise sites
    unknown = [
        (where, code) for where, code in literals if code not in FailureCode.__members__.values()
    ]
    assert unknown == []


def test_the_vocabulary_is_snake_case_and_classified() -> None:
    for code in FailureCode:
        assert code.value == code.name.lower()
    assert set(FailureCode) > RETRYABLE_CODES


# --- through a real worker ------------------------------------------------------------------

_attempts: dict[str, int] = {}


@activity.defn(name="translation_probe")
async def translation_probe(kind: str) -> str:
    _attempts[kind] = _attempts.get(kind, 0) + 1
    if kind == "bug":
        raise ValueError("list index out of range")
    if kind == "hiccup" and _attempts[kind] == 1:
        raise ConnectionError("connection reset by peer")
    return "ok"


@workflow.defn(sandboxed=False)
class TranslationProbeWorkflow:
    @workflow.run
    async def run(self, kind: str) -> str:
        result: str = await workflow.execute_activity(
            "translation_probe",
            kind,
            start_to_close_timeout=timedelta(seconds=10),
            retry_policy=PROVIDER_RETRY,
        )
        return result


async def test_the_worker_interceptor_fails_a_bug_at_once_and_retries_a_hiccup(
    client: Client,
) -> None:
    queue = f"translation-{uuid.uuid4().hex[:8]}"
    async with Worker(
        client,
        task_queue=queue,
        workflows=[TranslationProbeWorkflow],
        activities=[translation_probe],
        interceptors=[FailureTranslationInterceptor()],
    ):
        assert (
            await client.execute_workflow(
                TranslationProbeWorkflow.run, "hiccup", id=f"{queue}-hiccup", task_queue=queue
            )
            == "ok"
        )
        with pytest.raises(WorkflowFailureError) as failed:
            await client.execute_workflow(
                TranslationProbeWorkflow.run, "bug", id=f"{queue}-bug", task_queue=queue
            )
    assert _attempts == {"hiccup": 2, "bug": 1}
    cause = failed.value.cause
    assert isinstance(cause, ActivityError) and isinstance(cause.cause, ApplicationError)
    assert cause.cause.type == "internal_error"
