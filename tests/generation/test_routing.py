"""Auto routing over the capability table: pure functions, no media, no network."""

from __future__ import annotations

from decimal import Decimal

import pytest

from reelflow.generation.capabilities import CAPABILITIES, get_capabilities
from reelflow.generation.providers.base import GenerationJobRequest
from reelflow.generation.routing import NoRouteAvailable, RouteOption, route_auto
from tests.generation.helpers import job_request

SORA = get_capabilities("sora", "sora-2")
SORA_PRO = get_capabilities("sora", "sora-2-pro")
VEO = get_capabilities("veo")
ALL = tuple(CAPABILITIES.values())


def _keys(options: list[RouteOption]) -> list[str]:
    return [option.capabilities.key for option in options]


def test_auto_routing_orders_by_quality_tier_then_price() -> None:
    request = job_request(duration_s=8, aspect_ratio="16:9", resolution="720p")

    options = route_auto(ALL, request)

    # Runway makes 5 or 10 s only; the rest in tier order, cheapest first within a tier.
    assert _keys(options) == [
        "sora/sora-2",
        "sora/sora-2-pro",
        "veo/veo-3.0-generate-001",
        "local/ffmpeg",
    ]
    assert [o.estimated_cost_usd for o in options] == [
        Decimal("0.80"),
        Decimal("2.40"),
        Decimal("0.40"),
        Decimal(0),
    ]
    # The order does not depend on the order of the candidates.
    assert _keys(route_auto(reversed(ALL), request)) == _keys(options)


def test_auto_routing_respects_max_cost() -> None:
    request = job_request(duration_s=8, aspect_ratio="16:9", resolution="1080p")

    options = route_auto(ALL, request, max_cost=Decimal("1.00"))

    assert _keys(options) == ["veo/veo-3.0-generate-001", "local/ffmpeg"]


def test_auto_routing_explains_when_nothing_fits() -> None:
    request = job_request(duration_s=8, aspect_ratio="1:1", resolution="1080p")
    with pytest.raises(NoRouteAvailable) as caught:
        route_auto([SORA, SORA_PRO, VEO], request, max_cost=Decimal("1"))
    message = str(caught.value)
    assert "sora/sora-2; allowed: 720p" in message
    assert "sora/sora-2-pro would cost $4, over $1" in message
    assert "veo/veo-3.0-generate-001; allowed: 16:9, 9:16" in message
    assert len(caught.value.reasons) == 3


def test_auto_routing_rejects_a_negative_limit() -> None:
    with pytest.raises(ValueError, match="negative"):
        route_auto(ALL, job_request(), max_cost=Decimal("-0.01"))


def test_job_request_satisfies_the_routing_spec() -> None:
    request = GenerationJobRequest("p", 4, "9:16", "720p", "k")
    assert route_auto([SORA], request)[0].capabilities == SORA
