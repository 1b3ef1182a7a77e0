"""Shared timing helper of the benchmark scripts."""
from __future__ import annotations

import statistics
import time
from typing import Callable, List

import torch


def time_call(fn: Callable[[], object], device: torch.device, min_time: float = 0.3,
              min_reps: int = 5, warmup: int = 2, max_reps: int = 200) -> float:
    """Median wall time of ``fn`` in milliseconds (synchronising CUDA).

    Runs ``warmup`` calls, then at least ``min_reps`` and ``min_time`` seconds' worth
    (at most ``max_reps``).
    """
    sync = torch.cuda.synchronize if device.type == 'cuda' else (lambda: None)
    for _ in range(warmup):
        fn()
    sync()
    times: List[float] = []
    start = time.perf_counter()
    while len(times) < min_reps or time.perf_counter() - start < min_time:
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
        if len(times) >= max_reps:
            break
    return 1e3 * statistics.median(times)
