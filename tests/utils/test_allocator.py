"""keep_freed_memory: freed large blocks are reused without new page faults."""
import os
import subprocess
import sys

import pytest

_SCRIPT = r"""
import resource, torch
def cycle():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(5):
        x = torch.zeros(2 ** 21)  # 8 MiB, as an LM batch's normal equations
        del x
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
cycle()
plain = cycle()
from smilfit.utils.allocator import keep_freed_memory
applied = keep_freed_memory()
cycle()
print(plain, cycle(), int(applied))
"""


@pytest.mark.skipif(not sys.platform.startswith('linux'), reason='glibc mallopt')
def test_freed_blocks_are_reused_without_page_faults():
    # glibc's default threshold (128 KiB) set explicitly, which turns its adaptive
    # thresholds off: otherwise the warm-up's frees may already raise them so far that the
    # plain cycles fault nothing in (1 run in 10 here), and the test measures luck.
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_='131072')
    out = subprocess.run([sys.executable, '-c', _SCRIPT], capture_output=True, text=True,
                         check=True, env=env).stdout.split()
    plain, kept, applied = (int(v) for v in out)
    if not applied:
        pytest.skip('no glibc mallopt here')
    # blocks of 2048 pages: at glibc's default threshold each is faulted in again after
    # being freed; once kept, none are
    assert plain >= 2048
    assert kept < plain / 10
