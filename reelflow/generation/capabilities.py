"""What each video model can make and what it costs: the table, prices and request checks.

`ModelCapabilities` states, per provider and model, the durations, aspect ratios and
resolutions it accepts and its price per second at each resolution. `check_request`
rejects what a model cannot make *before* anything is sent (no provider charge for input
we could have rejected), and `estimate_cost` prices a request. Which model serves a
request is decided in `reelflow.generation.routing`; how each provider is driven lives in
`reelflow.generation.providers`.

Prices (seed 003 gives per-video and per-second ranges, seed 001 "duration × resolution
multiplier"):

* Sora, premium: $1.50–$7.50 a video → sora-2 $0.10/s at 720p (15 s = $1.50);
  sora-2-pro $0.30/s at 720p and $0.50/s at 1080p (15 s = $7.50).
* Veo, mid tier: $0.20–$0.80 a video → $0.05/s at 720p (4 s = $0.20), $0.10/s at 1080p
  (8 s = $0.80).
* Runway, economy: $0.05–$0.30 per second → $0.05/s at 720p, $0.30/s at 1080p.
* local: $0 (compute seconds are recorded by the ledger instead).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from types import MappingProxyType
from typing import cast

from reelflow.media.validation import ASPECT_RATIOS, frame_size

QUALITY_LOCAL = 0
QUALITY_ECONOMY = 1
QUALITY_MID = 2
QUALITY_PREMIUM = 3
"""Quality tiers from seed 003: higher is better; `route_auto` tries the best first."""

_COST_QUANTUM = Decimal("0.00000001")
"""Costs carry 8 decimals, like the ledger's dollar column."""


@dataclass(frozen=True)
class ModelCapabilities:
    """What one provider model accepts and what it charges.

    Attributes:
        provider: ``"sora"``, ``"veo"``, ``"runway"`` or ``"local"``.
        model: The provider's model id, e.g. ``"sora-2"``.
        durations_s: Accepted durations in whole seconds, ascending.
        aspect_ratios: Accepted aspect ratios, e.g. ``("16:9", "9:16")``.
        resolutions: Accepted resolutions, e.g. ``("720p", "1080p")``.
        price_per_second_usd: Dollars per generated second, by resolution; every
            resolution has a price.
        quality_tier: One of the ``QUALITY_*`` constants; higher is better.
    """

    provider: str
    model: str
    durations_s: tuple[int, ...]
    aspect_ratios: tuple[str, ...]
    resolutions: tuple[str, ...]
    # Left out of the hash (a mapping is unhashable) but compared for equality.
    price_per_second_usd: Mapping[str, Decimal] = field(hash=False)
    quality_tier: int

    def __post_init__(self) -> None:
        # The registry is code; a typo in it should fail at import, not mid-generation.
        if not self.durations_s or list(self.durations_s) != sorted(set(self.durations_s)):
            raise ValueError(f"{self.key}: durations must be distinct and ascending")
        if self.durations_s[0] < 1:
            raise ValueError(f"{self.key}: durations must be positive")
        if not self.aspect_ratios or not self.resolutions:
            raise ValueError(f"{self.key}: needs at least one aspect ratio and resolution")
        if set(self.price_per_second_usd) != set(self.resolutions):
            raise ValueError(f"{self.key}: needs exactly one price per resolution")
        if any(price < 0 for price in self.price_per_second_usd.values()):
            raise ValueError(f"{self.key}: prices must not be negative")
        for aspect_ratio in self.aspect_ratios:
            for resolution in self.resolutions:
                frame_size(aspect_ratio, resolution)  # raises on a malformed value
        object.__setattr__(
            self, "price_per_second_usd", MappingProxyType(dict(self.price_per_second_usd))
        )

    @property
    def key(self) -> str:
        """``"provider/model"``, e.g. ``"sora/sora-2"``."""
        return f"{self.provider}/{self.model}"


class UnsupportedRequest(ValueError):
    """A request asks for something a provider or model cannot make.

    Permanent: the same request fails the same way; the API answers 422.

    Attributes:
        field: The request field, e.g. ``"duration_s"``, ``"resolution"``, ``"provider"``.
        value: The rejected value.
        allowed: The values that field accepts.
        subject: Who rejects it, e.g. ``"sora/sora-2"``; empty for the registry itself.
        message: A sentence naming the allowed values.
    """

    code = "unsupported_request"

    def __init__(
        self, field: str, value: object, allowed: Sequence[object], subject: str = ""
    ) -> None:
        # Everything goes into args so the exception pickles (Temporal failure
        # conversion, process pools) with its fields intact.
        super().__init__(field, value, tuple(allowed), subject)
        self.field = field
        self.value = value
        self.allowed = tuple(allowed)
        self.subject = subject
        where = f" by {subject}" if subject else ""
        self.message = (
            f"{field} {value!r} is not supported{where}; allowed: {describe_allowed(self.allowed)}"
        )

    def __str__(self) -> str:
        return self.message


