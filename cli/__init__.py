"""The `cutfx` command: demo, batch, checkpoint, the GCS and retention chores, worker probes."""

from __future__ import annotations

from shared.settings import Settings


def service_settings() -> Settings:
    """The service's settings, read from the environment: the command line's one reading
    of it, made by each subcommand when it needs them (the demo sets its defaults first;
    `batch`, a client, never reads them)."""
    return Settings.from_env()
