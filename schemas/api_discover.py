"""Request and response bodies of the discover catalog (brands, products, projects, posts,
analyses and product fit), shared by the API and the CLI.

Accounts are named the way people copy them: a handle, `@handle`, or the profile URL
(`https://www.instagram.com/name/`, `https://www.tiktok.com/@name`). They are normalised here,
once, to the lowercase handle without `@` that `watched_accounts.handle` stores, so the same
account typed three ways is one watched account, and anything else is a 422 naming the field.
"""

from __future__ import annotations

import math
import re
import uuid
from datetime import datetime
from typing import Annotated, Generic, TypeVar
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from schemas.api import StoredText
from schemas.discover import (
    OutlierSettings,
    OutlierTier,
    Platform,
    ProductFit,
    ScriptAdaptation,
    VideoAnalysis,
)

MAX_NAME_CHARS = 200
"""The width of the `name` columns."""
MAX_TEXT_CHARS = 5000
MAX_TONE_CHARS = 200
MAX_BENEFITS = 20
MAX_BENEFIT_CHARS = 300
MAX_ACCOUNTS_PER_PROJECT = 100
MAX_PRODUCTS_PER_PROJECT = 50
MIN_SCHEDULE_INTERVAL_S = 3600
"""Re-scraping more often than hourly costs Apify credits and finds nothing new."""
MAX_SCHEDULE_INTERVAL_S = 30 * 24 * 3600


# --- names and text -------------------------------------------------------------------------


def _strip_name(value: str) -> str:
    stripped = value.strip()
    if not stripped:
        raise ValueError("must not be empty")
    return stripped


def _strip_optional(value: str | None) -> str | None:
    if value is None:
        return None
    stripped = value.strip()
    return stripped or None


Name = Annotated[
    StoredText, Field(min_length=1, max_length=MAX_NAME_CHARS), AfterValidator(_strip_name)
]
"""A brand, product or project name: trimmed, never empty."""
LongText = Annotated[
    StoredText | None, Field(max_length=MAX_TEXT_CHARS), AfterValidator(_strip_optional)
]
Benefit = Annotated[
    StoredText, Field(min_length=1, max_length=MAX_BENEFIT_CHARS), AfterValidator(_strip_name)
]
Tone = Annotated[
    StoredText | None, Field(max_length=MAX_TONE_CHARS), AfterValidator(_strip_optional)
]


class _Request(BaseModel):
    # A misspelt field is a 422, not a silently ignored change.
    model_config = ConfigDict(extra="forbid")


# --- accounts -------------------------------------------------------------------------------

_HANDLE_RULES: dict[Platform, tuple[re.Pattern[str], str]] = {
    # Instagram: letters, digits, periods and underscores, at most 30.
    Platform.INSTAGRAM: (
        re.compile(r"[a-z0-9._]{1,30}"),
        "an Instagram handle is 1–30 letters, digits, periods or underscores",
    ),
    # TikTok: the same alphabet, 2–24 characters.
    Platform.TIKTOK: (
        re.compile(r"[a-z0-9._]{2,24}"),
        "a TikTok handle is 2–24 letters, digits, periods or underscores",
    ),
}
_PLATFORM_HOSTS: dict[str, Platform] = {
    "instagram.com": Platform.INSTAGRAM,
    "www.instagram.com": Platform.INSTAGRAM,
    "m.instagram.com": Platform.INSTAGRAM,
    "tiktok.com": Platform.TIKTOK,
    "www.tiktok.com": Platform.TIKTOK,
    "m.tiktok.com": Platform.TIKTOK,
}
# First path segments of Instagram URLs that name a post or a page, not a profile.
_INSTAGRAM_NOT_PROFILES = frozenset(
    {"p", "reel", "reels", "tv", "explore", "accounts", "stories", "direct", "about"}
)
_MAX_ACCOUNT_CHARS = 500


def _looks_like_url(raw: str) -> bool:
    lowered = raw.lower()
    return "://" in lowered or any(
        lowered.startswith(host + "/") or lowered == host for host in _PLATFORM_HOSTS
    )


