"""Honest timing of one implementation's step: compile/warm-up apart, medians, syncs, memory, recompiles.

The first step (compile included) is reported as ``compile_s`` and never mixed into ``step_s``;
``warmup`` further steps absorb lazy initialisation (allocator growth, autotuning) before the
``steps`` timed ones. Each timed step ends in a device sync (CUDA events on GPU), so the median
is of real work, not of kernel launches.

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


def time_steps(build: Callable[[], Callable[[int], None]], device: torch.device, *, steps: int, warmup: int = 2,
               autocast: torch.dtype | None = None) -> dict:
    """Build an implementation and time it; returns compile_s, step_s (median), peak_mem_mb, recompiles."""
    cuda = device.type == "cuda"
    sync = (lambda: torch.cuda.synchronize(device)) if cuda else (lambda: None)
    cast = (lambda: torch.autocast(device.type, dtype=autocast)) if autocast else (lambda: torch.autocast(device.type, enabled=False))
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    with _RssPeak() as rss:
        step = build()
        sync()
        t = time.perf_counter()
        with cast():
            step(0)
        sync()
        compile_s = time.perf_counter() - t
        with cast():
            for j in range(1, 1 + warmup):
                step(j)
        sync()
        graphs = unique_graphs()
        times = []
        for j in range(1 + warmup, 1 + warmup + steps):
            if cuda:
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                with cast():
                    step(j)
                end.record()
                end.synchronize()
                times.append(start.elapsed_time(end) / 1000)
            else:
                t = time.perf_counter()
                with cast():
                    step(j)
                times.append(time.perf_counter() - t)
        recompiles = unique_graphs() - graphs
    peak = (torch.cuda.max_memory_allocated(device) - base) / 2**20 if cuda else rss.growth_mb
    return {"compile_s": compile_s, "step_s": statistics.median(times), "step_s_min": min(times),
            "step_s_all": times, "peak_mem_mb": peak, "recompiles": recompiles}
