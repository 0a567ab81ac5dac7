"""Scripts as managed assets: versions, a status workflow with recorded moves, production links.

Every query is scoped by tenant: another tenant's script, product, project, adaptation,
video or post is reported exactly like one that does not exist. Functions flush but never
commit; the caller (API route, CLI command, activity) owns the transaction, which also
holds the row locks taken here until it ends.

Versions. The first version of a script has no parent and is the root of its chain. A new
version may be made from *any* version of the chain, not only the newest: its parent is the
version it was made from (so a "revert to v2" is a new version whose parent is v2), and its
number is the chain's highest number + 1, so numbers stay a simple 1, 2, 3… whatever the
shape of the tree. The chain's root row is locked while the number is chosen, so two
versions made at once never share a number.

Status. Each version has its own status, starting at `draft`, and moves only along
`schemas.discover.SCRIPT_TRANSITIONS`; every move (and the creation, as a move from `null`
to `draft`) is appended to `status_history` as `{from, to, by, at}`. The row is locked
(`SELECT … FOR UPDATE`) before its status is read, so of two racing moves from the same
state exactly one passes and the other sees the new state and is refused.
"""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from sqlalchemy import Select, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from reelflow.core.errors import DomainError
from reelflow.core.pagination import newest_first
from schemas.api import text_problem
from schemas.discover import SCRIPT_TRANSITIONS, ScriptAdaptation, ScriptContent, ScriptStatus
from schemas.discover_tables import Adaptation, Analysis, Brand, Post, Product, Project, Script
from schemas.failures import FailureCode
from schemas.tables import Video

MAX_TITLE_CHARS = 300
"""The `scripts.title` column's width."""
MAX_TEXT_CHARS = 10_000
"""Longest note (the version's notes, the notes for production)."""
MAX_LINE_CHARS = 2_000
"""Longest hook, scene text or call to action: a short video is read aloud in a minute."""
MAX_SCENES = 50

_NOT_FOUND_CODES: dict[str, FailureCode] = {
    "project": FailureCode.PROJECT_NOT_FOUND,
    "video": FailureCode.VIDEO_NOT_FOUND,
}


class ScriptObjectNotFound(DomainError):
    """A script, or an object a request names, does not exist for this tenant.

    `what` is the kind of object (`script`, `adaptation`, `product`, `project`, `video`,
    `post`), so the API can answer `no <what> with id …`.
    """

    def __init__(self, what: str, ident: uuid.UUID) -> None:
        # The vocabulary has codes for projects and videos only; the rest are gone objects.
        super().__init__(
            _NOT_FOUND_CODES.get(what, FailureCode.OBJECT_NOT_FOUND), f"no {what} with id {ident}"
        )
        self.what = what
        self.ident = ident


class ScriptTransitionRefused(Exception):
    """A status move that `SCRIPT_TRANSITIONS` does not allow (a same-state move included)."""

    def __init__(
        self,
        current: ScriptStatus,
        requested: ScriptStatus,
        allowed: tuple[ScriptStatus, ...],
    ) -> None:
        self.current = current
        self.requested = requested
        self.allowed = allowed
        if allowed:
            choices = ", ".join(status.value for status in allowed)
            message = (
                f"a {current.value} script cannot move to {requested.value}; "
                f"allowed next: {choices}"
            )
        else:
            message = (
                f"a {current.value} script cannot move to {requested.value}; "
                f"{current.value} is final (make a new version to change it)"
            )
        super().__init__(message)
        self.message = message


class InvalidScript(ValueError):
    """Input a script cannot be stored with (an empty title, a title too long, no notes)."""


class PageAfter(Protocol):
    """Where a page starts: strictly after this `(created_at, id)`; `api.pagination.PageKey`
    is one (read-only attributes, so a frozen dataclass fits)."""

    @property
    def created_at(self) -> datetime: ...

    @property
    def id(self) -> uuid.UUID: ...


@dataclass(frozen=True)
class ScriptPage:
    """One page of a list, newest first; `has_more` when a page follows `items[-1]`."""

    items: list[Script]
    has_more: bool


# --- helpers -------------------------------------------------------------------------------


