"""The benchmarks' reading of hypervisor steal time: /proc/stat's steal ticks over all ticks between two readings."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.common.cpu import machine_ticks, steal_share


def test_steal_share_is_steal_ticks_over_all_ticks_between_two_readings() -> None:
    assert steal_share((100, 1_000), (150, 1_200)) == 0.25
    assert steal_share((100, 1_000), (100, 1_000)) is None  # no time passed
    assert steal_share(None, (1, 2)) is None


@pytest.mark.skipif(not Path("/proc/stat").exists(), reason="no /proc/stat on this system")
def test_machine_ticks_reads_this_machine() -> None:
    first = machine_ticks()
    assert first is not None
    sum(range(200_000))
    second = machine_ticks()
    assert second is not None
    assert 0 <= first[0] <= first[1]
    assert second[1] >= first[1] and second[0] >= first[0]
