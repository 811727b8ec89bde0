"""The relay's partitioner picks exactly aiokafka's (Kafka's) default partition for every key."""

from __future__ import annotations

import os
import uuid

from aiokafka.partitioner import DefaultPartitioner
from tweetshop_platform.kafka import CachedKeyPartitioner


def test_same_partition_as_the_default_for_every_key_and_partition_count() -> None:
    cached, default = CachedKeyPartitioner(), DefaultPartitioner()
    keys = [str(uuid.uuid4()).encode() for _ in range(300)] + [b"", b"a", os.urandom(7), "ü-key".encode()]
    for partitions in (1, 2, 6, 7, 32):
        all_partitions = list(range(partitions))
        for key in keys * 2:  # the second pass answers from the memo
            assert cached(key, all_partitions, all_partitions) == default(key, all_partitions, all_partitions)


def test_known_kafka_partitions() -> None:
    # Kafka's own murmur2 test vectors (UtilsTest): the Java client puts these keys on these partitions.
    java_murmur2 = {
        b"21": -973932308,
        b"foobar": -790332482,
        b"a-little-bit-long-string": -985981536,
        b"abc": 479470107,
    }
    partitioner = CachedKeyPartitioner()
    for key, signed in java_murmur2.items():
        for _ in range(2):
            assert partitioner(key, list(range(6)), list(range(6))) == (signed & 0x7FFFFFFF) % 6


def test_memo_is_bounded() -> None:
    partitioner = CachedKeyPartitioner(max_keys=10)
    for i in range(1000):
        partitioner(f"k{i}".encode(), [0, 1, 2], [0, 1, 2])
    assert len(partitioner._hashes) <= 10


def test_keyless_messages_go_to_an_available_partition() -> None:
    partitioner = CachedKeyPartitioner()
    assert {partitioner(None, [0, 1, 2], [1]) for _ in range(20)} == {1}
