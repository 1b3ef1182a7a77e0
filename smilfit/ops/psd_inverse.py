"""Inverses of symmetric positive semi-definite matrices known only to their rounding.

A sample's normal matrix ``J^T J`` (plus weak priors) is singular along directions its
data leave free (a bone's twist where only the bone's ends are labelled): its curvature
there is a prior's, many orders of magnitude below the rest, and accumulated in float32 it
is below the matrix's own rounding error. Whether a Cholesky factorisation of such a
matrix then succeeds is decided by that rounding (and so by the order of its sums, which a
BLAS may change from run to run), and its inverse along those directions is noise either
way. :func:`psd_inverse` factorises the matrices that fail again, in float64, with a ridge
relative to each column's own diagonal (*Jacobi-scaled*: free of the parameters' units),
from ``16 eps`` of the matrices' dtype up by tenfolds until it succeeds: along a free
direction the variance is then as large as the matrix's precision allows (far above any
direction the data see), never undefined. A parameter without any information (a 0
diagonal) is left to the caller: its row and column of the inverse are 0.
"""
from __future__ import annotations

import math
from typing import Tuple

import torch

from .spd_inverse import identity_where

Tensor = torch.Tensor

#: Rounding errors of the matrices' dtype in the first ridge tried (as the solver's
#: tolerances: a relative gain below 16 rounding errors is noise).
RIDGE_ROUNDING = 16.0


def psd_inverse(A: Tensor, rhs: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
    """The inverses of symmetric positive semi-definite matrices and solves with them.

    Args:
        A: (n, P, P) symmetric matrices (both triangles are read).
        rhs: (n, P) right-hand sides.

    Returns:
        ``(inverse (n, P, P), solution (n, P), ridge (n,))`` in ``A``'s dtype: each matrix's
        inverse and ``A^-1 rhs``, where its Cholesky factorisation fails with ``A + r D``
        instead (``D`` its diagonal, ``r`` the smallest of ``16 eps, 160 eps, ... 1`` for
        which float64's succeeds: ``ridge``, 0 where ``A`` itself was factorised; all
        three NaN where even ``r = 1`` fails: a matrix not positive semi-definite, or not
        finite).
        A column whose diagonal is 0 (a parameter with no effect and no prior: nothing
        is known of it) has 0 in its row and column of the inverse and in the solution.
    """
    factor, info = torch.linalg.cholesky_ex(A)
    failed = info != 0
    factor = identity_where(factor, failed)
    inverse = torch.cholesky_inverse(factor)
    solution = torch.cholesky_solve(rhs[..., None], factor)[..., 0]
    ridge = A.new_zeros(A.shape[0])
    if bool(failed.any()):
        at = torch.nonzero(failed).flatten()
        inv, sol, r = _ridged(A[at], rhs[at], torch.finfo(A.dtype).eps)
        inverse[at], solution[at], ridge[at] = inv.to(A.dtype), sol.to(A.dtype), r.to(A.dtype)
    return inverse, solution, ridge


def _ridged(A: Tensor, rhs: Tensor, eps: float) -> Tuple[Tensor, Tensor, Tensor]:
    """:func:`psd_inverse` of matrices whose own factorisation failed, in float64 (the
    ridge ladder of the module docstring)."""
    A, rhs = A.to(torch.float64), rhs.to(torch.float64)
    diag = A.diagonal(dim1=-2, dim2=-1)
    free = diag == 0                               # no effect: no information at all
    negative = (diag < 0).any(1)                   # not positive semi-definite
    scale = torch.where(free, torch.ones_like(diag), diag.clamp_min(1e-300).rsqrt())
    scaled = A * scale[:, :, None] * scale[:, None, :]
    # a column without information stands alone (its row and column out, 1 on the diagonal)
    keep = (~free).to(A.dtype)
    scaled = scaled * keep[:, :, None] * keep[:, None, :] + torch.diag_embed(free.to(A.dtype))
    n, P = diag.shape
    eye = torch.eye(P, dtype=A.dtype, device=A.device)
    factor = eye.expand(n, P, P).clone()
    ridge = torch.full((n,), math.nan, dtype=A.dtype, device=A.device)
    first = RIDGE_ROUNDING * eps
    levels = max(int(math.ceil(math.log10(1.0 / first))), 0) + 1
    for level in range(levels):
        todo = torch.isnan(ridge) & ~negative
        if not bool(todo.any()):
            break
        r = min(first * 10.0 ** level, 1.0)
        L, info = torch.linalg.cholesky_ex(scaled[todo] + r * eye)
        done = info == 0
        at = torch.nonzero(todo).flatten()[done]
        factor[at], ridge[at] = L[done], r
    inverse = torch.cholesky_inverse(factor) * scale[:, :, None] * scale[:, None, :]
    solution = torch.cholesky_solve((rhs * scale)[..., None], factor)[..., 0] * scale
    inverse = inverse * keep[:, :, None] * keep[:, None, :]
    solution = solution * keep
    # even a ridge of 1 failed: not positive semi-definite (or not finite), nothing known
    never = torch.isnan(ridge) | negative
    ridge = ridge.masked_fill(never, math.nan)
    inverse = inverse.masked_fill(never[:, None, None], math.nan)
    solution = solution.masked_fill(never[:, None], math.nan)
    return inverse, solution, ridge


__all__ = ['psd_inverse', 'RIDGE_ROUNDING']
