"""The Jacobian of a body model's points in block-sparse form (what
:class:`~.point_jacobian.PointJacobian` returns)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import torch

from .normal_equations import PackedLayout, point_normal_equations

Tensor = torch.Tensor


@dataclass
class SparsePointJacobian:
    """Jacobian of model points in block-sparse form.

    Attributes:
        points: (B, N, 3) the points.
        rot_point, rot_col: (E,) for each block, the point and the first of its 3
            parameter columns: (point, rotated joint) pairs (axis-angle), (point,
            translated bone) pairs (``bone_trans``), attached points (their offset).
        rot: (B, E, 3, 3) the block: d point (3) / d parameter triple (3).
        dense_col: (P_d,) the columns of the other parameters.
        dense: (B, N, 3, P_d) their Jacobian.
        num_params: P, the total number of columns.
        plan: optional cache of index structures that depend on the sparsity only
            (shared by every Jacobian of one model, point set and parameter list).
    """

    points: Tensor
    rot_point: Tensor
    rot_col: Tensor
    rot: Tensor
    dense_col: Tensor
    dense: Tensor
    num_params: int
    plan: Optional[dict] = None

    def to_dense(self) -> Tensor:
        """(B, N, 3, P) dense Jacobian."""
        B, N = self.points.shape[:2]
        D = self.points.new_zeros(B, N, 3, self.num_params)
        D[..., self.dense_col] = self.dense
        if self.rot_point.numel():
            cols = (self.rot_col[:, None] + torch.arange(3, device=D.device)).flatten()
            rows = self.rot_point[:, None].expand(-1, 3).flatten()
            D[:, rows, :, cols] = self.rot.permute(1, 3, 0, 2).reshape(-1, B, 3)
        return D


    def normal_equations(self, info: Tensor, grad: Tensor, dtype: torch.dtype = None,
                         reduce: Optional[Tuple[Tensor, int]] = None,
                         upper_only: bool = False, layout: Optional[PackedLayout] = None
                         ) -> Tuple[Tensor, Tensor]:
        """``H = D^T blockdiag(info) D`` and ``g = D^T grad``: see
        :func:`~.normal_equations.point_normal_equations`."""
        return point_normal_equations(self, info, grad, dtype, reduce, upper_only, layout)


__all__ = ['SparsePointJacobian']
