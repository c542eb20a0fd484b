"""requirements.lock pins what setup.cfg asks for, and every install path uses it."""

from __future__ import annotations

import configparser
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

REPO = Path(__file__).resolve().parents[1]
LOCK = REPO / "requirements.lock"
#: Every way cutfx gets installed: the scripts (demo, tests, CI) and both images.
INSTALLERS = ("scripts/bootstrap.sh", "Dockerfile.api", "Dockerfile.worker")


def locked() -> dict[str, Version]:
    pins: dict[str, Version] = {}
    for line in LOCK.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        name, separator, version = line.partition("==")
        assert separator, f"not an exact pin: {line!r}"
        pins[canonicalize_name(name)] = Version(version)
    return pins


def declared() -> list[Requirement]:
    config = configparser.ConfigParser()
    config.read(REPO / "setup.cfg")
    lines = config["options"]["install_requires"].splitlines()
    for extra in config["options.extras_require"]:
        lines += config["options.extras_require"][extra].splitlines()
    return [Requirement(line) for line in lines if line.strip()]


def test_every_line_of_the_lock_is_an_exact_pin_of_one_package():
    pins = locked()
    assert len(pins) == sum(
        1 for line in LOCK.read_text().splitlines() if line.strip() and not line.startswith("#")
    ), "a package is pinned twice"
    assert canonicalize_name("cutfx") not in pins


@pytest.mark.parametrize("requirement", declared(), ids=str)
def test_the_lock_pins_each_requirement_within_its_range(requirement):
    pins = locked()
    name = canonicalize_name(requirement.name)
    assert name in pins, f"{requirement.name} is not in requirements.lock: run scripts/lock.sh"
    assert requirement.specifier.contains(pins[name], prereleases=True), (
        f"requirements.lock pins {requirement.name}=={pins[name]}, outside {requirement}: "
        "run scripts/lock.sh"
    )


@pytest.mark.parametrize("installer", INSTALLERS)
def test_every_install_is_constrained_by_the_lock(installer):
    text = (REPO / installer).read_text().replace("\\\n", " ")
    install_lines = [
        line
        for line in text.splitlines()
        if "pip install" in line and not line.lstrip().startswith("#")
    ]
    assert install_lines, f"{installer} installs nothing"
    cutfx_installs = [line for line in install_lines if "-e " in line or ".[" in line]
    assert cutfx_installs, f"{installer} never installs cutfx"
    assert all("requirements.lock" in line for line in cutfx_installs), cutfx_installs