def content_problem(content: ScriptContent) -> str | None:
    """Why a script body cannot be stored, or None: text Postgres refuses, overlong text,
    too many scenes, or scene times that are not finite or end before they start."""
    if not content.hook.strip():
        return "hook: must not be empty"
    if len(content.scenes) > MAX_SCENES:
        return f"scenes: at most {MAX_SCENES}"
    texts: list[tuple[str, str | None, int]] = [
        ("hook", content.hook, MAX_LINE_CHARS),
        ("call_to_action", content.call_to_action, MAX_LINE_CHARS),
        ("notes_for_production", content.notes_for_production, MAX_TEXT_CHARS),
    ]
    for index, scene in enumerate(content.scenes):
        where = f"scenes.{index}"
        if not (math.isfinite(scene.start_s) and math.isfinite(scene.end_s)):
            return f"{where}: start_s and end_s must be finite numbers"
        if scene.end_s < scene.start_s:
            return f"{where}: end_s must not be before start_s"
        texts += [
            (f"{where}.direction", scene.direction, MAX_LINE_CHARS),
            (f"{where}.original", scene.original, MAX_LINE_CHARS),
            (f"{where}.voiceover", scene.voiceover, MAX_LINE_CHARS),
            (f"{where}.on_screen_text", scene.on_screen_text, MAX_LINE_CHARS),
        ]
    for field, value, limit in texts:
        if value is None:
            continue
        if len(value) > limit:
            return f"{field}: at most {limit} characters"
        problem = text_problem(value)
        if problem is not None:
            return f"{field}: {problem}"
    return None


def _check_content(content: ScriptContent) -> dict[str, Any]:
    problem = content_problem(content)
    if problem is not None:
        raise InvalidScript(f"content.{problem}")
    return content.model_dump(mode="json")


def _check_notes(notes: str | None) -> str | None:
    if notes is None:
        return None
    notes = notes.strip()
    if len(notes) > MAX_TEXT_CHARS:
        raise InvalidScript(f"notes must be at most {MAX_TEXT_CHARS} characters")
    problem = text_problem(notes)
    if problem is not None:
        raise InvalidScript(f"notes {problem}")
    return notes or None


def _clean_title(title: str) -> str:
    cleaned = title.strip()
    if not cleaned:
        raise InvalidScript("title must not be empty")
    problem = text_problem(cleaned)
    if problem is not None:
        raise InvalidScript(f"title {problem}")
    if len(cleaned) > MAX_TITLE_CHARS:
        raise InvalidScript(f"title must be at most {MAX_TITLE_CHARS} characters")
    return cleaned


def _history_entry(
    previous: ScriptStatus | None, to: ScriptStatus, by: str, at: datetime
) -> dict[str, Any]:
    return {
        "from": None if previous is None else previous.value,
        "to": to.value,
        "by": by,
        "at": at.astimezone(UTC).isoformat(),
    }


async def _owned(
    session: AsyncSession, table: Any, tenant_id: uuid.UUID, ident: uuid.UUID, what: str
) -> Any:
    row = await session.scalar(select(table).where(table.id == ident, table.tenant_id == tenant_id))
    if row is None:
        raise ScriptObjectNotFound(what, ident)
    return row


async def _product(session: AsyncSession, tenant_id: uuid.UUID, product_id: uuid.UUID) -> Product:
    product: Product = await _owned(session, Product, tenant_id, product_id, "product")
    return product


async def _check_project(
    session: AsyncSession, tenant_id: uuid.UUID, project_id: uuid.UUID | None
) -> None:
    if project_id is not None:
        await _owned(session, Project, tenant_id, project_id, "project")


def _scoped(tenant_id: uuid.UUID, script_id: uuid.UUID) -> Select[Script]:
    return select(Script).where(Script.id == script_id, Script.tenant_id == tenant_id)


async def _insert(session: AsyncSession, script: Script) -> Script:
    session.add(script)
    await session.flush()
    # Server defaults (created_at, updated_at) are read by every caller that shows the row.
    await session.refresh(script)
    return script


# --- reads ---------------------------------------------------------------------------------