def _handle_from_url(raw: str) -> tuple[Platform, str]:
    url = raw if "://" in raw else f"https://{raw}"
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    platform = _PLATFORM_HOSTS.get(host)
    if parts.scheme not in ("http", "https") or platform is None:
        raise ValueError(
            f"{raw!r} is not an Instagram or TikTok profile URL "
            "(e.g. https://www.instagram.com/name/ or https://www.tiktok.com/@name)"
        )
    segments = [s for s in parts.path.split("/") if s]
    if not segments:
        raise ValueError(f"{raw!r} names no account: the profile URL ends with the handle")
    first = segments[0]
    if platform is Platform.TIKTOK:
        # A TikTok profile (or a video of it) is /@name[/video/…].
        if not first.startswith("@"):
            raise ValueError(f"{raw!r} is not a TikTok profile URL (https://www.tiktok.com/@name)")
        return platform, first[1:]
    if first.lower() in _INSTAGRAM_NOT_PROFILES:
        raise ValueError(
            f"{raw!r} is an Instagram post or page, not a profile (https://www.instagram.com/name/)"
        )
    return platform, first


def parse_account(raw: str, platform: Platform | None = None) -> tuple[Platform, str]:
    """The platform and normalised handle (lowercase, no `@`) that `raw` names.

    `raw` is a handle, `@handle` or a profile URL; a URL decides the platform itself, and
    must agree with `platform` when both are given.

    Raises:
        ValueError: with a message a person can act on.
    """
    text = raw.strip()
    if not text:
        raise ValueError("the account must not be empty")
    if len(text) > _MAX_ACCOUNT_CHARS:
        raise ValueError(f"the account must be at most {_MAX_ACCOUNT_CHARS} characters")
    if _looks_like_url(text):
        url_platform, handle = _handle_from_url(text)
        if platform is not None and platform is not url_platform:
            raise ValueError(
                f"{text!r} is a {url_platform.value} URL, but the platform given is "
                f"{platform.value}"
            )
        platform = url_platform
    else:
        if platform is None:
            raise ValueError(
                f"say which platform {text!r} is on (instagram or tiktok), or give a profile URL"
            )
        handle = text[1:] if text.startswith("@") else text
    handle = handle.lower()
    pattern, rule = _HANDLE_RULES[platform]
    if not pattern.fullmatch(handle):
        shown = handle if len(handle) <= 60 else handle[:60] + "…"
        raise ValueError(f"{shown!r} is not a valid handle: {rule}")
    return platform, handle


def parse_account_option(raw: str) -> tuple[Platform, str]:
    """A CLI `--account`: `platform:handle`, `platform:URL`, or a bare profile URL."""
    text = raw.strip()
    prefix, sep, rest = text.partition(":")
    if sep and prefix.lower() in {p.value for p in Platform}:
        return parse_account(rest, Platform(prefix.lower()))
    if _looks_like_url(text):
        return parse_account(text)
    raise ValueError(
        f"{raw!r}: write the account as instagram:@handle, tiktok:@handle or a profile URL"
    )


def profile_url(platform: Platform, handle: str) -> str:
    """The public profile page of an account."""
    if platform is Platform.TIKTOK:
        return f"https://www.tiktok.com/@{handle}"
    return f"https://www.instagram.com/{handle}/"


class AccountRef(_Request):
    """An account to watch: `handle` may be `name`, `@name` or the profile URL; `platform`
    may be left out when `handle` is a URL. Normalised on validation."""

    platform: Platform | None = None
    handle: str = Field(min_length=1, max_length=_MAX_ACCOUNT_CHARS)

    @model_validator(mode="after")
    def _normalise(self) -> AccountRef:
        platform, handle = parse_account(self.handle, self.platform)
        self.platform = platform
        self.handle = handle
        return self

    @property
    def key(self) -> tuple[Platform, str]:
        assert self.platform is not None  # set by the validator
        return self.platform, self.handle


class AccountView(BaseModel):
    """A watched account."""

    account_id: uuid.UUID
    platform: Platform
    handle: str
    url: str
    followers: int | None = None
    last_scraped_at: datetime | None = None


# --- schedules ------------------------------------------------------------------------------

