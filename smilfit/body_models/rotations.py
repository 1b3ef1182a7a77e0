"""Rotation representations: axis-angle, 6D and matrices (torch, batched, differentiable).

Conventions used everywhere in smilfit:

- Matrices act on column vectors: ``x' = R @ x``.
- Axis-angle is a 3-vector ``theta * axis`` (radians).
- 6D is the first two **columns** of the matrix, concatenated:
  ``[R[:, 0], R[:, 1]]`` = ``(R00, R10, R20, R01, R11, R21)`` (Zhou et al. 2019).
  :func:`rotation_6d_to_matrix` orthonormalises them by Gram-Schmidt.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

# Below this squared angle the Taylor expansions are exact to float64 precision.
_SMALL_ANGLE_SQ = 1e-8


def skew(v: torch.Tensor) -> torch.Tensor:
    """(..., 3) -> (..., 3, 3) cross-product matrices ``[v]_x``."""
    x, y, z = v.unbind(-1)
    zero = torch.zeros_like(x)
    return torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], dim=-1).reshape(
        v.shape + (3,))


def axis_angle_to_matrix(aa: torch.Tensor) -> torch.Tensor:
    """Rodrigues' formula: (..., 3) axis-angle -> (..., 3, 3) rotation matrices.

    Uses ``R = cos(t) I + a(t) K + b(t) v v^T`` (``K^2 = v v^T - t^2 I``) with
    ``K = [v]_x``, ``a = sin t / t``, ``b = (1 - cos t) / t^2`` and Taylor series near
    ``t = 0``, so values and gradients are exact and finite at the identity (no
    ``+1e-8`` fudge), and no batched 3x3 products are needed.
    """
    x, y, z = aa.unbind(-1)
    theta_sq = x * x + y * y + z * z
    small = theta_sq < _SMALL_ANGLE_SQ
    safe_sq = torch.where(small, torch.ones_like(theta_sq), theta_sq)
    theta = safe_sq.sqrt()
    a = torch.where(small, 1.0 - theta_sq / 6.0, torch.sin(theta) / theta)
    b = torch.where(small, 0.5 - theta_sq / 24.0, (1.0 - torch.cos(theta)) / safe_sq)
    cos = 1.0 - b * theta_sq  # exact cos(t) away from 0, its Taylor series near 0
    # The nine entries written out: no (..., 3, 3) temporaries, few kernels.
    bx, by, bz = b * x, b * y, b * z
    bxy, bxz, byz = bx * y, bx * z, by * z
    ax, ay, az = a * x, a * y, a * z
    return torch.stack([cos + bx * x, bxy - az, bxz + ay,
                        bxy + az, cos + by * y, byz - ax,
                        bxz - ay, byz + ax, cos + bz * z], dim=-1).reshape(aa.shape + (3,))


def matrix_to_axis_angle(R: torch.Tensor) -> torch.Tensor:
    """(..., 3, 3) rotation matrices -> (..., 3) axis-angle with angle in [0, pi].

    Goes through unit quaternions, which is stable for all angles including pi.
    """
    return quaternion_to_axis_angle(matrix_to_quaternion(R))


def matrix_to_quaternion(R: torch.Tensor) -> torch.Tensor:
    """(..., 3, 3) -> (..., 4) unit quaternions ``(w, x, y, z)`` with ``w >= 0``."""
    m = R.reshape(R.shape[:-2] + (9,))
    m00, m01, m02, m10, m11, m12, m20, m21, m22 = m.unbind(-1)
    # Four candidate solutions; pick, per rotation, the one with the largest
    # denominator (Shepperd's method) for numerical stability.
    q_abs_sq = torch.stack([
        1.0 + m00 + m11 + m22,
        1.0 + m00 - m11 - m22,
        1.0 - m00 + m11 - m22,
        1.0 - m00 - m11 + m22,
    ], dim=-1)
    q_abs = q_abs_sq.clamp_min(1e-12).sqrt()
    candidates = torch.stack([
        torch.stack([q_abs[..., 0] ** 2, m21 - m12, m02 - m20, m10 - m01], dim=-1),
        torch.stack([m21 - m12, q_abs[..., 1] ** 2, m10 + m01, m02 + m20], dim=-1),
        torch.stack([m02 - m20, m10 + m01, q_abs[..., 2] ** 2, m12 + m21], dim=-1),
        torch.stack([m10 - m01, m20 + m02, m21 + m12, q_abs[..., 3] ** 2], dim=-1),
    ], dim=-2)
    candidates = candidates / (2.0 * q_abs[..., None])
    best = q_abs_sq.argmax(dim=-1)
    q = torch.gather(candidates, -2, best[..., None, None].expand(best.shape + (1, 4)))
    q = q.squeeze(-2)
    q = F.normalize(q, dim=-1)
    return torch.where(q[..., :1] < 0, -q, q)


def quaternion_to_axis_angle(q: torch.Tensor) -> torch.Tensor:
    """(..., 4) quaternions ``(w, x, y, z)`` -> (..., 3) axis-angle."""
    q = torch.where(q[..., :1] < 0, -q, q)
    xyz = q[..., 1:]
    sin_half_sq = (xyz * xyz).sum(-1, keepdim=True)
    small = sin_half_sq < _SMALL_ANGLE_SQ
    sin_half = torch.where(small, torch.ones_like(sin_half_sq), sin_half_sq).sqrt()
    half = torch.atan2(sin_half, q[..., :1])
    # angle / sin(angle / 2) -> 2 for small angles.
    factor = torch.where(small, 2.0 + sin_half_sq / 3.0, 2.0 * half / sin_half)
    return xyz * factor


def rotation_6d_to_matrix(d6: torch.Tensor) -> torch.Tensor:
    """(..., 6) first two columns -> (..., 3, 3) by Gram-Schmidt (columns convention)."""
    a1, a2 = d6[..., :3], d6[..., 3:]
    b1 = F.normalize(a1, dim=-1)
    b2 = F.normalize(a2 - (b1 * a2).sum(-1, keepdim=True) * b1, dim=-1)
    b3 = torch.cross(b1, b2, dim=-1)
    return torch.stack([b1, b2, b3], dim=-1)


def matrix_to_rotation_6d(R: torch.Tensor) -> torch.Tensor:
    """(..., 3, 3) -> (..., 6): the first two columns, concatenated."""
    return torch.cat([R[..., :, 0], R[..., :, 1]], dim=-1)


def to_rotation_matrix(rot: torch.Tensor, batch_ndim: int,
                       name: str = 'rotation') -> torch.Tensor:
    """Any supported representation -> (..., 3, 3), detected from the rank and trailing shape.

    With ``batch_ndim`` leading batch dimensions, ``(*batch, 3)`` is axis-angle,
    ``(*batch, 6)`` is 6D (columns convention) and ``(*batch, 3, 3)`` is already a
    matrix (used as given, not re-orthonormalised). The rank decides, so a batch of
    three axis-angles (3, 3) is never mistaken for one matrix.
    """
    if rot.ndim == batch_ndim + 2 and rot.shape[-2:] == (3, 3):
        return rot
    if rot.ndim == batch_ndim + 1 and rot.shape[-1] == 3:
        return axis_angle_to_matrix(rot)
    if rot.ndim == batch_ndim + 1 and rot.shape[-1] == 6:
        return rotation_6d_to_matrix(rot)
    raise ValueError(f'{name}: expected {batch_ndim} batch dimension(s) followed by (3,) '
                     f'axis-angle, (6,) 6D or (3, 3) matrices, got {tuple(rot.shape)}')
