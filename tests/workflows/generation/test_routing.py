"""Routing a request over the configured providers, and one price table for estimate and ledger."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import openai
import pytest

from reelflow.core.pricing import generation_price_model, price_for
from reelflow.core.settings import Settings
from reelflow.generation.capabilities import CAPABILITIES, UnsupportedRequest, get_capabilities
from reelflow.generation.providers.base import VideoProvider
from reelflow.generation.routing import (
    GenerationSpec,
    NoRouteAvailable,
    ProviderNotInPlan,
    ProviderRegistry,
    approval_reasons,
    build_provider_registry,
    plan_route,
)
from tests.workflows.generation.providers import RenamedRenderer, local_model, renderer


def test_the_ledger_prices_generation_exactly_as_the_capability_table_estimates() -> None:
    for caps in CAPABILITIES.values():
        for resolution, per_second in caps.price_per_second_usd.items():
            price = price_for(
                caps.provider, "generation", generation_price_model(caps.model, resolution)
            )
            assert (price.unit, price.unit_price_usd) == ("second", per_second), caps.key


@pytest.fixture
def paid_registry(tmp_path: Path) -> ProviderRegistry:
    """Sora (both models), Veo (rendered locally for the test) and the local renderer."""
    veo = RenamedRenderer(renderer(tmp_path / "veo").renderer, get_capabilities("veo"))
    registry = build_provider_registry(Settings(reelflow_home=tmp_path, sora_api_key="sk-test"))
    return ProviderRegistry([*_providers(registry), veo])


def _providers(registry: ProviderRegistry) -> list[VideoProvider]:
    return [registry.get(c.provider, c.model) for c in registry.capabilities]


def spec(provider: str = "auto", duration_s: int = 4, **overrides: object) -> GenerationSpec:
    values: dict[str, object] = {"aspect_ratio": "16:9", "resolution": "720p"}
    values.update(overrides)
    return GenerationSpec(provider, duration_s, **values)  # type: ignore[arg-type]


def test_the_default_registry_has_the_local_renderer_and_sora_only_with_a_key(
    tmp_path: Path,
) -> None:
    assert ProviderRegistry([]).providers == ()
    bare = build_provider_registry(Settings(reelflow_home=tmp_path))
    assert bare.providers == ("local",)
    keyed = build_provider_registry(Settings(reelflow_home=tmp_path, openai_api_key="sk-x"))
    assert keyed.providers == ("sora", "local")
    assert keyed.get("sora", "sora-2-pro").capabilities.key == "sora/sora-2-pro"


def test_auto_goes_by_quality_then_price_and_never_falls_back_to_something_dearer(
    paid_registry: ProviderRegistry,
) -> None:
    route = plan_route(paid_registry, spec())
    keys = [option.capabilities.key for option in route.candidates]
    # sora-2 ($0.40) first: premium tier. sora-2-pro ($1.20) costs more than that, and the
    # local renderer never stands in for a paid provider.
    assert keys == ["sora/sora-2", "veo/veo-3.0-generate-001"]
    assert route.estimated_cost_usd == Decimal("0.40")


def test_auto_with_a_cost_limit_picks_the_best_model_within_it(
    paid_registry: ProviderRegistry,
) -> None:
    route = plan_route(paid_registry, spec(max_cost_usd=Decimal("0.25")))
    assert route.primary.capabilities.key == "veo/veo-3.0-generate-001"
    sora_only = ProviderRegistry(
        [paid_registry.get("sora", "sora-2"), paid_registry.get("sora", "sora-2-pro")]
    )
    with pytest.raises(NoRouteAvailable, match=r"sora/sora-2 would cost \$0.4, over \$0.1"):
        plan_route(sora_only, spec(max_cost_usd=Decimal("0.1")))


def test_a_named_provider_gets_its_cheapest_fitting_model(
    paid_registry: ProviderRegistry,
) -> None:
    assert plan_route(paid_registry, spec("sora")).primary.capabilities.model == "sora-2"
    at_1080 = plan_route(paid_registry, spec("sora", resolution="1080p"))
    assert at_1080.primary.capabilities.model == "sora-2-pro"
    assert at_1080.estimated_cost_usd == Decimal("2.00")


@pytest.mark.parametrize(
    ("request_spec", "field", "allowed"),
    [
        (spec("sora", 5), "duration_s", "4, 8, 12, 15"),
        (spec("sora", aspect_ratio="4:3"), "aspect_ratio", "16:9, 9:16, 1:1"),
        (spec("sora", resolution="480p"), "resolution", "720p, 1080p"),
        (spec("local", 61, resolution="480p"), "duration_s", "1–60"),
        (spec("runway"), "provider", "auto, sora, veo, local"),
        (spec("kling"), "provider", "auto, sora, veo, local"),
    ],
)
def test_what_cannot_be_made_is_refused_naming_the_allowed_values(
    paid_registry: ProviderRegistry, request_spec: GenerationSpec, field: str, allowed: str
) -> None:
    with pytest.raises(UnsupportedRequest) as refused:
        plan_route(paid_registry, request_spec)
    assert refused.value.field == field
    assert refused.value.message.endswith(f"allowed: {allowed}")


def test_local_models_fall_back_to_each_other(tmp_path: Path) -> None:
    registry = ProviderRegistry(
        [renderer(tmp_path / "b", "b-good"), renderer(tmp_path / "a", "a-flaky")]
    )
    route = plan_route(registry, spec("local", 1, resolution="480p"))
    assert [o.capabilities.model for o in route.candidates] == ["a-flaky", "b-good"]
    assert local_model("x").provider == "local"


def test_approval_is_needed_over_max_cost_or_over_the_budget_left() -> None:
    assert approval_reasons(Decimal("0.40"), None, Decimal(25), "creator") == []
    [over_max] = approval_reasons(Decimal("0.40"), Decimal("0.30"), Decimal(25), "creator")
    assert "over max_cost_usd $0.3" in over_max
    [over_budget] = approval_reasons(Decimal("0.40"), None, Decimal(0), "free")
    assert "free plan's monthly budget" in over_budget
    assert approval_reasons(Decimal(0), Decimal(0), Decimal(0), "free") == []


def test_sora_models_share_one_client_with_retries_off(tmp_path: Path) -> None:
    registry = build_provider_registry(Settings(reelflow_home=tmp_path, sora_api_key="sk-test"))
    sora = registry.get("sora", "sora-2")
    client = sora._client  # type: ignore[attr-defined]
    assert isinstance(client, openai.OpenAI) and client.max_retries == 0


def test_sora_is_left_to_the_plans_that_include_it(paid_registry: ProviderRegistry) -> None:
    # Free does not include Sora (seed 001: Sora from Premium up): `auto` routes around it
    # and asking for it by name is refused, naming the plan to upgrade to.
    free_auto = plan_route(paid_registry, spec(), plan="free")
    assert "sora" not in {option.capabilities.provider for option in free_auto.candidates}
    with pytest.raises(ProviderNotInPlan, match="not included in the free plan; upgrade to"):
        plan_route(paid_registry, spec("sora"), plan="free")
    premium = plan_route(paid_registry, spec("sora"), plan="premium")
    assert premium.primary.capabilities.provider == "sora"
    # Without a plan (operators' tools), every registered provider is a candidate.
    assert plan_route(paid_registry, spec("sora")).primary.capabilities.provider == "sora"