def describe_allowed(values: Sequence[object]) -> str:
    """Allowed values for a message: ``"4, 8, 12, 15"``; consecutive integers as ``"1–60"``."""
    if values and all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        numbers = sorted(cast("Sequence[int]", values))
        runs: list[str] = []
        start = prev = numbers[0]
        for n in [*numbers[1:], None]:
            if n is not None and n == prev + 1:
                prev = n
                continue
            # Three or more in a row read better as a range.
            runs.append(
                f"{start}–{prev}"
                if prev - start >= 2
                else ", ".join(str(i) for i in range(start, prev + 1))
            )
            if n is not None:
                start = prev = n
        return ", ".join(runs)
    return ", ".join(str(v) for v in values)


_REGISTRY: tuple[ModelCapabilities, ...] = (
    ModelCapabilities(
        provider="sora",
        model="sora-2",
        durations_s=(4, 8, 12, 15),
        aspect_ratios=ASPECT_RATIOS,
        resolutions=("720p",),
        price_per_second_usd={"720p": Decimal("0.10")},
        quality_tier=QUALITY_PREMIUM,
    ),
    ModelCapabilities(
        provider="sora",
        model="sora-2-pro",
        durations_s=(4, 8, 12, 15),
        aspect_ratios=ASPECT_RATIOS,
        resolutions=("720p", "1080p"),
        price_per_second_usd={"720p": Decimal("0.30"), "1080p": Decimal("0.50")},
        quality_tier=QUALITY_PREMIUM,
    ),
    ModelCapabilities(
        provider="veo",
        model="veo-3.0-generate-001",
        durations_s=(4, 6, 8),
        aspect_ratios=("16:9", "9:16"),
        resolutions=("720p", "1080p"),
        price_per_second_usd={"720p": Decimal("0.05"), "1080p": Decimal("0.10")},
        quality_tier=QUALITY_MID,
    ),
    ModelCapabilities(
        provider="runway",
        model="gen4_turbo",
        durations_s=(5, 10),
        aspect_ratios=("16:9", "9:16"),
        resolutions=("720p", "1080p"),
        price_per_second_usd={"720p": Decimal("0.05"), "1080p": Decimal("0.30")},
        quality_tier=QUALITY_ECONOMY,
    ),
    ModelCapabilities(
        provider="local",
        model="ffmpeg",
        durations_s=tuple(range(1, 61)),
        aspect_ratios=ASPECT_RATIOS,
        resolutions=("480p", "720p", "1080p"),
        price_per_second_usd={"480p": Decimal(0), "720p": Decimal(0), "1080p": Decimal(0)},
        quality_tier=QUALITY_LOCAL,
    ),
)

CAPABILITIES: Mapping[tuple[str, str], ModelCapabilities] = MappingProxyType(
    {(caps.provider, caps.model): caps for caps in _REGISTRY}
)
"""Every known model, by ``(provider, model)``."""

PROVIDERS: tuple[str, ...] = tuple(dict.fromkeys(caps.provider for caps in _REGISTRY))
"""Provider names, best quality first."""

DEFAULT_MODELS: Mapping[str, str] = MappingProxyType(
    {"sora": "sora-2", "veo": "veo-3.0-generate-001", "runway": "gen4_turbo", "local": "ffmpeg"}
)


def get_capabilities(provider: str, model: str | None = None) -> ModelCapabilities:
    """The capabilities of `model` (default: the provider's default model).

    Raises:
        UnsupportedRequest: Unknown provider or model (the message names the known ones).
    """
    if provider not in DEFAULT_MODELS:
        raise UnsupportedRequest("provider", provider, PROVIDERS)
    wanted = model if model is not None else DEFAULT_MODELS[provider]
    caps = CAPABILITIES.get((provider, wanted))
    if caps is None:
        models = [m for p, m in CAPABILITIES if p == provider]
        raise UnsupportedRequest("model", wanted, models, provider)
    return caps


def check_request(
    caps: ModelCapabilities, duration_s: int, aspect_ratio: str, resolution: str
) -> None:
    """Reject a request the model cannot make, naming the allowed values.

    Raises:
        UnsupportedRequest: On the first field that does not fit (duration, then aspect
            ratio, then resolution).
    """
    _check_duration(caps, duration_s)
    if aspect_ratio not in caps.aspect_ratios:
        raise UnsupportedRequest("aspect_ratio", aspect_ratio, caps.aspect_ratios, caps.key)
    if resolution not in caps.resolutions:
        raise UnsupportedRequest("resolution", resolution, caps.resolutions, caps.key)


def estimate_cost(caps: ModelCapabilities, duration_s: int, resolution: str) -> Decimal:
    """Dollars for `duration_s` seconds at `resolution`: seconds × price per second.

    Raises:
        UnsupportedRequest: The model does not make that duration or resolution.
    """
    _check_duration(caps, duration_s)
    if resolution not in caps.price_per_second_usd:
        raise UnsupportedRequest("resolution", resolution, caps.resolutions, caps.key)
    return (caps.price_per_second_usd[resolution] * duration_s).quantize(_COST_QUANTUM)


def _check_duration(caps: ModelCapabilities, duration_s: int) -> None:
    # A float or bool that equals an allowed integer is still not a whole-second duration.
    if (
        isinstance(duration_s, bool)
        or not isinstance(duration_s, int)
        or duration_s not in caps.durations_s
    ):
        raise UnsupportedRequest("duration_s", duration_s, caps.durations_s, caps.key)
