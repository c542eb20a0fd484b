"""An in-process gcp-storage-emulator and a throwaway service-account key that signs URLs."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

BUCKET = "cutfx-test"
SERVICE_ACCOUNT = "cutfx-test@cutfx-test.iam.gserviceaccount.com"


def write_service_account_key(path: Path) -> Path:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    info = {
        "type": "service_account",
        "project_id": "cutfx-test",
        "private_key_id": "throwaway",
        "private_key": pem,
        "client_email": SERVICE_ACCOUNT,
        "client_id": "1",
        "token_uri": "https://oauth2.googleapis.com/token",
    }
    path.write_text(json.dumps(info))
    return path


class EmulatorProcess:
    """The emulator's server on a fixed port, which a test may stop and start again
    (an outage; the in-memory emulator comes back empty, its bucket recreated)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.server: Any = None

    def start(self) -> None:
        from gcp_storage_emulator.server import create_server

        self.server = create_server("127.0.0.1", self.port, in_memory=True, default_bucket=BUCKET)
        self.server.start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None


@contextmanager
def emulator(
    port: int, key_path: Path, running: EmulatorProcess | None = None
) -> Iterator[dict[str, str]]:
    """Run the emulator; yield the environment that points the google client at it."""
    server = running or EmulatorProcess(port)
    server.start()
    environment = {
        "STORAGE_EMULATOR_HOST": f"http://127.0.0.1:{port}",
        "GOOGLE_APPLICATION_CREDENTIALS": str(key_path),
        "GOOGLE_CLOUD_PROJECT": "cutfx-test",
    }
    saved = {name: os.environ.get(name) for name in environment}
    os.environ.update(environment)
    try:
        yield environment
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        server.stop()
