"""The z-buffer rasteriser (smilfit.renderers.zbuffer) against analytic expectations and an
independent ray caster: the pixel-centre convention, coverage of pixel centres on an edge,
the nearest surface winning, perspective-correct depth and barycentrics, near-plane
clipping, lens distortion, degenerate input and chunking."""
import math

import numpy as np
import pytest
import torch

from smilfit.cameras import project_points
from smilfit.renderers.zbuffer import distortion_fold_radius2, rasterize

F_PX, CX, CY = 100.0, 31.5, 23.5
K = np.array([[F_PX, 0.0, CX], [0.0, F_PX, CY], [0.0, 0.0, 1.0]])


def rotation(axis, angle):
    axis = np.asarray(axis, dtype=np.float64) / np.linalg.norm(axis)
    x = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + math.sin(angle) * x + (1 - math.cos(angle)) * x @ x


# A camera that is not at the origin, so that R and t are exercised everywhere.
R_CAM = rotation([0.3, -1.0, 0.5], 0.7)
T_CAM = np.array([0.2, -0.1, 1.5])


def world_from_pixels(uv, z, R=R_CAM, t=T_CAM):
    """World points seen at pixels ``uv`` (N, 2) at camera depths ``z`` (N,)."""
    uv = np.asarray(uv, dtype=np.float64)
    z = np.broadcast_to(np.asarray(z, dtype=np.float64), uv.shape[:1])
    cam = np.stack([(uv[:, 0] - CX) / F_PX * z, (uv[:, 1] - CY) / F_PX * z, z], 1)
    return (cam - t) @ R                                         # R^T (cam - t)


def ray_cast(vertices, faces, R, t, H, W, near=1e-9):
    """Reference: nearest hit of every pixel centre's ray (Moller-Trumbore, numpy)."""
    cam = vertices @ R.T + t
    j, i = np.meshgrid(np.arange(W), np.arange(H))
    d = np.stack([(j - CX) / F_PX, (i - CY) / F_PX, np.ones_like(j, dtype=float)], -1)
    d = d.reshape(-1, 1, 3)                                      # (P, 1, 3) ray directions
    a, b, c = cam[faces[:, 0]], cam[faces[:, 1]], cam[faces[:, 2]]   # (F, 3)
    e1, e2 = b - a, c - a
    p = np.cross(d, e2)                                          # (P, F, 3)
    det = (e1 * p).sum(-1)
    with np.errstate(all='ignore'):
        inv = 1.0 / det
        s = -a                                                   # ray origin 0 minus a
        u = (s * p).sum(-1) * inv
        q = np.cross(s, e1)
        v = (d * q).sum(-1) * inv
        tt = (e2 * q).sum(-1) * inv                              # ray parameter = depth z
    hit = (np.abs(det) > 1e-12) & (u >= 0) & (v >= 0) & (u + v <= 1) & (tt > near)
    tt = np.where(hit, tt, np.inf)
    face = np.where(hit.any(1), tt.argmin(1), -1)
    return face.reshape(H, W), tt.min(1).reshape(H, W), hit.reshape(H, W, -1)


def test_triangle_covers_exactly_the_predicted_pixels():
    # A right triangle with legs of 10 px, its corner at (10.25, 10.25) px, at depth 5:
    # pixel centres (u=j, v=i) inside are j >= 11, i >= 11, j + i <= 30 -> 9+8+...+1 = 45.
    uv = np.array([[10.25, 10.25], [20.25, 10.25], [10.25, 20.25]])
    verts = world_from_pixels(uv, 5.0)
    out = rasterize(verts, [[0, 1, 2]], K, R_CAM, T_CAM, height=48, width=64)
    i, j = np.meshgrid(np.arange(48), np.arange(64), indexing='ij')
    expected = (j >= 11) & (i >= 11) & (i + j <= 30)
    assert expected.sum() == 45
    np.testing.assert_array_equal(out.mask.numpy(), expected)
    np.testing.assert_array_equal(out.face_index.numpy()[expected], 0)
    np.testing.assert_allclose(out.depth.numpy()[expected], 5.0, rtol=1e-12)
    assert np.isinf(out.depth.numpy()[~expected]).all()
    # Projecting the vertices with the camera model gives the pixels we placed them at.
    uv_proj = project_points(torch.as_tensor(verts), torch.as_tensor(K), torch.as_tensor(R_CAM),
                             torch.as_tensor(T_CAM))
    np.testing.assert_allclose(uv_proj.numpy(), uv, atol=1e-9)


