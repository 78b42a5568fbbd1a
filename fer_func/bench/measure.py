"""Honest timing of one implementation's step: compile/warm-up apart, medians, syncs, memory, recompiles.

The first step (compile included) is reported as ``compile_s`` and never mixed into ``step_s``;
``warmup`` further steps absorb lazy initialisation (allocator growth, autotuning) before the
``steps`` timed ones. Each timed step ends in a device sync (CUDA events on GPU), so the median
is of real work, not of kernel launches.

Implementations are timed interleaved (:func:`time_interleaved`): one timed step of each per round,
so a drifting load on a shared machine hits them alike; ``time_steps`` times one alone.

Recompiles: ``torch._dynamo`` counts every graph it compiles; any new graph during the timed
steps is a recompile (the population step must show zero across steps).
Peak memory: CUDA's allocator peak on GPU; on CPU the peak resident-set growth over the process's
size before the implementation was built, sampled every 2 ms by a thread (approximate, and it
includes memory glibc keeps cached instead of returning it).
"""
from __future__ import annotations

import statistics
import threading
import time
from typing import Callable

import torch

PAGE = 4096


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


class _RssPeak:
    """Samples the resident set size in a thread; torch ops release the GIL, so it runs during steps."""

    def __init__(self, period_s: float = 0.002):
        self.base, self.peak, self.period, self._stop = _rss_bytes(), 0, period_s, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, _rss_bytes())
            time.sleep(self.period)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss_bytes())

    @property
    def growth_mb(self) -> float:
        return (self.peak - self.base) / 2**20


def unique_graphs() -> int:
    from torch._dynamo.utils import counters
    return int(counters["stats"]["unique_graphs"])


def _clock(device: torch.device, autocast: torch.dtype | None):
    """``(sync, timed)``: a device sync, and ``timed(step, j)`` -> seconds of one synchronised step."""
    cuda = device.type == "cuda"
    sync = (lambda: torch.cuda.synchronize(device)) if cuda else (lambda: None)

    def cast():
        return torch.autocast(device.type, dtype=autocast) if autocast else torch.autocast(device.type, enabled=False)

    def timed(step, j) -> float:
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            with cast():
                step(j)
            end.record()
            end.synchronize()
            return start.elapsed_time(end) / 1000
        t = time.perf_counter()
        with cast():
            step(j)
        return time.perf_counter() - t

    return sync, timed


def _warmed(build, device, sync, timed, warmup: int) -> tuple[Callable[[int], None], float, float]:
    """Build, run the compile step and ``warmup`` more; returns ``(step, compile_s, peak_mem_mb)``."""
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    with _RssPeak() as rss:
        step = build()
        sync()
        t = time.perf_counter()
        timed(step, 0)
        sync()
        compile_s = time.perf_counter() - t  # wall clock: compilation happens on the host, not between CUDA events
        for j in range(1, 1 + warmup):
            timed(step, j)
        sync()
    peak = (torch.cuda.max_memory_allocated(device) - base) / 2**20 if cuda else rss.growth_mb
    return step, compile_s, peak


def _result(compile_s, times, peak, recompiles) -> dict:
    return {"compile_s": compile_s, "step_s": statistics.median(times), "step_s_min": min(times),
            "step_s_all": times, "peak_mem_mb": peak, "recompiles": recompiles}


def time_steps(build: Callable[[], Callable[[int], None]], device: torch.device, *, steps: int, warmup: int = 2,
               autocast: torch.dtype | None = None) -> dict:
    """Build an implementation and time it; returns compile_s, step_s (median), peak_mem_mb, recompiles."""
    return time_interleaved({"only": build}, device, steps=steps, warmup=warmup, autocast=autocast)["only"]


def time_interleaved(builds: dict[str, Callable[[], Callable[[int], None]]], device: torch.device, *, steps: int,
                     warmup: int = 2, autocast: torch.dtype | None = None) -> dict[str, dict]:
    """Time several implementations with their timed steps interleaved, round by round.

    Each is built, compiled and warmed up in turn (``compile_s`` and ``peak_mem_mb`` are its own),
    then every round runs one timed step of each, the order rotating by one per round. On a shared
    machine whose load drifts over minutes, every implementation then sees the same conditions,
    so their ratio is stable even when absolute times are not. Recompiles are attributed to the
    implementation whose step triggered them.
    """
    sync, timed = _clock(device, autocast)
    names = list(builds)
    warm = {n: _warmed(builds[n], device, sync, timed, warmup) for n in names}
    times = {n: [] for n in names}
    recompiles = dict.fromkeys(names, 0)
    for r in range(steps):
        for n in names[r % len(names):] + names[:r % len(names)]:
            before = unique_graphs()
            times[n].append(timed(warm[n][0], 1 + warmup + r))
            recompiles[n] += unique_graphs() - before
    return {n: _result(warm[n][1], times[n], warm[n][2], recompiles[n]) for n in names}