_DURATION = re.compile(r"\s*(\d+)\s*([smhdw])\s*", re.IGNORECASE)
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_interval(raw: str) -> int:
    """Seconds in a duration such as `24h`, `30m`, `7d`, `1d12h` or a plain number of seconds.

    Raises:
        ValueError: unreadable, or outside the allowed schedule interval.
    """
    text = raw.strip()
    if text.isascii() and text.isdigit():
        seconds = int(text)
    else:
        pos, seconds = 0, 0
        for match in _DURATION.finditer(text):
            if match.start() != pos:
                break
            seconds += int(match.group(1)) * _UNIT_SECONDS[match.group(2).lower()]
            pos = match.end()
        if pos != len(text) or not text:
            raise ValueError(f"{raw!r} is not a duration: write e.g. 24h, 30m, 7d or 1d12h")
    check_interval(seconds)
    return seconds


def check_interval(seconds: int) -> int:
    if not MIN_SCHEDULE_INTERVAL_S <= seconds <= MAX_SCHEDULE_INTERVAL_S:
        raise ValueError(
            f"the schedule must be between {MIN_SCHEDULE_INTERVAL_S // 3600}h and "
            f"{MAX_SCHEDULE_INTERVAL_S // 86400}d"
        )
    return seconds


ScheduleSeconds = Annotated[int, AfterValidator(check_interval)]


# --- outlier settings -----------------------------------------------------------------------

MAX_MIN_RATIO = 1000.0
MAX_MIN_ROBUST_Z = 100.0


def _bounded_settings(settings: OutlierSettings) -> OutlierSettings:
    """Finite, storable thresholds: JSON (and JSONB) has no infinity, and a tier no post can
    reach would silently turn outlier detection off."""
    if not (math.isfinite(settings.min_ratio) and settings.min_ratio <= MAX_MIN_RATIO):
        raise ValueError(f"min_ratio must be a number from 1 to {MAX_MIN_RATIO:g}")
    if not (math.isfinite(settings.min_robust_z) and settings.min_robust_z <= MAX_MIN_ROBUST_Z):
        raise ValueError(f"min_robust_z must be a number from 0 to {MAX_MIN_ROBUST_Z:g}")
    if not math.isfinite(settings.min_age_hours):
        raise ValueError("min_age_hours must be a finite number")
    return settings


ProjectOutlierSettings = Annotated[OutlierSettings, AfterValidator(_bounded_settings)]


# --- brands ---------------------------------------------------------------------------------


class BrandCreate(_Request):
    name: Name
    description: LongText = None


class BrandUpdate(_Request):
    """Only the fields sent change; `description: null` clears it."""

    name: Name | None = None
    description: LongText = None


class BrandView(BaseModel):
    brand_id: uuid.UUID
    name: str
    description: str | None
    product_count: int
    created_at: datetime


# --- products -------------------------------------------------------------------------------


class ProductCreate(_Request):
    brand_id: uuid.UUID
    name: Name
    description: LongText = None
    audience: LongText = None
    benefits: list[Benefit] = Field(default_factory=list, max_length=MAX_BENEFITS)
    tone: Tone = None


class ProductUpdate(_Request):
    """Only the fields sent change; a product stays under its brand."""

    name: Name | None = None
    description: LongText = None
    audience: LongText = None
    benefits: list[Benefit] | None = Field(default=None, max_length=MAX_BENEFITS)
    tone: Tone = None


class ProductView(BaseModel):
    product_id: uuid.UUID
    brand_id: uuid.UUID
    brand_name: str
    name: str
    description: str | None
    audience: str | None
    benefits: list[str]
    tone: str | None
    created_at: datetime


# --- projects -------------------------------------------------------------------------------


class _Schedule(_Request):
    schedule_interval_s: ScheduleSeconds | None = None
    schedule: str | None = Field(default=None, max_length=40)
    """The same as `schedule_interval_s`, written as a duration (`24h`, `7d`)."""

    @field_validator("schedule")
    @classmethod
    def _readable(cls, value: str | None) -> str | None:
        if value is not None:
            parse_interval(value)
        return value

    @model_validator(mode="after")
    def _schedule(self) -> _Schedule:
        if self.schedule is not None:
            if self.schedule_interval_s is not None:
                raise ValueError("give schedule or schedule_interval_s, not both")
            self.schedule_interval_s = parse_interval(self.schedule)
            # Both fields now say the same thing; the update tells "sent" from "not sent".
            self.model_fields_set.add("schedule_interval_s")
        return self


