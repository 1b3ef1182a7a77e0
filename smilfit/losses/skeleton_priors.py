"""Priors on an animal's skeleton in body units: small, left/right symmetric corrections.

The per-animal skeleton parameters, bone translations ``bone_trans`` (J, 3) (added to
each bone vector in its parent's rest frame) and joint-frame keypoint offsets
``keypoint_offsets`` (N, 3) (a labelled point's offset from the joint carrying it), are
corrections of the template. Their prior says, in fractions of the body length ``L``
(the rest pose's largest extent), so one setting holds for a mouse in millimetres and an
insect in its model's own units:

- magnitude: each 3-vector is ``~ N(0, (magnitude_scale L)^2)`` per axis;
- symmetry: for every left/right pair ``(l, r)``, ``x_l`` mirrors ``x_r`` across the
  body's sagittal plane up to ``symmetry_scale L``: the residual is
  ``(x_l - S x_r) / (symmetry_scale L)`` with ``S = I - 2 n n^T``;
- midline: a point on the sagittal plane without a partner (spine, tail, nose) moves
  along it: ``n . x_k / (symmetry_scale L)``.

Rest frames of a linear-blend-skinning model are aligned with the model's axes, so the
same mirror ``S`` acts on bone translations and on joint-frame offsets. The prior is one
linear map of the flattened parameter (:func:`skeleton_prior_operator`), so its
residuals are ``A vec(x)`` and Levenberg-Marquardt computes its Jacobian once.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch

Tensor = torch.Tensor

#: Largest distance (fraction of the body length) from the sagittal plane of a point
#: that counts as on it.
MIDLINE_TOLERANCE = 0.01


def body_length(rest_points: Tensor) -> float:
    """The largest extent (model units) of (N, 3) rest-pose points."""
    return float((rest_points.amax(0) - rest_points.amin(0)).amax())


def sagittal_plane(rest_joints: Tensor, pairs: Tensor) -> Tuple[Tensor, Tensor]:
    """Unit normal (3,) and a point (3,) of the plane mirroring left/right joint pairs.

    The normal is the principal direction of the pairs' left-minus-right vectors (their
    order need not be consistent), the point the mean of their midpoints.
    """
    d = rest_joints[pairs[:, 0]] - rest_joints[pairs[:, 1]]               # (P, 3)
    _, vecs = torch.linalg.eigh(d.T @ d)
    normal = vecs[:, -1]
    centre = 0.5 * (rest_joints[pairs[:, 0]] + rest_joints[pairs[:, 1]]).mean(0)
    return normal, centre


def midline_points(rest_points: Tensor, pairs: Optional[Tensor], normal: Tensor,
                   centre: Tensor, length: float) -> Tensor:
    """(Q,) indices of points within :data:`MIDLINE_TOLERANCE` of the plane that are in
    no pair."""
    dist = ((rest_points - centre) @ normal).abs()
    near = dist <= MIDLINE_TOLERANCE * length
    if pairs is not None and pairs.numel():
        near[pairs.flatten()] = False
    return torch.nonzero(near).flatten()


def skeleton_prior_operator(num_points: int, length: float, magnitude_scale: float,
                            symmetry_scale: float, pairs: Optional[Tensor] = None,
                            normal: Optional[Tensor] = None,
                            midline: Optional[Tensor] = None,
                            dtype: torch.dtype = torch.float64) -> Tensor:
    """(R, 3 N) linear map from a flattened (N, 3) parameter to its prior residuals.

    Rows: ``3 N`` magnitude residuals ``x / (magnitude_scale L)``, then ``3 P`` symmetry
    residuals of the pairs and ``Q`` midline residuals (both need ``normal``).

    Args:
        num_points: N.
        length: body length L (model units, > 0).
        magnitude_scale, symmetry_scale: prior scales as fractions of L (> 0).
        pairs: (P, 2) left/right point indices, or ``None``.
        normal: (3,) unit normal of the sagittal plane (model axes).
        midline: (Q,) indices of points on the plane without a partner.
    """
    if not (length > 0 and magnitude_scale > 0 and symmetry_scale > 0):
        raise ValueError(f'body length and prior scales must be > 0, got L={length}, '
                         f'magnitude_scale={magnitude_scale}, symmetry_scale={symmetry_scale}')
    eye = torch.eye(3, dtype=dtype)
    blocks = [torch.eye(3 * num_points, dtype=dtype) / (magnitude_scale * length)]
    if normal is not None:
        n = normal.to(dtype)
        mirror = eye - 2.0 * torch.outer(n, n)
        sym = 1.0 / (symmetry_scale * length)
        if pairs is not None and pairs.numel():
            P = pairs.shape[0]
            rows = torch.zeros(P, 3, num_points, 3, dtype=dtype)
            idx = torch.arange(P)
            rows[idx, :, pairs[:, 0], :] = eye * sym
            rows[idx, :, pairs[:, 1], :] = -mirror * sym
            blocks.append(rows.reshape(3 * P, 3 * num_points))
        if midline is not None and midline.numel():
            Q = midline.shape[0]
            rows = torch.zeros(Q, num_points, 3, dtype=dtype)
            rows[torch.arange(Q), midline, :] = n * sym
            blocks.append(rows.reshape(Q, 3 * num_points))
    return torch.cat(blocks, 0)


__all__ = ['MIDLINE_TOLERANCE', 'body_length', 'sagittal_plane', 'midline_points',
           'skeleton_prior_operator']
