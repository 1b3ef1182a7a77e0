"""The synthetic generator: GT consistency, visibility, masks, determinism, CLI, any model."""

import h5py
import numpy as np
import pytest
import torch

from smilfit.body_models import SMILModel, build_demo_smil_model, build_model_from_skeleton
from smilfit.cameras.projection import camera_depth, project_points
from smilfit.cli.make_synthetic import main as make_synthetic_main
from smilfit.datasets import DatasetReader, MultiViewHDF5Dataset, generate_synthetic_dataset
from smilfit.datasets.synthetic import look_at, ring_cameras

TINY = dict(num_sessions=2, frames_per_session=3, num_views=3, image_size=128, seed=0)


@pytest.fixture(scope='module')
def tiny(tmp_path_factory):
    path = tmp_path_factory.mktemp('synthetic') / 'tiny.h5'
    generate_synthetic_dataset(path, progress=False, **TINY)
    return path


def reproject(data):
    P = torch.as_tensor(data['keypoints_3d'], dtype=torch.float64)[:, None]   # (N, 1, K, 3)
    K, R, t, dist = (torch.as_tensor(data[k], dtype=torch.float64)
                     for k in ('K', 'R', 't', 'dist'))
    return project_points(P, K, R, t, dist).numpy(), camera_depth(P, R, t).numpy()


def test_tiny_dataset_reads_back(tiny):
    path = tiny
    ds = MultiViewHDF5Dataset(str(path))
    assert len(ds) == 6 and ds.metainfo['session_names'] == ['synthetic_0000',
                                                             'synthetic_0001']
    s = ds[5]
    assert s['images'].shape == (3, 128, 128, 3) and s['images'].dtype == np.uint8
    assert s['masks'].shape == (3, 128, 128) and s['masks'].dtype == bool
    assert s['keypoints_2d'].shape == (3, 35, 2) and s['keypoints_3d'].shape == (35, 3)
    assert s['session'] == 'synthetic_0001' and s['frame'] == 2
    assert set(s['params']) == {'global_orient', 'body_pose', 'betas', 'transl', 'log_scale',
                                'bone_trans'}
    with h5py.File(path, 'r') as f:
        assert f.attrs['units'] == 'mm' and f.attrs['source'] == 'synthetic'


def test_keypoints_2d_are_the_projected_keypoints_3d(tiny):
    reader = DatasetReader(tiny)
    data = reader.read(np.arange(len(reader)))
    uv, depth = reproject(data)
    np.testing.assert_allclose(data['keypoints_2d'], uv, atol=1e-3)
    assert np.all(depth > 0)
    np.testing.assert_array_equal(data['confidence'], data['visible'].astype(np.float32))
    np.testing.assert_array_equal(data['crop'], np.broadcast_to(np.eye(3), data['crop'].shape))
    # One rig per session: cameras are the same for every frame of a session.
    for s in range(2):
        rows = data['session'] == s
        assert np.allclose(data['R'][rows], data['R'][rows][:1])


def test_masks_images_and_visibility_agree(tiny):
    reader = DatasetReader(tiny)
    data = reader.read(np.arange(len(reader)))
    kp = data['keypoints_2d']
    total = hits = occluded = 0
    for i in range(len(reader)):
        for c in range(3):
            mask = reader.decode_mask(data['masks'][i][c]) > 0
            image = reader.decode_image(data['images'][i][c])
            assert 30 < mask.sum() < mask.size / 2
            # The animal is not the background colour.
            assert np.abs(image[mask].mean(0) - image[~mask].mean(0)).max() > 5
            grown = np.zeros_like(mask)
            grown[1:-1, 1:-1] = (mask[1:-1, 1:-1] | mask[:-2, 1:-1] | mask[2:, 1:-1]
                                 | mask[1:-1, :-2] | mask[1:-1, 2:])
            xy = np.rint(kp[i, c]).astype(int)
            inside = (xy[:, 0] >= 0) & (xy[:, 0] < 128) & (xy[:, 1] >= 0) & (xy[:, 1] < 128)
            vis = data['visible'][i, c]
            assert not np.any(vis & ~inside)
            total += vis.sum()
            hits += grown[xy[vis, 1], xy[vis, 0]].sum()
            occluded += (inside & ~vis).sum()
    assert hits >= 0.95 * total and total > 0.4 * kp[..., 0].size
    assert occluded > 0                               # the z-buffer test hides some points


def test_gt_params_reproduce_the_3d_keypoints(tiny):
    data = DatasetReader(tiny).read(np.arange(6))
    model = build_demo_smil_model(dtype=torch.float64)
    with torch.no_grad():
        out = model(**{k: torch.as_tensor(v, dtype=torch.float64)
                       for k, v in data['params'].items()}, return_vertices=False)
    np.testing.assert_allclose(out.keypoints.numpy(), data['keypoints_3d'], atol=1e-2)
    betas = data['params']['betas']
    assert np.allclose(betas[:3], betas[0]) and not np.allclose(betas[0], betas[3])


def test_deterministic_given_the_seed(tmp_path):
    opts = dict(num_sessions=1, frames_per_session=2, num_views=2, image_size=64)
    paths = [tmp_path / f'{name}.h5' for name in ('a', 'b', 'c')]
    for path, seed in zip(paths, (3, 3, 4)):
        generate_synthetic_dataset(path, progress=False, seed=seed, **opts)
    a, b, c = (DatasetReader(p).read([0, 1]) for p in paths)
    for key in ('keypoints_2d', 'visible', 'K', 'R', 't', 'keypoints_3d'):
        np.testing.assert_array_equal(a[key], b[key])
    assert a['images'] == b['images'] and a['masks'] == b['masks']
    assert not np.allclose(a['keypoints_3d'], c['keypoints_3d'])


