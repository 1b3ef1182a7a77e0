"""smilfit.visualization.scene (a work dir as arrays), its GLB export, the viewer's scene
nodes and tools/view.py, without a browser (tests/visualization/test_viewer_browser.py
loads the pages in Chromium)."""
from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

from smilfit.visualization.scene import SceneError, load_scene

from .viewer_helpers import make_fit


@pytest.fixture(scope='module')
def work_dir(tmp_path_factory):
    return make_fit(tmp_path_factory.mktemp('scene'))


@pytest.fixture(scope='module')
def scene(work_dir):
    return load_scene(work_dir)


def test_fit_scene_holds_the_fit_per_frame(work_dir, scene):
    import torch

    from smilfit.body_models.parameters import MODEL_INPUTS
    from smilfit.registry import BODY_MODELS
    from smilfit.utils import register_all_modules
    with h5py.File(work_dir / 'fit_results.h5', 'r') as f:
        frames = f['samples/frame'][()]
        fitted = f['fitted_keypoints_3d'][()]
        point_px = f['metrics/reprojection_point_px'][()]
        params = {k: f['params'][k][()] for k in f['params']}
    order = np.argsort(frames)
    T = len(frames)
    assert scene.kind == 'fit' and scene.num_frames == T and scene.num_animals == 1
    assert scene.frame_labels == [f'frame {n}' for n in frames[order]]
    np.testing.assert_array_equal(scene.fitted[:, 0], fitted[order])
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', RuntimeWarning)
        want = np.nanmedian(point_px[order], axis=1)
    np.testing.assert_allclose(scene.errors[:, 0], want, equal_nan=True)
    # The meshes are the body model at the fitted parameters.
    register_all_modules(init_default_scope=False)
    config = json.loads((work_dir / 'chunks' / 'config.json').read_text())
    model = BODY_MODELS.build(config['registrant']['body_model'])
    with torch.no_grad():
        out = model(**{k: torch.as_tensor(v[order], dtype=model.dtype)
                       for k, v in params.items() if k in MODEL_INPUTS}, return_vertices=True)
    np.testing.assert_allclose(scene.vertices[:, 0], out.vertices.float().numpy(), atol=1e-3)
    assert scene.faces.shape == (len(model.faces), 3)
    # The fit lands on the observed keypoints.
    gap = np.linalg.norm(scene.observed - scene.fitted, axis=-1)
    assert np.isfinite(gap).mean() > 0.8
    assert np.nanmedian(gap) < 0.02 * scene.scale()
    # Cameras and images of the views.
    cams = scene.cameras
    assert cams.K.shape == (T, 3, 3, 3) and cams.valid.all()
    images = scene.images(0)
    assert len(images) == 3 and images[0].dtype == np.uint8 and images[0].ndim == 3
    assert scene.units == 'mm'


def test_observed_keypoints_are_the_datasets_or_triangulated(work_dir, scene, tmp_path):
    """The dataset's keypoints_3d when it has them (the synthetic data: the truth), else
    triangulated from the 2D observations (noise-free here: the truth again)."""
    import shutil

    from smilfit.visualization.fit_run import load_fit_run
    with h5py.File(work_dir / 'fit_results.h5', 'r') as f:
        index = f['samples/index'][()][np.argsort(f['samples/frame'][()])]
    source = load_fit_run(work_dir).dataset
    with h5py.File(source, 'r') as f:
        truth = f['keypoints_3d'][()][index]
    np.testing.assert_array_equal(scene.observed[:, 0], truth)
    data = tmp_path / 'without_3d.h5'
    shutil.copy(source, data)
    with h5py.File(data, 'a') as f:
        f['keypoints_3d'][...] = np.nan
    triangulated = load_scene(work_dir, dataset=data, images=False).observed[:, 0]
    seen = np.isfinite(triangulated).all(-1)
    assert seen.mean() > 0.8
    np.testing.assert_allclose(triangulated[seen], truth[seen], atol=1e-3 * scene.scale())


