"""Block-banded solves: the normal equations of frames coupled in time.

Frames of one animal coupled by a temporal term (a velocity couples each frame to the one
before, an acceleration to the two before) give a symmetric block-banded system: block
row ``t`` meets rows ``t - b .. t + b`` only (``b`` = 1 or 2). Grouping ``b`` consecutive
frames into one block makes it block tridiagonal, with diagonal blocks ``D_t`` and
blocks ``E_t`` coupling block ``t`` to ``t - 1``, and that is solved by *cyclic
reduction*: the odd blocks are eliminated all at once (each meets only its two even
neighbours), which leaves a block-tridiagonal system over the even blocks, half as long:

    D'_s = D_2s - E_2s+1^T D_2s+1^-1 E_2s+1 - E_2s D_2s-1^-1 E_2s^T
    E'_s = -E_2s D_2s-1^-1 E_2s-1

Every level is a handful of batched operations over all chains of the batch, and there
are ``log2`` of the longest chain's length of them: linear in the frames, without a step
per frame in Python. Chains are padded to a common length with identity blocks; chains of
very different lengths are solved in separate buckets (lengths within a factor of two),
so padding at most doubles the work.

A velocity term alone (``b = 1``) couples neighbouring frames by *diagonal* blocks; then
elimination along the chains (:func:`_diagonal_coupling_solve`) needs a third of the
arithmetic of the reduction (its coupling updates are elementwise). It runs from both
ends of every chain towards its middle at once, so a chain of ``n`` frames takes ``n / 2``
batched steps, and inverts each block with :func:`~smilfit.ops.spd_inverse.spd_inverse`
(measured on the saved systems of ``long_session.py``'s chains, 84 columns, float32, one
thread: 0.69-0.85x the time of one end at a time with LAPACK's inverses, the same answers to
float32's rounding). The diagonal blocks may be given by reference
(:class:`FrameBlocks`): each frame's ``J^T J`` is then read where it is kept, with the
damping added as the elimination reaches it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple, Union

import torch

from smilfit.ops.spd_inverse import identity_where, spd_inverse

Tensor = torch.Tensor


@dataclass
class FrameBlocks:
    """Diagonal blocks of chains given by reference: row ``t`` of chain ``c`` is
    ``blocks[index[c, t]] + diag(extra[c, t])`` (a frame's ``J^T J`` plus its damping and
    motion terms), read row by row as the elimination reaches it, so that no (C, T, P, P)
    copy of the frames' matrices is made.

    Attributes:
        blocks: (N, P, P) symmetric matrices.
        index: (C, T) long, the matrix of each row (entries past a chain's end are not
            read).
        extra: (C, T, P) added to each row's diagonal, or None.
    """

    blocks: Tensor
    index: Tensor
    extra: Optional[Tensor] = None

    @classmethod
    def of(cls, diagonal: Tensor) -> 'FrameBlocks':
        """The blocks of a (C, T, P, P) tensor."""
        C, T, P = diagonal.shape[:3]
        index = torch.arange(C * T, device=diagonal.device).reshape(C, T)
        return cls(diagonal.reshape(C * T, P, P), index)

    def take(self, chains: Tensor, rows: Tensor) -> Tensor:
        """(m, P, P) a new tensor with the blocks of rows ``rows`` (m,) of ``chains``
        (m,)."""
        return self.at(self.index[chains, rows],
                       None if self.extra is None else self.extra[chains, rows])

    def at(self, index: Tensor, extra: Optional[Tensor]) -> Tensor:
        """(m, P, P) a new tensor with ``blocks[index]`` (m,) plus ``diag(extra)`` (m, P)
        (rows already looked up, e.g. once for a whole elimination)."""
        out = self.blocks.index_select(0, index)
        if extra is not None:
            out.diagonal(dim1=-2, dim2=-1).add_(extra)
        return out

    def dense(self) -> Tensor:
        """(C, T, P, P) all rows' blocks (rows past a chain's end hold any block)."""
        out = self.blocks[self.index.clamp_min(0)]
        if self.extra is not None:
            out.diagonal(dim1=-2, dim2=-1).add_(self.extra)
        return out


def banded_solve(diagonal: Union[Tensor, FrameBlocks], below: Tensor, rhs: Tensor,
                 lengths: Tensor) -> Tuple[Tensor, Tensor]:
    """Solve the symmetric block-banded systems of a batch of chains.

    Args:
        diagonal: (C, T, P, P) the diagonal blocks ``A_{t,t}`` (symmetric), or the same as
            :class:`FrameBlocks`.
        below: (C, T, b, P, P) the blocks below the diagonal, ``A_{t,t-d}`` at
            ``[:, t, d - 1]`` (entries reaching before a chain's start are ignored), or
            (C, T, b, P) their diagonals where they are diagonal matrices (a motion
            term's couplings: with ``b = 1`` the cheapest solve,
            :func:`_diagonal_coupling_solve`).
        rhs: (C, T, P) or (C, T, P, k) right-hand sides.
        lengths: (C,) each chain's number of rows (rows past it are ignored and 0 in the
            answer).

    Returns:
        ``(x, info)``: the solutions, shaped as ``rhs``, and (C,) int, 0 where every block
        the reduction factorised was positive definite (elsewhere ``x`` is meaningless,
        but finite).
    """
    vector = rhs.dim() == 3
    rhs = rhs[..., None] if vector else rhs
    C, T, P = rhs.shape[:3]
    b = below.shape[2]
    if below.dim() == 4 and b == 1:
        blocks = diagonal if isinstance(diagonal, FrameBlocks) else FrameBlocks.of(diagonal)
        x, info = _diagonal_coupling_solve(blocks, below[:, :, 0], rhs, lengths)
        return (x[..., 0] if vector else x), info
    if isinstance(diagonal, FrameBlocks):
        diagonal = diagonal.dense()
    if below.dim() == 4:
        below = torch.diag_embed(below)
    x = torch.zeros_like(rhs)
    info = torch.zeros(C, dtype=torch.int32, device=diagonal.device)
    lengths = lengths.to(diagonal.device)
    # buckets of chains within a factor of two in length: padding at most doubles the work
    bucket = torch.ceil(torch.log2(lengths.clamp_min(1).to(torch.float64))).long()
    for level in torch.unique(bucket).tolist():
        chains = torch.nonzero(bucket == level).flatten()
        n = int(lengths[chains].max())
        D, E, r = _tridiagonal(diagonal[chains, :n], below[chains, :n], rhs[chains, :n],
                               lengths[chains], b)
        y, bad = _cyclic_reduction(D, E, r)
        x[chains, :n] = _unblock(y, b, P)[:, :n]
        info[chains] = bad.to(torch.int32)
    rows = torch.arange(T, device=x.device)[None, :] < lengths[:, None]
    x = x * rows[..., None, None].to(x)
    return (x[..., 0] if vector else x), info


def _diagonal_coupling_solve(diagonal: FrameBlocks, coupling: Tensor, rhs: Tensor,
                             lengths: Tensor) -> Tuple[Tensor, Tensor]:
    """Block-tridiagonal systems whose off-diagonal blocks are diagonal matrices
    (``coupling`` (C, T, P): ``A_{t,t-1} = diag(coupling[:, t])``), by block elimination
    from both ends of every chain towards its middle row (a *twisted* factorisation), all
    chains at once.

    Each half is eliminated along its rows, ``S_t = A_tt - diag(e) S_{t-1}^-1 diag(e)``
    (``e`` the coupling to the row eliminated before), which a diagonal coupling makes an
    elementwise product (no solve with P right-hand sides): the fewest operations of all,
    the cost per row one inverse of a P x P block (:func:`~smilfit.ops.spd_inverse.
    spd_inverse`). Both halves of
    every chain run in the same batched step, so a chain of ``n`` rows takes ``n / 2``
    steps in Python, not ``n``. The middle row takes both halves' eliminations, is solved,
    and both halves are substituted back from it. A chain whose block was not positive
    definite is flagged and answered 0 (other chains are untouched)."""
    C, T, P, k = rhs.shape
    device = rhs.device
    lengths = lengths.to(device)
    middle = lengths // 2                                  # each chain's middle row
    # half h < C runs rows 0 .. middle - 1 of chain h, half C + h rows n - 1 down to
    # middle + 1 of chain h; both end next to the middle row
    chain = torch.arange(C, device=device).repeat(2)
    size = torch.cat([middle, (lengths - 1 - middle).clamp_min(0)])
    order = torch.argsort(size, descending=True, stable=True)
    chain, size = chain[order], size[order]
    forward = (order < C)[:, None]
    span = int(size.max()) if size.numel() else 0
    steps = torch.arange(span, device=device)[None, :]
    n = lengths[chain][:, None]
    row = torch.where(forward, steps, n - 1 - steps)                # (2C, span)
    # the coupling of a half's step s to its step s + 1 (the middle row after its last)
    toward = torch.where(forward, steps + 1, n - 1 - steps).clamp(0, T - 1)
    reach = steps < size[:, None]
    row = torch.where(reach, row, torch.zeros_like(row))
    e_next = coupling[chain[:, None], toward] * reach[..., None].to(coupling)
    r_half = rhs[chain[:, None], row]
    # each step's blocks looked up once for the whole elimination
    block_at = diagonal.index[chain[:, None], row].clamp_min(0)
    extra = None if diagonal.extra is None else diagonal.extra[chain[:, None], row]
    counts = (size.cpu()[None, :] > torch.arange(span)[:, None]).sum(1).tolist()
    # S_s^-1; zeros, not empty: a half of no rows (a chain of one or two rows) reads its
    # step 0 as its last, times a coupling of 0, and 0 times uninitialised memory can be
    # NaN (always, under torch.use_deterministic_algorithms)
    inverse = diagonal.blocks.new_zeros(2 * C, span, P, P)
    z = rhs.new_zeros(2 * C, span, P, k)                               # S_s^-1 y_s
    info = torch.zeros(2 * C, dtype=torch.int32, device=device)
    for s in range(span):
        m = counts[s]
        S = diagonal.at(block_at[:m, s], None if extra is None else extra[:m, s])
        y = r_half[:m, s]
        if s:
            e = e_next[:m, s - 1]
            S.addcmul_(e[:, :, None] * inverse[:m, s - 1], e[:, None, :], value=-1)
            y = torch.addcmul(y, e[..., None], z[:m, s - 1], value=-1)
        inverse[:m, s], bad = spd_inverse(S)
        info[:m] |= bad
        z[:m, s] = inverse[:m, s] @ y
    # the middle rows: both halves' eliminations taken out
    S = diagonal.take(torch.arange(C, device=device), middle)
    y = rhs[torch.arange(C, device=device), middle].clone()
    halves, last = torch.arange(2 * C, device=device), (size - 1).clamp_min(0)
    if span:
        e = e_next[halves, last] * (size > 0)[:, None].to(coupling)
        inv_last, z_last = inverse[halves, last], z[halves, last]
    else:                               # every chain a single row
        e, inv_last, z_last = rhs.new_zeros(2 * C, P), S.new_zeros(2 * C, P, P), y.new_zeros(
            2 * C, P, k)
    S.index_add_(0, chain, -(e[:, :, None] * inv_last * e[:, None, :]))
    y.index_add_(0, chain, -(e[..., None] * z_last))
    L, bad = torch.linalg.cholesky_ex(S)
    centre_bad = bad != 0
    x_mid = torch.cholesky_solve(y, identity_where(L, centre_bad))
    # back from the middle: x_s = z_s - S_s^-1 (e_s+1 * x_s+1)
    xs = rhs.new_zeros(2 * C, span + 1, P, k)
    xs[halves, size] = x_mid[chain]
    for s in range(span - 1, -1, -1):
        m = counts[s]
        xs[:m, s] = torch.baddbmm(z[:m, s], inverse[:m, s], e_next[:m, s, :, None]
                                  * xs[:m, s + 1], alpha=-1)
    x = torch.zeros_like(rhs)
    x[torch.arange(C, device=device), middle] = x_mid
    x[chain[:, None].expand(-1, span)[reach], row[reach]] = xs[:, :span][reach]
    failed = centre_bad | (torch.zeros(C, dtype=torch.int32, device=device).index_add_(
        0, chain, (info != 0).to(torch.int32)) > 0)
    rows = torch.arange(T, device=device)[None, :] < lengths[:, None]
    x = torch.where(rows[..., None, None] & ~failed[:, None, None, None], x,
                    torch.zeros_like(x))
    return x, failed.to(torch.int32)


def _tridiagonal(diagonal: Tensor, below: Tensor, rhs: Tensor, lengths: Tensor, b: int
                 ) -> Tuple[Tensor, Tensor, Tensor]:
    """The chains' systems as block-tridiagonal ones of ``b`` frames a block: ``D`` (C, S,
    bP, bP), ``E`` (C, S, bP, bP) (``E[:, s]`` couples block ``s`` to ``s - 1``; 0 for
    ``s = 0``) and the right-hand sides (C, S, bP, k); rows past a chain's end become
    identity rows, coupled to nothing."""
    C, T, P = diagonal.shape[:3]
    k = rhs.shape[-1]
    eye = torch.eye(P, dtype=diagonal.dtype, device=diagonal.device)
    rows = torch.arange(T, device=diagonal.device)[None, :] < lengths[:, None]     # (C, T)
    keep = rows[..., None, None].to(diagonal)
    diagonal = diagonal * keep + eye * (1 - keep)
    below = below * keep[:, :, None]
    reach = torch.arange(T, device=diagonal.device)[:, None] >= torch.arange(
        1, below.shape[2] + 1, device=diagonal.device)[None, :]                 # (T, b)
    below = below * reach[None, :, :, None, None].to(below)
    rhs = rhs * rows[..., None, None].to(rhs)
    S = -(-T // b)
    pad = S * b - T
    if pad:
        diagonal = torch.cat([diagonal, eye.expand(C, pad, P, P)], 1)
        below = torch.cat([below, below.new_zeros(C, pad, *below.shape[2:])], 1)
        rhs = torch.cat([rhs, rhs.new_zeros(C, pad, P, k)], 1)
    if b == 1:
        return diagonal, below[:, :, 0], rhs
    D = diagonal.new_zeros(C, S, b * P, b * P)
    E = diagonal.new_zeros(C, S, b * P, b * P)
    for i in range(b):                  # frame i of block s is frame s b + i
        rows_i = slice(i * P, (i + 1) * P)
        D[:, :, rows_i, rows_i] = diagonal[:, i::b]
        for d in range(1, b + 1):       # its coupling to frame s b + i - d
            j = i - d
            block = below[:, i::b, d - 1]
            if j >= 0:                  # inside the block: both triangles
                D[:, :, rows_i, j * P:(j + 1) * P] = block
                D[:, :, j * P:(j + 1) * P, rows_i] = block.mT
            else:                       # in the block before, its frame b + j
                E[:, :, rows_i, (b + j) * P:(b + j + 1) * P] = block
    return D, E, rhs.reshape(C, S, b * P, k)


def _unblock(y: Tensor, b: int, P: int) -> Tensor:
    """(C, S b, P, k) the frames' answers from (C, S, bP, k) blocks."""
    C, S, _, k = y.shape
    return y.reshape(C, S * b, P, k)


