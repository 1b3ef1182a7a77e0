"""Pinhole projection with OpenCV's lens distortion, as short pure functions (torch, batched).

Conventions (the same as OpenCV and anipose; see ``docs/cameras.md``):

- World -> camera: ``x_cam = R @ X + t`` (column vectors). The camera looks along its
  +Z axis, +X points right and +Y down in the image.
- Normalised image coordinates: ``xy = x_cam[:2] / x_cam[2]`` (no unit).
- Distortion: OpenCV's radial-tangential model, coefficients ``dist = (k1, k2, p1, p2, k3)``
  **in OpenCV's order**, applied to normalised coordinates.
- Pixels ``(u, v)`` = ``K @ (distorted x, distorted y, 1)``: ``u`` right, ``v`` down, in
  pixels, with the origin at the **centre** of the top-left pixel (pixel centres at integer
  coordinates, the image spans ``[-0.5, W - 0.5] x [-0.5, H - 0.5]``), as in OpenCV.
  ``K`` is ``[[fx, skew, cx], [0, fy, cy], [0, 0, 1]]``; its last row must be ``(0, 0, 1)``.

Everything broadcasts over leading dimensions: points ``(..., N, 3)`` against cameras
``K (..., 3, 3)``, ``R (..., 3, 3)``, ``t (..., 3)``, ``dist (..., 5)`` (the camera's batch
dimensions align with the points' dimensions *before* ``N``). Projecting ``B`` point sets
into ``C`` cameras is ``project_points(points[:, None], K, R, t, dist)`` -> ``(B, C, N, 2)``.

Nothing is clamped to the image and points behind the camera are projected like any other
(their image is mirrored through the centre): mask them with :func:`camera_depth`.
All functions are differentiable in every tensor argument.
"""
from __future__ import annotations

from typing import Optional

import torch

DIST_NAMES = ('k1', 'k2', 'p1', 'p2', 'k3')


def _dist_coefficients(dist: torch.Tensor):
    """(..., 4 or 5) -> five (..., 1) tensors ``k1, k2, p1, p2, k3`` that broadcast over N."""
    if dist.shape[-1] == 5:
        k1, k2, p1, p2, k3 = dist[..., None, :].unbind(-1)
    elif dist.shape[-1] == 4:
        k1, k2, p1, p2 = dist[..., None, :].unbind(-1)
        k3 = torch.zeros_like(k1)
    else:
        raise ValueError(f'dist must have 4 or 5 coefficients (k1, k2, p1, p2[, k3]), '
                         f'got shape {tuple(dist.shape)}')
    return k1, k2, p1, p2, k3


def distort_normalized(xy: torch.Tensor, dist: Optional[torch.Tensor]) -> torch.Tensor:
    """Apply OpenCV's radial-tangential distortion to normalised image coordinates.

    ``r2 = x^2 + y^2``, ``radial = 1 + k1 r2 + k2 r2^2 + k3 r2^3``,
    ``x' = x radial + 2 p1 x y + p2 (r2 + 2 x^2)``,
    ``y' = y radial + p1 (r2 + 2 y^2) + 2 p2 x y``.

    Args:
        xy: (..., N, 2) undistorted normalised coordinates ``x_cam[:2] / x_cam[2]``.
        dist: (..., 5) ``(k1, k2, p1, p2, k3)`` (OpenCV order; 4 values mean ``k3 = 0``)
            or None (no distortion).

    Returns:
        (..., N, 2) distorted normalised coordinates.
    """
    if dist is None:
        return xy
    k1, k2, p1, p2, k3 = _dist_coefficients(dist)
    x, y = xy.unbind(-1)
    r2 = x * x + y * y
    radial = 1.0 + r2 * (k1 + r2 * (k2 + r2 * k3))
    xy2 = 2.0 * x * y
    xd = x * radial + p1 * xy2 + p2 * (r2 + 2.0 * x * x)
    yd = y * radial + p1 * (r2 + 2.0 * y * y) + p2 * xy2
    return torch.stack([xd, yd], dim=-1)


def distortion_jacobian(xy: torch.Tensor, dist: Optional[torch.Tensor]) -> torch.Tensor:
    """(..., N, 2, 2) Jacobian of :func:`distort_normalized` w.r.t. ``xy`` (identity
    without distortion)."""
    if dist is None:
        eye = torch.eye(2, dtype=xy.dtype, device=xy.device)
        return eye.expand(xy.shape + (2,))
    k1, k2, p1, p2, k3 = _dist_coefficients(dist)
    x, y = xy.unbind(-1)
    r2 = x * x + y * y
    radial = 1.0 + r2 * (k1 + r2 * (k2 + r2 * k3))
    d_radial = 2.0 * k1 + r2 * (4.0 * k2 + 6.0 * k3 * r2)   # d radial / d(x, y) = (.)(x, y)
    dxx = radial + d_radial * x * x + 2.0 * p1 * y + 6.0 * p2 * x
    dxy = d_radial * x * y + 2.0 * p1 * x + 2.0 * p2 * y
    dyx = d_radial * x * y + 2.0 * p1 * x + 2.0 * p2 * y
    dyy = radial + d_radial * y * y + 6.0 * p1 * y + 2.0 * p2 * x
    return torch.stack([torch.stack([dxx, dxy], -1), torch.stack([dyx, dyy], -1)], -2)


