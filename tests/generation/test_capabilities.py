"""Capabilities, prices and request checks: pure functions, no media, no network."""

from __future__ import annotations

import pickle
from decimal import Decimal

import pytest

from reelflow.generation.capabilities import (
    PROVIDERS,
    ModelCapabilities,
    UnsupportedRequest,
    check_request,
    describe_allowed,
    estimate_cost,
    get_capabilities,
)

SORA = get_capabilities("sora", "sora-2")
SORA_PRO = get_capabilities("sora", "sora-2-pro")
VEO = get_capabilities("veo")
RUNWAY = get_capabilities("runway")
LOCAL = get_capabilities("local")


def test_registry_states_the_seed_capabilities() -> None:
    assert PROVIDERS == ("sora", "veo", "runway", "local")
    for caps in (SORA, SORA_PRO):
        assert caps.durations_s == (4, 8, 12, 15)
        assert caps.aspect_ratios == ("16:9", "9:16", "1:1")
    assert SORA.resolutions == ("720p",)
    assert SORA_PRO.resolutions == ("720p", "1080p")
    assert LOCAL.durations_s == tuple(range(1, 61))
    assert LOCAL.resolutions == ("480p", "720p", "1080p")
    assert set(LOCAL.price_per_second_usd.values()) == {Decimal(0)}
    # Seed 003: Sora premium, Veo mid-tier, Runway economy; local below all of them.
    assert SORA.quality_tier == SORA_PRO.quality_tier > VEO.quality_tier
    assert VEO.quality_tier > RUNWAY.quality_tier > LOCAL.quality_tier


@pytest.mark.parametrize(
    ("caps", "args", "field", "allowed_text"),
    [
        (SORA, (5, "16:9", "720p"), "duration_s", "4, 8, 12, 15"),
        (SORA, (8, "4:3", "720p"), "aspect_ratio", "16:9, 9:16, 1:1"),
        (SORA, (8, "16:9", "1080p"), "resolution", "720p"),
        (SORA_PRO, (8, "16:9", "4k"), "resolution", "720p, 1080p"),
        (VEO, (8, "1:1", "720p"), "aspect_ratio", "16:9, 9:16"),
        (RUNWAY, (8, "16:9", "720p"), "duration_s", "5, 10"),
        (LOCAL, (61, "16:9", "480p"), "duration_s", "1–60"),
        (LOCAL, (0, "16:9", "480p"), "duration_s", "1–60"),
        (LOCAL, (2.5, "16:9", "480p"), "duration_s", "1–60"),
    ],
)
def test_unsupported_requests_name_the_allowed_values(
    caps: ModelCapabilities,
    args: tuple[int, str, str],
    field: str,
    allowed_text: str,
) -> None:
    with pytest.raises(UnsupportedRequest) as caught:
        check_request(caps, *args)
    error = caught.value
    assert error.field == field
    assert error.subject == caps.key
    assert f"allowed: {allowed_text}" in str(error)
    assert caps.key in str(error)


def test_supported_requests_pass() -> None:
    check_request(SORA, 15, "1:1", "720p")
    check_request(SORA_PRO, 4, "9:16", "1080p")
    check_request(LOCAL, 60, "9:16", "480p")


def test_unsupported_request_survives_pickling() -> None:
    # Temporal and process pools pickle exceptions; the fields must come back.
    with pytest.raises(UnsupportedRequest) as caught:
        check_request(SORA, 7, "16:9", "720p")
    copy = pickle.loads(pickle.dumps(caught.value))
    assert (copy.field, copy.value, copy.allowed) == ("duration_s", 7, (4, 8, 12, 15))
    assert str(copy) == str(caught.value)


def test_unknown_provider_and_model_name_the_known_ones() -> None:
    with pytest.raises(UnsupportedRequest, match="allowed: sora, veo, runway, local"):
        get_capabilities("pika")
    with pytest.raises(UnsupportedRequest, match="allowed: sora-2, sora-2-pro"):
        get_capabilities("sora", "sora-3")


def test_describe_allowed_compresses_runs_only() -> None:
    assert describe_allowed((1, 2, 3, 4, 8)) == "1–4, 8"
    assert describe_allowed((4, 5, 8)) == "4, 5, 8"
    assert describe_allowed(("16:9", "1:1")) == "16:9, 1:1"


@pytest.mark.parametrize(
    ("caps", "duration_s", "resolution", "dollars"),
    [
        # Seed 003's ranges: Sora $1.50–$7.50 a video, Veo $0.20–$0.80, Runway $0.05–$0.30/s.
        (SORA, 15, "720p", "1.50"),
        (SORA, 4, "720p", "0.40"),
        (SORA_PRO, 15, "1080p", "7.50"),
        (SORA_PRO, 8, "720p", "2.40"),
        (VEO, 4, "720p", "0.20"),
        (VEO, 8, "1080p", "0.80"),
        (RUNWAY, 5, "720p", "0.25"),
        (RUNWAY, 10, "1080p", "3.00"),
        (LOCAL, 60, "1080p", "0"),
    ],
)
def test_cost_is_duration_times_price_per_second(
    caps: ModelCapabilities, duration_s: int, resolution: str, dollars: str
) -> None:
    cost = estimate_cost(caps, duration_s, resolution)
    assert cost == Decimal(dollars)
    assert cost.as_tuple().exponent == -8  # ledger precision


def test_cost_of_an_unsupported_request_is_refused() -> None:
    with pytest.raises(UnsupportedRequest, match="allowed: 720p"):
        estimate_cost(SORA, 8, "1080p")
    with pytest.raises(UnsupportedRequest, match="allowed: 4, 8, 12, 15"):
        estimate_cost(SORA, 9, "720p")


def test_registry_rejects_a_model_without_a_price_for_each_resolution() -> None:
    with pytest.raises(ValueError, match="one price per resolution"):
        ModelCapabilities(
            provider="x",
            model="y",
            durations_s=(4,),
            aspect_ratios=("16:9",),
            resolutions=("720p", "1080p"),
            price_per_second_usd={"720p": Decimal("0.1")},
            quality_tier=1,
        )


def test_capabilities_are_hashable_and_immutable() -> None:
    assert len({SORA, SORA_PRO, SORA}) == 2
    with pytest.raises(TypeError):
        SORA.price_per_second_usd["720p"] = Decimal(0)  # type: ignore[index]
