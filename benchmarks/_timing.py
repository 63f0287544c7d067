"""Wall-clock timing of GPU work: synchronised at both ends of each call."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch


def sync(device: torch.device) -> None:
    """Waits for the device's queued work (a no-op off CUDA)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device, repeats: int, *, warmup: bool = False) -> list[float]:
    """Seconds of each of ``repeats`` calls of ``fn`` (after one untimed call when ``warmup``)."""
    if warmup:
        fn()
    times = []
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return times


def per_call(fn: Callable[[], object], device: torch.device, calls: int, repeats: int) -> float:
    """Milliseconds per call: ``calls`` calls queued between two synchronisations (as a model runs them: the host
    prepares a call while the device runs the previous one), the median over ``repeats`` rounds, after one call."""
    fn()
    times = []
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        sync(device)
        times.append((time.perf_counter() - t0) / calls * 1e3)
    return statistics.median(times)