def test_barycentrics_are_perspective_correct():
    # A strongly slanted triangle: the 3D point the barycentrics give at every covered
    # pixel must project back exactly onto that pixel's centre.
    uv = np.array([[3.3, 4.1], [58.7, 9.2], [20.2, 44.6]])
    verts = world_from_pixels(uv, [1.0, 6.0, 2.5])
    out = rasterize(verts, [[0, 1, 2]], K, R_CAM, T_CAM, height=48, width=64)
    mask = out.mask.numpy()
    assert mask.sum() > 500
    points = out.bary.numpy()[mask] @ verts                     # (P, 3)
    uv_back = project_points(torch.as_tensor(points), torch.as_tensor(K),
                             torch.as_tensor(R_CAM), torch.as_tensor(T_CAM)).numpy()
    rows, cols = np.nonzero(mask)
    np.testing.assert_allclose(uv_back, np.stack([cols, rows], 1), atol=1e-9)
    cam_z = (points @ R_CAM.T + T_CAM)[:, 2]
    np.testing.assert_allclose(out.depth.numpy()[mask], cam_z, rtol=1e-10)
    np.testing.assert_allclose(out.bary.numpy()[mask].sum(-1), 1.0, atol=1e-12)


@pytest.mark.parametrize('order', [(0, 1), (1, 0)])
def test_nearer_triangle_wins_whatever_the_face_order(order):
    near_tri = world_from_pixels([[5.2, 5.3], [40.1, 6.2], [8.3, 40.4]], 3.0)
    far_tri = world_from_pixels([[20.4, 2.2], [60.3, 30.1], [12.2, 44.4]], 7.0)
    verts = np.concatenate([near_tri, far_tri])
    faces = np.array([[0, 1, 2], [3, 4, 5]])[list(order)]
    out = rasterize(verts, faces, K, R_CAM, T_CAM, height=48, width=64)
    near_index = order.index(0)
    alone = [rasterize(verts, faces[k:k + 1], K, R_CAM, T_CAM, height=48,
                       width=64).mask.numpy() for k in range(2)]
    both = alone[0] & alone[1]
    assert both.sum() > 50                                       # they do overlap
    fi = out.face_index.numpy()
    assert (fi[both] == near_index).all()
    np.testing.assert_allclose(out.depth.numpy()[both], 3.0)
    np.testing.assert_array_equal(out.mask.numpy(), alone[0] | alone[1])


def test_random_mesh_matches_a_ray_caster():
    rng = np.random.default_rng(3)
    uv = rng.uniform([-10, -10], [74, 58], size=(30, 2))
    verts = world_from_pixels(uv, rng.uniform(2.0, 9.0, size=30))
    faces = rng.integers(0, 30, size=(25, 3))
    faces = faces[(faces[:, 0] != faces[:, 1]) & (faces[:, 1] != faces[:, 2])
                  & (faces[:, 0] != faces[:, 2])]
    out = rasterize(verts, faces, K, R_CAM, T_CAM, height=48, width=64)
    ref_face, ref_depth, _ = ray_cast(verts, faces, R_CAM, T_CAM, 48, 64)
    np.testing.assert_array_equal(out.face_index.numpy(), ref_face)
    np.testing.assert_allclose(out.depth.numpy(), ref_depth, rtol=1e-9)
    # Tiny chunks split triangles' boxes across chunks: the same image.
    small = rasterize(verts, faces, K, R_CAM, T_CAM, height=48, width=64, chunk_size=97)
    np.testing.assert_array_equal(small.face_index.numpy(), ref_face)
    np.testing.assert_array_equal(small.bary.numpy(), out.bary.numpy())


