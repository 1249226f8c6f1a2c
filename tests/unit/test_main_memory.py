"""The operator process's memory housekeeping (gateway_operator/__main__.py): trimming glibc's heap once a
busy stretch has ended."""

from __future__ import annotations

import pytest

from gateway_operator.__main__ import TRIM_POLL_SECONDS, trim_when_idle


class Stop(Exception):
    pass


def run_trimmer(cpu_per_interval: list[float]) -> list[int]:
    """Feed the trimmer the CPU seconds used in each poll interval; returns the intervals after which it
    trimmed (1-based)."""
    used = iter(cpu_per_interval)
    clock = [0.0]
    interval = [0]
    trims: list[int] = []

    def wait(seconds: float) -> None:
        assert seconds == TRIM_POLL_SECONDS
        try:
            clock[0] += next(used)
        except StopIteration:
            raise Stop from None
        interval[0] += 1

    with pytest.raises(Stop):
        trim_when_idle(lambda: clock[0], lambda: trims.append(interval[0]), wait)
    return trims


def test_trims_once_when_a_busy_stretch_goes_quiet() -> None:
    # intervals 1-3 busy (a burst), 4-6 quiet: one trim, after the first quiet interval.
    assert run_trimmer([4.0, 5.0, 3.0, 0.01, 0.0, 0.02]) == [4]


def test_never_trims_an_idle_operator_or_during_a_burst() -> None:
    assert run_trimmer([0.01] * 20) == []  # idle: watch keep-alives only
    assert run_trimmer([4.0] * 10) == []  # still busy


def test_trims_again_after_the_next_burst_only() -> None:
    cpu = [5.0, 0.0, 0.0, 0.1, 0.0, 4.5, 0.0, 0.0]
    assert run_trimmer(cpu) == [2, 7]
