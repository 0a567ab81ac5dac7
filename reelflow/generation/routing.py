"""Generation requests as the API and the activities share them: providers, routing, rows.

* `ProviderRegistry`: the video providers this deployment can call, built once per
  process (`build_provider_registry`) and injected into the API and the workers.
* `route_auto`: the models that can serve a request, best quality tier first, then the
  cheapest (seed 003).
* `plan_route`: which provider models may serve a request, first choice first, with the
  estimate — the one place the API (for its 422s and estimates) and the workflow's
  `prepare_generation` step decide it, so they never disagree.
* `admit_generation`: the request row and its quota reservation, in the caller's
  transaction; tenant-scoped reads for the API.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Protocol

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from reelflow.billing.plans import plan_limits, providers_outside, upgrade_path
from reelflow.core.errors import DomainError
from reelflow.core.settings import Settings
from reelflow.generation import quotas
from reelflow.generation.capabilities import (
    PROVIDERS,
    ModelCapabilities,
    UnsupportedRequest,
    check_request,
    estimate_cost,
)
from reelflow.generation.providers.base import VideoProvider
from reelflow.generation.providers.local import LocalRenderer
from schemas.failures import FailureCode
from schemas.generation import AUTO_PROVIDER, ApprovalState, GenerationStatus
from schemas.generation_tables import Generation, GenerationAttempt
from schemas.tables import LedgerEntry

LOCAL = "local"
MEDIA_POOL = "media"
PROVIDERS_POOL = "providers"


class ProviderRegistry:
    """The provider models one process can call, by ``(provider, model)``."""

    def __init__(self, providers: Iterable[VideoProvider]) -> None:
        self._by_key: dict[tuple[str, str], VideoProvider] = {}
        for provider in providers:
            caps = provider.capabilities
            self._by_key[(caps.provider, caps.model)] = provider

    def __repr__(self) -> str:
        return f"ProviderRegistry({', '.join(sorted(f'{p}/{m}' for p, m in self._by_key))})"

    @property
    def capabilities(self) -> tuple[ModelCapabilities, ...]:
        """What every registered model can make and charges."""
        return tuple(provider.capabilities for provider in self._by_key.values())

    @property
    def providers(self) -> tuple[str, ...]:
        """Registered provider names, in the registry's quality order."""
        names = {provider for provider, _ in self._by_key}
        known = [name for name in PROVIDERS if name in names]
        return (*known, *sorted(names - set(known)))

    def get(self, provider: str, model: str) -> VideoProvider:
        """The provider object for a model.

        Raises:
            UnsupportedRequest: The model is not registered in this process.
        """
        try:
            return self._by_key[(provider, model)]
        except KeyError:
            models = [m for p, m in self._by_key if p == provider]
            raise UnsupportedRequest(
                "model", model, models or self.providers, f"{provider} on this worker"
            ) from None


def pool_of(provider: str) -> str:
    """The worker pool that calls a provider: the local renderer is CPU work (media)."""
    return MEDIA_POOL if provider == LOCAL else PROVIDERS_POOL


def build_provider_registry(settings: Settings) -> ProviderRegistry:
    """The local renderer always; Sora when a key is configured (``SORA_API_KEY`` or
    ``OPENAI_API_KEY``); Veo with ``GEMINI_API_KEY``; Runway with ``RUNWAY_API_KEY``.

    Each provider's SDK is imported only when it is configured: the API builds a registry
    too, and should not load SDKs it will never call.
    """
    providers: list[VideoProvider] = [LocalRenderer(settings.resolved_generation_jobs_dir)]
    key = settings.sora_api_key or settings.openai_api_key
    if key is not None:
        import openai

        from reelflow.generation.providers.sora import SoraProvider

        # SDK retries off: Temporal's retry policy owns retrying (and shows it in history).
        client = openai.OpenAI(
            api_key=key.get_secret_value(),
            base_url=settings.openai_base_url,
            max_retries=0,
            timeout=60.0,
        )
        providers += [SoraProvider(client, "sora-2"), SoraProvider(client, "sora-2-pro")]
    if settings.gemini_api_key is not None:
        from reelflow.generation.providers.veo import VeoProvider, build_veo_client

        providers.append(VeoProvider(build_veo_client(settings.gemini_api_key.get_secret_value())))
    if settings.runway_api_key is not None:
        import httpx

        from reelflow.generation.providers.runway import RunwayProvider

        http = httpx.Client(timeout=httpx.Timeout(60.0, connect=10.0), follow_redirects=True)
        providers.append(RunwayProvider(http, settings.runway_api_key.get_secret_value()))
    return ProviderRegistry(providers)


