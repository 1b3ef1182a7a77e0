"""render_mesh (headlight Lambert shading on the z-buffer rasteriser) and the names
smilfit.visualization.zbuffer keeps re-exporting; the rasteriser itself is tested in
tests/renderers/test_zbuffer.py."""
import math
import time

import numpy as np
import pytest
import torch

import smilfit.renderers.zbuffer as core
from smilfit.visualization.zbuffer import (distortion_fold_radius2, rasterize, render_mesh,
                                           vertex_normals)
from tests.renderers.test_zbuffer import K, R_CAM, T_CAM, rotation, world_from_pixels


def test_old_names_are_the_shared_rasteriser():
    import smilfit.visualization as vis
    from smilfit.ops.normals import vertex_normals as ops_normals
    from smilfit.visualization.zbuffer import Rasterization
    assert rasterize is core.rasterize is vis.rasterize
    assert Rasterization is core.Rasterization is vis.Rasterization
    assert distortion_fold_radius2 is core.distortion_fold_radius2
    assert vertex_normals is ops_normals


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
