"""The crash points the chaos suite relies on: off by default, exact when on, armed only by their file if one is set."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from tweetshop_platform import faults

CRASH_AT_POINT = "from tweetshop_platform import faults\nfaults.maybe_crash('here')\nprint('survived')"


def run(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """A fresh interpreter that passes the crash point ``here`` once."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TWEETSHOP_FAULT")}
    return subprocess.run(
        [sys.executable, "-c", CRASH_AT_POINT], env={**clean, **env}, capture_output=True, text=True, timeout=60
    )


def test_points_and_probabilities_are_read_from_one_setting() -> None:
    assert faults.parse_points("outbox_after_publish:0.05, checkout_after_stripe:1") == {
        "outbox_after_publish": 0.05,
        "checkout_after_stripe": 1.0,
    }
    assert faults.parse_points("") == {}


@pytest.mark.parametrize("spec", ["here", "here:", "here:often", "here:1.5", ":0.5", "here:-0.1"])
def test_a_malformed_setting_is_refused(spec: str) -> None:
    with pytest.raises(ValueError, match="TWEETSHOP_FAULT_POINTS"):
        faults.parse_points(spec)


def test_without_the_setting_nothing_ever_crashes() -> None:
    done = run({})
    assert (done.returncode, done.stdout.strip()) == (0, "survived")


def test_a_certain_crash_point_exits_at_once_like_a_kill_and_says_where() -> None:
    done = run({faults.ENV_VAR: "here:1"})
    assert done.returncode == faults.EXIT_CODE == 137
    assert done.stdout == "", "nothing after the crash point ran"
    assert f"{faults.MARKER} here" in done.stderr


def test_other_points_do_not_fire() -> None:
    assert run({faults.ENV_VAR: "elsewhere:1"}).returncode == 0


def test_an_arm_file_holds_the_crash_points_back_until_it_exists(tmp_path: Path) -> None:
    arm = tmp_path / "armed"
    env = {faults.ENV_VAR: "here:1", faults.ARM_FILE_VAR: str(arm)}
    assert run(env).returncode == 0
    arm.touch()
    assert run(env).returncode == 137