def projection_jacobian(points: torch.Tensor, K: torch.Tensor, R: torch.Tensor,
                        t: torch.Tensor, dist: Optional[torch.Tensor] = None,
                        min_depth: float = 0.0) -> torch.Tensor:
    """(..., N, 2, 3) Jacobian of :func:`project_points` w.r.t. the world points.

    ``d pix / d X = K[:2, :2] J_dist d(x/z, y/z)/d x_cam R``; zero for points with
    ``depth <= min_depth`` (they are not scored). Shapes as :func:`project_points`.
    """
    return project_with_jacobian(points, K, R, t, dist, min_depth)[2]


def project_with_jacobian(points: torch.Tensor, K: torch.Tensor, R: torch.Tensor,
                          t: torch.Tensor, dist: Optional[torch.Tensor] = None,
                          min_depth: float = 0.0):
    """Pixels, whether in front, and the projection's Jacobian, in one pass.

    Returns:
        ``(pixels (..., N, 2), in_front (..., N) bool, d pixels / d points
        (..., N, 2, 3))``: the pixels as ``smilfit.handlers.project_with_depth`` gives
        them (depth replaced by 1 behind ``min_depth``) and :func:`projection_jacobian`
        (zero there).
    """
    x_cam = world_to_camera(points, R, t)
    z = x_cam[..., 2]
    front = z > min_depth
    z = torch.where(front, z, torch.ones_like(z))
    inv = 1.0 / z
    xy = x_cam[..., :2] * inv[..., None]
    pixels = normalized_to_pixels(distort_normalized(xy, dist), K)
    # d(x/z, y/z) / dX = (R[:2] - (x/z, y/z) R[2]) / z, from R's rows by broadcasting:
    # chains of (.., N) tiny matrix products cost far more than these elementwise terms.
    if dist is None:
        # K2 d(x/z, y/z) / dX = (K2 R[:2] - (pixels - c) R[2]) / z, as K2 (x/z, y/z) =
        # pixels - c: one 2 x 3 product per camera, not per point.
        KR = (K[..., :2, :2] @ R[..., :2, :])[..., None, :, :]
        uc = (pixels - K[..., None, :2, 2]) * inv[..., None]
        J = KR * inv[..., None, None] - uc[..., :, None] * R[..., None, 2:3, :]
    else:
        rows = R[..., None, :, :]
        J = inv[..., None, None] * (rows[..., :2, :] - xy[..., :, None] * rows[..., 2:3, :])
        J = distortion_jacobian(xy, dist) @ J
        K2 = K[..., None, :2, :2]                  # (..., 1, 2, 2): one per camera
        J = torch.stack([K2[..., 0, 0, None] * J[..., 0, :] + K2[..., 0, 1, None] * J[..., 1, :],
                         K2[..., 1, 0, None] * J[..., 0, :] + K2[..., 1, 1, None] * J[..., 1, :]],
                        -2)
    return pixels, front, torch.where(front[..., None, None], J, torch.zeros_like(J))