class ProjectCreate(_Schedule):
    name: Name
    accounts: list[AccountRef] = Field(default_factory=list, max_length=MAX_ACCOUNTS_PER_PROJECT)
    product_ids: list[uuid.UUID] = Field(default_factory=list, max_length=MAX_PRODUCTS_PER_PROJECT)
    outlier_settings: ProjectOutlierSettings | None = None


_SCHEDULE_FIELDS = ("schedule", "schedule_interval_s", "schedule_paused")


class ProjectUpdate(_Request):
    """Only the fields sent change. The schedule is not changed here but through
    `/v1/projects/{id}/schedule`, which keeps the Temporal Schedule and the project in step."""

    name: Name | None = None
    add_accounts: list[AccountRef] = Field(
        default_factory=list, max_length=MAX_ACCOUNTS_PER_PROJECT
    )
    remove_accounts: list[AccountRef] = Field(
        default_factory=list, max_length=MAX_ACCOUNTS_PER_PROJECT
    )
    add_product_ids: list[uuid.UUID] = Field(
        default_factory=list, max_length=MAX_PRODUCTS_PER_PROJECT
    )
    remove_product_ids: list[uuid.UUID] = Field(
        default_factory=list, max_length=MAX_PRODUCTS_PER_PROJECT
    )
    outlier_settings: ProjectOutlierSettings | None = None

    @model_validator(mode="before")
    @classmethod
    def _no_schedule(cls, data: object) -> object:
        if isinstance(data, dict) and any(f in data for f in _SCHEDULE_FIELDS):
            raise ValueError(
                "the schedule is changed with PUT /v1/projects/{id}/schedule and paused or "
                "resumed with POST /v1/projects/{id}/schedule/pause|resume"
            )
        return data


class ProjectProductView(BaseModel):
    product_id: uuid.UUID
    name: str
    brand_id: uuid.UUID
    brand_name: str


class ProjectView(BaseModel):
    project_id: uuid.UUID
    name: str
    accounts: list[AccountView]
    products: list[ProjectProductView]
    outlier_settings: OutlierSettings
    schedule_interval_s: int | None
    schedule_paused: bool
    created_at: datetime


# --- posts, analyses and fit ----------------------------------------------------------------


class PostItem(BaseModel):
    """A scraped post with its latest counts and outlier verdict."""

    post_id: uuid.UUID
    platform: Platform
    platform_post_id: str
    account: str
    """The account's handle."""
    account_id: uuid.UUID
    url: str | None
    caption: str | None
    posted_at: datetime | None
    views: int | None
    likes: int | None
    comments: int | None
    shares: int | None
    saves: int | None
    outlier_score: float | None
    outlier_z: float | None
    outlier_tier: OutlierTier | None
    no_score_reason: str | None
    video_id: uuid.UUID | None
    created_at: datetime


class AdaptationView(BaseModel):
    adaptation_id: uuid.UUID
    product_id: uuid.UUID
    product_name: str
    adapter: str
    fit_score: float
    adaptation: ScriptAdaptation
    created_at: datetime


class PostAnalysis(BaseModel):
    """The latest analysis of a post's video, with the products it was adapted to."""

    analysis_id: uuid.UUID
    post_id: uuid.UUID | None
    video_id: uuid.UUID
    analyzer: str
    model: str
    prompt_version: str
    viral_score: float | None
    analysis: VideoAnalysis
    adaptations: list[AdaptationView]
    created_at: datetime


class PendingProduct(BaseModel):
    """A project product the video has not been adapted to yet, so it has no fit score."""

    product_id: uuid.UUID
    product_name: str


class ProductFitReport(BaseModel):
    """A project's products ranked for one video (`ProductComparison`), plus what is missing."""

    video_id: uuid.UUID
    project_id: uuid.UUID
    analysis_id: uuid.UUID | None
    """The analysis the scores come from; None when the video has not been analyzed."""
    ranking: list[ProductFit]
    recommended_product_id: uuid.UUID | None
    recommended_product_name: str | None
    why: str
    not_adapted: list[PendingProduct]
    """Listed apart rather than ranked: no score is not a low score."""


# --- pages ----------------------------------------------------------------------------------

Item = TypeVar("Item", bound=BaseModel)


class Page(BaseModel, Generic[Item]):
    """One page of a list, newest first; pass `next_cursor` back as `cursor` for the next."""

    items: list[Item]
    next_cursor: str | None
