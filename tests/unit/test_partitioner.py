"""Our partition function agrees with the Java client's murmur2 partitioner."""

from __future__ import annotations

import pytest

from ledger.kafka import murmur2, partition_for

# Vectors from the Java client's UtilsTest.testMurmur2.
JAVA_VECTORS = {
    b"21": -973932308,
    b"foobar": -790332482,
    b"a-little-bit-long-string": -985981536,
    b"a-little-bit-longer-string": -1486304829,
    b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
    b"abc": 479470107,
}


@pytest.mark.parametrize(("key", "expected"), JAVA_VECTORS.items())
def test_murmur2_matches_java(key: bytes, expected: int) -> None:
    assert murmur2(key) == expected & 0xFFFFFFFF


def test_partition_is_in_range_and_stable() -> None:
    keys = [f"user:{i}".encode() for i in range(1000)]
    parts = [partition_for(k, 6) for k in keys]
    assert set(parts) == set(range(6))
    assert parts == [partition_for(k, 6) for k in keys]
