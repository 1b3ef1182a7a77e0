"""Projection and distortion against OpenCV (float64, 1e-6 px), broadcasting, gradients."""
import cv2
import numpy as np
import pytest
import torch

from smilfit.cameras import (camera_centers, camera_depth, distort_normalized,
                             normalized_to_pixels, pixels_to_normalized, project_points,
                             projection_matrices, undistort_normalized, undistort_pixels,
                             world_to_camera)

from .helpers import cv2_rvec, random_points, ring_cameras



def cv2_undistort(uv, K, dist, P=None, iterations=None):
    """cv2.undistortPoints (OpenCV 4: ``undistortPointsIter`` for a custom iteration count)."""
    src = np.asarray(uv, dtype=np.float64).reshape(-1, 1, 2)
    K, dist = np.asarray(K, dtype=np.float64), np.asarray(dist, dtype=np.float64)
    if iterations is None:
        return cv2.undistortPoints(src, K, dist, None, None, P).reshape(-1, 2)
    crit = (cv2.TERM_CRITERIA_COUNT, iterations, 0.0)
    if hasattr(cv2, 'undistortPointsIter'):  # OpenCV 4
        return cv2.undistortPointsIter(src, K, dist, None, P, crit).reshape(-1, 2)
    return cv2.undistortPoints(src, K, dist, None, None, P, crit).reshape(-1, 2)


STRONG_DIST = torch.tensor([-0.32, 0.12, 1.5e-3, -8e-4, -0.02], dtype=torch.float64)


def test_project_points_matches_cv2_with_distortion():
    K, R, t, dist, _ = ring_cameras(C=5)
    X = random_points(3, 40)
    uv = project_points(X[:, None], K, R, t, dist)
    assert uv.shape == (3, 5, 40, 2)
    for c in range(5):
        ref, _ = cv2.projectPoints(X.reshape(-1, 3).numpy(), cv2_rvec(R[c]), t[c].numpy(),
                                   K[c].numpy(), dist[c].numpy())
        np.testing.assert_allclose(uv[:, c].numpy(), ref.reshape(3, 40, 2), atol=1e-6, rtol=0)


def test_project_points_matches_cv2_tangential_and_k3():
    K, R, t, _, _ = ring_cameras(C=1)
    X = random_points(1, 200, scale=150.0)[0]
    uv = project_points(X, K[0], R[0], t[0], STRONG_DIST)
    ref, _ = cv2.projectPoints(X.numpy(), cv2_rvec(R[0]), t[0].numpy(), K[0].numpy(),
                               STRONG_DIST.numpy())
    np.testing.assert_allclose(uv.numpy(), ref.reshape(-1, 2), atol=1e-6, rtol=0)


def test_four_coefficients_mean_k3_zero():
    xy = torch.randn(10, 2, dtype=torch.float64) * 0.3
    d5 = STRONG_DIST.clone()
    d5[4] = 0.0
    torch.testing.assert_close(distort_normalized(xy, STRONG_DIST[:4]), distort_normalized(xy, d5))
    with pytest.raises(ValueError, match='4 or 5'):
        distort_normalized(xy, torch.zeros(6, dtype=torch.float64))


def test_no_distortion_is_identity_and_skew_is_applied():
    xy = torch.randn(7, 2, dtype=torch.float64)
    assert distort_normalized(xy, None) is xy
    assert undistort_normalized(xy, None) is xy
    K = torch.tensor([[800.0, 3.0, 320.0], [0.0, 790.0, 240.0], [0.0, 0.0, 1.0]],
                     dtype=torch.float64)
    uv = normalized_to_pixels(xy, K)
    hom = torch.cat([xy, torch.ones(7, 1, dtype=torch.float64)], -1) @ K.T
    torch.testing.assert_close(uv, hom[:, :2])
    torch.testing.assert_close(pixels_to_normalized(uv, K), xy)


