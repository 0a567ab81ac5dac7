"""The one plan table: what each plan costs and allows.

Like the price table (`reelflow.core.pricing`), this is configuration in code: changing a
limit is a new ``PLANS_VERSION`` and a deploy, never a migration. Tenants store only the
plan's name, so a changed limit applies to everyone on the plan at once.

Where the numbers come from (anything not in a seed is our assumption, stated here):

=========== ======= ====== ======= ======= ======= ========= ======== ===== ====== =======
plan        $/month videos seconds storage ingest  AI $      projects runs  req/10s budget
=========== ======= ====== ======= ======= ======= ========= ======== ===== ====== =======
free        0       10     80      1 GB    30 min  1         5        1     10     0
premium     29      100    800     10 GB   300 min 5         ∞        2     20     25
starter     49      150    1 200   25 GB   600 min 10        20       3     20     40
pro         149     400    3 200   100 GB  2 000   30        ∞        5     50     100
agency      499     1 500  12 000  500 GB  8 000   100       ∞        10    100    400
=========== ======= ====== ======= ======= ======= ========= ======== ===== ====== =======

* Seed 001: Free is 5 projects and 10 videos a month; Premium ($29) is unlimited projects,
  100 videos a month and Sora generation. Seed 003 sells Starter / Pro / Agency at
  $49 / $149 / $499 without limits: Starter scales Premium's 100 videos with price; Pro
  and Agency keep the seconds the generation quota gave them before this table (3 200 and
  12 000, i.e. 4x and 15x Premium), which is a volume discount on the dearer tiers
  (assumption).
* Generated seconds are the videos counted at 8 s each (the middle of Sora's 4–15 s), so
  neither limit alone lets one long clip eat the month (assumption, as before this table).
* Seed 003 gives 10 requests per 10 s as the default tier; paid tiers get more
  (assumption). Storage, ingest minutes, AI credits and concurrent runs are not in any
  seed: chosen so a plan's AI and storage cost stays well under its price (assumption).
* ``generation_budget_usd`` is the monthly generation spend that needs no approval: about
  the plan's price less a margin (as before this table). Free has no budget, so every paid
  provider call on Free waits for a person.
* Sora: seed 001 sells Sora generation on Premium, so Free does not get it; every paid
  tier does (assumption for Starter and above).

Plan names used before this table map onto it (`canonical_plan_name`): ``creator`` was
seed 001's premium tier → ``premium``; ``enterprise`` was seed 003's Agency →
``agency``; ``free`` and ``pro`` keep their names.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from types import MappingProxyType

PLANS_VERSION = "2026-11-29"

WARNING_FRACTION = 0.8
"""Usage at or above this share of a limit gets a warning; at 100 % new work is refused."""

DEFAULT_PLAN = "free"

UNLIMITED: None = None
"""A limit of None means the plan does not cap that quantity."""


@dataclass(frozen=True)
class PlanLimits:
    """What a plan allows; monthly limits reset at the tenant's billing anchor.

    Attributes:
        name: The plan's name, as stored on the tenant.
        price_usd_month: List price per month (MRR is computed from it).
        videos_per_month: Generated videos started per period.
        generated_seconds_per_month: Generated video-seconds per period.
        storage_gb: Stored media at any moment (not monthly).
        ingest_minutes_per_month: Minutes of video ingested (uploads and imports) per period.
        ai_credits_usd_per_month: Dollars of chat, insight and analysis model calls per period.
        projects: Discover projects at any moment; None is unlimited.
        concurrent_runs: Pipeline runs executing at once.
        requests_per_10s: API requests per key per 10-second window.
        generation_budget_usd: Generation dollars per period that need no approval.
        sora: Whether Sora may be used for generation.
    """

    name: str
    price_usd_month: Decimal
    videos_per_month: int
    generated_seconds_per_month: int
    storage_gb: Decimal
    ingest_minutes_per_month: int
    ai_credits_usd_per_month: Decimal
    projects: int | None
    concurrent_runs: int
    requests_per_10s: int
    generation_budget_usd: Decimal
    sora: bool


PLANS: MappingProxyType[str, PlanLimits] = MappingProxyType(
    {
        "free": PlanLimits(
            name="free",
            price_usd_month=Decimal(0),
            videos_per_month=10,
            generated_seconds_per_month=80,
            storage_gb=Decimal(1),
            ingest_minutes_per_month=30,
            ai_credits_usd_per_month=Decimal(1),
            projects=5,
            concurrent_runs=1,
            requests_per_10s=10,
            generation_budget_usd=Decimal(0),
            sora=False,
        ),
        "premium": PlanLimits(
            name="premium",
            price_usd_month=Decimal(29),
            videos_per_month=100,
            generated_seconds_per_month=800,
            storage_gb=Decimal(10),
            ingest_minutes_per_month=300,
            ai_credits_usd_per_month=Decimal(5),
            projects=UNLIMITED,
            concurrent_runs=2,
            requests_per_10s=20,
            generation_budget_usd=Decimal(25),
            sora=True,
        ),
        "starter": PlanLimits(
            name="starter",
            price_usd_month=Decimal(49),
            videos_per_month=150,
            generated_seconds_per_month=1200,
            storage_gb=Decimal(25),
            ingest_minutes_per_month=600,
            ai_credits_usd_per_month=Decimal(10),
            projects=20,
            concurrent_runs=3,
            requests_per_10s=20,
            generation_budget_usd=Decimal(40),
            sora=True,
        ),
        "pro": PlanLimits(
            name="pro",
            price_usd_month=Decimal(149),
            videos_per_month=400,
            generated_seconds_per_month=3200,
            storage_gb=Decimal(100),
            ingest_minutes_per_month=2000,
            ai_credits_usd_per_month=Decimal(30),
            projects=UNLIMITED,
            concurrent_runs=5,
            requests_per_10s=50,
            generation_budget_usd=Decimal(100),
            sora=True,
        ),
        "agency": PlanLimits(
            name="agency",
            price_usd_month=Decimal(499),
            videos_per_month=1500,
            generated_seconds_per_month=12000,
            storage_gb=Decimal(500),
            ingest_minutes_per_month=8000,
            ai_credits_usd_per_month=Decimal(100),
            projects=UNLIMITED,
            concurrent_runs=10,
            requests_per_10s=100,
            generation_budget_usd=Decimal(400),
            sora=True,
        ),
    }
)

LEGACY_PLAN_NAMES: MappingProxyType[str, str] = MappingProxyType(
    {"creator": "premium", "enterprise": "agency"}
)
"""Plan names stored before this table, and the plan each now means."""

PAID_PLANS: tuple[str, ...] = tuple(name for name, plan in PLANS.items() if plan.price_usd_month)
"""Plans sold through Stripe Checkout, cheapest first."""


class UnknownPlan(ValueError):
    """A tenant or request names a plan that does not exist."""

    code = "plan_unknown"


def canonical_plan_name(name: str) -> str:
    """The table's name for `name`, translating names used before the table.

    Raises:
        UnknownPlan: Neither a plan nor a former plan name.
    """
    cleaned = name.strip().lower()
    cleaned = LEGACY_PLAN_NAMES.get(cleaned, cleaned)
    if cleaned not in PLANS:
        raise UnknownPlan(f"unknown plan {name!r}; choose one of {', '.join(PLANS)}")
    return cleaned


def plan_limits(plan_name: str) -> PlanLimits:
    """The limits of the plan called `plan_name` (former names such as ``creator`` accepted).

    A name stored on a tenant that no longer exists in the table falls back to Free
    rather than failing every request: the safest limits, and an operator can fix the
    tenant with ``reelflow tenants``.
    """
    try:
        return PLANS[canonical_plan_name(plan_name)]
    except UnknownPlan:
        return PLANS[DEFAULT_PLAN]


def providers_outside(plan_name: str) -> frozenset[str]:
    """Generation providers the plan does not include (Sora is from Premium up, seed 001)."""
    return frozenset() if plan_limits(plan_name).sora else frozenset({"sora"})


def upgrade_path(plan_name: str) -> str | None:
    """The next plan up from `plan_name` (by price), or None on the top plan."""
    current = plan_limits(plan_name)
    dearer = [p for p in PLANS.values() if p.price_usd_month > current.price_usd_month]
    if not dearer:
        return None
    return min(dearer, key=lambda p: p.price_usd_month).name
