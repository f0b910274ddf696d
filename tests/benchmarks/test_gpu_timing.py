"""``benchmarks/_gpu_timing.py`` with a fake clock (no GPU needed): the median of repeated calls, and two steps timed
in alternation, whose per-round ratio a drift of the card over the rounds does not move."""

import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "benchmarks"))
import _gpu_timing  # noqa: E402


class Clock:
    """A card that slows down by ``drift`` per call: step ``a`` takes ``a`` seconds at full speed, ``b`` ``b``."""

    def __init__(self, a, b, drift):
        self.calls, self.order, self.cost, self.drift = 0, [], {"a": a, "b": b}, drift

    def step(self, name):
        def fn():
            self.order.append(name)
        fn.name = name
        return fn

    def timer(self, fn):
        fn()
        self.calls += 1
        return self.cost[fn.name] * (1 + self.drift * self.calls)


def test_paired_alternates_and_its_ratio_ignores_a_drift():
    clock = Clock(a=0.1, b=0.125, drift=0.2)
    r = _gpu_timing.paired(clock.step("a"), clock.step("b"), 4, timer=clock.timer)
    # a warm-up call of each (untimed), then a b, b a, a b, b a
    assert clock.order == ["a", "b", "a", "b", "b", "a", "a", "b", "b", "a"]
    assert r["rounds"] == 4
    # per round the two calls are adjacent, and swapping their order every round cancels which one ran later: the
    # ratio stays at the true 1.25 within 0.02 although the card slowed by 160% over the rounds
    assert r["ratio"] == pytest.approx(1.25, abs=0.02)
    # the ratio of the medians of two runs one after the other would not: a's 4 calls, then b's 4
    later = Clock(a=0.1, b=0.125, drift=0.2)
    ta = _gpu_timing.cuda_time(later.step("a"), 4, timer=later.timer)
    tb = _gpu_timing.cuda_time(later.step("b"), 4, timer=later.timer)
    assert tb / ta > 1.25 * 1.5


def test_cuda_time_takes_the_median_and_stops_after_a_slow_call():
    clock = Clock(a=0.1, b=2.0, drift=0.0)
    assert _gpu_timing.cuda_time(clock.step("a"), 3, timer=clock.timer) == pytest.approx(0.1)
    assert clock.order == ["a"] * 4  # the warm-up, then 3
    clock.order.clear()
    assert _gpu_timing.cuda_time(clock.step("b"), 3, timer=clock.timer) == pytest.approx(2.0)
    assert clock.order == ["b"] * 2  # a call over a second is timed once


def test_paired_needs_a_round():
    with pytest.raises(ValueError, match="rounds must be at least 1, got 0"):
        _gpu_timing.paired(lambda: None, lambda: None, 0, timer=lambda fn: 1.0)
