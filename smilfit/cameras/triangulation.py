"""Batched, confidence-weighted, NaN-aware DLT triangulation (torch, differentiable).

Shapes: B batch (frames), C cameras, N points.
"""
from __future__ import annotations

from typing import Dict, Optional

import torch

from smilfit.ops.linalg import batched_eigh

from .projection import projection_matrices, undistort_pixels

# Normal matrix used for points that cannot be triangulated: a fixed, well-separated
# spectrum keeps ``eigh`` and its backward finite, and its null direction (0, 0, 0, 1)
# keeps the homogeneous division finite; the output there is replaced by NaN.
_DUMMY_SPECTRUM = (4.0, 3.0, 2.0, 1.0)


# The adjugate's entries as three-term sums of (entry of M) x (2 x 2 minor): for entry
# (i, j) the terms (sign, flat index into M, index into the 12 minors below).
_MINOR_PAIRS = ((0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3))
_ADJUGATE_TERMS = (
    ((1, 5, 11), (-1, 6, 10), (1, 7, 9)), ((-1, 1, 11), (1, 2, 10), (-1, 3, 9)),
    ((1, 13, 5), (-1, 14, 4), (1, 15, 3)), ((-1, 9, 5), (1, 10, 4), (-1, 11, 3)),
    ((-1, 4, 11), (1, 6, 8), (-1, 7, 7)), ((1, 0, 11), (-1, 2, 8), (1, 3, 7)),
    ((-1, 12, 5), (1, 14, 2), (-1, 15, 1)), ((1, 8, 5), (-1, 10, 2), (1, 11, 1)),
    ((1, 4, 10), (-1, 5, 8), (1, 7, 6)), ((-1, 0, 10), (1, 1, 8), (-1, 3, 6)),
    ((1, 12, 4), (-1, 13, 2), (1, 15, 0)), ((-1, 8, 4), (1, 9, 2), (-1, 11, 0)),
    ((-1, 4, 9), (1, 5, 7), (-1, 6, 6)), ((1, 0, 9), (-1, 1, 7), (1, 2, 6)),
    ((-1, 12, 3), (1, 13, 1), (-1, 14, 0)), ((1, 8, 3), (-1, 9, 1), (1, 10, 0)))
#: Power steps with the adjugate after its best column (each shrinks the other
#: eigenvectors' share by the ratio of the two smallest eigenvalues).
_ADJUGATE_STEPS = 3