def test_broadcasting_points_against_cameras():
    K, R, t, dist, _ = ring_cameras(C=3)
    X = random_points(2, 6)
    full = project_points(X[:, None], K, R, t, dist)  # (2, 3, 6, 2)
    single = project_points(X[1], K[2], R[2], t[2], dist[2])  # (6, 2)
    torch.testing.assert_close(full[1, 2], single)
    per_cam = project_points(X[0].expand(3, 6, 3), K, R, t, dist)  # (3, 6, 2)
    torch.testing.assert_close(per_cam, full[0])
    shared = project_points(X[0], K, R, t, dist)  # (N, 3) against (C, ...) -> (C, N, 2)
    torch.testing.assert_close(shared, full[0])


def test_undistort_round_trip_and_opencv_iteration():
    g = torch.Generator().manual_seed(3)
    xy = (torch.rand(500, 2, generator=g, dtype=torch.float64) - 0.5) * 1.2
    distorted = distort_normalized(xy, STRONG_DIST)
    torch.testing.assert_close(undistort_normalized(distorted, STRONG_DIST, iterations=50), xy,
                               atol=1e-10, rtol=0)
    # cv2.undistortPoints' default runs 5 iterations of the same fixed point.
    ref5 = cv2_undistort(distorted, np.eye(3), STRONG_DIST)
    np.testing.assert_allclose(undistort_normalized(distorted, STRONG_DIST, 5).numpy(), ref5,
                               atol=1e-12, rtol=0)
    ref20 = cv2_undistort(distorted, np.eye(3), STRONG_DIST, iterations=20)
    np.testing.assert_allclose(undistort_normalized(distorted, STRONG_DIST).numpy(), ref20,
                               atol=1e-12, rtol=0)


def test_undistort_beyond_the_fold_gives_up_like_opencv():
    """k1 < 0 alone folds over at r^2 = 1 / (3 |k1|); beyond it OpenCV returns the input."""
    dist = torch.tensor([-0.3, 0.0, 0.0, 0.0, 0.0], dtype=torch.float64)
    xy = torch.tensor([[0.1, 0.05], [0.9, 0.6], [1.5, -1.2], [-3.0, 2.0]], dtype=torch.float64)
    for iterations in (5, 20):
        ours = undistort_normalized(xy, dist, iterations)
        ref = cv2_undistort(xy, np.eye(3), dist, iterations=iterations)
        np.testing.assert_allclose(ours.numpy(), ref, atol=1e-12, rtol=0)
    torch.testing.assert_close(ours[3], xy[3])  # given up: returned unchanged
    assert torch.isfinite(ours).all()
    xyg = xy.clone().requires_grad_()
    undistort_normalized(xyg, dist).sum().backward()
    assert torch.isfinite(xyg.grad).all()


def test_undistort_pixels_matches_cv2_and_inverts_projection():
    K, R, t, dist, (W, H) = ring_cameras(C=2)
    X = random_points(1, 100)[0]
    for c in range(2):
        uv = project_points(X, K[c], R[c], t[c], dist[c])
        assert ((uv > 0) & (uv < uv.new_tensor([W, H]))).all()  # inside the image
        ideal = project_points(X, K[c], R[c], t[c], None)
        und = undistort_pixels(uv, K[c], dist[c])
        torch.testing.assert_close(und, ideal, atol=1e-6, rtol=0)
        ref = cv2_undistort(uv, K[c], dist[c], P=K[c].numpy(), iterations=20)
        np.testing.assert_allclose(und.numpy(), ref, atol=1e-6, rtol=0)
    assert undistort_pixels(uv, K[0], None) is uv


