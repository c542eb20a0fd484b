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
    """Each setting's values in force: an environment variable's (scope ":env:") over a
    configuration file's, whatever order pip lists them in."""
    listing = subprocess.run(
        [sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True
    ).stdout
    from_files: dict[str, list[str]] = {}
    from_environment: dict[str, list[str]] = {}
    for line in listing.splitlines():
        scope_and_name, _, value = line.partition("=")
        scope, _, name = scope_and_name.rpartition(".")
        if name in FLAGS:
            chosen = from_environment if scope == ":env:" else from_files
            chosen[name] = shlex.split(value.strip("'\""))
    return {**from_files, **from_environment}


def main() -> None:
    for name, values in pip_settings().items():
        for value in values:
            print(FLAGS[name])
            print(value)


if __name__ == "__main__":
    main()
