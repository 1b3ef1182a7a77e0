"""Sharding batch jobs (fitting, registration) over processes through mmengine's dist layer.

Under ``torchrun`` (``launcher='pytorch'``), SLURM or MPI every rank takes every
``world``-th batch, writes its own chunk files, and rank 0 merges them after a barrier.
CPU-only runs use gloo through :func:`smilfit.engine.compat.init_dist_cpu_safe` (mmengine's
own ``init_dist`` would call ``torch.cuda.set_device``).
"""
from __future__ import annotations

import os
from typing import Tuple
from smilfit.engine.compat import init_dist_cpu_safe


def setup_distributed(launcher: str, device: str) -> Tuple[int, int, str]:
    """Initialise the process group when launched; ``(rank, world size, device)``.

    ``device='cuda'`` becomes ``cuda:<local rank>`` under a launcher.
    """
    from mmengine.dist import get_dist_info
    if launcher not in ('none', 'pytorch', 'slurm', 'mpi'):
        raise ValueError(f"launcher must be 'none', 'pytorch', 'slurm' or 'mpi', got "
                         f'{launcher!r}')
    if launcher != 'none':
        import torch.distributed as tdist
        if not tdist.is_initialized():
            on_cpu = str(device).split(':')[0] == 'cpu'
            init_dist_cpu_safe(launcher, backend='gloo' if on_cpu else None, cpu=on_cpu)
    rank, world = get_dist_info()
    if launcher != 'none' and device == 'cuda':
        device = f'cuda:{int(os.environ.get("LOCAL_RANK", rank))}'
    return rank, world, device


def barrier(world: int) -> None:
    """Wait for every rank (a no-op in one process)."""
    if world > 1:
        from mmengine.dist import barrier as mm_barrier
        mm_barrier()


__all__ = ['setup_distributed', 'barrier']