def test_depth_and_no_clamping():
    K, R, t, dist, (W, H) = ring_cameras(C=2, distortion=False)
    X = random_points(1, 20)[0]
    depth = camera_depth(X, R, t)
    torch.testing.assert_close(depth, world_to_camera(X, R, t)[..., 2])
    assert (depth > 0).all()
    centre = camera_centers(R, t)
    # A point far off to the side projects outside the image, unclamped, with gradients.
    far = (centre[0] + 5.0 * R[0, 2] + 50.0 * R[0, 0]).requires_grad_()
    uv = project_points(far[None], K[0], R[0], t[0])
    assert uv[0, 0] > W * 5
    uv.sum().backward()
    assert far.grad.abs().sum() > 0
    # Behind the camera: negative depth, projection still returned (caller masks).
    behind = centre[0] - 100.0 * R[0, 2]
    assert camera_depth(behind[None], R[0], t[0]) < 0
    assert torch.isfinite(project_points(behind[None], K[0], R[0], t[0])).all()


def test_projection_matrices_and_centres():
    K, R, t, dist, _ = ring_cameras(C=3, distortion=False)
    X = random_points(1, 10)[0]
    P = projection_matrices(R, t, K)
    hom = torch.cat([X, torch.ones(10, 1, dtype=X.dtype)], -1)
    proj = hom @ P.transpose(-1, -2)
    torch.testing.assert_close(proj[..., :2] / proj[..., 2:], project_points(X, K, R, t))
    C = camera_centers(R, t)
    torch.testing.assert_close(world_to_camera(C[:, None], R, t)[:, 0],
                               torch.zeros(3, 3, dtype=X.dtype), atol=1e-9, rtol=0)


def test_projection_and_undistortion_gradcheck():
    K, R, t, dist, _ = ring_cameras(C=2)
    X = random_points(1, 4)[0].requires_grad_()
    Kp = K.clone().requires_grad_()
    tp = t.clone().requires_grad_()
    dp = dist.clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b, c, d: project_points(a, b, R, c, d),
                                    (X, Kp, tp, dp))
    uv = project_points(X.detach(), K, R, t, dist).requires_grad_()
    assert torch.autograd.gradcheck(lambda a, d: undistort_pixels(a, K, d), (uv, dp))


def test_float32_and_nan_passthrough():
    K, R, t, dist, _ = ring_cameras(C=2)
    X = random_points(1, 5)[0]
    uv32 = project_points(X.float(), K.float(), R.float(), t.float(), dist.float())
    assert uv32.dtype == torch.float32
    torch.testing.assert_close(uv32.double(), project_points(X, K, R, t, dist), atol=1e-2,
                               rtol=0)
    uv = project_points(X, K, R, t, dist)
    uv[0, 1] = float('nan')
    und = undistort_pixels(uv, K, dist)
    assert torch.isnan(und[0, 1]).all() and torch.isfinite(und[1]).all()


def test_numpy_helpers_match_the_torch_projection():
    import numpy as np

    from smilfit.cameras.projection import default_intrinsics, project_points_numpy
    K = default_intrinsics(640, 480)
    assert K[0, 0] == K[1, 1] == 640 and K[0, 2] == 319.5 and K[1, 2] == 239.5
    R, t = np.eye(3), np.array([0.0, 0.0, 10.0])
    pts = np.array([[0.0, 0.0, 0.0], [1.0, 2.0, 0.0], [np.nan, 0.0, 0.0]])
    uv, depth = project_points_numpy(pts, K, R, t, np.zeros(5))
    np.testing.assert_allclose(uv[:2], [[319.5, 239.5], [319.5 + 64, 239.5 + 128]])
    np.testing.assert_allclose(depth[:2], [10.0, 10.0])
    assert np.isnan(uv[2]).all() and np.isnan(depth[2])
    # several cameras at once broadcast against the points' leading dimension
    Ks = np.stack([K, 2 * K])
    Ks[1, 2, 2] = 1.0
    uv2, _ = project_points_numpy(pts[None], Ks, np.stack([R, R]), np.stack([t, t]))
    np.testing.assert_allclose(uv2[0, :2], uv[:2])
    assert uv2.shape == (2, 3, 2)