async def get_script(
    session: AsyncSession, *, tenant_id: uuid.UUID, script_id: uuid.UUID
) -> Script:
    """The tenant's script version.

    Raises:
        ScriptObjectNotFound: it does not exist, or belongs to another tenant.
    """
    script = await session.scalar(_scoped(tenant_id, script_id))
    if script is None:
        raise ScriptObjectNotFound("script", script_id)
    return script


async def _chain_root_id(
    session: AsyncSession, tenant_id: uuid.UUID, script_id: uuid.UUID
) -> uuid.UUID:
    """The first version of the chain `script_id` belongs to."""
    up = (
        select(Script.id, Script.parent_script_id)
        .where(Script.id == script_id, Script.tenant_id == tenant_id)
        .cte("up", recursive=True)
    )
    up = up.union_all(
        select(Script.id, Script.parent_script_id).where(
            Script.id == up.c.parent_script_id, Script.tenant_id == tenant_id
        )
    )
    root: uuid.UUID | None = await session.scalar(
        select(up.c.id).where(up.c.parent_script_id.is_(None))
    )
    if root is None:
        raise ScriptObjectNotFound("script", script_id)
    return root


def _chain_ids(tenant_id: uuid.UUID, root_id: uuid.UUID) -> Any:
    down = (
        select(Script.id)
        .where(Script.id == root_id, Script.tenant_id == tenant_id)
        .cte("down", recursive=True)
    )
    return down.union_all(
        select(Script.id).where(Script.parent_script_id == down.c.id, Script.tenant_id == tenant_id)
    )


async def version_history(
    session: AsyncSession, *, tenant_id: uuid.UUID, script_id: uuid.UUID
) -> list[Script]:
    """Every version of the chain `script_id` belongs to, oldest first (by version number).

    Raises:
        ScriptObjectNotFound: the script does not exist for this tenant.
    """
    root_id = await _chain_root_id(session, tenant_id, script_id)
    down = _chain_ids(tenant_id, root_id)
    rows = await session.scalars(
        select(Script)
        .where(Script.id.in_(select(down.c.id)))
        .order_by(Script.version, Script.created_at, Script.id)
    )
    return list(rows)


async def list_scripts(
    session: AsyncSession,
    *,
    tenant_id: uuid.UUID,
    project_id: uuid.UUID | None = None,
    product_id: uuid.UUID | None = None,
    brand_id: uuid.UUID | None = None,
    status: ScriptStatus | None = None,
    limit: int,
    after: PageAfter | None = None,
) -> ScriptPage:
    """The tenant's script versions matching every filter given, newest first.

    Ordered by `(created_at, id)` descending; `after` continues strictly after a row, so a
    row created meanwhile is neither skipped nor shown twice.
    """
    if limit < 1:
        raise ValueError("limit must be at least 1")
    query = select(Script).where(Script.tenant_id == tenant_id)
    if project_id is not None:
        query = query.where(Script.project_id == project_id)
    if product_id is not None:
        query = query.where(Script.product_id == product_id)
    if brand_id is not None:
        query = query.where(Script.brand_id == brand_id)
    if status is not None:
        query = query.where(Script.status == status.value)
    query = newest_first(query, Script.created_at, Script.id, after=after, limit=limit)
    rows = list(await session.scalars(query))
    return ScriptPage(items=rows[:limit], has_more=len(rows) > limit)


async def export_names(session: AsyncSession, script: Script) -> tuple[str | None, str | None]:
    """The product's and the brand's names an export shows (None where the script has none)."""
    product_name = brand_name = None
    if script.product_id is not None:
        product_name = await session.scalar(
            select(Product.name).where(
                Product.id == script.product_id, Product.tenant_id == script.tenant_id
            )
        )
    if script.brand_id is not None:
        brand_name = await session.scalar(
            select(Brand.name).where(
                Brand.id == script.brand_id, Brand.tenant_id == script.tenant_id
            )
        )
    return product_name, brand_name


# --- writes --------------------------------------------------------------------------------


