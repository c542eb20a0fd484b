from __future__ import annotations

from pathlib import Path

import pytest

from shared.errors import ConfigurationError
from shared.settings import Settings


def test_defaults_run_out_of_the_box():
    settings = Settings.from_env({})
    assert settings.storage == "local"
    assert settings.redis_url == "redis://127.0.0.1:6379/0"
    assert settings.uses_development_signing_key


def test_values_are_read_and_typed():
    settings = Settings.from_env(
        {
            "CUTFX_MAX_SIDE": "1024",
            "CUTFX_LOCAL_STORAGE_DIR": "/srv/cutfx",
            "CUTFX_API_KEYS": "a, b,,",
            "CUTFX_MODEL_MODE": "fast",
        }
    )
    assert settings.max_side == 1024
    assert settings.local_storage_dir == Path("/srv/cutfx")
    assert settings.api_keys == ("a", "b")
    assert settings.model_mode == "fast"


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"CUTFX_STORAGE": "gcs"}, "CUTFX_GCS_BUCKET is required"),
        ({"CUTFX_STORAGE": "s3"}, "CUTFX_STORAGE must be one of local, gcs"),
        ({"CUTFX_MAX_SIDE": "big"}, "CUTFX_MAX_SIDE must be an integer"),
        ({"CUTFX_URL_TTL_S": str(8 * 24 * 3600)}, "CUTFX_URL_TTL_S must be between"),
        ({"CUTFX_DEVICE": "tpu"}, "CUTFX_DEVICE must be one of"),
        ({"CUTFX_MAX_PIXELS": "0"}, "CUTFX_MAX_PIXELS must be positive"),
        ({"CUTFX_CORS_ORIGINS": "https://shop.example/app"}, "CUTFX_CORS_ORIGINS"),
        ({"CUTFX_CORS_ORIGINS": "*"}, "is no origin"),
        ({"CUTFX_KEY_ORIGINS": "shop.example"}, "CUTFX_KEY_ORIGINS"),
        ({"CUTFX_KEY_ORIGINS": '{"sk_live_secret": ["https://a.example"]}'}, "is no key id"),
        ({"CUTFX_KEY_ORIGINS": '{"key_0123456789abcdef": ["ftp://a"]}'}, "is no origin"),
        ({"CUTFX_READY_QUEUES": "cpu,gpus"}, "only gpu, cpu, webhooks is a queue, not gpus"),
        ({"CUTFX_ESCALATE": "blurry"}, "only low_confidence escalates, not blurry"),
        ({"CUTFX_TRACING_SAMPLE_RATIO": "2"}, "CUTFX_TRACING_SAMPLE_RATIO"),
    ],
)
def test_bad_values_stop_start_up_with_one_clear_line(environ, message):
    with pytest.raises(ConfigurationError) as caught:
        Settings.from_env(environ)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_origins_are_read_normalised_and_merged_per_key():
    settings = Settings.from_env(
        {
            "CUTFX_CORS_ORIGINS": "https://Brand.example/, http://localhost:5173",
            "CUTFX_KEY_ORIGINS": '{"key_0123456789abcdef": ["https://shop.example"]}',
        }
    )
    assert settings.cors_origins == ("https://brand.example", "http://localhost:5173")
    assert settings.origins_of("key_0123456789abcdef") == {
        "https://brand.example",
        "http://localhost:5173",
        "https://shop.example",
    }
    assert settings.origins_of("key_fedcba9876543210") == {
        "https://brand.example",
        "http://localhost:5173",
    }
    assert len(settings.every_origin) == 3


def test_explicit_settings_ignore_the_environment(monkeypatch):
    monkeypatch.setenv("CUTFX_MAX_SIDE", "77")
    assert Settings().max_side == 2048
    assert Settings.from_env().max_side == 77


def test_each_bad_value_gets_its_own_line():
    with pytest.raises(ConfigurationError) as caught:
        Settings.from_env({"CUTFX_MAX_SIDE": "big", "CUTFX_DEVICE": "tpu"})
    lines = str(caught.value).splitlines()
    assert len(lines) == 2
    assert any(line.startswith("CUTFX_MAX_SIDE") for line in lines)
    assert any(line.startswith("CUTFX_DEVICE") for line in lines)


def test_every_cutfx_variable_the_service_reads_is_a_setting():
    """No module reads a CUTFX_* variable past the settings (the batch client has its own)."""
    import re

    repo = Path(__file__).resolve().parents[2]
    reads = re.compile(r"environ(?:\.get)?\(?\[?\s*[\"'](CUTFX_[A-Z_]+)")
    client_variables = {"CUTFX_API_URL", "CUTFX_API_KEY"}
    fields = {"CUTFX_" + name.upper() for name in Settings.model_fields}
    found = {
        name
        for folder in ("api", "worker", "shared", "effects", "cli")
        for path in (repo / folder).rglob("*.py")
        for name in reads.findall(path.read_text())
    }
    assert found - client_variables <= fields, found - client_variables - fields


def test_every_setting_is_in_the_readmes_table():
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    table = readme.split("## Settings", 1)[1].split("\n## ", 1)[0]
    missing = [
        f"CUTFX_{name.upper()}"
        for name in Settings.model_fields
        if f"| `CUTFX_{name.upper()}` |" not in table
    ]
    assert not missing, f"README's settings table lacks {missing}"
