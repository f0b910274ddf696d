"""Timing for the GPU benchmarks: the median of repeated calls, and two steps timed in alternation.

Why the second: between two processes on the same lent card, ``chunk``'s forward+backward at one size moved from
208K to 159K tokens/s (runs 18 and 19, H200) while ``triton``'s stayed at 197-198K, so a ratio of two medians taken
one after the other can say "slower" or "faster" by the drift alone. Timing the two in alternation, call by call,
lets a drift of the card (its clocks, the caching allocator, a neighbour) move both, and the median of the per-round
ratios is the figure to compare with 1.
"""

from __future__ import annotations

import statistics

import torch


def time_call(fn) -> float:
    """Seconds of one call of ``fn()`` on the current CUDA stream (CUDA events, synchronized)."""
    a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    a.record()
    fn()
    b.record()
    torch.cuda.synchronize()
    return a.elapsed_time(b) / 1e3


def cuda_time(fn, repeats: int, timer=time_call) -> float:
    """Median seconds of ``fn()`` over ``repeats`` calls after a warm-up (one timed call when a call takes over a
    second: the slow baselines at long sequences); of an even count, the mean of the middle two (runs 1-10 took the
    upper one: with the leases' two repeats, the slower call). ``timer``: how one call is timed (tests fake it)."""
    fn()
    if timer is time_call:
        torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        times.append(timer(fn))
        if times[-1] > 1.0:
            break
    return statistics.median(times)


def paired(fa, fb, rounds: int, timer=time_call) -> dict:
    """Time ``fa`` and ``fb`` in alternation after a warm-up call of each: ``rounds`` rounds of one call each, the
    order swapped every round (a b, b a, a b, ...) so that neither always runs on the other's leftovers. Returns
    ``{"ratio": median over the rounds of t_b / t_a, "a_s": median t_a, "b_s": median t_b, "rounds": rounds}``:
    the ratio is how many times faster ``fa`` is than ``fb``, from calls next to each other in time."""
    if rounds < 1:
        raise ValueError(f"paired: rounds must be at least 1, got {rounds}")
    fa(), fb()
    if timer is time_call:
        torch.cuda.synchronize()
    ta, tb = [], []
    for i in range(rounds):
        if i % 2 == 0:
            ta.append(timer(fa)), tb.append(timer(fb))
        else:
            tb.append(timer(fb)), ta.append(timer(fa))
    ratios = [b / a for a, b in zip(ta, tb)]
    return {"ratio": statistics.median(ratios), "a_s": statistics.median(ta), "b_s": statistics.median(tb),
            "rounds": rounds}