async def create_script(
    session: AsyncSession,
    *,
    tenant_id: uuid.UUID,
    title: str,
    content: ScriptContent,
    project_id: uuid.UUID | None = None,
    product_id: uuid.UUID | None = None,
    notes: str | None = None,
    by: str,
    now: datetime | None = None,
) -> Script:
    """A first version written by hand, in `draft`; its brand is the product's.

    Raises:
        ScriptObjectNotFound: the product or project is not the tenant's.
        InvalidScript: the title is empty or too long.
    """
    brand_id = None
    if product_id is not None:
        brand_id = (await _product(session, tenant_id, product_id)).brand_id
    await _check_project(session, tenant_id, project_id)
    return await _insert(
        session,
        Script(
            id=uuid.uuid4(),
            tenant_id=tenant_id,
            project_id=project_id,
            product_id=product_id,
            brand_id=brand_id,
            version=1,
            title=_clean_title(title),
            content=_check_content(content),
            notes=_check_notes(notes),
            status=ScriptStatus.DRAFT.value,
            status_history=[_history_entry(None, ScriptStatus.DRAFT, by, now or datetime.now(UTC))],
        ),
    )


def content_from_adaptation(adaptation: ScriptAdaptation) -> ScriptContent:
    """A script body from an adapter's draft: hook, scenes and call to action as written."""
    return ScriptContent(
        hook=adaptation.hook,
        scenes=list(adaptation.scenes),
        call_to_action=adaptation.call_to_action,
    )


async def create_from_adaptation(
    session: AsyncSession,
    *,
    tenant_id: uuid.UUID,
    adaptation_id: uuid.UUID,
    project_id: uuid.UUID | None,
    title: str | None = None,
    by: str,
    now: datetime | None = None,
) -> Script:
    """The first version of the script an adaptation drafted, created once per adaptation.

    Content comes from the adaptation, the predicted viral score from its analysis, the
    source video from the analysis's video. A second call (a retried activity, a repeated
    request) returns the script the first call created; the adaptation's row is locked
    while that is decided, so two concurrent calls cannot both create one.

    Raises:
        ScriptObjectNotFound: the adaptation or project is not the tenant's.
    """
    adaptation = await session.scalar(
        select(Adaptation)
        .where(Adaptation.id == adaptation_id, Adaptation.tenant_id == tenant_id)
        .with_for_update()
    )
    if adaptation is None:
        raise ScriptObjectNotFound("adaptation", adaptation_id)
    existing = await session.scalar(
        select(Script)
        .where(
            Script.tenant_id == tenant_id,
            Script.adaptation_id == adaptation_id,
            Script.parent_script_id.is_(None),
        )
        .order_by(Script.created_at, Script.id)
        .limit(1)
    )
    if existing is not None:
        return existing
    await _check_project(session, tenant_id, project_id)
    draft = ScriptAdaptation.model_validate(adaptation.adaptation)
    analysis = await session.scalar(
        select(Analysis).where(
            Analysis.id == adaptation.analysis_id, Analysis.tenant_id == tenant_id
        )
    )
    product = await session.scalar(
        select(Product).where(Product.id == adaptation.product_id, Product.tenant_id == tenant_id)
    )
    return await _insert(
        session,
        Script(
            id=uuid.uuid4(),
            tenant_id=tenant_id,
            project_id=project_id,
            product_id=adaptation.product_id,
            brand_id=None if product is None else product.brand_id,
            adaptation_id=adaptation.id,
            source_video_id=None if analysis is None else analysis.video_id,
            version=1,
            title=_clean_title(title if title is not None and title.strip() else draft.title),
            content=content_from_adaptation(draft).model_dump(mode="json"),
            notes=None,
            status=ScriptStatus.DRAFT.value,
            status_history=[_history_entry(None, ScriptStatus.DRAFT, by, now or datetime.now(UTC))],
            predicted_viral_score=None if analysis is None else analysis.viral_score,
        ),
    )


