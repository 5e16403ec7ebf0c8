"""Shared fixtures: the schema catalogue and codec."""

from __future__ import annotations

import pytest
from hypothesis import settings

from ledger.wire import Codec

# Helper modules assert too: rewrite them so a failure shows the values, not a bare error.
pytest.register_assert_rewrite("tests.integration.workload", "tests.integration.ledger_helpers")


@pytest.fixture(scope="session")
def codec() -> Codec:
    return Codec()


# Timing is not what the property tests check: on a loaded 2-core machine a first example
# can take longer than hypothesis's 200 ms default and fail a test that is right.
settings.register_profile("ledger", deadline=None)
settings.load_profile("ledger")
