"""The z-buffer rasteriser against analytic expectations and an independent ray caster."""
import math
import time

import numpy as np
import pytest
import torch

from smilfit.cameras import project_points
from smilfit.visualization.zbuffer import (distortion_fold_radius2, rasterize, render_mesh,
                                           vertex_normals)

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


def test_headlight_shading_is_brightest_facing_the_camera():
    # Three triangles centred on the principal ray direction of their own pixel, tilted by
    # 0, 40 and 70 degrees about the vertical axis: brightness ambient + (1-a) cos(angle).
    colour, ambient = np.array([0.8, 0.6, 0.4]), 0.2
    results = []
    for angle in (0.0, 40.0, 70.0):
        rot = rotation([0, 1, 0], math.radians(angle))
        tri = np.array([[-0.3, -0.3, 0.0], [0.3, -0.3, 0.0], [0.0, 0.35, 0.0]]) @ rot.T
        tri[:, 2] += 4.0
        # Principal point pixel (31.5, 23.5) is not a pixel centre: shift cx, cy.
        Kc = K.copy()
        Kc[0, 2], Kc[1, 2] = 32.0, 24.0
        r = render_mesh(tri, [[0, 1, 2]], Kc, np.eye(3), np.zeros(3), height=48, width=64,
                        colour=colour, ambient=ambient, smooth=False)
        assert r.mask[24, 32]
        results.append(r.image[24, 32].astype(float))
        expected = np.rint(255 * colour * (ambient + (1 - ambient) * math.cos(
            math.radians(angle))))
        np.testing.assert_allclose(r.image[24, 32], expected, atol=1)
    assert (results[0] > results[1]).all() and (results[1] > results[2]).all()


def test_render_mesh_image_and_mask_follow_the_raster():
    uv = np.array([[10.25, 10.25], [20.25, 10.25], [10.25, 20.25]])
    verts = world_from_pixels(uv, 5.0)
    r = render_mesh(verts, [[0, 1, 2]], K, R_CAM, T_CAM, height=48, width=64,
                    background=(7, 8, 9), vertex_colours=[[255, 0, 0]] * 3)
    assert r.image.dtype == np.uint8 and r.image.shape == (48, 64, 3)
    assert r.mask.sum() == 45
    assert (r.image[~r.mask] == [7, 8, 9]).all()
    assert (r.image[r.mask][:, 1:] == 0).all() and (r.image[r.mask][:, 0] > 50).all()


def test_vertex_normals_of_a_plane():
    v = torch.tensor([[0.0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0]], dtype=torch.float64)
    f = torch.tensor([[0, 1, 2], [0, 2, 3]])
    np.testing.assert_allclose(vertex_normals(v, f).numpy(), [[0, 0, 1]] * 4, atol=1e-12)


@pytest.mark.slow
def test_speed_6k_faces_512():
    """Benchmark: the demo mouse (6560 faces) filling much of a 512 x 512 image."""
    from smilfit.body_models import SMILModel, demo_model_data
    from smilfit.datasets.synthetic import look_at

    torch.set_num_threads(1)
    model = SMILModel(data=demo_model_data())
    out = model(global_orient=torch.zeros(1, 3), body_pose=torch.zeros(1, 26, 3),
                betas=torch.zeros(1, 9), transl=torch.zeros(1, 3))
    v = out.vertices[0].double()
    centre = v.mean(0).numpy()
    size = float((v.max(0).values - v.min(0).values).max())
    R, t = look_at(centre + np.array([0, -0.9, 0.5]) * size, centre, np.array([0, 0, 1.0]))
    Kb = np.array([[600.0, 0, 256], [0, 600, 256], [0, 0, 1]])
    times = {}
    for fn in (rasterize, render_mesh):
        ts = []
        for _ in range(10):
            t0 = time.perf_counter()
            r = fn(v, model.faces, Kb, R, t, height=512, width=512)
            ts.append(time.perf_counter() - t0)
        times[fn.__name__] = 1000 * min(ts), 1000 * float(np.median(ts))
    mask = r.mask
    print(f'\n6560 faces, 512x512, {int(mask.sum())} px covered: ' +
          ', '.join(f'{k} min {a:.1f} ms / median {b:.1f} ms' for k, (a, b) in times.items()))
    assert times['render_mesh'][0] < 100.0