# --- routing ------------------------------------------------------------------------------


class NoRouteAvailable(ValueError):
    """No candidate model can serve a request within the cost limit.

    Attributes:
        reasons: Why each candidate was left out, one sentence each.
    """

    code = "no_provider_available"

    def __init__(self, reasons: Sequence[str]) -> None:
        super().__init__(tuple(reasons))
        self.reasons = tuple(reasons)

    def __str__(self) -> str:
        if not self.reasons:
            return "no provider is available"
        return "no provider can make this video: " + "; ".join(self.reasons)


class VideoSpec(Protocol):
    """Anything that says what video to make (a job request, an API input, ...)."""

    @property
    def duration_s(self) -> int: ...

    @property
    def aspect_ratio(self) -> str: ...

    @property
    def resolution(self) -> str: ...


@dataclass(frozen=True)
class RouteOption:
    """A model that can serve a request, and what it would cost."""

    capabilities: ModelCapabilities
    estimated_cost_usd: Decimal


def route_auto(
    candidates: Iterable[ModelCapabilities],
    request: VideoSpec,
    max_cost: Decimal | None = None,
) -> list[RouteOption]:
    """The candidates that can serve `request`, best first: the first choice and fallbacks.

    Order (seed 003): highest quality tier first; within a tier the cheapest first; ties
    by provider and model name so the order never depends on the input order.

    Args:
        candidates: Models to consider, e.g. those with credentials configured.
        request: What to make.
        max_cost: Leave out models whose estimate is above this many dollars.

    Returns:
        At least one option.

    Raises:
        NoRouteAvailable: No candidate fits; the message says why for each.
        ValueError: `max_cost` is negative.
    """
    if max_cost is not None and max_cost < 0:
        raise ValueError("max_cost must not be negative")
    options: list[RouteOption] = []
    reasons: list[str] = []
    for caps in candidates:
        try:
            check_request(caps, request.duration_s, request.aspect_ratio, request.resolution)
        except UnsupportedRequest as exc:
            reasons.append(exc.message)
            continue
        cost = estimate_cost(caps, request.duration_s, request.resolution)
        if max_cost is not None and cost > max_cost:
            reasons.append(f"{caps.key} would cost ${cost.normalize():f}, over ${max_cost:f}")
            continue
        options.append(RouteOption(caps, cost))
    if not options:
        raise NoRouteAvailable(reasons)
    options.sort(
        key=lambda o: (
            -o.capabilities.quality_tier,
            o.estimated_cost_usd,
            o.capabilities.provider,
            o.capabilities.model,
        )
    )
    return options


@dataclass(frozen=True)
class GenerationSpec:
    """What was asked for (a `VideoSpec`)."""

    provider: str
    duration_s: int
    aspect_ratio: str
    resolution: str
    max_cost_usd: Decimal | None = None


@dataclass(frozen=True)
class RoutePlan:
    """The models to try, in order: the first choice, then fallbacks."""

    candidates: tuple[RouteOption, ...]

    @property
    def primary(self) -> RouteOption:
        return self.candidates[0]

    @property
    def estimated_cost_usd(self) -> Decimal:
        """The first choice's estimate; a fallback never costs more (see `plan_route`)."""
        return self.primary.estimated_cost_usd