def undistort_normalized(xy: torch.Tensor, dist: Optional[torch.Tensor],
                         iterations: int = 20) -> torch.Tensor:
    """Invert :func:`distort_normalized` by OpenCV's fixed-point iteration.

    The iteration of ``cv2.undistortPoints``: start at the distorted point and repeat
    ``x <- (x_d - tangential(x)) / radial(x)``; like OpenCV, a point whose radial factor
    turns negative is given up and returned unchanged. OpenCV's default runs 5 iterations
    (``iterations=5`` reproduces ``cv2.undistortPoints`` to round-off). The iterations are
    unrolled, so the result is differentiable in ``xy`` and ``dist``.

    Caveat: the fixed point only converges where the distortion polynomial is invertible
    and the distortion moderate. A calibration with a strong ``k1`` alone (e.g. -0.29)
    folds over well inside the image corners: distorted radii beyond the fold have no
    undistorted pre-image, and the iteration returns garbage there, as OpenCV's does.
    Check ``distort_normalized(undistort_normalized(xy)) == xy`` where it matters.

    Args:
        xy: (..., N, 2) distorted normalised coordinates.
        dist: (..., 5) ``(k1, k2, p1, p2, k3)`` or None (returns ``xy``).
        iterations: number of fixed-point iterations.

    Returns:
        (..., N, 2) undistorted normalised coordinates.
    """
    if dist is None:
        return xy
    k1, k2, p1, p2, k3 = _dist_coefficients(dist)
    x0, y0 = xy.unbind(-1)
    x, y = x0, y0
    stopped = torch.zeros_like(x0, dtype=torch.bool)
    for _ in range(iterations):
        r2 = x * x + y * y
        radial = 1.0 + r2 * (k1 + r2 * (k2 + r2 * k3))
        # OpenCV's guard: once the radial factor turns negative (far outside the range the
        # distortion polynomial is invertible in), give up on that point and return its
        # distorted coordinates unchanged.
        stopped = stopped | (radial < 0)
        safe = torch.where(stopped, torch.ones_like(radial), radial)
        xy2 = 2.0 * x * y
        dx = p1 * xy2 + p2 * (r2 + 2.0 * x * x)
        dy = p1 * (r2 + 2.0 * y * y) + p2 * xy2
        x = torch.where(stopped, x0, (x0 - dx) / safe)
        y = torch.where(stopped, y0, (y0 - dy) / safe)
    return torch.stack([x, y], dim=-1)


