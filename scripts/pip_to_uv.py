"""Print, one a line, the uv arguments that give `uv pip install` the package sources pip is
configured with here (pip.conf and PIP_* variables): uv reads neither.

Used by scripts/bootstrap.sh; a machine whose pip has no such settings gets none.
"""

from __future__ import annotations

import shlex
import subprocess
import sys

#: pip setting → uv flag, for settings that may hold several space-separated values.
FLAGS = {
    "index-url": "--index-url",
    "extra-index-url": "--extra-index-url",
    "find-links": "--find-links",
    "constraint": "--constraint",
}


def pip_settings() -> dict[str, list[str]]:
    listing = subprocess.run(
        [sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True
    ).stdout
    settings: dict[str, list[str]] = {}
    for line in listing.splitlines():
        scope_and_name, _, value = line.partition("=")
        name = scope_and_name.rpartition(".")[2]
        if name in FLAGS:
            # Environment settings (":env:") come last in pip's listing and win, as in pip.
            settings[name] = shlex.split(value.strip("'\""))
    return settings


def main() -> None:
    for name, values in pip_settings().items():
        for value in values:
            print(FLAGS[name])
            print(value)


if __name__ == "__main__":
    main()
