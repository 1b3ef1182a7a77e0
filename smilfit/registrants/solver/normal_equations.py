"""The Gauss-Newton normal equations ``H = J^T J``, ``g = J^T r`` of a stage, built from
the point Jacobian's blocks (:func:`point_normal_equations`) and the parameter
residuals' blocks (:func:`add_param_block`), in the layout the linear solver wants
(:class:`PackedLayout`, owned by :class:`~.linear_solver.LinearSolver`)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple, Optional, Tuple

import torch

Tensor = torch.Tensor


class PackedLayout(NamedTuple):
    """``H`` stored as (n, width) rows holding its upper triangle packed: entry
    ``row * P + col`` in slot ``slots[row * P + col]`` (entries mapped to the last slot
    are dropped there), e.g.
    :meth:`smilfit.ops.sparse_cholesky.SparseCholeskyPlan.slot_map`."""

    slots: Tensor
    width: int


def point_normal_equations(jac, info: Tensor, grad: Tensor, dtype: torch.dtype = None,
                           reduce: Optional[Tuple[Tensor, int]] = None,
                           upper_only: bool = False, layout: Optional[PackedLayout] = None
                           ) -> Tuple[Tensor, Tensor]:
    """``H = D^T blockdiag(info) D`` (B, P, P) and ``g = D^T grad`` (B, P) of a
    :class:`~.sparse_jacobian.SparsePointJacobian` ``jac`` (``D``).

    Built block by block: only (point, joint) pairs that share a point contribute
    to the rotation blocks, a few per point in a deep tree, so the cost is far below
    the dense product's. The index structure (which blocks meet, where they land in
    ``H``, in ascending order so the scatter runs through ``H`` once) depends on the
    sparsity only and is cached in the Jacobian's ``plan`` (shared by the Jacobians of one
    model, point set and parameter list).

    Args:
        info: (B, N, 3, 3) per-point information matrices (``sum A^T A``), read
            coordinate-major and sample-last: no copy when they are a view of
            (3, 3, N, B) storage (as :meth:`~.problem.LeastSquaresProblem.linearize` builds them).
        grad: (B, N, 3) per-point gradients (``sum A^T r``), likewise of (3, N, B).
        dtype: precision of ``H`` (default: the Jacobian's).
        reduce: optional ``(group (B,) long, G)``: ``H`` summed over each group's
            samples, (G, P, P), built from the summed blocks without the (B, P, P)
            per-sample matrices (parameters shared by a group's samples only).
        upper_only: fill only what a reader of the upper triangle needs (the rotation
            blocks below the diagonal are left 0; :func:`smilfit.ops.cholesky.cholesky`
            reads nothing else): one scatter of the block products instead of two.
        layout: optional :class:`PackedLayout`: ``H`` (B, width) holds the upper
            triangle packed: no (B, P, P) matrices at all.
    """
    B, N = jac.points.shape[:2]
    P = jac.num_params
    dtype = dtype or jac.dense.dtype
    device = jac.dense.device
    plan = jac.plan.get(('normal', dtype)) if jac.plan is not None else None
    if plan is None:
        plan = NormalPlan.build(jac.rot_point, jac.rot_col, jac.dense_col, P)
        if jac.plan is not None:
            jac.plan[('normal', dtype)] = plan
    info = info.to(dtype).permute(2, 3, 1, 0).contiguous()   # (3c, 3d, N, B)
    grad_t = grad.permute(2, 1, 0).contiguous()                  # (3c, N, B)
    rot, dense = jac.rot.to(dtype), jac.dense.to(dtype)

    rows = B if reduce is None else int(reduce[1])
    if layout is not None:
        rr_at, cross_at, dd_at = plan.packed_indices(layout.slots)
        width = layout.width
    else:
        rr_at, cross_at, dd_at = ((plan.rr_upper, plan.cross_upper, plan.dd_flat)
                                  if upper_only else (None, None, plan.dd_flat))
        width = P * P
    # Built sample-last, (width, B): the blocks are gathered and scattered as whole
    # rows of B values (memory copies) instead of B-strided single values, which on
    # the CPU costs several times as much; one transpose at the end.
    if reduce is None:
        def summed(values: Tensor) -> Tensor:
            return values
    else:   # (k, B) -> (k, G): each group's sum, one product with its indicator
        onehot = torch.zeros(B, rows, dtype=dtype, device=device)
        onehot[torch.arange(B, device=device), reduce[0]] = 1.0

        def summed(values: Tensor) -> Tensor:
            return values @ onehot
    Ht = torch.zeros(width, rows, dtype=dtype, device=device)
    gt = torch.zeros(P, B, dtype=grad.dtype, device=device)
    E, Pd = jac.rot_point.numel(), jac.dense_col.numel()
    if E:
        # A_e = I_i d_e, then d_e1^T A_e2 for the pairs of blocks on one point
        # (e1 <= e2), scattered to their place in H and mirrored. Each of these many
        # 3 x 3 products is three wide multiply-adds over the samples: as batched
        # matmuls of 3 x 3 matrices they cost about 3x as much on the CPU. All
        # component-major, (3, 3, blocks, B): gathers copy whole rows.
        Q = plan.e1.numel()
        r = rot.permute(2, 3, 1, 0).contiguous()    # (3c, 3a, E, B); no copy for
        #                                             the layout sparse() gives
        Ie = info.index_select(2, plan.i_e)                          # (3c, 3d, E, B)
        A = Ie[:, 0, None] * r[0, None]                              # (3c, 3a, E, B)
        A.addcmul_(Ie[:, 1, None], r[1, None])
        A.addcmul_(Ie[:, 2, None], r[2, None])
        r1 = r.index_select(2, plan.e1)                              # (3c, 3a, Q, B)
        A2 = A.index_select(2, plan.e2)                              # (3c, 3b, Q, B)
        block = r1[0, :, None] * A2[0, None]                         # (3a, 3b, Q, B)
        block.addcmul_(r1[1, :, None], A2[1, None])
        block.addcmul_(r1[2, :, None], A2[2, None])
        block = summed(block.view(9 * Q, B))
        if rr_at is not None:
            Ht.index_add_(0, rr_at, block)
        else:
            Ht.index_add_(0, plan.rr_flat, block)
            Ht.index_add_(0, plan.rr_mirror,
                          block.view(3, 3, Q, rows)[:, :, plan.num_diag:].reshape(-1, rows))
        rg = r if grad.dtype == dtype else jac.rot.to(grad.dtype).permute(2, 3, 1, 0)
        ge = grad_t.index_select(1, plan.i_e)                        # (3c, E, B)
        g_rot = rg[0] * ge[0, None]                                  # (3a, E, B)
        g_rot.addcmul_(rg[1], ge[1, None])
        g_rot.addcmul_(rg[2], ge[2, None])
        gt.index_add_(0, plan.rot_cols, g_rot.reshape(3 * E, B))
    if Pd:
        # The dense columns against themselves, summed over the points, and against
        # each rotation block (Pd x 3a per block, I_i D_i against d_e, the same
        # multiply-adds), scattered to both triangles or the upper.
        dt = dense.permute(2, 3, 1, 0).contiguous()                  # (3d, Pd, N, B)
        Id = info[:, 0, None] * dt[0, None]                          # (3c, Pd, N, B)
        Id.addcmul_(info[:, 1, None], dt[1, None])
        Id.addcmul_(info[:, 2, None], dt[2, None])
        dd = torch.bmm(dt.permute(3, 1, 0, 2).reshape(B, Pd, 3 * N),
                       Id.permute(3, 0, 2, 1).reshape(B, 3 * N, Pd))  # (B, Pd, Pd)
        Ht.index_add_(0, dd_at, summed(dd.reshape(B, Pd * Pd).T))
        if E:
            Ide = Id.index_select(2, plan.i_e)                       # (3c, Pd, E, B)
            # against r (3c, 3a, E, B) -> (Pd, 3a, E, B)
            cross = Ide[0, :, None] * r[0, None]
            cross.addcmul_(Ide[1, :, None], r[1, None])
            cross.addcmul_(Ide[2, :, None], r[2, None])
            cross = summed(cross.view(E * Pd * 3, B))
            if cross_at is not None:
                Ht.index_add_(0, cross_at, cross)
            else:
                Ht.index_add_(0, plan.cross_flat, cross)
                Ht.index_add_(0, plan.cross_mirror, cross)
        gd = dt if grad.dtype == dtype else jac.dense.to(grad.dtype).permute(2, 3, 1, 0)
        gt.index_add_(0, jac.dense_col, (gd * grad_t[:, None]).sum((0, 2)))
    g = gt.T.contiguous()
    if layout is not None:
        # a (B, width) view: the factorisation's copy into its working storage does
        # the transposition (one pass over H instead of two)
        return Ht.T, g
    return Ht.T.contiguous().view(rows, P, P), g



@dataclass
class NormalPlan:
    """Index structure of :meth:`SparsePointJacobian.normal_equations` (fixed by the
    sparsity): which blocks meet and the flat positions of their products."""

    i_e: Tensor         # (E,) point of each block
    rot_cols: Tensor    # (3 * E,) columns of the blocks, (axis, block) order
    e1: Tensor          # (Q,) pairs of blocks on one point, e1 <= e2, the E diagonal
    e2: Tensor          # (Q,) pairs first, each part sorted by place in H
    num_diag: int       # E
    # Places in H (row * P + col), in the order the products come (component-major):
    rr_flat: Tensor     # (9 * Q,) of d_e1^T I d_e2, (axis a, axis b, pair) order
    rr_mirror: Tensor   # (9 * (Q - E),) its transpose's, off-diagonal pairs
    rr_upper: Tensor    # (9 * Q,) of the two places, the one in the upper triangle
    dd_flat: Tensor     # (Pd * Pd,) the dense x dense block's places in H
    cross_flat: Tensor  # (Pd * 3 * E,) of (dense column p, block column a of block e)
    cross_mirror: Tensor  # (Pd * 3 * E,) its transpose's place
    cross_upper: Tensor   # (Pd * 3 * E,) of the two places, the one in the upper triangle
    # the last packed layout's slot map and the places above in it (see packed_indices)
    _packed: Optional[Tuple[Tensor, Tuple[Tensor, Tensor, Tensor]]] = None

    def packed_indices(self, slots: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        """``rr_upper``, ``cross_upper`` and ``dd_flat`` through the slot map ``slots``
        (P * P,) (cached for the last map: a stage uses one)."""
        if self._packed is None or self._packed[0] is not slots:
            self._packed = (slots, (slots[self.rr_upper], slots[self.cross_upper],
                                    slots[self.dd_flat]))
        return self._packed[1]

    @classmethod
    def build(cls, rot_point: Tensor, rot_col: Tensor, dense_col: Tensor, P: int
              ) -> 'NormalPlan':
        device = rot_point.device
        axes = torch.arange(3, device=device)
        cols = rot_col[:, None] + axes                              # (E, 3)
        same = rot_point[:, None] == rot_point[None, :]
        E = rot_point.numel()
        e = torch.arange(E, device=device)
        diag = torch.argsort(rot_col * (P + 1), stable=True)
        o1, o2 = torch.nonzero(same & (e[:, None] < e[None, :]), as_tuple=True)
        o = torch.argsort(rot_col[o1] * P + rot_col[o2], stable=True)
        e1 = torch.cat([e[diag], o1[o]])
        e2 = torch.cat([e[diag], o2[o]])
        off1, off2 = o1[o], o2[o]
        # Positions in the order the products come: (axis a, axis b, pair q) for the
        # block products, (axis a, block e) for the gradient, (dense column p, axis a,
        # block e) for the cross products (component-major, see normal_equations).
        def component_major(x: Tensor) -> Tensor:   # (n, ...) -> (...) x n, flat
            return x.reshape(x.shape[0], math.prod(x.shape[1:])).T.flatten()
        rr = cols[e1][:, :, None] * P + cols[e2][:, None, :]             # (Q, 3a, 3b)
        mirror = cols[off2][:, None, :] * P + cols[off1][:, :, None]     # (Q - E, 3a, 3b)
        # Distinct blocks' column triples never overlap, so each off-diagonal block lies
        # wholly above or wholly below the diagonal.
        above = (rot_col[off1] < rot_col[off2])[:, None, None].expand(-1, 3, 3)
        rr_upper = torch.cat([rr[:E], torch.where(above, rr[E:], mirror)])
        d_rows = dense_col[None, :, None].expand(E, -1, 3)               # (E, Pd, 3a)
        b_cols = cols[:, None, :].expand(-1, dense_col.numel(), -1)
        cross_flat = d_rows * P + b_cols
        cross_mirror = b_cols * P + d_rows
        return cls(i_e=rot_point, rot_cols=component_major(cols), e1=e1, e2=e2, num_diag=E,
                   rr_flat=component_major(rr), rr_mirror=component_major(mirror),
                   rr_upper=component_major(rr_upper),
                   dd_flat=(dense_col[:, None] * P + dense_col[None, :]).flatten(),
                   cross_flat=component_major(cross_flat),
                   cross_mirror=component_major(cross_mirror),
                   cross_upper=component_major(torch.where(d_rows < b_cols, cross_flat,
                                                           cross_mirror)))



@dataclass
class ConstantJacobian:
    """The Jacobian (R, P_h) of residuals affine in the parameters with the same
    coefficients for every sample (a linear prior), its Gram matrix computed once, and
    the columns (P_h,) it fills."""

    matrix: Tensor
    cols: Tensor

    def __post_init__(self) -> None:
        self.gram = self.matrix.T @ self.matrix


@dataclass
class DiagonalJacobian:
    """The Jacobian of residuals each of which reads one parameter (an independent
    Gaussian prior per component, with per-sample scales): its diagonal ``values`` (n, P_h)
    and the columns (P_h,) it fills. Only diagonal entries of ``J^T J``, so the columns keep
    the structure the point residuals give them."""

    values: Tensor
    cols: Tensor


def _column_run(cols: Tensor):
    """``slice(a, b)`` where ``cols`` (P_h,) is ``a, a+1, ..., b-1``, else ``cols``."""
    first = int(cols[0])
    if int(cols[-1]) - first + 1 == cols.numel() and bool(
            (cols == torch.arange(first, first + cols.numel(), device=cols.device)).all()):
        return slice(first, first + cols.numel())
    return cols


def add_param_block(H: Tensor, g: Tensor, r: Tensor, jac, cols: Optional[Tensor],
                    reduce: Optional[Tuple[Tensor, int]] = None,
                    slots: Optional[Tensor] = None) -> None:
    """``H[:, cols, cols] += J^T J`` and ``g[:, cols] += J^T r`` in place, for one
    handler's parameter residuals ``r`` (n, R) with Jacobian ``jac`` (n, R, P_h) or a
    :class:`ConstantJacobian`; nothing where ``cols`` is ``None`` or empty (no fitted
    parameters, or only empty ones such as K = 0 shape coefficients). Contiguous
    columns (one parameter) are updated through slices rather than advanced indexing,
    which copies the block. ``reduce = (group (n,), G)``: ``H`` (G, P, P) holds each
    group's sum (``g`` stays per sample). ``slots`` (P * P,): ``H`` is packed through this
    slot map (a :class:`PackedLayout`'s ``slots``)."""
    if cols is None or not cols.numel():
        return
    run = _column_run(cols)
    if isinstance(jac, DiagonalJacobian):
        _add_diagonal_block(H, g, r, jac, cols, reduce, slots)
        return
    if isinstance(jac, ConstantJacobian):
        gram, grad = jac.gram.to(H.dtype)[None], (r @ jac.matrix).to(g.dtype)
        if reduce is not None:  # the same block once per sample of the group
            counts = torch.bincount(reduce[0], minlength=int(reduce[1])).to(H.dtype)
            gram = counts[:, None, None] * gram
    else:
        gram, grad = (jac.transpose(1, 2) @ jac).to(H.dtype), torch.einsum('nrp,nr->np', jac, r)
        if reduce is not None:
            gram = gram.new_zeros((int(reduce[1]),) + gram.shape[1:]).index_add_(
                0, reduce[0], gram)
    if slots is not None:
        P = g.shape[1]
        at = slots[(cols[:, None] * P + cols[None, :]).flatten()]
        if gram.shape[0] == 1:   # one block for every row: scattered once, added to all
            H += H.new_zeros(H.shape[1]).index_add_(0, at, gram.reshape(-1))
        else:
            H.index_add_(1, at, gram.reshape(gram.shape[0], -1))
        g[:, run] += grad
        return
    rows, columns = (run, run) if isinstance(run, slice) else (run[:, None], run[None, :])
    H[:, rows, columns] += gram
    g[:, run] += grad


def _add_diagonal_block(H: Tensor, g: Tensor, r: Tensor, jac: DiagonalJacobian, cols: Tensor,
                        reduce: Optional[Tuple[Tensor, int]], slots: Optional[Tensor]) -> None:
    """:func:`add_param_block` for a :class:`DiagonalJacobian`: ``J^T J`` on the
    diagonal only."""
    diagonal = jac.values.square().to(H.dtype)                       # (n, P_h)
    g[:, cols] += (jac.values * r).to(g.dtype)
    if reduce is not None:
        diagonal = diagonal.new_zeros((int(reduce[1]), diagonal.shape[1])).index_add_(
            0, reduce[0], diagonal)
    if slots is not None:
        at = slots[cols * g.shape[1] + cols]
        H.index_add_(1, at, diagonal)
    else:
        H[:, cols, cols] += diagonal


__all__ = ['PackedLayout', 'NormalPlan', 'point_normal_equations', 'ConstantJacobian',
           'DiagonalJacobian', 'add_param_block']
