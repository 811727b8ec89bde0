"""The watcher times an event by the record's CreateTime plus the producers' linger, never after its fetch."""

from __future__ import annotations

from aiokafka.structs import ConsumerRecord

from bench.common.watch import LINGER_S, published_at


def record(timestamp_ms: int, timestamp_type: int = 0) -> ConsumerRecord[bytes, bytes]:
    return ConsumerRecord("t", 0, 0, timestamp_ms, timestamp_type, None, b"{}", None, 0, 2, ())


def test_a_record_is_timed_by_its_create_time_plus_the_linger_on_the_monotonic_scale() -> None:
    wall_minus_monotonic = 1_000_000.0  # time.time() - time.monotonic() when the fetch returned
    fetched = 500.0
    created_ms = int((fetched - 0.150 + wall_minus_monotonic) * 1000)  # handed to the producer 150 ms before
    assert abs(published_at(record(created_ms), fetched, wall_minus_monotonic) - (fetched - 0.150 + LINGER_S)) < 0.002


def test_never_after_the_fetch_that_brought_it_and_without_a_create_time_the_fetch() -> None:
    wall_minus_monotonic = 1_000_000.0
    fetched = 500.0
    just_now_ms = int((fetched + wall_minus_monotonic) * 1000)
    assert published_at(record(just_now_ms), fetched, wall_minus_monotonic) == fetched
    assert published_at(record(just_now_ms - 5_000, timestamp_type=1), fetched, wall_minus_monotonic) == fetched
    assert published_at(record(-1), fetched, wall_minus_monotonic) == fetched
