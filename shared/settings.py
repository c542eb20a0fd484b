"""Typed settings, read once from CUTFX_* environment variables (pydantic-settings).

`Settings(...)` takes explicit values only (tests, tools); `Settings.from_env()`
reads the environment. A bad value stops start-up with one line per value,
naming the variable.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_core import ErrorDetails
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from shared.errors import ConfigurationError
from shared.redis_location import celery_broker, parse_redis_url

ENV_PREFIX = "CUTFX_"

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
DEFAULT_LOCAL_STORAGE_DIR = Path("var/storage")
DEFAULT_SIGNING_KEY = "cutfx-development-signing-key"
DEFAULT_URL_TTL_S = 3600
DEFAULT_RESULT_TTL_S = 7 * 24 * 3600
DEFAULT_MAX_UPLOAD_BYTES = 20 * 1024 * 1024
DEFAULT_MAX_PIXELS = 40_000_000
DEFAULT_MAX_SIDE = 2048
DEFAULT_TASK_MAX_ATTEMPTS = 3
DEFAULT_IDEMPOTENCY_TTL_S = 24 * 3600
#: Redis allows 10,000 clients by default; each open event stream holds one connection.
DEFAULT_REDIS_MAX_CONNECTIONS = 4000
MAX_SIGNED_URL_TTL_S = 7 * 24 * 3600
DEFAULT_CACHE_DIR = Path.home() / ".cache" / "cutfx"
DEFAULT_BIND = "0.0.0.0:8000"
DEFAULT_API_CONNECTIONS = 2000
#: Per API key (per client address when keys are off), in the limits library's notation.
DEFAULT_SUBMIT_RATE_LIMIT = "60/minute;600/hour"
DEFAULT_READ_RATE_LIMIT = "1200/minute"
#: Unfinished jobs one API key may have; past it a submit is a 429.
DEFAULT_MAX_ACTIVE_JOBS_PER_KEY = 50
#: Open event streams and long-polls per key, across every API process: below one
#: process's CUTFX_API_CONNECTIONS, so a key at its cap leaves the others room.
DEFAULT_MAX_STREAMS_PER_KEY = 100
#: A minute: a batch photo waits at most about this plus one inference behind people.
DEFAULT_BATCH_MAX_WAIT_S = 60
#: Uploads decoded at once per API process; past it a submit is a 503 with Retry-After.
DEFAULT_DECODE_CONCURRENCY = 2
DEFAULT_VISIBILITY_TIMEOUT_S = 30
#: A photo by URL (image_url): the whole fetch, redirects included. A CDN answers in well
#: under a second; a shop's slow origin in a few.
DEFAULT_FETCH_TIMEOUT_S = 15.0
MAX_FETCH_TIMEOUT_S = 120.0
# The checks of a cutout (shared/jobs/model.py's cutout_checks).
#: The checks a better model can mend (CUTFX_ESCALATE): an unsure mask, not a blurred photo.
ESCALATING_CHECKS = ("low_confidence",)
#: Less of the frame than this is no subject: the model found a speck, or nothing.
DEFAULT_CHECK_MIN_COVERAGE = 0.01
#: A side of the frame this much covered by the subject cuts it off there (ears, tail, paws).
DEFAULT_CHECK_EDGE_SHARE = 0.05
#: A second separate part this large (of the frame) is a second subject, not a stray speck.
DEFAULT_CHECK_SECOND_SUBJECT_SHARE = 0.02
#: The subject's long side in the upload's pixels: less prints smaller than 2.5 cm (1 inch)
#: at 300 dpi.
DEFAULT_CHECK_MIN_SUBJECT_PX = 300
#: Unsure alpha (0.1 to 0.9) away from the outline, as a share of the subject's box: the
#: model could not tell subject from background there.
DEFAULT_CHECK_UNCERTAIN_SHARE = 0.05
#: The variance of the Laplacian inside the subject (long side 512): a sharp photo gives
#: hundreds, the same photo blurred by 1.2 px (a shaken phone) under 20.
DEFAULT_CHECK_MIN_SHARPNESS = 20.0


@dataclass(frozen=True)
class CheckThresholds:
    min_coverage: float = DEFAULT_CHECK_MIN_COVERAGE
    edge_share: float = DEFAULT_CHECK_EDGE_SHARE
    second_subject_share: float = DEFAULT_CHECK_SECOND_SUBJECT_SHARE
    min_subject_px: int = DEFAULT_CHECK_MIN_SUBJECT_PX
    uncertain_share: float = DEFAULT_CHECK_UNCERTAIN_SHARE
    min_sharpness: float = DEFAULT_CHECK_MIN_SHARPNESS


#: CPU base mode runs ~15 s an inference; a GPU well under one.
DEFAULT_SEGMENT_TIME_LIMIT_S = 120
DEFAULT_EFFECT_TIME_LIMIT_S = 60
#: Renewed before each POST for this plus a POST's deadline (15 s): a dead delivery's
#: lock is gone within 35 s, inside the minute a dead worker may cost.
DEFAULT_WEBHOOK_LOCK_TTL_S = 20
DEFAULT_STORAGE_RETRY_S = 30
DEFAULT_GC_INTERVAL_S = 3600
#: 0: the device's default (8 on CUDA, 1 = no batching on a CPU).
DEFAULT_BATCH_MAX = 0
MAX_BATCH_MAX = 64
DEFAULT_BATCH_WAIT_MS = 10
#: Client tokens (browser credentials): their lifetime unless asked otherwise, and at most.
DEFAULT_CLIENT_TOKEN_TTL_S = 900
MAX_CLIENT_TOKEN_TTL_S = 24 * 3600
#: Submits per client token: a browser needs a few photos, not a batch.
DEFAULT_CLIENT_TOKEN_SUBMIT_RATE_LIMIT = "10/minute;100/hour"
#: scheme://host[:port], as browsers send it in the Origin header.
ORIGIN_PATTERN = re.compile(r"^https?://[a-z0-9.-]+(:[0-9]{1,5})?$")
KEY_ID_PATTERN = re.compile(r"^key_[0-9a-f]{16}$")
#: The shortest signing key production accepts (32 bytes of hex from `openssl rand -hex 32`).
MIN_PRODUCTION_SIGNING_KEY_LENGTH = 32

Environment = Literal["production", "development"]
CacheScope = Literal["tenant", "global"]
StorageBackend = Literal["local", "gcs"]
ModelMode = Literal["base", "fast", "base-nightly"]
Device = Literal["auto", "cpu", "cuda"]
Precision = Literal["fp16", "bf16", "fp32"]
#: The inference engines (worker/engines.py); "auto" lets the worker choose.
EngineName = Literal[
    "torch-fp32",
    "torch-bf16",
    "torch-fp16",
    "torch-tf32",
    "onnxruntime-fp32",
    "onnxruntime-cuda-fp32",
    "onnxruntime-tensorrt-fp16",
    "openvino-fp32",
    "openvino-bf16",
]
EngineSetting = Literal["auto", EngineName]
#: A comma list in the environment ("a, b,,"), a tuple in the program.
CommaList = Annotated[tuple[str, ...], NoDecode]
#: The queues workers serve (shared/queues.py names each).
WORKER_QUEUES = ("gpu", "cpu", "webhooks")

PositiveInt = Annotated[int, Field(gt=0)]


class Settings(BaseSettings):
    """Every setting, with the default the service runs with out of the box."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, frozen=True, extra="forbid")

    #: production refuses to start without API keys and a signing key of its own.
    env: Environment = "production"
    #: The broker, and the job store too unless store_url is set: redis:// or
    #: redis+sentinel:// (shared/redis_location.py).
    redis_url: str = DEFAULT_REDIS_URL
    #: The job store, events, cache index, idempotency keys, rate limits and heartbeats,
    #: when not on the broker's Redis; may be a redis+cluster:// URL.
    store_url: str = ""
    redis_max_connections: PositiveInt = DEFAULT_REDIS_MAX_CONNECTIONS
    storage: StorageBackend = "local"
    local_storage_dir: Path = DEFAULT_LOCAL_STORAGE_DIR
    public_base_url: str = ""
    gcs_bucket: str = ""
    gcs_prefix: str = "cutfx"
    #: Where kept results (POST /v1/jobs/{id}/keep) go on GCS: a bucket of their own, or
    #: (empty) the results' bucket under "<CUTFX_GCS_PREFIX>-kept/", which the lifecycle
    #: rule does not match; and the storage class they are written with (empty: the
    #: bucket's default; NEARLINE or COLDLINE for files read once a print is made).
    keep_bucket: str = ""
    keep_storage_class: str = ""
    gcs_signer_email: str = ""
    signing_key: str = Field(default=DEFAULT_SIGNING_KEY, min_length=1)
    url_ttl_s: Annotated[int, Field(ge=1, le=MAX_SIGNED_URL_TTL_S)] = DEFAULT_URL_TTL_S
    result_ttl_s: PositiveInt = DEFAULT_RESULT_TTL_S
    idempotency_ttl_s: PositiveInt = DEFAULT_IDEMPOTENCY_TTL_S
    model_mode: ModelMode = "base"
    model_ckpt: str = ""
    device: Device = "auto"
    precision: Precision = "fp16"
    #: What runs the network's forward (worker/engines.py): "auto" picks the fastest one
    #: that held parity when `cutfx bake` measured them on this machine, or by the CPU's
    #: flags where nothing was measured here; a name forces that engine.
    engine: EngineSetting = "auto"
    #: The fast-mode checkpoint a slower-mode gpu worker answers `preview=true` with
    #: (empty: transparent-background's release checkpoint).
    preview_ckpt: str = ""
    #: Checks whose failure makes a fast-mode worker run the photo again in base mode and
    #: answer the better cutout (off when empty); only low_confidence is worth it.
    escalate: CommaList = ()
    #: The base-mode checkpoint escalation loads (empty: transparent-background's release).
    escalation_ckpt: str = ""
    #: Segment tasks of a gpu worker's threads pool that share one forward, and how long
    #: the first waits for company.
    batch_max: Annotated[int, Field(ge=0, le=MAX_BATCH_MAX)] = DEFAULT_BATCH_MAX
    batch_wait_ms: Annotated[int, Field(ge=0, le=1000)] = DEFAULT_BATCH_WAIT_MS
    max_upload_bytes: PositiveInt = DEFAULT_MAX_UPLOAD_BYTES
    max_pixels: PositiveInt = DEFAULT_MAX_PIXELS
    max_side: PositiveInt = DEFAULT_MAX_SIDE
    api_keys: CommaList = ()
    effect_plugins: CommaList = ()
    task_max_attempts: PositiveInt = DEFAULT_TASK_MAX_ATTEMPTS
    cache_dir: Path = DEFAULT_CACHE_DIR
    #: The API server (api/server.py): address, processes (0 = min(4, cores)), streams.
    bind: str = DEFAULT_BIND
    api_workers: Annotated[int, Field(ge=0)] = 0
    api_connections: PositiveInt = DEFAULT_API_CONNECTIONS
    submit_rate_limit: str = DEFAULT_SUBMIT_RATE_LIMIT
    read_rate_limit: str = DEFAULT_READ_RATE_LIMIT
    max_active_jobs_per_key: PositiveInt = DEFAULT_MAX_ACTIVE_JOBS_PER_KEY
    max_streams_per_key: PositiveInt = DEFAULT_MAX_STREAMS_PER_KEY
    #: A batch-lane task that has waited this long goes ahead of the interactive ones
    #: still waiting: batch work is never starved.
    batch_max_wait_s: PositiveInt = DEFAULT_BATCH_MAX_WAIT_S
    decode_concurrency: PositiveInt = DEFAULT_DECODE_CONCURRENCY
    #: tenant: each API key sees only its own cached results; global: one cache for all.
    cache_scope: CacheScope = "tenant"
    #: The bearer token GET /metrics needs; empty = /metrics only in development.
    metrics_token: str = ""
    #: Deliver webhooks to loopback addresses (tests and local development only).
    webhook_allow_loopback: bool = False
    #: Fetch photos by URL (image_url) from loopback addresses (tests and demos only).
    fetch_allow_loopback: bool = False
    fetch_timeout_s: Annotated[float, Field(gt=0, le=MAX_FETCH_TIMEOUT_S)] = DEFAULT_FETCH_TIMEOUT_S
    #: The buckets image_url=gs://bucket/path may name, read with the service's own
    #: credentials; any other bucket is a 403.
    input_buckets: CommaList = ()
    #: The queues /readyz wants a ready worker for. Where gpu workers scale to zero
    #: (a schedule outside business hours), "cpu": the API keeps taking photos, which wait
    #: on the gpu queue and make the autoscaler start a worker.
    ready_queues: CommaList = ("gpu", "cpu")
    #: OpenTelemetry traces, one per job, sent over OTLP/HTTP to this URL (a collector's
    #: /v1/traces); empty = tracing off. OTEL_EXPORTER_OTLP_HEADERS adds headers to it.
    tracing_endpoint: str = ""
    tracing_sample_ratio: Annotated[float, Field(ge=0, le=1)] = 1.0
    #: The checks' thresholds (shared/jobs/model.py says why each default is what it is).
    check_min_coverage: Annotated[float, Field(ge=0, le=1)] = DEFAULT_CHECK_MIN_COVERAGE
    check_edge_share: Annotated[float, Field(ge=0, le=1)] = DEFAULT_CHECK_EDGE_SHARE
    check_second_subject_share: Annotated[float, Field(ge=0, le=1)] = (
        DEFAULT_CHECK_SECOND_SUBJECT_SHARE
    )
    check_min_subject_px: Annotated[int, Field(ge=0)] = DEFAULT_CHECK_MIN_SUBJECT_PX
    check_uncertain_share: Annotated[float, Field(ge=0, le=1)] = DEFAULT_CHECK_UNCERTAIN_SHARE
    check_min_sharpness: Annotated[float, Field(ge=0)] = DEFAULT_CHECK_MIN_SHARPNESS
    #: A task whose worker died is handed out again this long after its last sign of life.
    visibility_timeout_s: Annotated[int, Field(ge=10, le=3600)] = DEFAULT_VISIBILITY_TIMEOUT_S
    #: Soft time limits of a background removal and of one effect; past them the result
    #: fails with `timeout` and the worker goes on.
    segment_time_limit_s: PositiveInt = DEFAULT_SEGMENT_TIME_LIMIT_S
    effect_time_limit_s: PositiveInt = DEFAULT_EFFECT_TIME_LIMIT_S
    #: How long storage calls are retried (with backoff) before a result fails with
    #: `storage_unavailable`.
    storage_retry_s: PositiveInt = DEFAULT_STORAGE_RETRY_S
    #: How often a cpu worker deletes local objects older than CUTFX_RESULT_TTL_S.
    gc_interval_s: PositiveInt = DEFAULT_GC_INTERVAL_S
    #: How long a webhook delivery holds its job's lock before it must renew it.
    webhook_lock_ttl_s: PositiveInt = DEFAULT_WEBHOOK_LOCK_TTL_S
    #: Browser origins every API key may be called from (comma list).
    cors_origins: CommaList = ()
    #: Origins per API key id, as JSON: {"key_0123456789abcdef": ["https://shop.example"]}.
    key_origins: dict[str, tuple[str, ...]] = {}
    #: Photos a month per API key id, as JSON: {"key_0123456789abcdef": 5000}. A key past
    #: its allowance gets 429 allowance_exhausted until the month (UTC) turns; keys not
    #: named have none. Cache hits and re-styles run no model and spend none of it.
    key_allowances: dict[str, Annotated[int, Field(ge=0)]] = {}
    client_token_ttl_s: Annotated[int, Field(ge=10, le=MAX_CLIENT_TOKEN_TTL_S)] = (
        DEFAULT_CLIENT_TOKEN_TTL_S
    )
    client_token_submit_rate_limit: str = DEFAULT_CLIENT_TOKEN_SUBMIT_RATE_LIMIT

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Explicit values only: from_env() is the one way the environment comes in.
        return (init_settings,)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """The settings from `environ` (default: the process environment)."""
        try:
            values = _EnvironSource(cls, environ)()
        except SettingsError as exc:
            raise ConfigurationError(_unparsable(exc)) from None
        try:
            return cls(**values)
        except ValidationError as exc:
            raise ConfigurationError(_one_line_per_error(exc)) from None

    def with_overrides(self, **overrides: Any) -> Settings:
        try:
            return type(self)(**{**self.model_dump(), **overrides})
        except ValidationError as exc:
            raise ConfigurationError(_one_line_per_error(exc)) from None

    @property
    def uses_development_signing_key(self) -> bool:
        return self.signing_key == DEFAULT_SIGNING_KEY

    @property
    def job_store_url(self) -> str:
        return self.store_url or self.redis_url

    @property
    def development(self) -> bool:
        return self.env == "development"

    def production_problems(self) -> list[str]:
        """What makes these settings unsafe to face the internet ([] when none)."""
        problems = []
        if not self.api_keys:
            problems.append("CUTFX_API_KEYS is empty: every route would be open")
        if self.uses_development_signing_key:
            problems.append("CUTFX_SIGNING_KEY is the development default")
        elif len(self.signing_key) < MIN_PRODUCTION_SIGNING_KEY_LENGTH:
            problems.append(
                f"CUTFX_SIGNING_KEY is shorter than {MIN_PRODUCTION_SIGNING_KEY_LENGTH} characters"
            )
        if self.webhook_allow_loopback:
            problems.append("CUTFX_WEBHOOK_ALLOW_LOOPBACK lets webhooks reach this machine")
        if self.fetch_allow_loopback:
            problems.append("CUTFX_FETCH_ALLOW_LOOPBACK lets image_url reach this machine")
        return problems

    def require_safe_start(self, service: str) -> None:
        """Refuse a production start with unsafe settings; development must be asked for."""
        problems = [] if self.development else self.production_problems()
        if problems:
            raise ConfigurationError(
                f"the {service} will not start in production: {'; '.join(problems)} "
                "(set them, or CUTFX_ENV=development to run without them on purpose)"
            )

    def origins_of(self, key_id: str) -> frozenset[str]:
        """The browser origins `key_id` (and its client tokens) may be used from."""
        return frozenset(self.cors_origins) | frozenset(self.key_origins.get(key_id, ()))

    @property
    def every_origin(self) -> frozenset[str]:
        """Every origin some caller may use: the ones preflights are answered for."""
        return frozenset(self.cors_origins).union(*self.key_origins.values())

    @field_validator("cors_origins")
    @classmethod
    def _check_origins(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(normalised_origin(origin) for origin in value)

    @field_validator("key_origins")
    @classmethod
    def _check_key_origins(cls, value: dict[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
        _check_key_ids(value)
        return {key_id: tuple(map(normalised_origin, origins)) for key_id, origins in value.items()}

    @field_validator("key_allowances")
    @classmethod
    def _check_key_allowances(cls, value: dict[str, int]) -> dict[str, int]:
        _check_key_ids(value)
        return value

    @field_validator("redis_url")
    @classmethod
    def _check_broker_url(cls, value: str) -> str:
        celery_broker(value)
        return value

    @field_validator("store_url")
    @classmethod
    def _check_store_url(cls, value: str) -> str:
        if value:
            parse_redis_url(value)
        return value

    @field_validator("escalate")
    @classmethod
    def _check_escalate(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return _only_among(value, ESCALATING_CHECKS, "escalates")

    @field_validator("ready_queues")
    @classmethod
    def _check_ready_queues(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return _only_among(value, WORKER_QUEUES, "is a queue")

    @field_validator(
        "api_keys",
        "effect_plugins",
        "cors_origins",
        "input_buckets",
        "escalate",
        "ready_queues",
        mode="before",
    )
    @classmethod
    def _split_comma_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @model_validator(mode="after")
    def _check_storage(self) -> Settings:
        # ConfigurationError is no ValueError: pydantic lets it through as it is.
        if self.storage == "gcs" and not self.gcs_bucket:
            raise ConfigurationError("CUTFX_GCS_BUCKET is required when CUTFX_STORAGE=gcs")
        return self


def _check_key_ids(per_key: Mapping[str, object]) -> None:
    for key_id in per_key:
        if not KEY_ID_PATTERN.match(key_id):
            raise ValueError(f"{key_id!r} is no key id (see `cutfx key-ids`)")


def _only_among(value: tuple[str, ...], allowed: tuple[str, ...], what: str) -> tuple[str, ...]:
    """`value`, when each of its items is one of `allowed`; ValueError naming one that is not."""
    unknown = sorted(set(value) - set(allowed))
    if unknown:
        raise ValueError(f"only {', '.join(allowed)} {what}, not {unknown[0]}")
    return value


def normalised_origin(origin: str) -> str:
    """`origin` as browsers send it (lower case, no slash); ValueError when it is none."""
    normalised = origin.strip().rstrip("/").lower()
    if not ORIGIN_PATTERN.match(normalised):
        raise ValueError(f"{origin!r} is no origin: give scheme://host[:port], no path")
    return normalised


class _EnvironSource(EnvSettingsSource):
    """The environment source over a given mapping instead of os.environ."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str] | None):
        self._environ = environ
        super().__init__(settings_cls, case_sensitive=False, env_prefix=ENV_PREFIX)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        if self._environ is None:
            return super()._load_env_vars()
        return {name.lower(): value for name, value in self._environ.items()}


def _unparsable(exc: SettingsError) -> str:
    """A value the environment source could not even parse (JSON settings)."""
    named = re.search(r'field "(\w+)"', str(exc))
    env_name = ENV_PREFIX + (named.group(1).upper() if named else "?")
    return f'{env_name} must be JSON, e.g. {{"key_0123456789abcdef": ["https://shop.example"]}}'


def _one_line_per_error(exc: ValidationError) -> str:
    return "\n".join(_describe(error) for error in exc.errors())


def _describe(error: ErrorDetails) -> str:
    field_name = str(error["loc"][0]) if error["loc"] else ""
    env_name = ENV_PREFIX + field_name.upper()
    given = error.get("input")
    kind = error["type"]
    ctx = error.get("ctx", {})
    if kind == "literal_error":
        choices = get_args(Settings.model_fields[field_name].annotation)
        return f"{env_name} must be one of {', '.join(choices)}; got {given!r}"
    if kind == "bool_parsing":
        return f"{env_name} must be true or false, got {given!r}"
    if kind == "int_parsing":
        return f"{env_name} must be an integer, got {given!r}"
    if kind in ("greater_than", "greater_than_equal") and ctx.get("gt") == 0:
        return f"{env_name} must be positive, got {given!r}"
    if field_name == "url_ttl_s" and kind in ("greater_than_equal", "less_than_equal"):
        return f"{env_name} must be between 1 and {MAX_SIGNED_URL_TTL_S} (7 days), got {given!r}"
    return f"{env_name}: {error['msg']}, got {given!r}"


def check_thresholds(settings: Settings) -> CheckThresholds:
    """The checks' thresholds as these settings set them (built once, at a process's start):
    each threshold is the setting of its name with `check_` before it."""
    return CheckThresholds(
        **{item.name: getattr(settings, f"check_{item.name}") for item in fields(CheckThresholds)}
    )
