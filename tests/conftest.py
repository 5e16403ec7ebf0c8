"""Shared fixtures: the schema catalogue and codec."""

from __future__ import annotations

import pytest

from ledger.codec import Codec

# Helper modules assert too: rewrite them so a failure shows the values, not a bare error.
pytest.register_assert_rewrite("tests.integration.workload", "tests.integration.ledger_helpers")


@pytest.fixture(scope="session")
def codec() -> Codec:
    return Codec()
