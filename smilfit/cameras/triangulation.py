"""Batched, confidence-weighted, NaN-aware DLT triangulation (torch, differentiable).

Shapes: B batch (frames), C cameras, N points.
"""
from __future__ import annotations

from typing import Optional

import torch

from smilfit.ops.linalg import batched_eigh

# Normal matrix used for points that cannot be triangulated: a fixed, well-separated
# spectrum keeps ``eigh`` and its backward finite, and its null direction (0, 0, 0, 1)
# keeps the homogeneous division finite; the output there is replaced by NaN.
_DUMMY_SPECTRUM = (4.0, 3.0, 2.0, 1.0)


def _normalizing_transform(projections: torch.Tensor) -> torch.Tensor:
    """(..., C, 3, 4) -> (..., 4, 4) similarity ``H`` with ``X = H X'`` for conditioning.

    ``H`` maps a unit-scale, origin-centred frame to the world: its centre is the mean of
    the camera centres and its scale their RMS distance from that mean (1 for a single
    camera or cameras at infinity), so the homogeneous unknown ``X'`` has entries of
    similar size and the 4x4 normal matrix stays well conditioned in any world units.
    Camera centres are the right null vectors of ``P``, from the 3x3 minors (no inverse).
    """
    c0, c1, c2, c3 = projections.unbind(-1)  # columns, (..., C, 3) each

    def det3(a, b, c):  # determinant of the 3x3 matrix with columns a, b, c
        return (a * torch.cross(b, c, dim=-1)).sum(-1)

    # (explicit triple products: torch.linalg.det is orders of magnitude slower for 3x3)
    minors = torch.stack([det3(c1, c2, c3), det3(c0, c2, c3), det3(c0, c1, c3),
                          det3(c0, c1, c2)], dim=-1)  # (..., C, 4)
    hom = minors * minors.new_tensor([1.0, -1.0, 1.0, -1.0])  # null vector of P
    w = hom[..., 3:]
    finite = w.abs() > 1e-12 * hom[..., :3].abs().amax(-1, keepdim=True).clamp_min(1e-300)
    centers = hom[..., :3] / torch.where(finite, w, torch.ones_like(w))
    weight = finite.to(projections.dtype)
    count = weight.sum(-2).clamp_min(1.0)  # (..., 1)
    mean = (centers * weight).sum(-2) / count  # (..., 3)
    spread = (((centers - mean[..., None, :]) ** 2).sum(-1, keepdim=True) * weight).sum(-2)
    scale = (spread / count).sqrt()  # (..., 1)
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    eye = torch.eye(3, dtype=projections.dtype, device=projections.device)
    top = torch.cat([scale[..., None] * eye, mean[..., :, None]], dim=-1)  # (..., 3, 4)
    bottom = projections.new_tensor([0.0, 0.0, 0.0, 1.0]).expand(top.shape[:-2] + (1, 4))
    H = torch.cat([top, bottom], dim=-2)
    return H