def test_faces_behind_the_camera_are_clipped_or_skipped():
    # One triangle wholly behind the camera, one crossing the near plane (a vertex far
    # behind), one with two vertices behind: only what lies in front may be drawn, and
    # exactly that, as the ray caster sees it.
    cam = np.array([
        [-1.0, -1.0, -2.0], [1.0, -1.0, -3.0], [0.0, 1.0, -2.5],        # behind
        [-0.2, -0.1, 3.0], [0.3, -0.15, 4.0], [0.1, 0.4, -2.0],         # one behind
        [-0.31, 0.053, 2.0], [0.3, 0.3, -1.0], [-0.25, 0.4, -4.0]])     # two behind
    verts = (cam - T_CAM) @ R_CAM
    faces = np.arange(9).reshape(3, 3)
    near = 0.5
    out = rasterize(verts, faces, K, R_CAM, T_CAM, height=48, width=64, near=near)
    ref_face, ref_depth, _ = ray_cast(verts, faces, R_CAM, T_CAM, 48, 64, near=near)
    fi = out.face_index.numpy()
    assert not (fi == 0).any()
    assert (fi == 1).sum() > 20 and (fi == 2).sum() > 20
    np.testing.assert_array_equal(fi, ref_face)
    np.testing.assert_allclose(out.depth.numpy(), ref_depth, rtol=1e-9)
    assert (out.depth.numpy()[fi >= 0] >= near).all()
    # Barycentrics of clipped faces still refer to the original three vertices.
    for f in (1, 2):
        sel = fi == f
        points = out.bary.numpy()[sel] @ cam[faces[f]]
        np.testing.assert_allclose(points[:, 2], out.depth.numpy()[sel], rtol=1e-9)


def test_degenerate_faces_and_bad_input():
    uv = np.array([[10.25, 10.25], [20.25, 10.25], [10.25, 20.25], [30.0, 30.0]])
    verts = world_from_pixels(uv, 5.0)
    verts = np.concatenate([verts, [[np.nan, 0.0, 0.0]]])
    faces = [[0, 0, 1], [0, 1, 1], [0, 1, 0], [0, 4, 1],               # repeated / NaN
             [0, 2, 2]]
    collinear = world_from_pixels([[1.0, 1.0], [11.0, 11.0], [21.0, 21.0]], 4.0)
    out = rasterize(np.concatenate([verts, collinear]), faces + [[5, 6, 7]], K, R_CAM, T_CAM,
                    height=48, width=64)
    assert not out.mask.any()
    assert torch.isinf(out.depth).all() and torch.isfinite(out.bary).all()
    with pytest.raises(ValueError, match='faces index vertices'):
        rasterize(verts, [[0, 1, 9]], K, R_CAM, T_CAM, height=48, width=64)
    with pytest.raises(ValueError, match='vertices must be'):
        rasterize(verts[:, :2], [[0, 1, 2]], K, R_CAM, T_CAM, height=48, width=64)
    empty = rasterize(verts, np.zeros((0, 3), dtype=np.int64), K, R_CAM, T_CAM, height=4,
                      width=5)
    assert empty.face_index.shape == (4, 5) and not empty.mask.any()


def test_distortion_moves_pixels_as_project_points_does():
    dist = np.array([-0.25, 0.05, 0.002, -0.001, 0.0])
    Kw = np.array([[40.0, 0.0, CX], [0.0, 40.0, CY], [0.0, 0.0, 1.0]])   # a wide lens

    def cam_point(u, v, z=3.0):
        return np.array([(u - CX) / 40.0 * z, (v - CY) / 40.0 * z, z])

    point = cam_point(58.0, 44.0)
    # A small triangle around the point (0.4 px across in the undistorted image).
    tri = np.stack([cam_point(57.8, 43.9), cam_point(58.2, 43.9), cam_point(58.0, 44.3)])
    out = rasterize(tri, [[0, 1, 2]], Kw, np.eye(3), np.zeros(3), dist, height=48, width=64)
    uv = project_points(torch.as_tensor(point), torch.as_tensor(Kw), torch.eye(3,
                        dtype=torch.float64), torch.zeros(3, dtype=torch.float64),
                        torch.as_tensor(dist)).numpy()[0]
    assert np.abs(uv - [58.0, 44.0]).max() > 3.0                # distortion matters here
    rows, cols = np.nonzero(out.mask.numpy())
    assert len(rows) >= 1
    assert np.abs(cols - uv[0]).max() <= 1 and np.abs(rows - uv[1]).max() <= 1