def test_scene_selection_and_bad_input(work_dir, scene, tmp_path):
    part = scene.select_frames([2, 0])
    assert part.frame_labels == [scene.frame_labels[2], scene.frame_labels[0]]
    np.testing.assert_array_equal(part.vertices[0], scene.vertices[2])
    np.testing.assert_array_equal(part.images(1)[0], scene.images(0)[0])
    with pytest.raises(SceneError, match='outside'):
        scene.select_frames([scene.num_frames])
    framed = load_scene(work_dir, frames=(1, 3), images=False)
    assert framed.frame_labels == ['frame 1', 'frame 2'] and framed.images(0) is None
    with pytest.raises(SceneError, match="unknown session 'nope'.*synthetic_0000"):
        load_scene(work_dir, session='nope')
    with pytest.raises(SceneError, match='fit_results.h5, predictions.h5, registrations.npz'):
        load_scene(tmp_path)
    with pytest.raises(FileNotFoundError, match='no such folder'):
        load_scene(tmp_path / 'missing')


def test_glb_export_reloads_with_meshes_and_keypoint_markers(scene, tmp_path):
    import trimesh

    from smilfit.visualization.scene_export import export_glb
    path = export_glb(scene, tmp_path / 'scene.glb', frames=[0, 3])
    loaded = trimesh.load(path, process=False)
    geoms = loaded.geometry
    V = scene.vertices.shape[2]
    for f in (0, 3):
        root = scene.frame_labels[f].replace(' ', '_')
        mesh = geoms[f'{root}/animal_0']
        assert len(mesh.vertices) == V and len(mesh.faces) == len(scene.faces)
        np.testing.assert_allclose(mesh.vertices, scene.vertices[f, 0], atol=1e-4)
        n_fit = int(np.isfinite(scene.fitted[f, 0]).all(-1).sum())
        n_obs = int(np.isfinite(scene.observed[f, 0]).all(-1).sum())
        assert len(geoms[f'{root}/fitted_keypoints'].vertices) == n_fit * 42   # icospheres
        assert len(geoms[f'{root}/observed_keypoints'].vertices) == n_obs * 6  # octahedra
        # the markers sit on the keypoints
        centres = geoms[f'{root}/fitted_keypoints'].vertices.reshape(n_fit, 42, 3).mean(1)
        finite = scene.fitted[f, 0][np.isfinite(scene.fitted[f, 0]).all(-1)]
        np.testing.assert_allclose(centres, finite, atol=1e-3 * scene.scale())
    assert not any(k.startswith('frame_1/') for k in geoms)
    for name in scene.cameras.names:
        assert f'cameras/{name}/frustum' in geoms
        assert geoms[f'cameras/{name}/image'].visual.material.baseColorTexture is not None


