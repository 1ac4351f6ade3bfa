"""What a call costs: wall-clock seconds and peak memory, measured in this process.

Peak memory is the largest increase over the memory in use when the call starts:

* CUDA (the model on a GPU): ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``;
* CPU: the resident set size (``/proc/self/statm``) sampled by a background thread every ``interval``
  seconds, minus the resident size at the start. Before the start, freed heap memory is handed back to the
  operating system (glibc ``malloc_trim``), so that memory the call reuses from earlier work still counts.
  Allocations that live shorter than ``interval`` can be missed; where ``/proc`` is unavailable the peak
  is reported as ``None``.

Every figure of one comparison comes from the same process, with the same thread count, so their ratios
are meaningful; absolute seconds depend on the machine and its load.
"""

from __future__ import annotations

import ctypes
import os
import threading
import time
from typing import Callable

import torch

__all__ = ["measure", "seconds_per_1000", "PeakMemory", "resident_bytes"]

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def resident_bytes() -> int | None:
    """Resident set size of this process in bytes, or ``None`` where ``/proc`` is unavailable."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return None


def _release_free_heap() -> None:
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class PeakMemory:
    """Context manager measuring the peak memory increase (bytes) of its body: ``.peak`` after exit.

    Args:
        device: where the work happens; CUDA devices use the allocator's own peak statistics.
        interval: CPU sampling period in seconds.
    """

    def __init__(self, device: torch.device | str | None = None, interval: float = 0.002):
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.interval = interval
        self.peak: int | None = None

    def __enter__(self) -> "PeakMemory":
        _release_free_heap()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._start = torch.cuda.memory_allocated(self.device)
            return self
        self._start = resident_bytes()
        self._max = self._start
        self._stop = threading.Event()
        if self._start is not None:
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.is_set():
            rss = resident_bytes()
            if rss is not None and rss > self._max:
                self._max = rss
            time.sleep(self.interval)

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak = torch.cuda.max_memory_allocated(self.device) - self._start
            return
        if self._start is None:
            return
        self._stop.set()
        self._thread.join()
        end = resident_bytes()
        self.peak = max(self._max, end or 0) - self._start


def timed(fn: Callable, *args, device=None, **kwargs):
    """Call ``fn(*args, **kwargs)``; return ``(result, seconds)``, the wall-clock time of the call (the work queued
    on a CUDA ``device`` synchronised)."""
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    device = torch.device(device) if device is not None else None
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)
    return result, time.perf_counter() - start


def measure(fn: Callable, *args, device=None, **kwargs):
    """Call ``fn(*args, **kwargs)``; return ``(result, seconds, peak_bytes)``.

    ``seconds`` is the wall-clock time of the call (:func:`timed`) and ``peak_bytes`` the peak memory increase
    (see :class:`PeakMemory`; ``None`` where it cannot be measured).
    """
    memory = PeakMemory(device)
    with memory:
        result, seconds = timed(fn, *args, device=memory.device, **kwargs)
    return result, seconds, memory.peak


def seconds_per_1000(predict: Callable, x: torch.Tensor, repeats: int = 3, batch_size: int = 1000) -> list[float]:
    """Seconds per 1,000 inputs of ``predict`` over ``x`` (already on the model's device) in pieces of ``batch_size``,
    ``repeats`` times after a warm-up call on 8 inputs: a median and its spread, on a noisy machine."""
    predict(x[:8])
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for piece in x.split(batch_size):
            predict(piece)
        if x.device.type == "cuda":
            torch.cuda.synchronize(x.device)
        times.append((time.perf_counter() - start) * 1000 / len(x))
    return times
