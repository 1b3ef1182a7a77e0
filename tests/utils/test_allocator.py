"""keep_freed_memory: freed large blocks are reused without new page faults."""
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
    out = subprocess.run([sys.executable, '-c', _SCRIPT], capture_output=True, text=True,
                         check=True).stdout.split()
    plain, kept, applied = (int(v) for v in out)
    if not applied:
        pytest.skip('no glibc mallopt here')
    # blocks of 2048 pages: by default (some of) them are faulted in again after being
    # freed (how many depends on glibc's adaptive thresholds); once kept, none are
    assert plain >= 2048
    assert kept < plain / 10
