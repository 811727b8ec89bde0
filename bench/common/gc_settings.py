"""The benchmarks' own processes collect garbage as the services do.

The services set CPython's cyclic collector thresholds and freeze what exists once they have started
(``TWEETSHOP_GC_THRESHOLDS``, ``TWEETSHOP_GC_FREEZE_AFTER_START``; docs/runbook.md). The hand-written
baselines and the load generators do the same, so a ratio to a baseline compares two pipelines, not two
collector settings, and the generator takes no more of the shared cores than it must.
"""

from __future__ import annotations

import gc

from tweetshop_platform.settings import ServiceSettings


def collect_like_the_services() -> None:
    """The services' default thresholds, from their settings (not a copy of the numbers)."""
    gc.set_threshold(*ServiceSettings.model_fields["gc_thresholds"].default)


def freeze_what_started() -> None:
    """What exists now lives as long as the process: out of the collector's way (as a service after start)."""
    gc.collect()
    gc.freeze()
