"""Block-banded Cholesky: the normal equations of frames coupled in time.

Frames of one animal coupled by a temporal term (a velocity couples each frame to the one
before, an acceleration to the two before) give a symmetric block-banded system: block
row ``t`` meets rows ``t - b .. t + b`` only (``b`` = 1 or 2). Its Cholesky factor keeps
the band, so a chain of ``T`` frames of ``P`` parameters costs ``O(T b^2 P^3)``, linear in
the chain's length, never the ``(T P)^3`` of a dense factorisation:

    L_{t,t-d} = (A_{t,t-d} - sum_{e>d} L_{t,t-e} L_{t-d,t-e}^T) L_{t-d,t-d}^-T
    L_{t,t}   = chol(A_{t,t} - sum_d L_{t,t-d} L_{t,t-d}^T)

The chains of a batch are factorised together, one block row at a time; chains are
sorted longest first, so the chains still running at row ``t`` are a prefix of the
batch and a short chain costs its own rows only (no padding is factorised).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List

import torch

Tensor = torch.Tensor


@dataclass
class BandedFactor:
    """The Cholesky factor of a batch of block-banded systems (see the module).

    Attributes:
        diagonal: (C, T, P, P) lower-triangular ``L_{t,t}``.
        below: (C, T, b, P, P) ``L_{t,t-d}`` at ``[:, t, d - 1]``.
        counts: per row ``t``, how many chains (a prefix) have a row ``t``.
        info: (C,) int, 0 where every block of the chain was positive definite.
    """

    diagonal: Tensor
    below: Tensor
    counts: List[int]
    info: Tensor

    def solve(self, rhs: Tensor) -> Tensor:
        """``A^-1 rhs`` for ``rhs`` (C, T, P) or (C, T, P, k) (rows past a chain's end:
        0)."""
        vector = rhs.dim() == 3
        rhs = rhs[..., None] if vector else rhs
        L, Lb, counts = self.diagonal, self.below, self.counts
        T, b = L.shape[1], Lb.shape[2]
        z = torch.zeros_like(rhs)
        for t in range(T):                      # forward: L z = rhs
            n = counts[t]
            r = rhs[:n, t]
            for d in range(1, min(b, t) + 1):
                r = r - Lb[:n, t, d - 1] @ z[:n, t - d]
            z[:n, t] = torch.linalg.solve_triangular(L[:n, t], r, upper=False)
        x = torch.zeros_like(rhs)
        for t in range(T - 1, -1, -1):          # backward: L^T x = z
            n = counts[t]
            r = z[:n, t]
            for d in range(1, b + 1):
                if t + d >= T:
                    break
                m = counts[t + d]               # (chains reaching row t + d: a prefix)
                if m:
                    r = torch.cat([r[:m] - Lb[:m, t + d, d - 1].mT @ x[:m, t + d], r[m:]])
            x[:n, t] = torch.linalg.solve_triangular(L[:n, t].mT, r, upper=True)
        return x[..., 0] if vector else x


def banded_cholesky(diagonal: Tensor, below: Tensor, lengths: Tensor) -> BandedFactor:
    """Factorise the block-banded symmetric systems of a batch of chains.

    Args:
        diagonal: (C, T, P, P) the diagonal blocks ``A_{t,t}``.
        below: (C, T, b, P, P) the blocks below the diagonal, ``A_{t,t-d}`` at
            ``[:, t, d - 1]`` (entries reaching before a chain's start are ignored).
        lengths: (C,) each chain's number of rows, longest first.

    Returns:
        :class:`BandedFactor` (a chain whose system is not positive definite has
        ``info`` != 0 and a meaningless solve).
    """
    C, T, P = diagonal.shape[:3]
    b = below.shape[2]
    if lengths.numel() > 1 and bool((lengths[1:] > lengths[:-1]).any()):
        raise ValueError('banded_cholesky: chains must come longest first')
    counts = (lengths.cpu()[None, :] > torch.arange(T)[:, None]).sum(1).tolist()
    L = torch.zeros_like(diagonal)
    Lb = torch.zeros_like(below)
    info = torch.zeros(C, dtype=torch.int32, device=diagonal.device)
    eye = torch.eye(P, dtype=diagonal.dtype, device=diagonal.device)
    for t in range(T):
        n = counts[t]
        if not n:
            break
        S = diagonal[:n, t]
        for d in range(min(b, t), 0, -1):
            block = below[:n, t, d - 1]
            for e in range(d + 1, min(b, t) + 1):
                block = block - Lb[:n, t, e - 1] @ Lb[:n, t - d, e - d - 1].mT
            # L_{t,t-d} = block L_{t-d,t-d}^-T, i.e. X L^T = block
            Lb[:n, t, d - 1] = torch.linalg.solve_triangular(
                L[:n, t - d].mT, block, upper=True, left=False)
            S = S - Lb[:n, t, d - 1] @ Lb[:n, t, d - 1].mT
        factor, failed = torch.linalg.cholesky_ex(S)
        bad = failed != 0
        info[:n] |= bad.to(torch.int32)
        # (a failed chain goes on with the identity: its answer is discarded, and no
        # NaN reaches the rows after)
        L[:n, t] = torch.where(bad[:, None, None], eye, factor)
    return BandedFactor(L, Lb, counts, info)


__all__ = ['BandedFactor', 'banded_cholesky']
