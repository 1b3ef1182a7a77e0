"""The regressor on a real recording: the shared 4-camera mouse session (calibration in
millimetres, the SMIL mouse in its own units), prepared with images, trained for a few
iterations on its training time blocks, scored on the held-out blocks, tested with
tools/test.py and run with tools/infer.py."""
import json
from pathlib import Path

import h5py
import numpy as np
import pytest
from mmengine.config import Config

from ..conftest import REPO_ROOT, shared_path

CONFIG = REPO_ROOT / 'configs' / 'regression' / 'mouse_session_resnet18.py'
ITERS = 40


@pytest.fixture(scope='module')
def prepared(tmp_path_factory):
    session = shared_path('data', 'sleap_anipose_minimal_session', 'minimal_session')
    shared_path('models', 'SMILy_Mouse_static_joints.pkl')
    from smilfit.cli.preprocess_sleap import main as preprocess
    out = tmp_path_factory.mktemp('real_session') / 'session_64.h5'
    assert preprocess([str(session), str(out), '--crop-mode', 'bbox_crop',
                       '--target-size', '64', '--no-progress']) == 0
    return out


def small_network(cfg, data, work_dir):
    """The session config ``cfg`` with a tiny backbone and head, on ``data`` (prepared
    crops), writing to ``work_dir``."""
    cfg.model.body_model.model_path = str(shared_path('models',
                                                      'SMILy_Mouse_static_joints.pkl'))
    cfg.model.joint_lookup = str(REPO_ROOT / 'configs' / 'fitting' / 'mouse_joint_lookup.csv')
    cfg.model.backbone.model_name = 'test_resnet'
    cfg.data = None                 # ``data`` is prepared already: no crops made on use
    cfg.model.neck.update(dim=32, num_heads=4)
    cfg.model.head.update(dim=32, depth=1, num_heads=4)
    for loader in (cfg.train_dataloader, cfg.val_dataloader, cfg.test_dataloader):
        loader.dataset.data_root = str(data.parent)
        loader.dataset.ann_file = data.name
    cfg.train_dataloader.batch_size = 4
    cfg.default_hooks.logger.interval = 10
    cfg.work_dir = str(work_dir)
    return cfg


def _config(data, work_dir):
    cfg = small_network(Config.fromfile(str(CONFIG)), data, work_dir)
    cfg.train_cfg.max_iters = cfg.train_cfg.val_interval = ITERS
    cfg.param_scheduler[-1].end = ITERS
    cfg.default_hooks.checkpoint.interval = ITERS
    return cfg


