"""Typed settings, read once from CUTFX_* environment variables."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from shared.errors import ConfigurationError

ENV_PREFIX = "CUTFX_"

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
DEFAULT_STORAGE = "local"
DEFAULT_LOCAL_STORAGE_DIR = "var/storage"
DEFAULT_PUBLIC_BASE_URL = ""
DEFAULT_SIGNING_KEY = "cutfx-development-signing-key"
DEFAULT_URL_TTL_S = 3600
DEFAULT_RESULT_TTL_S = 7 * 24 * 3600
DEFAULT_MODEL_MODE = "base"
DEFAULT_DEVICE = "auto"
DEFAULT_PRECISION = "fp16"
DEFAULT_MAX_UPLOAD_BYTES = 20 * 1024 * 1024
DEFAULT_MAX_PIXELS = 40_000_000
DEFAULT_MAX_SIDE = 2048
DEFAULT_TASK_MAX_ATTEMPTS = 3
DEFAULT_IDEMPOTENCY_TTL_S = 24 * 3600
#: Redis allows 10,000 clients by default; each open event stream holds one connection.
DEFAULT_REDIS_MAX_CONNECTIONS = 4000
MAX_SIGNED_URL_TTL_S = 7 * 24 * 3600

STORAGE_BACKENDS = ("local", "gcs")
MODEL_MODES = ("base", "fast", "base-nightly")
DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("fp16", "bf16", "fp32")


@dataclass(frozen=True)
class Settings:
    """Every setting, with the default the service runs with out of the box."""

    redis_url: str = DEFAULT_REDIS_URL
    redis_max_connections: int = DEFAULT_REDIS_MAX_CONNECTIONS
    storage: str = DEFAULT_STORAGE
    local_storage_dir: Path = Path(DEFAULT_LOCAL_STORAGE_DIR)
    public_base_url: str = DEFAULT_PUBLIC_BASE_URL
    gcs_bucket: str = ""
    gcs_prefix: str = "cutfx"
    gcs_signer_email: str = ""
    signing_key: str = DEFAULT_SIGNING_KEY
    url_ttl_s: int = DEFAULT_URL_TTL_S
    result_ttl_s: int = DEFAULT_RESULT_TTL_S
    idempotency_ttl_s: int = DEFAULT_IDEMPOTENCY_TTL_S
    model_mode: str = DEFAULT_MODEL_MODE
    model_ckpt: str = ""
    device: str = DEFAULT_DEVICE
    precision: str = DEFAULT_PRECISION
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_side: int = DEFAULT_MAX_SIDE
    api_keys: tuple[str, ...] = ()
    effect_plugins: tuple[str, ...] = ()
    task_max_attempts: int = DEFAULT_TASK_MAX_ATTEMPTS

    def __post_init__(self) -> None:
        _check_choice("STORAGE", self.storage, STORAGE_BACKENDS)
        _check_choice("MODEL_MODE", self.model_mode, MODEL_MODES)
        _check_choice("DEVICE", self.device, DEVICES)
        _check_choice("PRECISION", self.precision, PRECISIONS)
        if self.storage == "gcs" and not self.gcs_bucket:
            raise ConfigurationError("CUTFX_GCS_BUCKET is required when CUTFX_STORAGE=gcs")
        if not self.signing_key:
            raise ConfigurationError("CUTFX_SIGNING_KEY must not be empty")
        if not 1 <= self.url_ttl_s <= MAX_SIGNED_URL_TTL_S:
            raise ConfigurationError(
                f"CUTFX_URL_TTL_S must be between 1 and {MAX_SIGNED_URL_TTL_S} (7 days)"
            )
        for name in ("result_ttl_s", "max_upload_bytes", "max_pixels", "max_side"):
            if getattr(self, name) <= 0:
                raise ConfigurationError(f"CUTFX_{name.upper()} must be positive")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for field in fields(cls):
            raw = environ.get(ENV_PREFIX + field.name.upper())
            if raw is not None:
                values[field.name] = _parse(field.name, str(field.type), raw)
        return cls(**values)

    def with_overrides(self, **overrides: Any) -> Settings:
        return replace(self, **overrides)

    @property
    def uses_development_signing_key(self) -> bool:
        return self.signing_key == DEFAULT_SIGNING_KEY


def _parse(name: str, annotation: str, raw: str) -> Any:
    env_name = ENV_PREFIX + name.upper()
    if annotation == "int":
        try:
            return int(raw)
        except ValueError:
            raise ConfigurationError(f"{env_name} must be an integer, got {raw!r}") from None
    if annotation == "Path":
        return Path(raw)
    if annotation.startswith("tuple"):
        return tuple(part.strip() for part in raw.split(",") if part.strip())
    return raw


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigurationError(
            f"{ENV_PREFIX}{name} must be one of {', '.join(choices)}; got {value!r}"
        )