def _adjugate4(M: torch.Tensor) -> torch.Tensor:
    """(16, n) entries of 4 x 4 matrices (row-major, one matrix per column) -> (16, n)
    entries of their adjugates ``det(M) M^-1``, from the 2 x 2 minors of the top and
    bottom row pairs (as in the classic 4 x 4 inverse): a few wide row operations."""
    i, j = (torch.tensor(c, device=M.device) for c in zip(*_MINOR_PAIRS))
    top = M[i] * M[4 + j] - M[4 + i] * M[j]                              # (6, n)
    bottom = M[8 + i] * M[12 + j] - M[12 + i] * M[8 + j]                 # (6, n)
    minors = torch.cat([top, bottom])                                    # (12, n)
    terms = torch.tensor(_ADJUGATE_TERMS, device=M.device)               # (16, 3, 3)
    entry, minor = terms[..., 1].flatten(), terms[..., 2].flatten()
    products = M.index_select(0, entry) * minors.index_select(0, minor)  # (48, n)
    # each entry: the signed sum of its three products, as one (16, 48) product
    signs = torch.zeros(16, 48, dtype=M.dtype, device=M.device)
    signs[torch.arange(48, device=M.device) // 3, torch.arange(48, device=M.device)] = \
        terms[..., 0].flatten().to(M.dtype)
    return signs @ products


def _null_vectors(M: torch.Tensor, skip: Optional[torch.Tensor] = None) -> torch.Tensor:
    """(..., 4, 4) symmetric positive semi-definite, trace 1 -> (..., 4) unit eigenvectors
    of their smallest eigenvalues, as ``eigh`` gives them (up to sign) where that
    eigenvalue is well separated, without ``eigh``'s per-matrix cost.

    ``adj(M) = sum_i (prod_{j != i} lambda_j) v_i v_i^T`` weights the smallest
    eigenvalue's vector most: its largest diagonal entry picks a column rich in it, and a
    few power steps remove the rest. Matrices whose result is not an eigenvector to
    rounding (close smallest eigenvalues, where that vector is ill-defined anyway) get
    ``eigh``'s, except where ``skip`` (...) bool is set (results no one reads). Computed
    one matrix per column (sample-last): every step is a few wide row operations."""
    shape = M.shape[:-2]
    # (16, n); no copy when M is a view of entry-major storage
    Mt = M.flatten(-2).movedim(-1, 0).reshape(16, -1)
    adj = _adjugate4(Mt).view(4, 4, -1)                                  # (4, 4, n)
    pick = adj.diagonal(dim1=0, dim2=1).argmax(-1)                       # (n,)
    v = torch.take_along_dim(adj, pick[None, None], dim=1)[:, 0]         # (4, n)

    def unit(u: torch.Tensor) -> torch.Tensor:   # (4, n) columns scaled to unit length
        return u / (u * u).sum(0).sqrt().clamp_min(1e-300)
    for _ in range(_ADJUGATE_STEPS):
        v = (adj * unit(v)[None]).sum(1)
    v = unit(v)
    Mv = (Mt.view(4, 4, -1) * v[None]).sum(1)
    residual = Mv - (v * Mv).sum(0) * v
    tol = 64 * torch.finfo(M.dtype).eps
    v = v.T.reshape(shape + (4,))
    bad = ~((residual * residual).sum(0) <= tol * tol).view(shape)       # NaN counts too
    if skip is not None:
        bad &= ~skip
    if bool(bad.any()):
        _, vecs = batched_eigh(M[bad])
        v[bad] = vecs[..., :, 0]
    return v


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
    # M = sum over views and rows of row^T row, entry-major (4, 4, B, N): the sum over
    # the 2C rows is 16 wide products instead of B * N tiny matrix products
    r = rows.permute(4, 1, 3, 0, 2).reshape(4, -1, B, rows.shape[2])  # (4, 2C, B, N)
    M = (r[:, None] * r[None]).sum(2)                                   # (4, 4, B, N)

    n_views = valid.sum(1)  # (B, N)
    ok = n_views >= min_views
    dummy = torch.diag(M.new_tensor(_DUMMY_SPECTRUM))[..., None, None]
    M = torch.where(ok, M, dummy)
    # Scale-free: normalise by the trace so eigenvalue gaps are O(1) for eigh.
    M = (M / M.diagonal(dim1=0, dim2=1).sum(-1)).permute(2, 3, 0, 1)    # (B, N, 4, 4)
    if M.requires_grad and torch.is_grad_enabled():
        _, vecs = batched_eigh(M)  # chunked on CUDA: cuSOLVER's workspace is per matrix
        Xh = vecs[..., :, 0]  # (B, N, 4), eigenvector of the smallest eigenvalue
    else:
        Xh = _null_vectors(M, skip=~ok)   # (the points left NaN below)
    Xn = Xh[..., :3] / Xh[..., 3:]
    X = Xn * H[:, None, 0:1, 0] + H[:, None, :3, 3]
    X = torch.where(ok[..., None], X, torch.full_like(X, float('nan')))
    return X.to(out_dtype)


def triangulate_observations(observations: Dict[str, torch.Tensor],
                             min_views: int = 2) -> torch.Tensor:
    """Triangulate (B, C, K, 2) pixel keypoints with the per-sample cameras -> (B, K, 3).

    Uses ``observations['K'|'R'|'t'|'dist']`` ((B, C, ...) or shared (C, ...)) and the
    keypoint confidences as weights; invalid views and NaN points are ignored.
    """
    uv = observations['keypoints_2d']
    B, C = uv.shape[:2]
    K, R, t = observations['K'], observations['R'], observations['t']
    dist = observations.get('dist')
    expand = lambda x: x if x.dim() >= 3 and x.shape[0] == B and x.shape[1] == C else (  # noqa: E731
        x.expand(B, *x.shape))
    K, R, t = expand(K), expand(R), expand(t)
    if dist is not None:
        uv = undistort_pixels(uv, K, expand(dist))  # (..., N, 2) with (..., 3, 3), (..., 5)
    weights = observations.get('confidence')
    if weights is None:
        weights = torch.ones(uv.shape[:3], dtype=uv.dtype, device=uv.device)
    if 'view_valid' in observations:
        weights = weights * observations['view_valid'][..., None].to(weights.dtype)
    if 'visible' in observations:
        weights = weights * observations['visible'].to(weights.dtype)
    return triangulate_dlt(uv, projection_matrices(R, t, K), weights, min_views=min_views)


__all__ = ['triangulate_dlt', 'triangulate_observations']