def test_trains_on_held_in_blocks_scores_held_out_blocks_and_infers(prepared, tmp_path,
                                                                    monkeypatch):
    from mmengine.runner import Runner

    from smilfit.cli.infer import main as infer
    from smilfit.cli.test import main as test_tool
    from smilfit.engine.hooks import RigUnitsHook, unwrap_model
    from smilfit.utils import register_all_modules
    register_all_modules()
    monkeypatch.chdir(tmp_path)
    cfg = _config(prepared, tmp_path / 'work')
    runner = Runner.from_cfg(cfg)
    held_out = runner.val_dataloader.dataset
    trained_on = runner.train_dataloader.dataset
    frames = {held_out.get_data_info(i)['frame'] for i in range(len(held_out))}
    seen = {trained_on.get_data_info(i)['frame'] for i in range(len(trained_on))}
    assert frames and seen and not frames & seen
    # the rig's units first (the untrained network in millimetres), then training
    RigUnitsHook().before_train(runner)
    model = unwrap_model(runner.model)
    assert 30 < float(model.rig_scale) < 100      # mm per model unit of this mouse
    before = runner.val()
    runner.train()
    after = runner.val()
    assert after['reproj/median'] < 0.7 * before['reproj/median'], (before, after)
    assert after['kp3d/mpjpe'] < before['kp3d/mpjpe']
    checkpoint = tmp_path / 'work' / f'iter_{ITERS}.pth'
    assert checkpoint.is_file()

    report = tmp_path / 'report'
    assert test_tool([str(checkpoint), '--out-dir', str(report), '--no-progress',
                      '--threads', '1']) == 0
    for name in ('summary.txt', 'summary.json', 'run_info.json'):
        assert (report / name).is_file(), name
    info = json.loads((report / 'run_info.json').read_text())
    assert info['split'] == 'val' and info['split_by'] == 'time'
    held = [[a, b] for a, b in info['frames']['minimal_session']]
    assert all(any(a <= f <= b for a, b in held) for f in frames)
    summary = json.loads((report / 'summary.json').read_text())
    # 2D errors in the videos' pixels, as a fit's (the crops vary in size with the box)
    assert summary['pixels'] == 'source'
    assert "2D errors in pixels of the recording's images" in (report / 'summary.txt').read_text()
    # the cameras by name: the miscalibrated 'side' is told apart in the report
    assert {k.split('/')[2] for k in summary['metrics']
            if k.startswith('reproj/per_camera/')} == {'back', 'mid', 'side', 'top'}
    assert summary['metrics']['reproj/median'] == pytest.approx(after['reproj/median'],
                                                          rel=1e-3)

    out = tmp_path / 'infer'
    assert infer([str(checkpoint), str(prepared), '--out-dir', str(out), '--video', 'none',
                  '--no-progress', '--threads', '1']) == 0
    with h5py.File(out / 'predictions.h5', 'r') as f:
        points = f['keypoints_3d'][:]
        log_scale = f['params/global_log_scale'][:]
        offsets = f['params/keypoint_offsets'][:]
        assert points.shape[0] == 120 and np.isfinite(points).all()
    # the learned offsets (one per model keypoint, every item alike) come with the
    # parameters, as a fit's do
    assert offsets.shape == (120,) + tuple(model.keypoint_offsets.shape)
    assert np.allclose(offsets, model.keypoint_offsets.detach().numpy()[None], atol=1e-6)
    # millimetres: a mouse spans tens of millimetres, not the model's 3 units
    extent = np.median(np.ptp(points, axis=1).max(1))
    assert 20 < extent < 400
    assert np.allclose(np.exp(log_scale), float(model.rig_scale), rtol=1e-4)
    import sleap_io
    labels = sleap_io.load_slp(str(out / 'predictions.slp'))
    assert len(labels.labeled_frames) > 0

    # every frame of the four videos (no stored crops): boxed by SLEAP's 2D keypoints of
    # each camera, written as a .slp with the rig's recording session and 3D points
    session = shared_path('data', 'sleap_anipose_minimal_session', 'minimal_session')
    cams = ('back', 'mid', 'side', 'top')
    videos = [session / c / f'minimal_{c}.mp4' for c in cams]
    boxes = [session / c / f'minimal_{c}_proofread.slp' for c in cams]
    out = tmp_path / 'infer_videos'
    assert infer([str(checkpoint), *map(str, videos), '--calibration',
                  str(session / 'calibration.toml'), '--crop-mode', 'bbox_crop',
                  '--target-size', '64', '--bbox-slp', *map(str, boxes), '--frames', '0:6',
                  '--out-dir', str(out), '--video', 'none', '--no-progress']) == 0
    with h5py.File(out / 'predictions.h5', 'r') as f:
        video_points = f['keypoints_3d'][:]
        assert f['frame'][:].tolist() == list(range(6))
    assert np.isfinite(video_points).all() and 20 < np.ptp(video_points, 1).max(1).min()
    # the session folder alone: its videos, calibration and SLEAP files, cropped as the
    # network was trained (every checkpoint records how its training images were cropped)
    from smilfit.engine.checkpoint_io import load_checkpoint_file
    meta = load_checkpoint_file(checkpoint)['meta']['dataset_meta']
    assert meta['input_crops'] == dict(crop_mode='bbox_crop', target_size=64, bbox_margin=0.15)
    out_session = tmp_path / 'infer_session'
    assert infer([str(checkpoint), str(session), '--frames', '0:6', '--out-dir',
                  str(out_session), '--video', 'none', '--no-progress']) == 0
    with h5py.File(out_session / 'predictions.h5', 'r') as f:
        np.testing.assert_allclose(f['keypoints_3d'][:], video_points, atol=1e-6)
    # SLEAP's keypoints on the first frame only: without following, one frame is boxed;
    # following the network's own keypoints, every frame is, near SLEAP's boxes
    first = []
    for c, path in zip(cams, boxes):
        labels = sleap_io.load_slp(str(path))
        labels.labeled_frames = [lf for lf in labels.labeled_frames if lf.frame_idx == 0]
        first.append(tmp_path / f'{c}_first.slp')
        labels.save(str(first[-1]))
    runs = {}
    for name, extra in (('alone', []), ('follow', ['--bbox-follow'])):
        runs[name] = tmp_path / f'infer_{name}'
        assert infer([str(checkpoint), *map(str, videos), '--calibration',
                      str(session / 'calibration.toml'), '--bbox-slp', *map(str, first),
                      '--frames', '0:6', '--chunk-size', '2', '--out-dir', str(runs[name]),
                      '--video', 'none', '--no-progress', *extra]) == 0
    with h5py.File(runs['alone'] / 'predictions.h5', 'r') as f:
        assert f['frame'][:].tolist() == [0]
    with h5py.File(runs['follow'] / 'predictions.h5', 'r') as f:
        assert f['frame'][:].tolist() == list(range(6))
        followed = f['keypoints_3d'][:]
        follow_crops = f['crop'][:]
    np.testing.assert_allclose(followed[0], video_points[0], rtol=1e-5)   # SLEAP's box
    with h5py.File(out / 'predictions.h5', 'r') as f:
        sleap_crops = f['crop'][:]
    # boxes within a fraction of the crop of SLEAP's in the well-calibrated cameras
    origin = lambda a: -np.linalg.solve(a[..., :2, :2], a[..., :2, 2:3])[..., 0]  # noqa: E731
    good = [cams.index(c) for c in ('mid', 'top')]
    shift = np.linalg.norm(origin(follow_crops) - origin(sleap_crops), axis=-1)[:, good]
    size = 1.0 / np.abs(sleap_crops[:, good, 0, 0])                      # source px per input px
    assert np.all(shift < 0.5 * 64 * size), shift
    # a resumed run follows from its finished chunks as the first did
    (runs['follow'] / 'chunks' / 'chunk_00002.npz').unlink()
    (runs['follow'] / 'predictions.h5').unlink()
    assert infer([str(checkpoint), *map(str, videos), '--calibration',
                  str(session / 'calibration.toml'), '--bbox-slp', *map(str, first),
                  '--frames', '0:6', '--chunk-size', '2', '--out-dir', str(runs['follow']),
                  '--video', 'none', '--no-progress', '--bbox-follow', '--resume']) == 0
    with h5py.File(runs['follow'] / 'predictions.h5', 'r') as f:
        np.testing.assert_allclose(f['keypoints_3d'][:], followed, atol=1e-6)
    labels = sleap_io.load_slp(str(out / 'predictions.slp'))
    assert [Path(v.filename) for v in labels.videos] == videos
    assert len(labels.sessions) == 1
    rig = labels.sessions[0]
    assert [c.name for c in rig.camera_group.cameras] == list(cams)
    assert [Path(rig.get_video(c).filename) for c in rig.camera_group.cameras] == videos
    groups = rig.frame_groups
    assert sorted(groups) == list(range(6))
    for frame, group in groups.items():
        assert np.allclose(group.instance_groups[0].points, video_points[frame], atol=1e-3)
    # the viewer shows the predicted meshes, in the rig's units like the keypoints, and
    # opens it (the viewer extra installed)
    from smilfit.visualization.scene import load_scene
    scene = load_scene(out)
    assert scene.vertices.shape[:2] == (6, 1) and scene.faces is not None
    mesh_size = np.ptp(scene.vertices[0, 0], axis=0).max()
    assert 0.5 < mesh_size / np.ptp(video_points[0], axis=0).max() < 2.0
    import importlib.util
    if importlib.util.find_spec('viser') is not None:
        from smilfit.cli.view import main as view
        assert view([str(out), '--export', str(tmp_path / 'scene.html')]) == 0
        assert (tmp_path / 'scene.html').stat().st_size > 10000