def test_viewer_nodes_follow_the_timeline_and_layers(scene):
    viser = pytest.importorskip('viser')
    from smilfit.visualization.viewer import LAYERS, SceneViewer, free_port
    from smilfit.cli import view as cli
    assert cli.LAYERS == LAYERS
    server = viser.ViserServer(host='127.0.0.1', port=free_port(), verbose=False)
    viewer = SceneViewer(scene, server, view_camera=1)
    try:
        mesh = viewer._nodes['mesh0']
        np.testing.assert_allclose(mesh.vertices, scene.vertices[0, 0])
        viewer.set_frame(4)
        np.testing.assert_allclose(mesh.vertices, scene.vertices[4, 0])
        fitted = scene.fitted[4, 0]
        np.testing.assert_allclose(viewer._nodes['fitted'].points,
                                   fitted[np.isfinite(fitted).all(-1)])
        assert viewer._gui['frame'].value == 4
        # the camera looked through is hidden, the others show their frame's image
        assert [c.visible for c in viewer._cameras] == [True, False, True]
        assert viewer._cameras[0].image.shape == scene.images(4)[0].shape
        viewer.set_layer('mesh', False)
        assert not mesh.visible
        viewer.set_layer('mesh', True)
        assert mesh.visible
        with pytest.raises(ValueError, match='unknown layer'):
            viewer.set_layer('meshes', False)
        # the fit report's table of where each label sits, in a panel of its own
        assert scene.label_places.startswith('| keypoint | model point | marker t |')
        assert viewer._gui['label_places'].content == scene.label_places
        # the camera view puts the dataset camera's centre and axis on the viewer's camera
        view = viewer.camera_view(1)
        R, t = scene.cameras.R[4, 1], scene.cameras.t[4, 1]
        np.testing.assert_allclose(view['position'], -R.T @ t)
        direction = view['look_at'] - view['position']
        np.testing.assert_allclose(direction / np.linalg.norm(direction), R[2], atol=1e-9)
        # playing advances the timeline
        viewer.fps = 50.0
        viewer.play(True)
        import time
        start = viewer.frame
        deadline = time.monotonic() + 5
        while viewer.frame == start and time.monotonic() < deadline:
            time.sleep(0.02)
        viewer.play(False)
        assert viewer.frame != start
    finally:
        viewer.close()
        server.stop()


def test_view_tool_exports_and_reports_errors(work_dir, tmp_path, capsys):
    pytest.importorskip('viser')
    from smilfit.cli.view import main
    assert main([str(work_dir), '--frames', '2', '--export', str(tmp_path / 'a.glb')]) == 0
    import trimesh
    assert 'frame_2/animal_0' in trimesh.load(tmp_path / 'a.glb', process=False).geometry
    assert main([str(work_dir), '--no-images', '--hide', 'cameras',
                 '--export', str(tmp_path / 'a.html')]) == 0
    text = (tmp_path / 'a.html').read_text()
    assert text.startswith('<!doctype html>') and '__VISER_EMBED_DATA__' in text
    assert main([str(work_dir), '--export', str(tmp_path / 'a.txt')]) == 1
    assert main([str(work_dir), '--camera', 'cam_9', '--export',
                 str(tmp_path / 'b.glb')]) == 1
    err = capsys.readouterr().err
    assert 'must end in .html or .glb' in err and "--camera 'cam_9'" in err
    assert not (tmp_path / 'a.txt').exists() and not (tmp_path / 'b.glb').exists()