def test_fold_radius_drops_far_out_triangles():
    dist = np.array([-0.3, 0.0, 0.0, 0.0, 0.0])
    r2 = distortion_fold_radius2(dist)
    assert r2 == pytest.approx(1.0 / 0.9, rel=1e-2)             # 1 + 3 k1 r^2 = 0
    assert distortion_fold_radius2(None) == math.inf
    assert distortion_fold_radius2(np.array([0.1, 0.0, 0, 0, 0])) == math.inf
    # A triangle whose corner lies beyond the fold would be drawn folded back: dropped.
    cam = np.array([[0.0, 0.0, 1.0], [0.2, 0.0, 1.0], [3.0, 3.0, 1.0]])
    out = rasterize(cam, [[0, 1, 2]], K, np.eye(3), np.zeros(3), dist, height=48, width=64)
    assert not out.mask.any()
    out = rasterize(cam, [[0, 1, 2]], K, np.eye(3), np.zeros(3), None, height=48, width=64)
    assert out.mask.any()


# ---- the checks of the former numpy rasteriser (smilfit/datasets/raster.py), which drew
# the synthetic data before it moved to this rasteriser: corners on half-integers, so that
# edges run through pixel centres, and exact masks of overlapping triangles.

def half_integer_triangle_mask(shift=0.0):
    """Pixels whose centres lie in the right triangle (2.5, 2.5), (10.5, 2.5), (2.5, 10.5)
    shifted by ``shift`` px: x >= 3 + shift, y >= 3 + shift, x + y <= 13 + 2 shift."""
    i, j = np.meshgrid(np.arange(48), np.arange(64), indexing='ij')
    return (j >= 3 + shift) & (i >= 3 + shift) & (i + j <= 13 + 2 * shift)


def test_pixel_centres_on_an_edge_are_covered():
    # The hypotenuse x + y = 13 runs through 8 pixel centres (x = 3..10): covered
    # ("inside or on the boundary"). Through a rotated, translated camera, so the
    # round trip world -> pixels is not exact and the tolerance eps is exercised.
    uv = np.array([[2.5, 2.5], [10.5, 2.5], [2.5, 10.5]])
    verts = world_from_pixels(uv, 7.0)
    out = rasterize(verts, [[0, 1, 2]], K, R_CAM, T_CAM, height=48, width=64)
    expected = half_integer_triangle_mask()
    assert expected.sum() == 36                                # a + b <= 7 for a, b >= 0
    mask = out.mask.numpy()
    np.testing.assert_array_equal(mask, expected)
    i, j = np.nonzero(expected)
    on_edge = i + j == 13
    assert on_edge.sum() == 8 and mask[i[on_edge], j[on_edge]].all()
    # Pixel (row i, column j) is the point (x, y) = (j, i): not transposed, not shifted.
    assert mask[3, 10] and mask[10, 3] and not mask[2, 3] and not mask[3, 2]
    np.testing.assert_allclose(out.depth.numpy()[expected], 7.0, rtol=1e-12)
    assert np.isinf(out.depth.numpy()[~expected]).all()
    fi = out.face_index.numpy()
    assert (fi[expected] == 0).all() and (fi[~expected] == -1).all()
    np.testing.assert_allclose(out.bary.numpy()[expected].sum(-1), 1.0, atol=1e-12)
    assert (out.bary.numpy()[~expected] == 0).all()
    # Winding does not matter (no culling).
    flipped = rasterize(verts, [[0, 2, 1]], K, R_CAM, T_CAM, height=48, width=64)
    np.testing.assert_array_equal(flipped.mask.numpy(), expected)


@pytest.mark.parametrize('faces', [[[0, 1, 2], [3, 4, 5]], [[3, 4, 5], [0, 1, 2]]])
def test_nearer_triangle_wins_exactly_on_its_own_pixels(faces):
    # Two copies of the half-integer triangle, the nearer shifted by 2 px: the nearer one
    # owns exactly its own pixels (edges through pixel centres included), the farther one
    # exactly the rest of its own.
    uv = np.array([[2.5, 2.5], [10.5, 2.5], [2.5, 10.5]])
    verts = np.concatenate([world_from_pixels(uv, 9.0), world_from_pixels(uv + 2.0, 4.0)])
    out = rasterize(verts, faces, K, R_CAM, T_CAM, height=48, width=64)
    expected_far, expected_near = half_integer_triangle_mask(), half_integer_triangle_mask(2)
    assert (expected_far & expected_near).sum() == 10
    near_id = faces.index([3, 4, 5])
    fi, depth = out.face_index.numpy(), out.depth.numpy()
    np.testing.assert_array_equal(fi == near_id, expected_near)
    np.testing.assert_array_equal(out.mask.numpy(), expected_far | expected_near)
    np.testing.assert_allclose(depth[expected_near], 4.0, rtol=1e-12)
    np.testing.assert_allclose(depth[expected_far & ~expected_near], 9.0, rtol=1e-12)