def test_the_training_config_prepares_its_crops_on_first_use(tmp_path, monkeypatch):
    """``tools/train.py configs/regression/mouse_session_resnet18.py`` on a fresh checkout:
    the config's ``data`` makes the crops from the session (as tools/preprocess_sleap.py
    would, 128 px boxes in millimetres) before training, and a second run reuses them."""
    session = shared_path('data', 'sleap_anipose_minimal_session', 'minimal_session')
    model = shared_path('models', 'SMILy_Mouse_static_joints.pkl')
    from smilfit.cli.train import main
    from smilfit.datasets.provenance import read_source
    crops = tmp_path / 'crops.h5'
    loaders = [f'{loader}.dataset.{key}={value}'
               for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader')
               for key, value in (('data_root', tmp_path), ('ann_file', crops.name))]
    argv = [str(CONFIG), '--work-dir', str(tmp_path / 'work'), '--cfg-options',
            f'data.path={crops}', f'data.sleap.input={session}', 'data.sleap.max_frames=8',
            f'model.body_model.model_path={model}', 'model.backbone.model_name=test_resnet',
            f'model.joint_lookup={REPO_ROOT / "configs" / "fitting" / "mouse_joint_lookup.csv"}',
            'train_cfg.max_iters=2', 'train_cfg.val_interval=2',
            'default_hooks.checkpoint.interval=2', *loaders]
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 0
    record = read_source(crops)
    assert record['input'] == str(session.resolve())
    assert {k: record['options'][k] for k in ('crop_mode', 'target_size', 'units', 'images')} \
        == dict(crop_mode='bbox_crop', target_size=128, units='mm', images=True)
    with h5py.File(crops, 'r') as f:
        assert f['views/images'].shape[:2] == (8, 4)
    assert (tmp_path / 'work' / 'iter_2.pth').is_file()
    made = crops.stat().st_mtime_ns
    assert main(argv) == 0
    assert crops.stat().st_mtime_ns == made          # reused, not made again
