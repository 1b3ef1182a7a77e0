"""tools/fit.py's SLEAP export: fitted keypoints as predictions, one video per session/camera."""
import tomllib

import numpy as np
import pytest
import torch
from mmengine.config import Config

from smilfit.apis.fitting import export_fit_slp, fit_dataset
from smilfit.datasets import DatasetReader, generate_synthetic_dataset

from ..conftest import REPO_ROOT


def _fit_and_export(tmp_path, **synthetic):
    """The demo config fitted to a synthetic 2-view dataset; (dataset, results, .slp)."""
    torch.set_num_threads(1)
    data = tmp_path / 'syn.h5'
    generate_synthetic_dataset(data, num_views=2, image_size=64, masks=False, progress=False,
                               **synthetic)
    cfg = Config.fromfile(str(REPO_ROOT / 'configs' / 'fitting' / 'demo_mouse.py'))
    cfg.data = dict(path=str(data), batch_size=4)
    cfg.registrant.hooks = []
    results = fit_dataset(cfg, tmp_path / 'work', progress=False)
    return data, results, export_fit_slp(results, tmp_path / 'work' / 'fit.slp')


def test_fit_then_slp_matches_the_observations(tmp_path):
    data, _, slp = _fit_and_export(tmp_path, num_sessions=2, frames_per_session=2, seed=3)

    import sleap_io as sio
    labels = sio.load_slp(str(slp))
    reader = DatasetReader(data)
    assert sorted(v.filename for v in labels.videos) == sorted(
        f'{s}/{c}' for s, cams in zip(reader.session_names, reader.camera_names) for c in cams)
    assert len(labels.labeled_frames) == len(reader) * 2
    assert labels.skeletons[0].node_names == list(reader.keypoint_names)
    batch = reader.read(np.arange(len(reader)), keys=['keypoints_2d', 'session', 'frame'])
    errors = []
    for lf in labels.labeled_frames:
        session, camera = lf.video.filename.split('/')
        s = list(reader.session_names).index(session)
        c = list(reader.camera_names[s]).index(camera)
        row = np.nonzero((batch['session'] == s) & (batch['frame'] == lf.frame_idx))[0][0]
        observed = batch['keypoints_2d'][row, c]
        ok = np.isfinite(observed).all(-1)
        errors.append(np.linalg.norm(lf.instances[0].numpy()[ok] - observed[ok], axis=-1))
    # the fit is accurate on noise-free synthetic data: predictions sit on the detections
    assert np.median(np.concatenate(errors)) < 0.5
    # The synthetic data has no skeleton of its own: the body model's tree gives the
    # edges, one per keypoint but the root, so SLEAP draws lines, not loose dots.
    assert reader.skeleton_edges == []
    edges = {(e.source.name, e.destination.name) for e in labels.skeletons[0].edges}
    assert len(edges) == len(reader.keypoint_names) - 1
    assert {('neck', 'head'), ('head', 'nose'), ('hip_L', 'knee_L'),
            ('ear_L', 'ear_L_tip'), ('tail_6', 'tail_6_tip')} <= edges


def test_prepare_data_ingests_a_sleap_session_directly(tmp_path):
    """data.sleap: a SLEAP session is ingested (keypoints and cameras, no images) once."""
    from smilfit.apis.fitting import StaleDataError, prepare_data
    from ..conftest import shared_path
    session = shared_path('data', 'sleap_anipose_minimal_session', 'minimal_session')
    out = tmp_path / 'session.h5'
    prepare_data(dict(data=dict(path=str(out), sleap=dict(input=str(session), frame_skip=10))),
                 progress=False)
    reader = DatasetReader(out)
    assert len(reader) == 12 and list(reader.camera_names[0]) == ['back', 'mid', 'side', 'top']
    assert all(blob == b'' for blob in reader.read([0])['images'][0])   # no images stored
    mtime = out.stat().st_mtime_ns
    prepare_data(dict(data=dict(path=str(out), sleap=dict(input=str(session), frame_skip=10))),
                 progress=False)
    assert out.stat().st_mtime_ns == mtime   # same source and options: not redone
    with pytest.raises(StaleDataError, match=r'options changed'):  # never fitted stale
        prepare_data(dict(data=dict(path=str(out), sleap=dict(input=str(session)))),
                     progress=False)


