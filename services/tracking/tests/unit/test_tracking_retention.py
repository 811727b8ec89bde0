"""Retention: which old points a thinning pass deletes, and which it always keeps."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tracking import domain
from tracking.domain import Thinning

NOW = datetime(2025, 6, 10, 12, 0, 30, tzinfo=UTC)
# Points older than one hour keep one per minute.
RULE = Thinning(keep_every_s=60, older_than_s=3600)
OLD = datetime(2025, 6, 10, 9, 0, tzinfo=UTC)  # three hours ago, on a minute boundary


def every(seconds: float, start: datetime, count: int) -> list[datetime]:
    return [start + timedelta(seconds=seconds * i) for i in range(count)]


def test_old_points_keep_the_first_of_each_window() -> None:
    recorded = every(5, OLD, 36)  # 3 minutes of a fix every 5 s
    doomed = domain.points_to_thin(recorded, RULE, NOW)
    kept = sorted(set(recorded) - set(doomed))
    assert kept == [OLD, OLD + timedelta(minutes=1), OLD + timedelta(minutes=2)]
    assert doomed == sorted(doomed)


def test_recent_points_are_never_thinned() -> None:
    recent = every(5, NOW - timedelta(minutes=30), 36)
    assert domain.points_to_thin(recent, RULE, NOW) == []


def test_the_window_the_cutoff_cuts_through_waits_for_a_later_pass() -> None:
    cutoff = RULE.cutoff(NOW)  # 11:00:30, inside the 11:00 window
    straddling = [cutoff - timedelta(seconds=25), cutoff - timedelta(seconds=10), cutoff + timedelta(seconds=5)]
    assert domain.points_to_thin(straddling, RULE, NOW) == []
    later = NOW + timedelta(minutes=1)
    assert domain.points_to_thin(straddling, RULE, later) == straddling[1:]


def test_a_second_pass_deletes_nothing_more() -> None:
    recorded = every(7, OLD, 100)
    doomed = set(domain.points_to_thin(recorded, RULE, NOW))
    survivors = [t for t in recorded if t not in doomed]
    assert domain.points_to_thin(survivors, RULE, NOW) == []
    assert domain.points_to_thin(survivors, RULE, NOW + timedelta(seconds=30)) == []


def test_the_current_location_survives_thinning() -> None:
    recorded = every(10, OLD, 6)
    current = recorded[-1]  # the shipment row repeats it: history must still hold it
    doomed = domain.points_to_thin(recorded, RULE, NOW, keep={current})
    assert current not in doomed
    assert OLD not in doomed
    assert len(doomed) == 4


def test_points_arrive_in_any_order() -> None:
    recorded = every(5, OLD, 24)
    assert domain.points_to_thin(list(reversed(recorded)), RULE, NOW) == domain.points_to_thin(recorded, RULE, NOW)


def test_windows_are_aligned_so_every_replica_agrees() -> None:
    assert RULE.window_start(OLD + timedelta(seconds=42)) == OLD
    assert RULE.window_of(OLD) + 1 == RULE.window_of(OLD + timedelta(seconds=60))


def test_keep_every_zero_keeps_the_whole_history() -> None:
    assert domain.points_to_thin(every(1, OLD, 50), Thinning(keep_every_s=0, older_than_s=3600), NOW) == []
