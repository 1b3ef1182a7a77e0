"""Batched Cholesky factorisation and solves of many small symmetric positive definite
systems (the Levenberg-Marquardt normal equations of every sample of a batch).

On the CPU, ``torch.linalg.cholesky_ex`` of (64, 173, 173) float32 matrices spends about
40 % of its time outside LAPACK: it copies the batch to column-major order and then
zeroes the upper triangle (measured on the 2-core CPU machine: 9.7 ms per call, of which
``potrf`` ~5.5 ms). A C-ordered symmetric matrix is already its own column-major
transpose, so :func:`cholesky` hands every matrix straight to the LAPACK ``?potrf`` that
torch itself links (found by name in torch's CPU library; its thread count follows
``torch.set_num_threads``) and factorises it in place, leaving the other triangle as it
is. Where that routine is not there (another torch build, another platform, GPU
tensors), and for small matrices, it uses ``torch.linalg.cholesky_ex``. Every backend
reads only the upper triangle, so callers may build only that half, and every factor
is ``U`` with ``A = U^H U`` in the upper triangle.
"""
from __future__ import annotations

import ctypes
import functools
import os
import sys
from dataclasses import dataclass
from typing import Callable, Optional

import torch
from torch import Tensor

#: Backends of :func:`cholesky`: ``'auto'`` (LAPACK in place where possible and the
#: matrices are at least :data:`LAPACK_MIN_SIZE` wide, else torch), ``'lapack'`` (in place;
#: raises where unavailable) and ``'torch'``.
BACKENDS = ('auto', 'lapack', 'torch')

#: ``'auto'`` factorises smaller matrices with torch: its loop over the batch runs in C++,
#: this one in Python (~0.6 us a matrix), which dominates tiny factorisations (measured on
#: the 2-core CPU machine, 4096 float32 matrices: torch 0.5 / 3.4 / 18 / 146 ms, LAPACK in
#: place 2.5 / 6.5 / 17 / 140 ms at sizes 3 / 16 / 32 / 64; at (64, 173, 173) 9.7 against
#: 6.5 ms).
LAPACK_MIN_SIZE = 32


@dataclass
class Factorization:
    """The Cholesky factors of a batch of (n, P, P) matrices ``A``.

    Attributes:
        factor: (n, P, P) holding ``U`` with ``A = U^H U`` in its upper triangle; the
            lower triangle holds whatever was there (never read).
        info: (n,) int, 0 where the factorisation succeeded, ``k > 0`` where the leading
            minor of order ``k`` is not positive definite (that matrix's factor and
            solves are meaningless).
        backend: ``'lapack'`` (in place) or ``'torch'``, the one that factorised.
    """

    factor: Tensor
    info: Tensor
    backend: str = 'torch'

    def solve(self, b: Tensor) -> Tensor:
        """``A^-1 b`` for ``b`` (n, P) or (n, P, k), in the factor's dtype."""
        vector = b.dim() == self.factor.dim() - 1
        rhs = (b.unsqueeze(-1) if vector else b).to(self.factor.dtype)
        if rhs.shape[-1] > 1:   # LAPACK's potrs: faster than two solves for many columns
            x = torch.cholesky_solve(rhs, self.factor, upper=True)
        else:                   # two triangular solves: faster for one column
            x = torch.linalg.solve_triangular(self.factor, self.whiten(rhs), upper=True)
        return x.squeeze(-1) if vector else x

    def whiten(self, b: Tensor) -> Tensor:
        """``U^-H b`` for ``b`` (n, P, k): ``(U^-H b)^H (U^-H b) = b^H A^-1 b`` from one
        triangular solve."""
        return torch.linalg.solve_triangular(self.factor.mH, b.to(self.factor.dtype),
                                             upper=False)


