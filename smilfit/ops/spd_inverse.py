"""Inverses of batches of small symmetric positive definite matrices, with most of the
arithmetic in matrix products.

LAPACK's Cholesky factorisation and inverse (``potrf``, ``potri``) of matrices a few dozen
wide run far below the speed of a matrix product of the same size: on the 2-core CPU
machine, one thread, float32 and 84 wide, about 7 GFlop/s against 60-85 for ``bmm``.
:func:`spd_inverse` splits a matrix ``[[A, B], [B^T, C]]`` into halves and inverts it
through the Schur complement ``S = C - B^T A^-1 B``::

    [[A^-1 + X S^-1 X^T, -X S^-1], [-(X S^-1)^T, S^-1]]      with X = A^-1 B

which leaves two inverses of half the width (an eighth of the work each) and four
products. Below :data:`BLOCK_MIN_SIZE` the halves' products no longer pay for their
extra calls and the matrix is inverted by LAPACK directly.
"""
from __future__ import annotations

from typing import Tuple

import torch

Tensor = torch.Tensor

#: Matrices at least this wide are inverted as 2 x 2 blocks, recursively (measured on the
#: 2-core CPU machine, one thread, batches of 4 and 64, against ``cholesky_ex`` +
#: ``cholesky_inverse``: 0.60-0.85x the time at 128 wide, 0.74-0.96x at 84, 0.85-1.25x
#: at 64; float32 and float64).
BLOCK_MIN_SIZE = 80


def spd_inverse(A: Tensor) -> Tuple[Tensor, Tensor]:
    """The inverses of symmetric positive definite matrices.

    Args:
        A: (..., n, n) symmetric matrices (both triangles are read).

    Returns:
        ``(inverse (..., n, n), info (...) int32)``: ``info`` is 0 where the matrix is
        positive definite; elsewhere that matrix's inverse is meaningless (but finite:
        the failed factor is replaced by the identity, so nothing non-finite reaches the
        other matrices of a caller's computation).
    """
    n = A.shape[-1]
    if n < BLOCK_MIN_SIZE:
        L, info = torch.linalg.cholesky_ex(A)
        return torch.cholesky_inverse(identity_where(L, info != 0)), info.to(torch.int32)
    k = n // 2
    top, corner, bottom = A[..., :k, :k], A[..., :k, k:], A[..., k:, k:]
    top_inverse, top_info = spd_inverse(top)
    X = top_inverse @ corner                                  # A^-1 B
    schur_inverse, schur_info = spd_inverse(bottom - corner.mT @ X)
    Y = -(X @ schur_inverse)                                  # -A^-1 B S^-1
    out = torch.cat([torch.cat([top_inverse - Y @ X.mT, Y], -1),
                     torch.cat([Y.mT, schur_inverse], -1)], -2)
    # a matrix is positive definite exactly where its leading block and that block's
    # Schur complement are
    return out, top_info | schur_info


def identity_where(L: Tensor, failed: Tensor) -> Tensor:
    """Cholesky factors ``L`` (..., n, n) with the identity where the factorisation
    ``failed`` (...) (so that no NaN spreads to the other matrices of a batched
    computation; the failed ones' answers are to be discarded)."""
    if not bool(failed.any()):
        return L
    eye = torch.eye(L.shape[-1], dtype=L.dtype, device=L.device)
    return torch.where(failed[..., None, None], eye, L)


__all__ = ['BLOCK_MIN_SIZE', 'spd_inverse', 'identity_where']
