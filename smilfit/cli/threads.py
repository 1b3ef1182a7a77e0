"""CPU threads of a tool's process, set before torch loads OpenMP.

OpenMP's threads spin while they wait for work by default. Next to another busy process
that made fitting 5x slower with 2 threads (the stick benchmark: 31 frames/s spinning, 124
waiting passively, 173 with one thread), and training a ResNet-18 on the 2-core machine
1.5x slower (4.5 against 3.0 s an iteration, with a busy process beside it; idle, passive
waiting costs about 10 %: 2.1 against 1.9 s). So a tool that runs more than one thread asks
OpenMP to wait passively, unless the user chose a policy. This module imports nothing heavy:
it runs before torch is imported.
"""
from __future__ import annotations

import os
from typing import Optional

__all__ = ['usable_cores', 'training_threads', 'wait_passively_if_threaded']


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity mask, e.g. a SLURM or
    ``taskset`` allocation), else all of the machine's."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # (no affinity masks on macOS and Windows)
        return max(1, os.cpu_count() or 1)


def training_threads(requested: Optional[int]) -> int:
    """Threads for one training process: ``requested``, else ``OMP_NUM_THREADS`` where the
    user set it, else the process's share of the usable cores among the processes a
    launcher started on this machine (``LOCAL_WORLD_SIZE``, set by torchrun), at least 1.

    Raises:
        ValueError: ``requested`` is below 1.
    """
    if requested is not None:
        if requested < 1:
            raise ValueError(f'--threads must be >= 1, got {requested}')
        return requested
    preset = os.environ.get('OMP_NUM_THREADS', '')
    if preset.isdigit() and int(preset) >= 1:
        return int(preset)
    local_processes = max(1, int(os.environ.get('LOCAL_WORLD_SIZE', '1') or 1))
    return max(1, usable_cores() // local_processes)


def wait_passively_if_threaded(threads: int) -> None:
    """With more than one thread, ``OMP_WAIT_POLICY=PASSIVE`` unless already set. OpenMP
    reads it when torch loads, so call this before the first torch import."""
    if threads > 1:
        os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')
