"""Keep freed memory in the process instead of handing it back to the system.

A fitting iteration allocates and frees the same large buffers again and again (the
normal equations of a batch: B x P x P, megabytes each). glibc serves blocks that large
with ``mmap`` and unmaps them when freed, so every iteration's buffers are new pages the
kernel must fault in and zero: on the stick-insect benchmark that was a third of the
normal equations' time (PyTorch's CPU tuning guide makes the same point when it
suggests jemalloc or tcmalloc). :func:`keep_freed_memory` tells glibc to serve blocks up
to 32 MiB (its largest allowed threshold) from the heap and not to trim the heap, so
the next iteration reuses the same pages. The process's peak memory is unchanged; it
just does not shrink back after the peak. Called by the fitting entry points
(``tools/fit.py``) and benchmarks; nothing happens on platforms without glibc.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import sys

# mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
#: glibc's largest mmap threshold on 64-bit systems (DEFAULT_MMAP_THRESHOLD_MAX).
MMAP_THRESHOLD = 32 * 2 ** 20


def keep_freed_memory() -> bool:
    """Serve blocks up to 32 MiB from the heap and never trim it (glibc ``mallopt``).

    Returns:
        whether both settings were applied (``False`` off Linux or without glibc).
    """
    if not sys.platform.startswith('linux'):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library('c') or 'libc.so.6')
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and others have no mallopt
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # The trim threshold is an int: its largest value keeps the heap's top.
    trimmed = mallopt(_M_TRIM_THRESHOLD, 2 ** 31 - 1)
    mapped = mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)
    return bool(trimmed) and bool(mapped)


__all__ = ['keep_freed_memory', 'MMAP_THRESHOLD']