def cholesky(A: Tensor, overwrite: bool = False, backend: str = 'auto') -> Factorization:
    """Factorise every (P, P) matrix of ``A`` (n, P, P), symmetric positive definite.

    Only the upper triangle (with the diagonal) of each matrix is read, on every
    backend: what lies below the diagonal does not matter.

    Args:
        A: (n, P, P) float32/float64 symmetric matrices.
        overwrite: let the factorisation reuse ``A``'s memory (LAPACK path; ``A`` is then
            destroyed); otherwise ``A`` is left as it was.
        backend: one of :data:`BACKENDS`.
    """
    if backend not in BACKENDS:
        raise ValueError(f'backend must be one of {BACKENDS}, got {backend!r}')
    if A.dim() != 3 or A.shape[-1] != A.shape[-2]:
        raise ValueError(f'expected (n, P, P) matrices, got {tuple(A.shape)}')
    wanted = backend == 'lapack' or (backend == 'auto' and A.shape[-1] >= LAPACK_MIN_SIZE)
    potrf = _lapack_potrf(A.dtype) if wanted and _lapack_eligible(A) else None
    if potrf is None:
        if backend == 'lapack':
            raise RuntimeError(f'no in-place LAPACK Cholesky for {A.dtype} on {A.device} '
                               'in this torch build')
        U, info = torch.linalg.cholesky_ex(A, upper=True)   # reads the upper triangle
        return Factorization(U, info=info, backend='torch')
    W = A if overwrite and A.is_contiguous() else A.clone(
        memory_format=torch.contiguous_format)
    n, P = W.shape[0], W.shape[-1]
    infos = [0] * n
    if P:
        # Each C-ordered matrix read in column-major order is its transpose, which is
        # itself: LAPACK's lower factor L lands in the C-ordered upper triangle as L^T.
        status = ctypes.c_int64(0)
        uplo, size, status_ref = ctypes.byref(ctypes.c_char(b'L')), ctypes.byref(
            ctypes.c_int64(P)), ctypes.byref(status)
        base, stride = W.data_ptr(), P * P * W.element_size()
        for i in range(n):
            status.value = 0
            potrf(uplo, size, ctypes.c_void_p(base + i * stride), size, status_ref)
            if status.value:
                infos[i] = _lapack_int(status.value)
    return Factorization(W, info=torch.tensor(infos, dtype=torch.int32), backend='lapack')


def _lapack_eligible(A: Tensor) -> bool:
    return (A.device.type == 'cpu' and A.dtype in (torch.float32, torch.float64)
            and not A.requires_grad and sys.byteorder == 'little')


def _lapack_int(value: int) -> int:
    """LAPACK's ``info`` read from an 8-byte slot: an LP64 library writes its low 4 bytes
    only (the slot is zeroed before), an ILP64 one all 8; both agree on the low 4."""
    low = value & 0xFFFFFFFF
    return low - (1 << 32) if low >= (1 << 31) else low


@functools.lru_cache(maxsize=None)
def _lapack_potrf(dtype: torch.dtype) -> Optional[Callable]:
    """torch's own LAPACK ``spotrf_``/``dpotrf_``, or ``None`` where this torch build
    exports none (or the one it exports fails a known factorisation).

    Integer arguments are passed as 8-byte little-endian values, which read the same as
    4-byte LP64 and 8-byte ILP64 integers."""
    name = {torch.float32: 'spotrf_', torch.float64: 'dpotrf_'}.get(dtype)
    if name is None:
        return None
    lib_dir = os.path.join(os.path.dirname(torch.__file__), 'lib')
    for lib_name in ('libtorch_cpu.so', 'libtorch_cpu.dylib'):
        path = os.path.join(lib_dir, lib_name)
        if not os.path.exists(path):
            continue
        try:
            fn = getattr(ctypes.CDLL(path), name)
        except (OSError, AttributeError):
            continue
        fn.restype = None
        if _check_potrf(fn, dtype):
            return fn
    return None


def _check_potrf(fn: Callable, dtype: torch.dtype) -> bool:
    """Factorise a known 3 x 3 matrix and an indefinite one: the exact factor and
    ``info`` = 2 (the order of the first non-positive minor) must come back."""
    A = torch.tensor([[4.0, 2.0, 2.0], [2.0, 10.0, 7.0], [2.0, 7.0, 21.0]], dtype=dtype)
    upper = torch.tensor([[2.0, 1.0, 1.0], [0.0, 3.0, 2.0], [0.0, 0.0, 4.0]], dtype=dtype)
    bad = torch.tensor([[1.0, 2.0, 0.0], [2.0, 1.0, 0.0], [0.0, 0.0, 1.0]], dtype=dtype)
    uplo, size = ctypes.c_char(b'L'), ctypes.c_int64(3)
    infos = []
    for M in (A.clone(), bad.clone()):
        status = ctypes.c_int64(0)
        fn(ctypes.byref(uplo), ctypes.byref(size), ctypes.c_void_p(M.data_ptr()),
           ctypes.byref(size), ctypes.byref(status))
        infos.append((M, _lapack_int(status.value)))
    (M, info_a), (_, info_bad) = infos
    return info_a == 0 and info_bad == 2 and torch.allclose(torch.triu(M), upper)


def lapack_available(dtype: torch.dtype = torch.float32) -> bool:
    """Whether :func:`cholesky` factorises ``dtype`` CPU matrices in place by LAPACK."""
    return _lapack_potrf(dtype) is not None


__all__ = ['BACKENDS', 'LAPACK_MIN_SIZE', 'Factorization', 'cholesky', 'lapack_available']