def test_slp_carries_videos_skeleton_and_calibration_of_a_real_session(tmp_path):
    """The shared 4-camera session through data.sleap, a fit and the export, read back with
    sleap-io: the real video paths, the source skeleton's edges, one RecordingSession whose
    cameras are the calibration."""
    import cv2
    import sleap_io as sio

    from smilfit.apis.fitting import prepare_data
    from smilfit.utils import register_all_modules
    from ..conftest import shared_path
    session = shared_path('data', 'sleap_anipose_minimal_session', 'minimal_session')
    model = shared_path('models', 'SMILy_Mouse_static_joints.pkl')
    register_all_modules()
    cfg = Config.fromfile(str(REPO_ROOT / 'configs' / 'fitting' / 'mouse_multiview.py'))
    cfg.body_model.model_path = str(model)
    cfg.data.path = str(tmp_path / 'session.h5')
    cfg.data.sleap = dict(input=str(session), frame_skip=20)
    cfg.registrant.hooks = []
    prepare_data(cfg, progress=False)
    results = fit_dataset(cfg, tmp_path / 'work', progress=False)
    labels = sio.load_slp(str(export_fit_slp(results, tmp_path / 'work' / 'fit.slp')))

    cams = ['back', 'mid', 'side', 'top']
    assert [v.filename for v in labels.videos] == [
        str((session / c / f'minimal_{c}.mp4').resolve()) for c in cams]
    source = sio.load_slp(str(session / 'back' / 'minimal_back_proofread.slp')).skeletons[0]
    assert sorted(labels.skeletons[0].edge_names) == sorted(source.edge_names)
    assert len(labels.skeletons[0].edges) == 14
    assert all(tuple(v.backend_metadata['shape']) == (120, 1024, 1280, 3)
               for v in labels.videos)
    (rec,) = labels.sessions
    calibration = tomllib.loads((session / 'calibration.toml').read_text())
    for c, camera in enumerate(rec.camera_group.cameras):
        table = calibration[f'cam_{c}']
        assert camera.name == cams[c] == table['name']
        assert tuple(camera.size) == tuple(table['size'])
        np.testing.assert_allclose(camera.matrix, table['matrix'])
        np.testing.assert_allclose(camera.dist, table['distortions'])
        np.testing.assert_allclose(camera.rvec, table['rotation'], atol=1e-9)
        np.testing.assert_allclose(camera.tvec, table['translation'])
        assert rec.get_video(camera).filename == labels.videos[c].filename
    # every instance group's 2D points are its 3D instance seen through its cameras
    for frame_group in rec.frame_groups.values():
        for group in frame_group.instance_groups:
            for camera, instance in group.instance_by_camera.items():
                uv = cv2.projectPoints(group.instance_3d.numpy(), camera.rvec, camera.tvec,
                                       camera.matrix, camera.dist)[0].reshape(-1, 2)
                np.testing.assert_allclose(instance.numpy(), uv, atol=1e-3)


def test_slp_groups_each_animal_across_cameras_with_its_3d_points(tmp_path):
    """Synthetic 2-view data: every frame of the session is a FrameGroup whose one
    InstanceGroup holds the animal's instance on both cameras and its fitted 3D points."""
    import h5py
    import sleap_io as sio
    _, results, slp = _fit_and_export(tmp_path, num_sessions=1, frames_per_session=3, seed=1)
    labels = sio.load_slp(str(slp))
    with h5py.File(results) as f:
        fitted = f['fitted_keypoints_3d'][:]
        frames = f['samples/frame'][:]
    (rec,) = labels.sessions
    assert sorted(rec.frame_groups) == sorted(frames.tolist())
    for b, frame in enumerate(frames):
        (group,) = rec.frame_groups[int(frame)].instance_groups
        assert len(group.instance_by_camera) == 2
        np.testing.assert_allclose(group.instance_3d.numpy(), fitted[b], rtol=1e-5)