def test_apply_affine_single_and_batched():
    import numpy as np

    from smilfit.datasets.ingest_images import apply_affine
    A = np.array([[2.0, 0.0, 1.0], [0.0, 3.0, -1.0], [0.0, 0.0, 1.0]])
    pts = np.array([[1.0, 1.0], [np.nan, 2.0]])
    np.testing.assert_allclose(apply_affine(A, pts)[0], [3.0, 2.0])
    assert np.isnan(apply_affine(A, pts)[1, 0])
    batched = apply_affine(np.stack([A, np.eye(3)]), np.stack([pts, pts]))
    np.testing.assert_allclose(batched[0, 0], [3.0, 2.0])
    np.testing.assert_allclose(batched[1, 0], [1.0, 1.0])


@pytest.mark.parametrize('distorted', [False, True])
def test_projection_jacobian_matches_autograd(distorted):
    """The closed-form ``d pixel / d point`` (Levenberg-Marquardt's) equals autograd's,
    with skew, per-camera intrinsics, batched cameras, and zero behind the camera."""
    from smilfit.cameras.projection import projection_jacobian
    K, R, t, dist, _ = ring_cameras(C=3)
    K = K.clone()
    K[1, 0, 1] = 3.5                                    # skew on one camera
    dist = STRONG_DIST.expand(3, -1).clone() * 0.3 if distorted else None
    X = random_points(1, 6)[0]                          # (6, 3)
    X[5] = -50.0 * X[5] - 1e3 * t[0] / t[0].norm()      # behind some camera
    J = projection_jacobian(X, K, R, t, dist)           # (3, 6, 2, 3)
    assert J.shape == (3, 6, 2, 3)

    def pix(points):
        return project_points(points, K, R, t, dist)
    ref = torch.autograd.functional.jacobian(pix, X)    # (3, 6, 2, 6, 3)
    ref = ref.diagonal(dim1=1, dim2=3).permute(0, 3, 1, 2)
    front = camera_depth(X, R, t) > 0
    assert bool((~front).any()) and bool(front.any())
    torch.testing.assert_close(J[front], ref[front])
    assert not J[~front].any()


def test_world_to_camera_one_product_per_sample_matches_per_camera():
    """(B, 1, N, 3) points against per-sample (B, C, 3, 3) cameras (one product per
    sample) and (1, N, 3) against (C, 3, 3): the same as each camera on its own,
    gradients included."""
    from smilfit.cameras.projection import projection_jacobian
    K, R, t, dist, _ = ring_cameras(C=3)
    B = 2
    Rb = (R[None] @ torch.linalg.matrix_exp(
        torch.tensor([[0.0, -0.1, 0.0], [0.1, 0.0, 0.0], [0.0, 0.0, 0.0]],
                     dtype=R.dtype))).expand(B, -1, -1, -1).clone()
    Rb[1] = R
    tb = torch.stack([t + 0.5, t])
    X = random_points(B, 6).requires_grad_(True)
    x = world_to_camera(X[:, None], Rb, tb)                          # (B, C, N, 3)
    ref = torch.stack([torch.stack([X[b] @ Rb[b, c].T + tb[b, c] for c in range(3)])
                       for b in range(B)])
    torch.testing.assert_close(x, ref)
    g, = torch.autograd.grad((x * x).sum(), X)
    g_ref, = torch.autograd.grad((ref * ref).sum(), X)
    torch.testing.assert_close(g, g_ref)
    torch.testing.assert_close(world_to_camera(X[:1].detach(), R, t),
                               torch.stack([X[0].detach() @ R[c].T + t[c] for c in range(3)]))
    Kb = K.expand(B, -1, -1, -1)
    J = projection_jacobian(X[:, None].detach(), Kb, Rb, tb)           # (B, C, N, 2, 3)
    for b in range(B):
        torch.testing.assert_close(J[b], projection_jacobian(X[b].detach(), K, Rb[b], tb[b]))
