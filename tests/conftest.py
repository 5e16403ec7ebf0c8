"""Shared fixtures: the schema catalogue and codec."""

from __future__ import annotations

import pytest

from ledger.codec import Codec


@pytest.fixture(scope="session")
def codec() -> Codec:
    return Codec()
