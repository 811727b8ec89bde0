"""FetchPacer: a consumer off the purchase's path fetches less often once it has found nothing for a while."""

from __future__ import annotations

from types import SimpleNamespace

from tweetshop_platform.consumer import FetchPacer


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_wait_lengthens_only_after_the_quiet_spell_and_shortens_at_the_first_record() -> None:
    clock = Clock()
    pacer = FetchPacer(active_ms=50, quiet_ms=1000, quiet_after_s=5.0, clock=clock)
    assert pacer.after(got_records=False) == 50
    clock.now += 4.9
    assert pacer.after(got_records=False) == 50
    clock.now += 0.2
    assert pacer.after(got_records=False) == 1000
    clock.now += 60
    assert pacer.after(got_records=False) == 1000
    assert pacer.after(got_records=True) == 50
    clock.now += 4.0
    assert pacer.after(got_records=False) == 50  # the quiet spell counts from the last record


def test_a_quiet_wait_shorter_than_the_active_one_is_never_used() -> None:
    pacer = FetchPacer(active_ms=250, quiet_ms=100, quiet_after_s=0.0, clock=Clock())
    assert pacer.after(got_records=False) == 250


def test_apply_sets_the_fetchers_wait_the_next_fetch_request_is_built_with() -> None:
    clock = Clock()
    pacer = FetchPacer(active_ms=50, quiet_ms=1000, quiet_after_s=1.0, clock=clock)
    consumer = SimpleNamespace(_fetcher=SimpleNamespace(_fetch_max_wait_ms=50), _group_id="g")
    clock.now += 2
    pacer.apply(consumer, got_records=False)
    assert consumer._fetcher._fetch_max_wait_ms == 1000
    pacer.apply(consumer, got_records=True)
    assert consumer._fetcher._fetch_max_wait_ms == 50


def test_the_pinned_aiokafka_builds_each_fetch_request_from_the_attribute_the_pacer_sets() -> None:
    """FetchPacer writes a private attribute; if a new aiokafka stops reading it, the pacer silently does nothing."""
    import inspect

    from aiokafka.consumer.fetcher import Fetcher

    assert "self._fetch_max_wait_ms = fetch_max_wait_ms" in inspect.getsource(Fetcher.__init__)
    assert "self._fetch_max_wait_ms," in inspect.getsource(Fetcher._get_actions_per_node)