def _cyclic_reduction(D: Tensor, E: Tensor, r: Tensor) -> Tuple[Tensor, Tensor]:
    """``(x (C, S, p, k), failed (C,) bool)`` of the block-tridiagonal systems ``D``, ``E``
    (see :func:`_tridiagonal`), by cyclic reduction (module docstring)."""
    C, S, p, _ = D.shape
    if S == 1:
        L, info = torch.linalg.cholesky_ex(D[:, 0])
        failed = info != 0
        L = identity_where(L, failed)
        return torch.cholesky_solve(r[:, 0], L)[:, None], failed
    if S % 2:                           # an identity block at the end, coupled to nothing
        eye = torch.eye(p, dtype=D.dtype, device=D.device)
        D = torch.cat([D, eye.expand(C, 1, p, p)], 1)
        E = torch.cat([E, E.new_zeros(C, 1, p, p)], 1)
        r = torch.cat([r, r.new_zeros(C, 1, *r.shape[2:])], 1)
    H = D.shape[1] // 2
    L, info = torch.linalg.cholesky_ex(D[:, 1::2])          # the odd blocks, (C, H, p, p)
    failed = (info != 0).any(1)
    L = identity_where(L, info != 0)
    to_left = E[:, 1::2]                                    # odd 2s+1 -> even 2s
    to_right = torch.cat([E[:, 2::2], E.new_zeros(C, 1, p, p)], 1)   # even 2s+2 -> odd 2s+1
    # D_odd^-1 [E_left, E_right^T, r_odd] in one solve
    solved = torch.cholesky_solve(torch.cat([to_left, to_right.mT, r[:, 1::2]], -1), L)
    Zl, Zr, ro = solved[..., :p], solved[..., p:2 * p], solved[..., 2 * p:]
    # the even blocks' system: each loses what its two odd neighbours carried
    D2 = D[:, 0::2] - to_left.mT @ Zl
    D2[:, 1:] -= (to_right @ Zr)[:, :-1]
    E2 = torch.zeros_like(D2)
    E2[:, 1:] = -(to_right @ Zl)[:, :-1]
    r2 = r[:, 0::2] - to_left.mT @ ro
    r2[:, 1:] -= (to_right @ ro)[:, :-1]
    even, failed_even = _cyclic_reduction(D2, E2, r2)
    # the odd blocks from their neighbours: x_odd = ro - Zl x_2s - Zr x_2s+2
    right = torch.cat([even[:, 1:], even.new_zeros(C, 1, *even.shape[2:])], 1)
    odd = ro - Zl @ even - Zr @ right
    x = torch.stack([even, odd], 2).reshape(C, 2 * H, p, -1)
    return x[:, :S], failed | failed_even


__all__ = ['FrameBlocks', 'banded_solve']
