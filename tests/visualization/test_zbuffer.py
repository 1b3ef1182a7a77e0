"""render_mesh (headlight Lambert shading on the z-buffer rasteriser) and the names
smilfit.visualization.zbuffer keeps re-exporting; the rasteriser itself is tested in
tests/renderers/test_zbuffer.py."""
import math

import numpy as np
import pytest
import torch

import smilfit.renderers.zbuffer as core
from smilfit.visualization.zbuffer import (distortion_fold_radius2, rasterize, render_mesh,
                                           vertex_normals)
from tests.conftest import benchmark_module
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


def test_the_speed_benchmark_renders_the_demo_mouse_and_writes_its_table(tmp_path, capsys):
    # Speed is measured by benchmarks/zbuffer.py, not asserted here: this checks what its
    # table reports (the scene it times is the one it claims, covering more pixels the
    # larger the image) on a small size.
    bench = benchmark_module('zbuffer')
    assert bench.main(['--sizes', '32', '64', '--tables', str(tmp_path)]) == 0
    lines = (tmp_path / 'zbuffer_cpu.md').read_text().splitlines()
    assert lines[0].startswith('<!-- written by `python benchmarks/')
    rows = [[cell.strip() for cell in line.strip('|').split('|')] for line in lines[4:]]
    assert [row[0] for row in rows] == ['32 x 32', '64 x 64']
    verts, faces, K, R, t = bench.scene(64)
    assert all(int(row[1]) == len(faces) for row in rows)
    covered = [int(row[2]) for row in rows]
    assert covered[0] > 0 and covered[1] == int(rasterize(verts, faces, K, R, t, height=64,
                                                          width=64).mask.sum())
    assert covered[1] > 3 * covered[0]     # the same view at twice the size: ~4x the pixels
    assert all(float(row[3]) > 0 and float(row[4]) > 0 for row in rows)
    assert 'rasterize ms' in capsys.readouterr().out


def test_the_speed_benchmark_refuses_sizes_it_cannot_render():
    with pytest.raises(SystemExit):
        benchmark_module('zbuffer').main(['--sizes', '0'])