async def new_version(
    session: AsyncSession,
    *,
    tenant_id: uuid.UUID,
    script_id: uuid.UUID,
    content: ScriptContent | None,
    title: str | None,
    notes: str,
    by: str,
    now: datetime | None = None,
) -> Script:
    """A new `draft` version made from `script_id` (any version of its chain).

    Content and title default to the parent's; project, product, brand, adaptation, source
    video and predicted score are carried over; production links are not (they belong to
    the version that was produced). `notes` say what changed and are required.

    Raises:
        ScriptObjectNotFound: the script does not exist for this tenant.
        InvalidScript: empty notes, or an empty or too long title.
    """
    clean_notes = _check_notes(notes)
    if clean_notes is None:
        raise InvalidScript("notes must say what this version changes")
    body = None if content is None else _check_content(content)
    clean_title = None if title is None else _clean_title(title)
    parent = await get_script(session, tenant_id=tenant_id, script_id=script_id)
    root_id = await _chain_root_id(session, tenant_id, script_id)
    # Serialises version numbering within the chain (see the module docstring).
    await session.execute(select(Script.id).where(Script.id == root_id).with_for_update())
    down = _chain_ids(tenant_id, root_id)
    highest = await session.scalar(
        select(func.max(Script.version)).where(Script.id.in_(select(down.c.id)))
    )
    return await _insert(
        session,
        Script(
            id=uuid.uuid4(),
            tenant_id=tenant_id,
            project_id=parent.project_id,
            product_id=parent.product_id,
            brand_id=parent.brand_id,
            adaptation_id=parent.adaptation_id,
            source_video_id=parent.source_video_id,
            parent_script_id=parent.id,
            version=int(highest or parent.version) + 1,
            title=clean_title or parent.title,
            content=dict(parent.content) if body is None else body,
            notes=clean_notes,
            status=ScriptStatus.DRAFT.value,
            status_history=[_history_entry(None, ScriptStatus.DRAFT, by, now or datetime.now(UTC))],
            predicted_viral_score=parent.predicted_viral_score,
        ),
    )


def allowed_next(status: ScriptStatus) -> tuple[ScriptStatus, ...]:
    """Where a script in `status` may move."""
    return SCRIPT_TRANSITIONS.get(status, ())


async def change_status(
    session: AsyncSession,
    *,
    tenant_id: uuid.UUID,
    script_id: uuid.UUID,
    to: ScriptStatus,
    by: str,
    now: datetime,
) -> Script:
    """Move a script along `SCRIPT_TRANSITIONS`, recording `{from, to, by, at}`.

    Raises:
        ScriptObjectNotFound: the script does not exist for this tenant.
        ScriptTransitionRefused: the move is not allowed (a same-state move neither), with
            the states that are.
    """
    script = await session.scalar(
        _scoped(tenant_id, script_id)
        .with_for_update()
        # The session may hold the row from before the lock: read it as the lock sees it.
        .execution_options(populate_existing=True)
    )
    if script is None:
        raise ScriptObjectNotFound("script", script_id)
    current = ScriptStatus(script.status)
    allowed = allowed_next(current)
    if to not in allowed:
        raise ScriptTransitionRefused(current, to, allowed)
    script.status = to.value
    script.status_history = [*script.status_history, _history_entry(current, to, by, now)]
    script.updated_at = now
    await session.flush()
    return script


async def link_production(
    session: AsyncSession,
    *,
    tenant_id: uuid.UUID,
    script_id: uuid.UUID,
    produced_video_id: uuid.UUID | None = None,
    published_post_id: uuid.UUID | None = None,
    now: datetime | None = None,
) -> Script:
    """Link a script version to the video produced from it and the post that published it.

    An id left None leaves that link as it is. Both ids must be the tenant's.

    Raises:
        ScriptObjectNotFound: the script, video or post is not the tenant's.
    """
    script = await session.scalar(
        _scoped(tenant_id, script_id).with_for_update().execution_options(populate_existing=True)
    )
    if script is None:
        raise ScriptObjectNotFound("script", script_id)
    if produced_video_id is not None:
        await _owned(session, Video, tenant_id, produced_video_id, "video")
        script.produced_video_id = produced_video_id
    if published_post_id is not None:
        await _owned(session, Post, tenant_id, published_post_id, "post")
        script.published_post_id = published_post_id
    script.updated_at = now or datetime.now(UTC)
    await session.flush()
    return script
