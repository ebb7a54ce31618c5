"""Timing: interleaved repeats of several implementations in one process, and a copy-bandwidth probe.

The machine is shared and noisy, so the statistic is the minimum over repeats (the run least disturbed),
with the median kept for the JSON. The implementations of one case are timed in turn within every
repeat (fastopt, NumPy, torch, fastopt, ...), so a slow phase of the machine hits all of them alike.
"""
import gc
import math
import statistics
import time
from dataclasses import dataclass

import numpy as np


@dataclass
class Timing:
    """Seconds per call of one implementation: min and median over `repeats` measurements of `number`
    calls; `samples` the measurements in repeat order (paired with the other implementations' by
    index: the ratio of repeat r is taken within one pass over the implementations)."""
    min: float
    median: float
    repeats: int
    number: int
    samples: tuple = ()

    def as_dict(self):
        return {"min_s": self.min, "median_s": self.median,
                "max_s": max(self.samples) if self.samples else None,
                "repeats": self.repeats, "number": self.number}


def calibrate(fn, min_time):
    """Calls per measurement so that one measurement lasts at least `min_time` seconds.

    Calling `fn` here is also the warm-up: first-call costs (allocation, lazy imports, page faults,
    torch's dispatcher caches) are paid before any measurement counts.
    """
    fn()
    number = 1
    while True:
        elapsed = _run(fn, number)
        if elapsed >= min_time or number >= 1_000_000:
            return number
        # Aim a little past min_time so the next try usually suffices.
        number = max(number * 2, math.ceil(number * 1.2 * min_time / max(elapsed, 1e-9)))


def measure(impls, repeat, min_time, before=None):
    """Time every callable in `impls` (name -> zero-argument callable), interleaved.

    `before(name)` runs before each measurement of `name` (the bench uses it to select the backend)
    and is not timed. Returns name -> Timing, in seconds per call.
    """
    if repeat < 1:
        raise ValueError(f"repeat must be >= 1, got {repeat}")
    names = list(impls)
    numbers = {}
    for name in names:
        if before is not None:
            before(name)
        numbers[name] = calibrate(impls[name], min_time)
    samples = {name: [] for name in names}
    for r in range(repeat):
        # Rotate the order so no implementation always runs right after the same neighbour.
        for name in names[r % len(names):] + names[:r % len(names)]:
            if before is not None:
                before(name)
            samples[name].append(_run(impls[name], numbers[name]) / numbers[name])
    return {name: Timing(min(samples[name]), statistics.median(samples[name]), repeat, numbers[name],
                         tuple(samples[name])) for name in names}


def _run(fn, number):
    """Wall time of `number` calls with the garbage collector paused (as timeit does)."""
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        start = time.perf_counter()
        for _ in range(number):
            fn()
        return time.perf_counter() - start
    finally:
        if gc_was_enabled:
            gc.enable()


def copy_bandwidth(nbytes=64 * 2**20, repeat=10):
    """Bytes per second of `np.copyto(dst, src)` on `nbytes`-sized float64 arrays, min time of `repeat`.

    A copy reads and writes every byte once, so bandwidth = 2 * nbytes / time. It is the practical
    single-thread memory roofline that the bench compares each kernel's achieved bandwidth with.
    """
    n = max(1, int(nbytes) // 8)
    src = np.ones(n)
    dst = np.empty_like(src)
    np.copyto(dst, src)  # fault the pages in before timing
    best = min(_run(lambda: np.copyto(dst, src), 1) for _ in range(max(1, repeat)))
    return 2 * src.nbytes / best
