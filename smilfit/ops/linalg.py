"""Batched decompositions of many small matrices with bounded GPU workspace.

cuSOLVER's batched ``eigh`` reserves workspace per matrix that dwarfs the matrices
themselves: on an H100 (torch 2.11, CUDA 13) one ``torch.linalg.eigh`` of 55,000 4 x 4
matrices peaked at 29 GB and one of 5.5 million asked for 2.8 TB. On CUDA these helpers
therefore split the batch into chunks of :data:`CUDA_CHUNK` matrices (every matrix is
decomposed independently, so chunks change nothing but the workspace); on the CPU they
call torch once.
"""
from __future__ import annotations

from typing import Callable, Optional, Tuple

import torch
from torch import Tensor

#: Matrices per cuSOLVER call on CUDA.
CUDA_CHUNK = 4096


def _chunked(fn: Callable[[Tensor], Tuple[Tensor, ...]], A: Tensor,
             chunk: Optional[int]) -> Tuple[Tensor, ...]:
    """``fn`` on (..., m, n) ``A`` in chunks of ``chunk`` matrices (None: CUDA_CHUNK on
    CUDA, all at once elsewhere)."""
    if chunk is None:
        chunk = CUDA_CHUNK if A.device.type == 'cuda' else 0
    lead, mat = A.shape[:-2], A.shape[-2:]
    flat = A.reshape(-1, *mat)
    if chunk <= 0 or flat.shape[0] <= chunk:
        return tuple(fn(A))
    parts = [fn(c) for c in flat.split(chunk)]
    return tuple(torch.cat(p).reshape(*lead, *p[0].shape[1:]) for p in zip(*parts))


def batched_eigh(A: Tensor, chunk: Optional[int] = None) -> Tuple[Tensor, Tensor]:
    """``torch.linalg.eigh`` of (..., n, n) symmetric matrices: eigenvalues (..., n)
    ascending and eigenvectors (..., n, n) in columns; differentiable. ``chunk``:
    matrices per call (None: :data:`CUDA_CHUNK` on CUDA, all at once elsewhere)."""
    return _chunked(torch.linalg.eigh, A, chunk)


def batched_svd(A: Tensor, chunk: Optional[int] = None) -> Tuple[Tensor, Tensor, Tensor]:
    """``torch.linalg.svd`` (reduced) of (..., m, n) matrices: ``U, S, Vh``; ``chunk`` as
    in :func:`batched_eigh`."""
    return _chunked(lambda x: torch.linalg.svd(x, full_matrices=False), A, chunk)


__all__ = ['CUDA_CHUNK', 'batched_eigh', 'batched_svd']
