"""Small timing helpers: bounded, repeated, interleaved; medians in nanoseconds."""

from __future__ import annotations

import gc
import statistics
import time
import timeit
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

perf_ns = time.perf_counter_ns


@dataclass
class Stat:
    """Per-operation figures (ns/op) over the repeats of one measurement."""

    runs: list[float]
    n: int  # operations per repeat

    @property
    def median(self) -> float:
        return statistics.median(self.runs)

    @property
    def best(self) -> float:
        return min(self.runs)

    @property
    def spread(self) -> float:
        """(max - min) / median: how noisy the repeats were."""
        m = self.median
        return (max(self.runs) - min(self.runs)) / m if m else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"median_ns": self.median, "best_ns": self.best, "spread": self.spread,
                "ops_per_repeat": self.n, "runs_ns": self.runs}


def paired_ratio(a: Stat, b: Stat) -> float:
    """Median over repeats of a/b, each repeat's pair timed back to back: steadier on a
    busy machine than the ratio of the two medians."""
    return statistics.median(x / y for x, y in zip(a.runs, b.runs, strict=True))


def paired_ratio_d(a: Mapping[str, Any], b: Mapping[str, Any]) -> float:
    """paired_ratio for the dict form (Stat.to_dict)."""
    return statistics.median(x / y for x, y in zip(a["runs_ns"], b["runs_ns"], strict=True))


def calibrate(timer: timeit.Timer, target_ns: float, max_n: int) -> int:
    """Loop count so that one repeat takes about ``target_ns`` (never above ``max_n``)."""
    n = 1
    while True:
        dt = timer.timeit(n)
        if dt >= target_ns / 10 or n >= max_n:
            break
        n = min(max_n, n * 10)
    return max(1, min(max_n, int(n * target_ns / max(dt, 1))))


def micro_interleaved(cases: Mapping[str, tuple[str, dict[str, Any]]], *, repeats: int,
                      target_s: float, max_n: int = 20_000_000) -> dict[str, Stat]:
    """ns/op of each statement, timed with ``timeit`` (statement inlined in the loop, GC
    off) on ``time.perf_counter_ns``; the repeats go round-robin across the cases so
    that a noisy moment hits all of them alike."""
    timers = {k: timeit.Timer(stmt, globals=ns, timer=perf_ns)
              for k, (stmt, ns) in cases.items()}
    counts = {k: calibrate(t, target_s * 1e9, max_n) for k, t in timers.items()}
    runs: dict[str, list[float]] = {k: [] for k in cases}
    for _ in range(repeats):
        for k, t in timers.items():
            runs[k].append(t.timeit(counts[k]) / counts[k])
    return {k: Stat(runs[k], counts[k]) for k in cases}


def timed_blocks(cases: Mapping[str, Callable[[Sequence[Any]], None]],
                 seqs: Sequence[Sequence[Any]]) -> dict[str, Stat]:
    """Each case run over the same pre-generated sequence in each repeat; the order
    of the cases rotates between repeats so that neither always runs on warmer caches."""
    names = list(cases)
    runs: dict[str, list[float]] = {k: [] for k in names}
    for r, seq in enumerate(seqs):
        order = names[r % len(names):] + names[:r % len(names)]
        for k in order:
            gc.collect()
            t0 = perf_ns()
            cases[k](seq)
            runs[k].append((perf_ns() - t0) / len(seq))
    return {k: Stat(runs[k], len(seqs[0])) for k in names}


def fmt_ns(ns: float) -> str:
    if ns < 1_000:
        return f"{ns:,.0f} ns"
    if ns < 1_000_000:
        return f"{ns / 1_000:,.2f} µs"
    if ns < 1_000_000_000:
        return f"{ns / 1_000_000:,.1f} ms"
    return f"{ns / 1e9:,.2f} s"
