"""The numpy rasteriser: exact pixel coverage, z-test, perspective-correct depth, speed."""
import time

import numpy as np
import torch

from smilfit.datasets.raster import rasterize, shade_lambert, vertex_normals

F = 100.0
CX, CY = 15.5, 11.5
W, H = 32, 24


def lift(uv, z):
    """3D camera-frame points at depth z whose pinhole projection is uv."""
    uv = np.asarray(uv, dtype=np.float64)
    z = np.broadcast_to(np.asarray(z, dtype=np.float64), uv.shape[:1])
    return np.stack([(uv[:, 0] - CX) * z / F, (uv[:, 1] - CY) * z / F, z], 1)


def project(points):
    return np.stack([F * points[:, 0] / points[:, 2] + CX,
                     F * points[:, 1] / points[:, 2] + CY], 1), points[:, 2]


def expected_right_triangle():
    # Corners at half-integers: (2.5, 2.5), (10.5, 2.5), (2.5, 10.5). Pixel centres (x, y)
    # inside: x >= 3, y >= 3, (x - 2.5) + (y - 2.5) <= 8, i.e. x + y <= 13.
    ys, xs = np.mgrid[0:H, 0:W]
    return (xs >= 3) & (ys >= 3) & (xs + ys <= 13)


def test_single_triangle_covers_exactly_the_expected_pixels():
    uv = np.array([[2.5, 2.5], [10.5, 2.5], [2.5, 10.5]])
    pts = lift(uv, 7.0)
    p2, z = project(pts)
    out = rasterize(p2, z, np.array([[0, 1, 2]]), (W, H))
    expected = expected_right_triangle()
    assert out.mask.sum() == expected.sum() == 36  # a + b <= 7 for a, b >= 0
    np.testing.assert_array_equal(out.mask, expected)
    np.testing.assert_allclose(out.depth[expected], 7.0, rtol=1e-12)
    assert np.all(np.isinf(out.depth[~expected]))
    assert np.all(out.face_index[expected] == 0) and np.all(out.face_index[~expected] == -1)
    np.testing.assert_allclose(out.bary[expected].sum(-1), 1.0)
    # Winding does not matter (no culling).
    flipped = rasterize(p2, z, np.array([[0, 2, 1]]), (W, H))
    np.testing.assert_array_equal(flipped.mask, expected)


def test_nearer_triangle_wins_the_z_test_in_either_order():
    uv = np.array([[2.5, 2.5], [10.5, 2.5], [2.5, 10.5]])
    far, near = lift(uv, 9.0), lift(uv + 2.0, 4.0)        # overlapping, shifted by 2 px
    pts = np.concatenate([far, near])
    p2, z = project(pts)
    expected_far = expected_right_triangle()
    ys, xs = np.mgrid[0:H, 0:W]
    expected_near = (xs >= 5) & (ys >= 5) & (xs + ys <= 17)
    for faces in ([[0, 1, 2], [3, 4, 5]], [[3, 4, 5], [0, 1, 2]]):
        out = rasterize(p2, z, np.array(faces), (W, H))
        near_id = faces.index([3, 4, 5])
        np.testing.assert_array_equal(out.face_index == near_id, expected_near)
        np.testing.assert_array_equal(out.mask, expected_far | expected_near)
        np.testing.assert_allclose(out.depth[expected_near], 4.0)
        np.testing.assert_allclose(out.depth[expected_far & ~expected_near], 9.0)


def test_depth_is_perspective_correct_on_a_slanted_triangle():
    # Plane z = 5 + 0.5 x (camera frame): the depth at a pixel is the ray-plane intersection.
    uv = np.array([[1.5, 1.5], [28.5, 3.5], [6.5, 21.5]])
    rays = np.stack([(uv[:, 0] - CX) / F, (uv[:, 1] - CY) / F, np.ones(3)], 1)
    z = 5.0 / (1.0 - 0.5 * rays[:, 0])
    pts = rays * z[:, None]
    p2, zz = project(pts)
    out = rasterize(p2, zz, np.array([[0, 1, 2]]), (W, H))
    ys, xs = np.nonzero(out.mask)
    rx = (xs - CX) / F
    np.testing.assert_allclose(out.depth[ys, xs], 5.0 / (1.0 - 0.5 * rx), rtol=1e-10)


def test_chunking_near_plane_and_off_image():
    rng = np.random.default_rng(0)
    pts = np.concatenate([lift(rng.uniform(-5, 36, (60, 2)), rng.uniform(2, 9, 60)),
                          [[0.0, 0.0, -1.0]]])
    faces = rng.integers(0, 60, (40, 3))
    faces[0] = [0, 1, 60]                                 # behind the camera: dropped
    p2, z = project(pts)
    a = rasterize(p2, z, faces, (W, H))
    b = rasterize(p2, z, faces, (W, H), chunk_size=7)
    np.testing.assert_array_equal(a.face_index, b.face_index)
    np.testing.assert_array_equal(a.depth, b.depth)
    assert not np.any(a.face_index == 0)


def test_renders_the_demo_mouse_fast():
    from smilfit.body_models import build_demo_smil_model
    from smilfit.datasets.synthetic import look_at
    model = build_demo_smil_model()
    with torch.no_grad():
        verts = model().vertices[0].double().numpy()
    faces = model.faces.numpy()
    R, t = look_at(np.array([150.0, -250.0, 150.0]), np.array([0.0, 0.0, 15.0]),
                   np.array([0.0, 0.0, 1.0]))
    cam = verts @ R.T + t
    p2 = cam[:, :2] / cam[:, 2:] * 350.0 + 127.5
    best = np.inf
    for _ in range(3):
        start = time.perf_counter()
        out = rasterize(p2, cam[:, 2], faces, (256, 256))
        best = min(best, time.perf_counter() - start)
    assert best < 0.1, f'{len(faces)} faces at 256 x 256 took {best:.3f} s'
    assert 500 < out.mask.sum() < 256 * 256 / 2
    image = shade_lambert(out, faces, vertex_normals(verts, faces) @ R.T,
                          background=(0, 0, 255))
    assert image.shape == (256, 256, 3) and image.dtype == np.uint8
    assert np.all(image[~out.mask] == (0, 0, 255))
    lit = image[out.mask].astype(float).mean(1)
    assert lit.std() > 5 and lit.mean() > 60          # shaded, not flat, not black
