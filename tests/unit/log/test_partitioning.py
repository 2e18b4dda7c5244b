"""Key placement must match Kafka's default partitioner exactly."""

from __future__ import annotations

from aiokafka.partitioner import DefaultPartitioner, murmur2 as aiokafka_murmur2
from hypothesis import given, settings, strategies as st

from libs.log import partition_for
from libs.log.api import murmur2


def test_known_java_vectors() -> None:
    # Values from Kafka's own UtilsTest (org.apache.kafka.common.utils.UtilsTest#testMurmur2).
    assert murmur2(b"21") == -973932308
    assert murmur2(b"foobar") == -790332482
    assert murmur2(b"a-little-bit-long-string") == -985981536
    assert murmur2(b"a-little-bit-longer-string") == -1486304829
    assert murmur2(b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8") == -58897971
    assert murmur2(b"abc") == 479470107


@settings(derandomize=True, max_examples=300)
@given(st.text(max_size=80), st.integers(min_value=1, max_value=64))
def test_matches_aiokafka_default_partitioner(key: str, partitions: int) -> None:
    raw = key.encode("utf-8")
    assert murmur2(raw) & 0xFFFFFFFF == aiokafka_murmur2(raw) & 0xFFFFFFFF
    expected = DefaultPartitioner()(raw, list(range(partitions)), list(range(partitions)))
    assert partition_for(key, partitions) == expected
    assert 0 <= partition_for(key, partitions) < partitions