def test_any_model_any_up_axis(tmp_path):
    # A tiny y-up lizard-like model in metres, no shape prior given.
    names = ['root', 'head', 'tail', 'leg_L', 'leg_R']
    data = build_model_from_skeleton(
        names, [None, 'root', 'root', 'root', 'root'],
        np.array([[0, 0.05, 0], [0.06, 0.05, 0], [-0.08, 0.04, 0], [0, 0.01, 0.03],
                  [0, 0.01, -0.03]]), units='m', up_axis='y', tip_keypoints=True)
    data.shape_cov = None
    model = SMILModel(data=data)
    path = generate_synthetic_dataset(tmp_path / 'lizard.h5', body_model=model, progress=False,
                                      num_sessions=1, frames_per_session=2, num_views=2,
                                      image_size=(80, 64), elevation_deg=89.0)
    reader = DatasetReader(path)
    assert reader.units == 'm' and reader.keypoint_names == model.keypoint_names
    d = reader.read([0, 1])
    uv, _ = reproject(d)
    np.testing.assert_allclose(d['keypoints_2d'], uv, atol=1e-3)
    assert d['visible'].any()
    assert (reader.decode_mask(d['masks'][0][0]) > 0).sum() > 20
    assert reader.decode_image(d['images'][0][0]).shape == (64, 80, 3)


def test_cameras_look_at_their_target():
    up = np.array([0.0, 0.0, 1.0])
    target = np.array([5.0, -3.0, 12.0])
    cams = ring_cameras(5, target=target, up=up, distance=200.0,
                        elevations_deg=[0, 20, 45, 70, 90], azimuths_deg=[0, 72, 144, 216, 288],
                        focal=100.0, image_size=(64, 48))
    for R, t in zip(cams['R'], cams['t']):
        np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-12)
        assert np.linalg.det(R) == pytest.approx(1.0)
        np.testing.assert_allclose(R @ target + t, [0, 0, 200.0], atol=1e-9)
    uv = project_points(torch.as_tensor(target)[None], *(torch.as_tensor(cams[k]) for k in
                                                           ('K', 'R', 't')))
    np.testing.assert_allclose(uv.numpy()[:, 0], [[31.5, 23.5]] * 5, atol=1e-9)
    # Not looking straight down: image "up" (-y_cam) points along world up.
    R, _ = look_at(np.array([100.0, 0, 50]), np.zeros(3), up)
    assert (R @ up)[1] < 0


def test_cli(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        make_synthetic_main(['--help'])
    assert info.value.code == 0
    assert 'session' in capsys.readouterr().out
    out = tmp_path / 'cli.h5'
    args = [str(out), '--sessions', '2', '--frames', '1', '--views', '2', '--image-size',
            '48', '40', '--elevation', '30', '--seed', '1', '--quiet', '--no-masks']
    assert make_synthetic_main(args) == 0
    reader = DatasetReader(out)
    assert len(reader) == 2 and reader.num_views == 2 and not reader.has_masks
    assert reader.read([0])['image_size'][0].tolist() == [[48, 40], [48, 40]]
    assert make_synthetic_main(args) == 1                       # exists, no --overwrite
    assert make_synthetic_main(args + ['--overwrite']) == 0


def test_render_view_shades_the_z_buffer_of_the_demo_mouse():
    """render_view = the shared z-buffer (smilfit.renderers.zbuffer) + Lambert shading:
    mask and depth are the rasteriser's, the background is kept, the animal is shaded."""
    from smilfit.datasets.synthetic import render_view, shade_lambert, vertex_normals
    from smilfit.renderers.zbuffer import rasterize
    model = build_demo_smil_model()
    with torch.no_grad():
        verts = model().vertices[0].double().numpy()
    faces = model.faces.numpy()
    R, t = look_at(np.array([150.0, -250.0, 150.0]), np.array([0.0, 0.0, 15.0]),
                   np.array([0.0, 0.0, 1.0]))
    K = np.array([[350.0, 0.0, 127.5], [0.0, 350.0, 127.5], [0.0, 0.0, 1.0]])
    normals = vertex_normals(verts, faces)
    view = render_view(verts, faces, normals, K, R, t, np.zeros(5), (256, 200),
                       background=(0, 0, 255))
    raster = rasterize(verts, faces, K, R, t, height=200, width=256)
    assert view['image'].shape == (200, 256, 3) and view['image'].dtype == np.uint8
    np.testing.assert_array_equal(view['mask'], raster.mask.numpy())
    np.testing.assert_array_equal(view['depth'], raster.depth.numpy())
    mask = view['mask']
    assert 500 < mask.sum() < mask.size / 2
    assert np.all(view['image'][~mask] == (0, 0, 255))
    lit = view['image'][mask].astype(float).mean(1)
    assert lit.std() > 5 and lit.mean() > 60          # shaded, not flat, not black
    # A surface facing the light head-on gets ambient + diffuse; the shading is two-sided.
    tri = np.array([[-1.0, -1.0, 5.0], [1.0, -1.0, 5.0], [0.0, 1.0, 5.0]])
    flat = rasterize(tri, [[0, 1, 2]], K, np.eye(3), np.zeros(3), height=200, width=256)
    for nz in (-1.0, 1.0):
        img = shade_lambert(flat, np.array([[0, 1, 2]]), np.tile([0.0, 0.0, nz], (3, 1)),
                            albedo=(1.0, 1.0, 1.0), light_dir=(0.0, 0.0, 1.0))
        assert np.all(img[flat.mask.numpy()] == 255)