def _select(models: Sequence[ModelCapabilities], spec: GenerationSpec) -> RouteOption:
    """The cheapest registered model of one provider that makes `spec` (best tier on a tie).

    The API takes a provider, not a model: ``"sora"`` at 1080p means sora-2-pro. Only the
    registered models count, so the allowed values named in the error are those this
    deployment can really make (the values of all its models together).
    """
    provider = spec.provider
    durations = sorted({d for caps in models for d in caps.durations_s})
    aspects = list(dict.fromkeys(a for caps in models for a in caps.aspect_ratios))
    resolutions = list(dict.fromkeys(r for caps in models for r in caps.resolutions))
    if spec.duration_s not in durations:
        raise UnsupportedRequest("duration_s", spec.duration_s, durations, provider)
    if spec.aspect_ratio not in aspects:
        raise UnsupportedRequest("aspect_ratio", spec.aspect_ratio, aspects, provider)
    if spec.resolution not in resolutions:
        raise UnsupportedRequest("resolution", spec.resolution, resolutions, provider)
    fitting = [
        caps
        for caps in models
        if spec.duration_s in caps.durations_s
        and spec.aspect_ratio in caps.aspect_ratios
        and spec.resolution in caps.resolutions
    ]
    if not fitting:
        # Each value exists somewhere, but not together: name what goes with the rest.
        usable = [
            r
            for caps in models
            if spec.duration_s in caps.durations_s and spec.aspect_ratio in caps.aspect_ratios
            for r in caps.resolutions
        ]
        raise UnsupportedRequest(
            "resolution", spec.resolution, list(dict.fromkeys(usable)), provider
        )
    options = [
        RouteOption(caps, estimate_cost(caps, spec.duration_s, spec.resolution)) for caps in fitting
    ]
    return min(
        options,
        key=lambda o: (o.estimated_cost_usd, -o.capabilities.quality_tier, o.capabilities.model),
    )


class ProviderNotInPlan(DomainError):
    """The tenant's plan does not include the provider asked for (a 402 in the API)."""

    def __init__(self, provider: str, plan: str, upgrade: str | None) -> None:
        hint = f"; upgrade to {upgrade} to use it" if upgrade else ""
        super().__init__(
            FailureCode.QUOTA_EXCEEDED, f"{provider} is not included in the {plan} plan{hint}"
        )
        self.provider = provider


def plan_route(
    registry: ProviderRegistry, spec: GenerationSpec, *, plan: str | None = None
) -> RoutePlan:
    """Which registered models may serve `spec`, first choice first.

    * ``provider: "auto"``: the best quality tier, then the cheapest (seed 003), among
      the models whose estimate is within `max_cost_usd` when one is given.
    * A named provider: its cheapest model that makes the request.

    Fallbacks are the other models that can make the request, in `route_auto` order,
    that cost no more than the first choice: a fallback never spends more than the
    estimate the tenant saw (or approved). The local renderer is a fallback only for
    itself: it stands in for paid providers on one machine, it does not replace them.

    Raises:
        UnsupportedRequest: Unknown or unconfigured provider, or a field no model of it
            accepts; the message names the allowed values.
        NoRouteAvailable: ``auto`` found no model within `max_cost_usd`, or none at all.
        ProviderNotInPlan: `plan` (the tenant's) does not include the provider asked for;
            ``auto`` simply leaves such providers out.
    """
    outside = providers_outside(plan) if plan is not None else frozenset()
    if plan is not None and spec.provider in outside:
        raise ProviderNotInPlan(spec.provider, plan_limits(plan).name, upgrade_path(plan))
    everything = [caps for caps in registry.capabilities if caps.provider not in outside]
    if spec.provider == AUTO_PROVIDER:
        options = route_auto(everything, spec, max_cost=spec.max_cost_usd)
        primary = options[0]
        rest = options[1:]
    else:
        models = [caps for caps in everything if caps.provider == spec.provider]
        if not models:
            allowed = [AUTO_PROVIDER, *registry.providers]
            subject = "this deployment" if spec.provider in PROVIDERS else ""
            raise UnsupportedRequest("provider", spec.provider, allowed, subject)
        primary = _select(models, spec)
        others = [caps for caps in everything if caps != primary.capabilities]
        try:
            rest = route_auto(others, spec)
        except NoRouteAvailable:
            rest = []
    is_local = primary.capabilities.provider == LOCAL
    fallbacks = [
        option
        for option in rest
        if option.estimated_cost_usd <= primary.estimated_cost_usd
        and (is_local or option.capabilities.provider != LOCAL)
    ]
    return RoutePlan((primary, *fallbacks))