def test_registration_and_inference_work_dirs(tmp_path):
    import trimesh

    from smilfit.registration import Scan, save_scan
    box = trimesh.creation.box()
    V = len(box.vertices)
    # tools/register.py: registrations.npz, meshes/<scan>.ply, the scan files.
    reg = tmp_path / 'reg'
    (reg / 'meshes').mkdir(parents=True)
    scans = []
    for i in range(2):
        scan = tmp_path / f'scan_{i}.ply'
        save_scan(Scan(points=box.vertices * (1 + i) + 0.1), scan)
        scans.append(str(scan))
        save_scan(Scan(points=box.vertices * (1 + i), faces=box.faces),
                  reg / 'meshes' / f'scan_{i}.ply')
    np.savez(reg / 'registrations.npz', names=np.array(['scan_0', 'scan_1']),
             files=np.array(scans),
             scan_vertices=np.stack([box.vertices * (1 + i) for i in range(2)]))
    s = load_scene(reg)
    assert s.kind == 'registration' and s.frame_labels == ['scan_0', 'scan_1']
    assert s.vertices.shape == (2, 1, V, 3) and s.faces.shape == box.faces.shape
    assert len(s.points[1]) == V
    np.testing.assert_allclose(s.point_errors[0], np.sqrt(3 * 0.1 ** 2), rtol=1e-5)
    # tools/infer.py: predictions.h5 (+ meshes/*.obj with --save-meshes).
    inf = tmp_path / 'inf'
    (inf / 'meshes').mkdir(parents=True)
    N, K = 3, 4
    with h5py.File(inf / 'predictions.h5', 'w') as f:
        f.attrs['format'] = 'smilfit-inference'
        f.attrs['keypoint_names'] = json.dumps([f'k{i}' for i in range(K)])
        f.attrs['camera_names'] = json.dumps(['top'])
        f['frame'] = np.array([5, 7, 5])
        f['instance'] = np.array([0, 0, 1])
        f['keypoints_3d'] = np.arange(N * K * 3, dtype=np.float64).reshape(N, K, 3)
        f['cameras/K'] = np.tile(np.diag([100.0, 100.0, 1.0]), (N, 1, 1, 1))
        f['cameras/K'][:, :, :2, 2] = 50.0
        f['cameras/R'] = np.tile(np.eye(3), (N, 1, 1, 1))
        f['cameras/t'] = np.tile([0.0, 0.0, 10.0], (N, 1, 1))
    for frame, inst in ((5, 0), (7, 0), (5, 1)):
        box.export(inf / 'meshes' / f'video_frame_{frame:06d}_inst{inst}.obj')
    s = load_scene(inf)
    assert s.kind == 'inference' and s.frame_labels == ['frame 5', 'frame 7']
    assert s.num_animals == 2 and s.fitted.shape == (2, 2, K, 3)
    assert np.isnan(s.fitted[1, 1]).all()                 # animal 1 absent at frame 7
    np.testing.assert_array_equal(s.fitted[0, 1], np.arange(N * K * 3).reshape(N, K, 3)[2])
    assert s.vertices.shape == (2, 2, V, 3) and np.isnan(s.vertices[1, 1]).all()
    assert s.cameras.names == ['top'] and s.cameras.image_size[0, 0].tolist() == [100, 100]


def _sphere(points: np.ndarray):
    points = points.reshape(-1, 3)
    points = points[np.isfinite(points).all(-1)]
    lo, hi = points.min(0), points.max(0)
    return (lo + hi) / 2, 0.5 * np.linalg.norm(hi - lo)


@pytest.mark.parametrize('camera', [0, None], ids=['through-camera', 'free'])
def test_viewer_opens_framed_on_the_first_frames_animal(scene, camera):
    """The start view aims at the first frame's animal and its bounding sphere fills
    FRAME_FILL of the view's height: from the camera's own position with a narrower field
    of view, or (free view) moved in along its line of sight. With framing off, a camera
    start is the camera's own view."""
    viser = pytest.importorskip('viser')
    from smilfit.visualization.viewer import FRAME_FILL, SceneViewer, free_port
    parts = [a[0] for a in (scene.vertices, scene.fitted, scene.observed) if a is not None]
    centre, radius = _sphere(np.concatenate([p.reshape(-1, 3) for p in parts]))
    server = viser.ViserServer(host='127.0.0.1', port=free_port(), verbose=False)
    try:
        viewer = SceneViewer(scene, server, view_camera=camera, gui=False)
        init = server.initial_camera
        position, fov = np.asarray(init.position), float(init.fov)
        np.testing.assert_allclose(init.look_at, centre, atol=1e-6 * scene.scale())
        distance = np.linalg.norm(centre - position)
        fill = np.tan(np.arcsin(radius / distance)) / np.tan(fov / 2)
        assert fill == pytest.approx(FRAME_FILL, rel=1e-6)
        if camera is not None:
            own = viewer.camera_view(camera, 0)
            np.testing.assert_allclose(position, own['position'])
            viewer.close()
            exact = SceneViewer(scene, server, view_camera=camera, gui=False,
                                frame_animal=False)
            assert server.initial_camera.fov == pytest.approx(float(own['fov']))
            np.testing.assert_allclose(server.initial_camera.look_at, own['look_at'])
            exact.close()
        else:
            viewer.close()
    finally:
        server.stop()
