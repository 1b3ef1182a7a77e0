"""The fixed structure of a body model's point readouts, and the kinematic helpers the
closed-form point Jacobians (:mod:`.point_jacobian`) read.

Every model point is a sum over a few (point, joint) *terms* ``u_ik = A_k [m_ik; c_ik]``
of the skinning maps ``A_k``; rotating joint ``m`` moves only the points with a term in
its subtree. :class:`TermStructure` holds both sparsity patterns (fixed by the model).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Tuple

import numpy as np
import torch

Tensor = torch.Tensor


def so3_left_jacobian(theta: Tensor) -> Tensor:
    """(..., 3) axis-angle -> (..., 3, 3) left Jacobian ``J_l`` of SO(3).

    ``exp(theta + d) = exp(J_l(theta) d) exp(theta)`` to first order, so column ``a`` is
    the world-frame angular velocity of ``d theta_a``. Series near 0 keep it smooth.
    """
    dims = theta.dim() - 1
    return so3_left_jacobian_components(theta.movedim(-1, 0)).permute(
        *range(2, dims + 2), 0, 1)


def so3_left_jacobian_components(theta: Tensor) -> Tensor:
    """Component-major :func:`so3_left_jacobian`: (3, ...) axis-angle -> (3, 3, ...),
    entry ``[r, c]`` of ``J_l`` in slice ``[r, c]`` (wide elementwise products read
    whole rows instead of every third value)."""
    x, y, z = theta[0], theta[1], theta[2]
    angle2 = x * x + y * y + z * z
    small = angle2 < 1e-8
    safe2 = torch.where(small, 1.0, angle2)
    angle = safe2.sqrt()
    a = torch.where(small, 0.5 - angle2 / 24.0, (1.0 - torch.cos(angle)) / safe2)
    b = torch.where(small, 1.0 / 6.0 - angle2 / 120.0, (angle - torch.sin(angle)) / (safe2 * angle))
    # I + a K + b K^2 with K^2 = theta theta^T - |theta|^2 I, its nine entries written out
    # (no matrix products, few temporaries)
    c = 1.0 - b * angle2
    bx, by, bz = b * x, b * y, b * z
    bxy, bxz, byz = bx * y, bx * z, by * z
    ax, ay, az = a * x, a * y, a * z
    return torch.stack([c + bx * x, bxy - az, bxz + ay,
                        bxy + az, c + by * y, byz - ax,
                        bxz - ay, byz + ax, c + bz * z]).view((3, 3) + x.shape)


def subtree_matrix(parents: Tensor, root: int) -> Tensor:
    """(J, J) float: entry ``[k, m]`` is 1 when joint ``k`` is ``m`` or below it."""
    J = parents.shape[0]
    par = parents.tolist()
    sub = np.zeros((J, J))     # filled entry by entry: numpy, not J^2 tiny tensor writes
    for k in range(J):
        m = k
        seen = 0
        while True:
            sub[k, m] = 1.0
            if m == root or seen > J:
                break
            m = par[m]
            seen += 1
    return torch.from_numpy(sub)


def readout_parts(model, K: int) -> Tuple[Tensor, Tensor, Tensor]:
    """The model's readout moments ``m0`` (R, J, 3), ``ms`` (R, J, 3, K), mass (R, J)."""
    J = model.num_joints
    mat = getattr(model, f'readout_matrix_{K}')
    R = mat.shape[1]
    m0 = mat[:J * 3].T.reshape(R, J, 3)
    ms = mat[J * 3:J * 3 + J * 3 * K].T.reshape(R, J, 3, K)
    mass = mat[J * 3 + J * 3 * K:].T
    return m0, ms, mass


@dataclass
class TermStructure:
    """The fixed sparsity of a point set: its (point, joint) terms and rotation pairs.

    ``U`` terms ``u = A_k [m; c]`` (point, joint ``k``, moment ``m0 + ms beta``, mass
    ``c``); ``E`` pairs (point ``i``, joint ``m``) where ``i`` has a term below ``m``.
    The last ``num_offset_terms`` terms carry per-call moments (attached offsets).
    """

    term_point: Tensor      # (U,) point of each term
    term_joint: Tensor      # (U,) joint of each term
    term_m0: Tensor         # (U, 3)
    term_ms: Tensor         # (U, 3, K)
    term_mass: Tensor       # (U,)
    num_points: int
    num_offset_terms: int
    point_sum: Tensor       # (N, U) 1 where term u belongs to point n
    point_mass: Tensor      # (N,)
    pair_point: Tensor      # (E,)
    pair_joint: Tensor      # (E,)
    pair_sum: Tensor        # (E, U) the terms of pair (i, m): i's terms below m
    pair_mass: Tensor       # (E,)
    pair_slot: Tensor       # (E,) pose slot of the pair's joint (0: global_orient)
    term_ms_rel: Tensor     # (U, 3, K) ms_u - c_u dirs_k: the moment's shape part
    #                         relative to its joint's (the betas' Jacobian)
    point_chain_mass: Tensor  # (N, J) the summed mass of point n's terms on joints
    #                           whose chain holds joint m

    @classmethod
    def build(cls, model, sub: Tensor, term_point: Tensor, term_joint: Tensor,
              term_m0: Tensor, term_ms: Tensor, term_mass: Tensor, num_points: int,
              num_offset_terms: int) -> 'TermStructure':
        dtype, device = term_m0.dtype, term_m0.device
        U = term_point.numel()
        point_sum = torch.zeros(num_points, U, dtype=dtype, device=device)
        point_sum[term_point, torch.arange(U, device=device)] = 1.0
        in_sub = sub[term_joint]                           # (U, J): term joint below m
        touched = (point_sum @ in_sub) > 0                 # (N, J)
        pair_point, pair_joint = torch.nonzero(touched, as_tuple=True)
        pair_sum = point_sum[pair_point] * in_sub[:, pair_joint].T
        point_joint_mass = torch.zeros(num_points, sub.shape[0], dtype=dtype, device=device)
        point_joint_mass.index_put_((term_point, term_joint), term_mass, accumulate=True)
        dirs = model.rest_joint_dirs.to(device=device, dtype=dtype)[..., :term_ms.shape[-1]]
        term_ms_rel = term_ms - term_mass[:, None, None] * dirs[term_joint]
        return cls(term_point, term_joint, term_m0, term_ms, term_mass, num_points,
                   num_offset_terms, point_sum, point_sum @ term_mass, pair_point,
                   pair_joint, pair_sum, pair_sum @ term_mass,
                   model.pose_perm.to(device)[pair_joint], term_ms_rel,
                   point_joint_mass @ sub)


def joint_axis_angles(model, inputs: Mapping[str, Tensor], B: int, dtype, device) -> Tensor:
    """(B, J, 3) axis-angle of every joint in joint order (zeros where not given)."""
    J = model.num_joints
    root = inputs.get('global_orient')
    body = inputs.get('body_pose')
    root = torch.zeros(B, 1, 3, dtype=dtype, device=device) if root is None else root[:, None]
    body = torch.zeros(B, J - 1, 3, dtype=dtype, device=device) if body is None else body
    return torch.cat([root.to(dtype), body.to(dtype)], dim=1).index_select(
        1, model.pose_perm.to(device))


__all__ = ['TermStructure', 'so3_left_jacobian', 'so3_left_jacobian_components',
           'subtree_matrix', 'readout_parts', 'joint_axis_angles']
