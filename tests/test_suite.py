"""The suite's own set-up: what collecting it costs each test process."""

from __future__ import annotations

import pytest

from tests.conftest import COMPILED_AT_COLLECTION


def test_collecting_the_suite_compiles_nothing(pytestconfig: pytest.Config) -> None:
    """Every test process imports every test module to collect it. A module-level import of
    pymatting compiled its numba kernels in all three before the first test ran: 77 s of a
    fresh clone's CI on two cores. A test that needs it imports it in its body."""
    assert pytestconfig.stash[COMPILED_AT_COLLECTION] == []