def triangulate_dlt(points2d: torch.Tensor, projections: torch.Tensor,
                    weights: Optional[torch.Tensor] = None, min_views: int = 2,
                    compute_dtype: Optional[torch.dtype] = torch.float64) -> torch.Tensor:
    """Linear (DLT) triangulation of all points of all frames at once.

    Each valid view ``c`` of a point gives two linear equations in the homogeneous point
    ``X``: ``(x P_c[2] - P_c[0]) X = 0`` and ``(y P_c[2] - P_c[1]) X = 0``. Every row is
    normalised to unit length (so pixels and normalised coordinates, near and far cameras
    weigh alike) and multiplied by the view's weight; ``X`` is the eigenvector of the
    smallest eigenvalue of the 4x4 normal matrix ``sum_rows w^2 a a^T``, found by one
    batched ``eigh`` for all points. World coordinates are first centred and scaled on the
    camera centres (see :func:`_normalizing_transform`).

    A view is absent where its 2D point is not finite or its weight is zero, negative or
    not finite. Points with fewer than ``min_views`` views come out NaN, without NaN
    gradients leaking into the other points.

    Args:
        points2d: (B, C, N, 2) image points, either undistorted normalised coordinates
            (with ``projections = [R | t]``) or undistorted pixels (with
            ``K [R | t]``). Distortion must be removed first.
        projections: (C, 3, 4) or (B, C, 3, 4) projection matrices.
        weights: (B, C, N) non-negative confidences or None (all 1). Rows are scaled by
            the weight, so residuals count with ``w^2`` in the least squares.
        min_views: views needed for a result (at least 2).
        compute_dtype: dtype of the linear algebra (float64 by default for accuracy
            in float32 pipelines); None computes in the input dtype. The result has the
            dtype of ``points2d``.

    Returns:
        (B, N, 3) world points, NaN where fewer than ``min_views`` views are valid.
        Differentiable in ``points2d``, ``projections`` and ``weights``.
    """
    if points2d.dim() != 4 or points2d.shape[-1] != 2:
        raise ValueError(f'points2d must be (B, C, N, 2), got {tuple(points2d.shape)}')
    if min_views < 2:
        raise ValueError(f'min_views must be at least 2, got {min_views}')
    B, C, N, _ = points2d.shape
    if projections.shape[-2:] != (3, 4) or projections.shape[-3] != C:
        raise ValueError(f'projections must be ({C}, 3, 4) or (B, {C}, 3, 4) for {C} views, '
                         f'got {tuple(projections.shape)}')
    out_dtype = points2d.dtype
    dtype = compute_dtype or torch.promote_types(points2d.dtype, projections.dtype)
    pts = points2d.to(dtype)
    P = projections.to(dtype)
    if P.dim() == 3:
        P = P.expand(B, C, 3, 4)

    valid = torch.isfinite(pts).all(-1)
    if weights is not None:
        w = weights.to(dtype).expand(B, C, N)
        valid = valid & torch.isfinite(w) & (w > 0)
        w = torch.where(valid, w, torch.zeros_like(w))
    else:
        w = valid.to(dtype)
    pts = torch.where(valid[..., None], pts, torch.zeros_like(pts))

    H = _normalizing_transform(P)  # (B, 4, 4)
    Pn = P @ H[:, None]  # (B, C, 3, 4): the same cameras acting on X' = H^-1 X
    x, y = pts[..., 0:1], pts[..., 1:2]  # (B, C, N, 1)
    p0, p1, p2 = Pn[:, :, None, 0, :], Pn[:, :, None, 1, :], Pn[:, :, None, 2, :]
    rows = torch.stack([x * p2 - p0, y * p2 - p1], dim=-2)  # (B, C, N, 2, 4)
    rows = rows / torch.linalg.vector_norm(rows, dim=-1, keepdim=True)
    rows = rows * w[..., None, None]
    M = torch.einsum('bcnki,bcnkj->bnij', rows, rows)  # (B, N, 4, 4)

    n_views = valid.sum(1)  # (B, N)
    ok = n_views >= min_views
    dummy = torch.diag(M.new_tensor(_DUMMY_SPECTRUM))
    M = torch.where(ok[..., None, None], M, dummy)
    # Scale-free: normalise by the trace so eigenvalue gaps are O(1) for eigh.
    M = M / M.diagonal(dim1=-2, dim2=-1).sum(-1)[..., None, None]
    _, vecs = batched_eigh(M)  # chunked on CUDA: cuSOLVER's workspace is per matrix
    Xh = vecs[..., :, 0]  # (B, N, 4), eigenvector of the smallest eigenvalue
    Xn = Xh[..., :3] / Xh[..., 3:]
    X = Xn * H[:, None, 0:1, 0] + H[:, None, :3, 3]
    X = torch.where(ok[..., None], X, torch.full_like(X, float('nan')))
    return X.to(out_dtype)


__all__ = ['triangulate_dlt']
