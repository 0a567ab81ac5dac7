"""One typed settings object for every process: API, workers, CLI and the embedded stack.

Values come from environment variables (and a `.env` file in the working directory). The
defaults describe the embedded stack: everything on this machine, no keys, no network.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Literal
from urllib.parse import urlparse

from pydantic import Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def _default_home() -> Path:
    return Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local" / "share")) / "reelflow"


class SettingsError(RuntimeError):
    """Raised when the configuration cannot work; the message says which variable to fix."""


class Settings(BaseSettings):
    """Everything that differs between a laptop, CI and production."""

    model_config = SettingsConfigDict(
        env_file=".env", env_ignore_empty=True, extra="ignore", frozen=True
    )

    environment: Literal["local", "test", "production"] = "local"
    reelflow_home: Path = Field(default_factory=_default_home)
    """Where the embedded stack keeps Postgres data, Temporal's SQLite file and media."""

    # --- Temporal -------------------------------------------------------------------------
    temporal_address: str = ""
    """Empty means the embedded dev server: `127.0.0.1:<TEMPORAL_PORT>`."""
    temporal_namespace: str = "default"
    temporal_tls: bool = False
    temporal_tls_cert_path: Path | None = None
    temporal_tls_key_path: Path | None = None
    temporal_api_key: SecretStr | None = None
    temporal_ui_url: str = ""
    """Empty means the embedded dev server's UI: `http://127.0.0.1:<TEMPORAL_UI_PORT>`."""

    # --- Database -------------------------------------------------------------------------
    database_url: str = ""
    """Empty means the embedded Postgres: `postgresql+psycopg://postgres@127.0.0.1:<POSTGRES_PORT>/reelflow`."""

    # --- Storage --------------------------------------------------------------------------
    storage_url: str = ""
    """`file:///abs/dir` or `s3://bucket/prefix`; empty means `<REELFLOW_HOME>/media`."""
    s3_endpoint_url: str | None = None
    s3_region: str = "us-east-1"

    # --- Embedded stack ports -------------------------------------------------------------
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    temporal_port: int = 7233
    temporal_ui_port: int = 8233
    postgres_port: int = 5433

    # --- Providers ------------------------------------------------------------------------
    transcription_provider: Literal["local", "openai"] = "local"
    embedding_provider: Literal["local", "openai"] = "local"
    openai_api_key: SecretStr | None = None
    openai_base_url: str | None = None
    openai_transcription_model: str = "whisper-1"
    openai_embedding_model: str = "text-embedding-3-small"
    local_whisper_compute_type: str = "int8"

    # --- Ingest limits (seed 004) ---------------------------------------------------------
    max_upload_bytes: int = 500 * 1024 * 1024
    max_duration_s: float = 3 * 60 * 60
    max_width: int = 7680
    max_height: int = 4320
    max_streams: int = 8
    transcribe_segment_s: float = 120.0
    chunk_target_words: int = 500
    chunk_max_words: int = 1000
    chunk_overlap_words: int = 100
    local_chunk_max_words: int = 180
    """The local embedder reads 256 tokens (~190 words); longer chunks would be truncated."""
    embed_batch_size: int = 20
    upload_url_ttl_s: int = 3600

    # --- Search (issue 8) -------------------------------------------------------------------
    search_vector_weight: float = Field(default=1.0, ge=0, le=10)
    """Weight of the vector ranking in hybrid search and chat retrieval (reciprocal rank fusion)."""
    search_text_weight: float = Field(default=1.0, ge=0, le=10)
    """Weight of the full-text ranking in hybrid search; with both weights 0 they count equally."""

    # --- Chat (seed 004 "RAG Chat API") ----------------------------------------------------
    chat_provider: Literal["local", "anthropic", "openai", "gemini"] = "local"
    """`local` is the offline answerer: it quotes passages and says no model is configured."""
    anthropic_api_key: SecretStr | None = None
    gemini_api_key: SecretStr | None = None
    chat_model: str | None = None
    """Empty means the provider's default (Claude Haiku for `anthropic`)."""
    chat_base_url: str | None = None
    """Another endpoint for the chat provider (a proxy); `openai` falls back to OPENAI_BASE_URL."""
    chat_context_tokens: int = Field(default=8000, ge=100)
    """Budget for the transcript passages put into one prompt, filled best first."""
    chat_history_pairs: int = Field(default=5, ge=0, le=5)
    """Earlier question/answer pairs sent as history; the answerers send at most 5."""
    chat_cache_ttl_s: float = Field(default=300.0, ge=0)
    """How long a repeated question reuses its retrieval (0 turns the cache off)."""
    chat_recency_boost: float = Field(default=0.0, ge=0, le=1)
    """Added to cosine similarity times a video's recency (1 when new, halving every 30 days)."""
    chat_popularity_boost: float = Field(default=0.0, ge=0, le=1)
    """Added to cosine similarity times a video's popularity (0..1, see reelflow.chat.retrieval)."""
    chat_max_message_chars: int = Field(default=4000, ge=1, le=100_000)

    # --- Generation (issue 4) ---------------------------------------------------------------
    generation_jobs_dir: Path | None = None
    """Where the local renderer keeps its jobs; empty means `<REELFLOW_HOME>/generation-jobs`."""
    generation_poll_initial_s: float = Field(default=5.0, gt=0)
    """First wait between submitting a job and asking for its status; grows 1.5x per poll."""
    generation_poll_max_s: float = Field(default=60.0, gt=0)
    """Longest wait between two status polls of one provider job."""
    approval_timeout_s: float = Field(default=24 * 3600.0, gt=0)
    """A generation waiting for approval longer than this fails as `approval_timed_out`."""
    sora_api_key: SecretStr | None = None
    """Enables Sora; empty falls back to OPENAI_API_KEY (with OPENAI_BASE_URL)."""
    runway_api_key: SecretStr | None = None

    # --- Discover -------------------------------------------------------------------------
    apify_token: SecretStr | None = None
    """Enables scrapes through Apify actor runs; without it, scrapes read dataset files."""
    apify_base_url: str | None = None
    """Apify API root (tests point it at a local server); None is Apify's own."""
    apify_poll_wait_s: int = Field(default=60, ge=0, le=60)
    """How long one run poll waits server-side (`waitForFinish`, at most 60 s)."""
    apify_max_items_per_account: int = Field(default=100, ge=1, le=10_000)
    discover_analyzer: Literal["offline", "gemini"] = "offline"
    """Who explains why a video worked: Gemini video understanding, or measurements."""
    discover_analysis_model: str = "gemini-2.5-flash"
    gemini_base_url: str | None = None
    """Gemini API root (tests point it at a local server); None is Google's own."""
    discover_adapter: Literal["offline", "anthropic", "openai", "gemini"] = "offline"
    """Who adapts a winning video to a product: a chat provider, or the offline template."""
    discover_adapter_model: str | None = None
    discover_max_parallel_outliers: int = Field(default=4, ge=1, le=64)
    """How many outliers of one scrape are downloaded and analyzed at once."""
    discover_outliers_per_run: int = Field(default=200, ge=1, le=10_000)
    """Outliers one workflow run processes before it continues as new."""
    import_test_allowed_hosts: list[str] = Field(default_factory=list)
    """Test only: hosts the SSRF guard lets imports reach although they are local
    (`127.0.0.1`). Empty (the default, and required in production) allows none."""

    # --- Improve --------------------------------------------------------------------------
    insights_provider: Literal["local", "anthropic", "openai", "gemini"] = "local"
    """Who explains a video's numbers: a chat provider, or `local`, the statistical analyst
    that derives every field from the metrics against the tenant's baselines (no network)."""
    insights_model: str | None = None
    """The provider's model; empty: its small default (`reelflow.improve.analysts`)."""
    insights_cache_ttl_s: int = Field(default=86400, ge=0)
    """How long insights made from the same metrics are served from the cache."""
    insights_fresh_per_hour: int = Field(default=10, ge=0)
    """Fresh insight generations per tenant per hour; cached answers never count."""
    performance_import_max_bytes: int = Field(default=256 * 1024 * 1024, ge=1)
    """Largest performance import file (`POST /v1/performance/import`); ~2M CSV rows."""

    # --- Billing, limits and keys ---------------------------------------------------------
    # Keys and request limits (reelflow/core/tenants.py, reelflow/core/rate_limits.py).
    rate_limits_enabled: bool | None = None
    """Per-key request limits (the plan's requests per 10 s). None means on everywhere but
    the `test` environment, whose suites make many quick requests with one key."""
    api_key_rotation_grace_s: int = Field(default=86_400, ge=0, le=30 * 86_400)
    """How long a rotated key keeps working when the rotation does not say."""
    api_key_last_used_every_s: int = Field(default=60, ge=1)
    """`last_used_at` is written at most this often per key: no write on every request."""
    run_concurrency_enabled: bool | None = None
    """Per-tenant limits on runs executing at once (the plan's concurrent runs; beyond them
    a run waits, queued in request order). None means on everywhere but the `test`
    environment, whose suites start many runs of one tenant at once."""

    # Plans and Stripe billing (reelflow/billing/).
    stripe_api_key: SecretStr | None = None
    """Stripe's secret key. Unset (the embedded default) turns billing off: plans are
    assigned with `reelflow tenants`, and the checkout, portal and webhook routes are 404."""
    stripe_webhook_secret: SecretStr | None = None
    """The `whsec_…` secret of the webhook endpoint; required when billing is on."""
    stripe_api_base: str = ""
    """Where the Stripe SDK sends requests; empty is Stripe itself (tests: a local server)."""
    stripe_prices: dict[str, str] = Field(default_factory=dict)
    """Stripe Price id per paid plan, e.g. `{"premium": "price_…", "pro": "price_…"}`."""
    billing_success_url: str = ""
    """Where Checkout sends the customer after paying; empty is `<api_base_url>/billing/done`."""
    billing_return_url: str = ""
    """Where Checkout's cancel and the portal's back button go; empty is `<api_base_url>`."""
    billing_grace_days: int = Field(default=7, ge=0, le=60)
    """A failed payment keeps the paid plan this long; then the tenant moves to Free."""
    ai_credit_hold_usd: float = Field(default=0.05, gt=0)
    """Dollars held from a tenant's AI credits while a chat answer is being written."""
    admin_api_key: SecretStr | None = None
    """The platform operator's credential for `/v1/admin/*`; unset, those routes refuse all."""

    # --- Workers --------------------------------------------------------------------------
    task_queue_prefix: str = "reelflow"
    """Queues are `<prefix>-workflows|media|providers`; another prefix is an isolated family."""
    media_concurrency: int = Field(default_factory=lambda: max(1, os.cpu_count() or 1))
    provider_concurrency: int = 16
    worker_deployment: str = ""
    """Worker Versioning: workers run as versions of this Temporal worker deployment, and a
    run stays on the version that started it (ingest) or moves only to a version that is
    made current (generation). Empty runs unversioned workers (tests, the embedded stack)."""
    worker_build_id: str = ""
    """This worker's version within `worker_deployment`; empty means a hash of the loaded
    code. Set it to the image tag in production so every pool of one release agrees."""

    secret_key: SecretStr = SecretStr("reelflow-local-development-only")
    """Signs upload URLs. Must be set to a real secret outside local/test."""

    @model_validator(mode="before")
    @classmethod
    def _embedded_defaults(cls, data: object) -> object:
        """Addresses left empty point at the embedded stack on its (settable) ports."""
        if not isinstance(data, dict):
            return data
        values = dict(data)
        if not values.get("database_url"):
            port = values.get("postgres_port") or 5433
            values["database_url"] = f"postgresql+psycopg://postgres@127.0.0.1:{port}/reelflow"
        if not values.get("temporal_address"):
            values["temporal_address"] = f"127.0.0.1:{values.get('temporal_port') or 7233}"
        if not values.get("temporal_ui_url"):
            values["temporal_ui_url"] = f"http://127.0.0.1:{values.get('temporal_ui_port') or 8233}"
        return values

    @model_validator(mode="after")
    def _check(self) -> Settings:
        if self.environment == "production" and self.secret_key.get_secret_value() == (
            "reelflow-local-development-only"
        ):
            raise ValueError("SECRET_KEY must be set to a real secret in production")
        if self.environment == "production" and self.import_test_allowed_hosts:
            raise ValueError(
                "IMPORT_TEST_ALLOWED_HOSTS is for tests and must be empty in production"
            )
        if self.discover_analyzer == "gemini" and self.gemini_api_key is None:
            raise ValueError("GEMINI_API_KEY is required when DISCOVER_ANALYZER is 'gemini'")
        if "openai" in (self.transcription_provider, self.embedding_provider) and (
            self.openai_api_key is None
        ):
            raise ValueError(
                "OPENAI_API_KEY is required when TRANSCRIPTION_PROVIDER or "
                "EMBEDDING_PROVIDER is 'openai'"
            )
        chat_key = {
            "anthropic": ("ANTHROPIC_API_KEY", self.anthropic_api_key),
            "openai": ("OPENAI_API_KEY", self.openai_api_key),
            "gemini": ("GEMINI_API_KEY", self.gemini_api_key),
        }.get(self.chat_provider)
        if chat_key is not None and chat_key[1] is None:
            raise ValueError(
                f"{chat_key[0]} is required when CHAT_PROVIDER is '{self.chat_provider}'"
            )
        scheme = urlparse(self.resolved_storage_url).scheme
        if scheme not in ("file", "s3"):
            raise ValueError(f"STORAGE_URL must start with file:// or s3://, got {scheme!r}")
        if self.temporal_tls_cert_path and not self.temporal_tls_key_path:
            raise ValueError("TEMPORAL_TLS_KEY_PATH is required with TEMPORAL_TLS_CERT_PATH")
        return self

    @property
    def resolved_storage_url(self) -> str:
        return self.storage_url or (self.reelflow_home / "media").resolve().as_uri()

    @property
    def resolved_generation_jobs_dir(self) -> Path:
        return self.generation_jobs_dir or self.reelflow_home / "generation-jobs"

    @property
    def api_base_url(self) -> str:
        return f"http://{self.api_host}:{self.api_port}"


def load_settings() -> Settings:
    """Read settings, turning validation errors into one readable message."""
    try:
        return Settings()
    except ValidationError as exc:
        problems = "; ".join(_describe(err["loc"], err["msg"]) for err in exc.errors())
        raise SettingsError(f"invalid configuration: {problems}") from None


def _describe(location: tuple[int | str, ...], message: str) -> str:
    # Model-level checks already name their variable; field errors get it prefixed.
    message = message.removeprefix("Value error, ")
    field = ".".join(str(part) for part in location).upper()
    return f"{field}: {message}" if field else message


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return load_settings()