def approval_reasons(
    estimate: Decimal, max_cost: Decimal | None, budget_left: Decimal, plan: str
) -> list[str]:
    """Why a generation must wait for a person's approval; empty when it may go ahead.

    Over the request's `max_cost_usd`, or over what is left of the plan's monthly budget.
    """
    reasons: list[str] = []
    if max_cost is not None and estimate > max_cost:
        reasons.append(
            f"the estimate ${estimate.normalize():f} is over max_cost_usd ${max_cost.normalize():f}"
        )
    if estimate > budget_left:
        reasons.append(
            f"the estimate ${estimate.normalize():f} is over the ${budget_left.normalize():f} "
            f"left of the {plan} plan's monthly budget"
        )
    return reasons


# --- rows ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Admission:
    """A generation row written and its quota reserved (not yet committed)."""

    generation: Generation
    route: RoutePlan
    reservation: quotas.Reservation


async def admit_generation(
    session: AsyncSession,
    *,
    tenant_id: uuid.UUID,
    plan: quotas.Plan,
    generation_id: uuid.UUID,
    prompt: str,
    spec: GenerationSpec,
    route: RoutePlan,
    improved_from_video_id: uuid.UUID | None,
    now: datetime,
) -> Admission:
    """Write the request (status ``queued``) and reserve its quota; the caller commits.

    Raises:
        QuotaExceeded: Over the plan's monthly video-seconds; nothing should be committed.
    """
    row = Generation(
        id=generation_id,
        tenant_id=tenant_id,
        prompt=prompt,
        requested_provider=spec.provider,
        provider=route.primary.capabilities.provider,
        model=route.primary.capabilities.model,
        duration_s=spec.duration_s,
        aspect_ratio=spec.aspect_ratio,
        resolution=spec.resolution,
        max_cost_usd=spec.max_cost_usd,
        estimated_cost_usd=route.estimated_cost_usd,
        cost_usd=Decimal(0),
        status=GenerationStatus.QUEUED.value,
        approval=ApprovalState.NOT_REQUIRED.value,
        improved_from_video_id=improved_from_video_id,
    )
    session.add(row)
    await session.flush()
    reservation = await quotas.reserve(
        session,
        tenant_id=tenant_id,
        plan=plan,
        generation_id=generation_id,
        seconds=spec.duration_s,
        cost_usd=route.estimated_cost_usd,
        now=now,
    )
    await session.refresh(row)
    return Admission(row, route, reservation)


async def get_generation(
    session: AsyncSession, tenant_id: uuid.UUID, generation_id: uuid.UUID
) -> Generation | None:
    """The tenant's generation, or None when it does not exist or is someone else's."""
    return await session.scalar(
        select(Generation).where(Generation.id == generation_id, Generation.tenant_id == tenant_id)
    )


async def list_attempts(session: AsyncSession, generation_id: uuid.UUID) -> list[GenerationAttempt]:
    """A generation's attempts in the order they were made."""
    rows = await session.scalars(
        select(GenerationAttempt)
        .where(GenerationAttempt.generation_id == generation_id)
        .order_by(GenerationAttempt.attempt)
    )
    return list(rows.all())


async def ledger_cost(session: AsyncSession, video_id: uuid.UUID) -> Decimal:
    """What a generation's provider jobs cost: its ledger rows (keyed to the video asset)."""
    total = await session.scalar(
        select(func.coalesce(func.sum(LedgerEntry.cost_usd), 0)).where(
            LedgerEntry.video_id == video_id
        )
    )
    return Decimal(total or 0)