def test_depth_is_perspective_correct_on_a_slanted_plane():
    # The plane z = 5 + 0.5 x (camera frame): the depth at a pixel is where its ray meets
    # the plane, 5 / (1 - 0.5 (j - cx) / f), not an affine interpolation of vertex depths.
    uv = np.array([[1.5, 1.5], [60.5, 5.5], [12.5, 45.5]])
    rays = np.stack([(uv[:, 0] - CX) / F_PX, (uv[:, 1] - CY) / F_PX, np.ones(3)], 1)
    cam = rays * (5.0 / (1.0 - 0.5 * rays[:, 0]))[:, None]
    verts = (cam - T_CAM) @ R_CAM
    out = rasterize(verts, [[0, 1, 2]], K, R_CAM, T_CAM, height=48, width=64)
    rows, cols = np.nonzero(out.mask.numpy())
    assert len(rows) > 1000
    rx = (cols - CX) / F_PX
    np.testing.assert_allclose(out.depth.numpy()[rows, cols], 5.0 / (1.0 - 0.5 * rx),
                               rtol=1e-10)
    # The depth varies by a factor of ~1.5 over the triangle: affine would be far off.
    assert out.depth.numpy()[rows, cols].max() / out.depth.numpy()[rows, cols].min() > 1.3


def test_chunking_off_image_and_behind_the_camera():
    # Random faces reaching beyond the image on every side, one with a vertex behind the
    # camera: tiny chunks change nothing, and everything matches the ray caster (the face
    # behind is clipped at the near plane, so only its part in front may be drawn).
    rng = np.random.default_rng(0)
    cam = np.concatenate([
        np.stack([(rng.uniform(-10, 74, 60) - CX) / F_PX, (rng.uniform(-10, 58, 60) - CY)
                  / F_PX, np.ones(60)], 1) * rng.uniform(2, 9, 60)[:, None],
        [[0.0, 0.0, -1.0]]])
    verts = (cam - T_CAM) @ R_CAM
    faces = rng.integers(0, 60, (40, 3))
    faces[0] = [0, 1, 60]
    faces = faces[(faces[:, 0] != faces[:, 1]) & (faces[:, 1] != faces[:, 2])
                  & (faces[:, 0] != faces[:, 2])]
    a = rasterize(verts, faces, K, R_CAM, T_CAM, height=48, width=64)
    b = rasterize(verts, faces, K, R_CAM, T_CAM, height=48, width=64, chunk_size=7)
    np.testing.assert_array_equal(a.face_index.numpy(), b.face_index.numpy())
    np.testing.assert_array_equal(a.depth.numpy(), b.depth.numpy())
    np.testing.assert_array_equal(a.bary.numpy(), b.bary.numpy())
    ref_face, ref_depth, _ = ray_cast(verts, faces, R_CAM, T_CAM, 48, 64, near=1e-6)
    np.testing.assert_array_equal(a.face_index.numpy(), ref_face)
    np.testing.assert_allclose(a.depth.numpy(), ref_depth, rtol=1e-9)
    assert a.mask.numpy().sum() > 500


def test_renders_the_demo_mouse_at_the_synthetic_datas_size():
    """The synthetic data's workload: the demo mouse (6560 faces) at 256 x 256 (its speed is
    measured by benchmarks/zbuffer.py)."""
    from smilfit.body_models import build_demo_smil_model
    from smilfit.datasets.synthetic import look_at
    model = build_demo_smil_model()
    with torch.no_grad():
        verts = model().vertices[0].double().numpy()
    faces = model.faces.numpy()
    R, t = look_at(np.array([150.0, -250.0, 150.0]), np.array([0.0, 0.0, 15.0]),
                   np.array([0.0, 0.0, 1.0]))
    Km = np.array([[350.0, 0.0, 127.5], [0.0, 350.0, 127.5], [0.0, 0.0, 1.0]])
    out = rasterize(verts, faces, Km, R, t, np.zeros(5), height=256, width=256)
    assert 500 < int(out.mask.sum()) < 256 * 256 / 2
    # All-zero distortion draws exactly what no distortion draws.
    plain = rasterize(verts, faces, Km, R, t, None, height=256, width=256)
    assert torch.equal(plain.face_index, out.face_index) and torch.equal(plain.depth, out.depth)