def normalized_to_pixels(xy: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """(..., N, 2) normalised (distorted) coordinates -> (..., N, 2) pixels ``K @ (x, y, 1)``.

    Args:
        xy: (..., N, 2) normalised image coordinates.
        K: (..., 3, 3) intrinsics ``[[fx, skew, cx], [0, fy, cy], [0, 0, 1]]`` (pixels).
    """
    x, y = xy.unbind(-1)
    k = K[..., None, :, :]
    u = k[..., 0, 0] * x + k[..., 0, 1] * y + k[..., 0, 2]
    v = k[..., 1, 0] * x + k[..., 1, 1] * y + k[..., 1, 2]
    return torch.stack([u, v], dim=-1)


def pixels_to_normalized(uv: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`normalized_to_pixels` (the upper-left 2x2 of ``K`` inverted).

    Args:
        uv: (..., N, 2) pixels.
        K: (..., 3, 3) intrinsics with last row ``(0, 0, 1)``.

    Returns:
        (..., N, 2) normalised image coordinates (still distorted if ``uv`` is).
    """
    k = K[..., None, :, :]
    a, b, c = k[..., 0, 0], k[..., 0, 1], k[..., 0, 2]
    d, e, f = k[..., 1, 0], k[..., 1, 1], k[..., 1, 2]
    du = uv[..., 0] - c
    dv = uv[..., 1] - f
    det = a * e - b * d
    x = (e * du - b * dv) / det
    y = (a * dv - d * du) / det
    return torch.stack([x, y], dim=-1)


def world_to_camera(points: torch.Tensor, R: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """``x_cam = R @ X + t`` for (..., N, 3) world points; R (..., 3, 3), t (..., 3)."""
    if points.dim() == R.dim() >= 3 and points.shape[-3] == 1 and \
            points.shape[:-3] == R.shape[:-3]:
        # (..., 1, N, 3) points seen by (..., C, 3, 3) cameras: one (N, 3) x (3, 3C)
        # product per leading index instead of one (N, 3) x (3, 3) product per camera
        N, C = points.shape[-2], R.shape[-3]
        lead = points.shape[:-3]
        x = torch.baddbmm(t.expand(lead + (C, 3)).reshape(-1, 1, C * 3),
                          points.reshape(-1, N, 3), R.reshape(-1, C * 3, 3).transpose(1, 2))
        return x.view(lead + (N, C, 3)).transpose(-2, -3).contiguous()
    return torch.matmul(points, R.transpose(-1, -2)) + t[..., None, :]


def camera_depth(points: torch.Tensor, R: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Depth along the optical axis, ``(R @ X + t)_z``, in world units.

    Args:
        points: (..., N, 3) world points.
        R: (..., 3, 3) world -> camera rotations.
        t: (..., 3) world -> camera translations.

    Returns:
        (..., N) depths; positive in front of the camera. Use ``depth > 0`` (or a near
        plane) to mask points whose projection is meaningless.
    """
    return (points * R[..., None, 2, :]).sum(-1) + t[..., None, 2]


def project_points(points: torch.Tensor, K: torch.Tensor, R: torch.Tensor, t: torch.Tensor,
                   dist: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Project world points to pixels: ``K @ distort((R X + t)[:2] / (R X + t)[2])``.

    Matches ``cv2.projectPoints(X, rvec, t, K, dist)`` (with ``R = Rodrigues(rvec)``).

    Args:
        points: (..., N, 3) world points.
        K: (..., 3, 3) intrinsics (pixels).
        R: (..., 3, 3) world -> camera rotations.
        t: (..., 3) world -> camera translations (world units).
        dist: (..., 5) ``(k1, k2, p1, p2, k3)`` or None.

    Returns:
        (..., N, 2) pixel coordinates ``(u, v)``, leading dimensions broadcast. Not clamped;
        points at depth 0 give inf/NaN and points behind the camera a mirrored image, so
        mask with :func:`camera_depth`.
    """
    x_cam = world_to_camera(points, R, t)
    xy = x_cam[..., :2] / x_cam[..., 2:]
    return normalized_to_pixels(distort_normalized(xy, dist), K)


def undistort_pixels(uv: torch.Tensor, K: torch.Tensor, dist: Optional[torch.Tensor],
                     iterations: int = 20) -> torch.Tensor:
    """Remove lens distortion from pixel coordinates.

    Args:
        uv: (..., N, 2) observed (distorted) pixels.
        K: (..., 3, 3) intrinsics.
        dist: (..., 5) ``(k1, k2, p1, p2, k3)`` or None.
        iterations: see :func:`undistort_normalized`.

    Returns:
        (..., N, 2) pixels an ideal pinhole camera with the same ``K`` would observe
        (``cv2.undistortPoints(uv, K, dist, P=K)``).
    """
    if dist is None:
        return uv
    xy = undistort_normalized(pixels_to_normalized(uv, K), dist, iterations)
    return normalized_to_pixels(xy, K)


def projection_matrices(R: torch.Tensor, t: torch.Tensor,
                        K: Optional[torch.Tensor] = None) -> torch.Tensor:
    """(..., 3, 4) projection matrices ``K [R | t]`` (or ``[R | t]`` when ``K`` is None).

    Args:
        R: (..., 3, 3) world -> camera rotations.
        t: (..., 3) translations.
        K: (..., 3, 3) intrinsics or None (matrices for normalised image coordinates).
    """
    Rt = torch.cat([R, t[..., :, None]], dim=-1)
    return Rt if K is None else torch.matmul(K, Rt)


def camera_centers(R: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """(..., 3) camera centres in world coordinates, ``-R^T t``."""
    return -(R.transpose(-1, -2) @ t[..., :, None])[..., 0]


# ------------------------------------------------------------- numpy conveniences
def default_intrinsics(width: int, height: int, focal_factor: float = 1.0):
    """(3, 3) numpy ``K`` of an uncalibrated view: ``f = focal_factor * max(W, H)`` pixels,
    principal point at the image centre ``((W - 1) / 2, (H - 1) / 2)``."""
    import numpy as np
    f = float(focal_factor) * max(width, height)
    return np.array([[f, 0.0, (width - 1) / 2.0], [0.0, f, (height - 1) / 2.0],
                     [0.0, 0.0, 1.0]])


def uncalibrated_camera(width: int, height: int, focal_factor: float = 1.0):
    """A pinhole stand-in for an uncalibrated view, as numpy float64 arrays: ``K`` from
    :func:`default_intrinsics`, identity ``R``, zero ``t`` and no distortion.

    Returns:
        dict of ``K`` (3, 3), ``R`` (3, 3), ``t`` (3,), ``dist`` (5,).
    """
    import numpy as np
    return dict(K=default_intrinsics(width, height, focal_factor), R=np.eye(3),
                t=np.zeros(3), dist=np.zeros(5))


def project_points_numpy(points, K, R, t, dist=None):
    """:func:`project_points` and :func:`camera_depth` on numpy arrays, in float64.

    Args:
        points: (..., N, 3); non-finite points project to NaN.
        K, R, t, dist: cameras broadcasting against ``points``' leading dimensions.

    Returns:
        ``(uv (..., N, 2), depth (..., N))`` numpy arrays.
    """
    import numpy as np
    points = np.asarray(points, dtype=np.float64)
    finite = np.isfinite(points).all(-1)
    P = torch.as_tensor(np.where(finite[..., None], points, 0.0))
    K, R, t = (torch.as_tensor(np.asarray(a, dtype=np.float64)) for a in (K, R, t))
    d = None if dist is None else torch.as_tensor(np.asarray(dist, dtype=np.float64))
    uv = project_points(P, K, R, t, d).numpy()
    depth = camera_depth(P, R, t).numpy()
    return (np.where(finite[..., None], uv, np.nan), np.where(finite, depth, np.nan))


__all__ = [
    'default_intrinsics', 'uncalibrated_camera', 'project_points_numpy', 'DIST_NAMES',
    'distort_normalized', 'undistort_normalized', 'normalized_to_pixels',
    'pixels_to_normalized', 'world_to_camera', 'camera_depth', 'project_points',
    'undistort_pixels', 'projection_matrices', 'camera_centers', 'projection_jacobian',
    'project_with_jacobian',
]
