"""The fast install gets pip's package sources: scripts/pip_to_uv.py turns pip's settings
into uv's flags."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.conftest import REPO


def uv_flags(tmp_path, pip_conf: str, **environment: str) -> list[str]:
    config = tmp_path / "pip.conf"
    config.write_text(pip_conf)
    clean = {name: value for name, value in os.environ.items() if not name.startswith("PIP_")}
    finished = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "pip_to_uv.py")],
        env={**clean, "PIP_CONFIG_FILE": str(config), **environment},
        capture_output=True,
        text=True,
        check=True,
    )
    return finished.stdout.splitlines()


def test_indexes_links_and_constraints_become_uv_flags(tmp_path):
    flags = uv_flags(
        tmp_path,
        "[global]\n"
        "index-url = https://mirror.example/simple\n"
        "extra-index-url = file:///opt/a/simple file:///opt/b/simple\n"
        "find-links = /opt/wheels\n"
        "constraint = /etc/pip-constraints.txt\n",
    )
    pairs = list(zip(flags[::2], flags[1::2], strict=True))
    assert ("--index-url", "https://mirror.example/simple") in pairs
    assert ("--extra-index-url", "file:///opt/a/simple") in pairs
    assert ("--extra-index-url", "file:///opt/b/simple") in pairs
    assert ("--find-links", "/opt/wheels") in pairs
    assert ("--constraint", "/etc/pip-constraints.txt") in pairs


def test_an_environment_setting_wins_over_the_file(tmp_path):
    flags = uv_flags(tmp_path, "[global]\nfind-links = /from/file\n", PIP_FIND_LINKS="/from/env")
    pairs = list(zip(flags[::2], flags[1::2], strict=True))
    assert [value for flag, value in pairs if flag == "--find-links"] == ["/from/env"]


def test_a_pip_without_settings_gives_no_flags(tmp_path):
    # PIP_CONFIG_FILE=/dev/null: pip reads no configuration file at all.
    assert uv_flags(tmp_path, "", PIP_CONFIG_FILE=os.devnull) == []
