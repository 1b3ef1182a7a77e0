"""SLEAP both ways on synthetic data: a SLEAP session (videos, .slp labels with a skeleton,
an anipose calibration with distortion) is ingested, fitted and exported, and the fitted
.slp read back with sleap-io is compared field by field with the session it came from."""
import tomllib

import cv2
import numpy as np
import pytest
import torch
from mmengine.config import Config

from smilfit.apis.fitting import export_fit_slp, fit_dataset
from smilfit.cameras import CameraGroup
from smilfit.datasets import DatasetReader, generate_synthetic_dataset
from smilfit.datasets.ingest_sleap import ingest_sleap

from ..conftest import REPO_ROOT

#: A real lens: the labels are distorted, the dataset is undistorted at ingestion.
DIST = np.array([-0.12, 0.03, 0.001, -0.0005, 0.0])


def _write_video(path, num_frames, size):
    W, H = size
    out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*'mp4v'), 10.0, (W, H))
    assert out.isOpened()
    for f in range(num_frames):
        out.write(np.full((H, W, 3), 20 * f % 255, np.uint8))
    out.release()


def make_sleap_session(tmp_path, num_views=3, frames=4, seed=2):
    """A sleap-anipose session folder made from a synthetic dataset's ground truth: per
    camera an .mp4 and a .slp of user labels (the 3D keypoints projected through a
    distorting lens), and calibration.toml. Returns (folder, ground-truth reader)."""
    import sleap_io as sio
    syn = tmp_path / 'truth.h5'
    generate_synthetic_dataset(syn, num_views=num_views, num_sessions=1,
                               frames_per_session=frames, image_size=(96, 80), masks=False,
                               progress=False, seed=seed)
    truth = DatasetReader(syn)
    d = truth.read(np.arange(len(truth)), keys=['K', 'R', 't', 'keypoints_3d', 'frame',
                                                 'image_size'])
    names = list(truth.keypoint_names)
    cams = [f'cam{c}' for c in range(num_views)]
    folder = tmp_path / 'session'
    folder.mkdir()
    CameraGroup(cams, K=d['K'][0], dist=np.tile(DIST, (num_views, 1)), R=d['R'][0],
                t=d['t'][0], image_sizes=d['image_size'][0]).to_anipose_toml(
        folder / 'calibration.toml')
    skeleton = sio.Skeleton(nodes=names, name='mouse')
    for a, b in [('pelvis', 'spine_1'), ('spine_1', 'spine_2'), ('neck', 'head'),
                 ('head', 'nose'), ('hip_L', 'knee_L'), ('hip_R', 'knee_R')]:
        skeleton.add_edge(a, b)
    for a, b in [('ear_L', 'ear_R'), ('hip_L', 'hip_R'), ('front_paw_L', 'front_paw_R')]:
        skeleton.add_symmetry(a, b)
    track = sio.Track(name='mouse_1')
    for c, cam in enumerate(cams):
        (folder / cam).mkdir()
        video_path = folder / cam / f'{cam}.mp4'
        # two frames more than labelled: exports cover the whole video
        _write_video(video_path, int(d['frame'].max()) + 3, tuple(d['image_size'][0, c]))
        video = sio.Video(filename=str(video_path), open_backend=False)
        rvec = cv2.Rodrigues(d['R'][0, c])[0]
        frames = []
        for b, f in enumerate(d['frame']):
            uv = cv2.projectPoints(d['keypoints_3d'][b].astype(np.float64), rvec,
                                   d['t'][0, c], d['K'][0, c], DIST)[0].reshape(-1, 2)
            frames.append(sio.LabeledFrame(video=video, frame_idx=int(f), instances=[
                sio.Instance.from_numpy(uv, skeleton=skeleton, track=track)]))
        sio.save_slp(sio.Labels(labeled_frames=frames, videos=[video], skeletons=[skeleton],
                                tracks=[track]), str(folder / cam / f'{cam}.slp'))
    return folder, truth


@pytest.fixture(scope='module')
def round_trip(tmp_path_factory):
    """(session folder, dataset, fit_results.h5, exported .slp) of the round trip."""
    torch.set_num_threads(1)
    tmp = tmp_path_factory.mktemp('sleap_round_trip')
    folder, _ = make_sleap_session(tmp)
    data = tmp / 'ingested.h5'
    ingest_sleap(folder, data, undistort=True, images=False, progress=False)
    cfg = Config.fromfile(str(REPO_ROOT / 'configs' / 'fitting' / 'demo_mouse.py'))
    cfg.data = dict(path=str(data), batch_size=4)
    cfg.registrant.hooks = []
    results = fit_dataset(cfg, tmp / 'work', progress=False)
    return folder, data, results, export_fit_slp(results, tmp / 'work' / 'fit.slp')


def test_ingestion_stores_the_source_videos(round_trip):
    folder, data, _, _ = round_trip
    reader = DatasetReader(data)
    assert reader.attrs['undistorted']
    cams = reader.camera_names[0]
    assert reader.video_paths == [[str((folder / c / f'{c}.mp4').resolve()) for c in cams]]
    assert reader.video_shapes.tolist() == [[[6, 80, 96]] * 3]
    np.testing.assert_allclose(reader.video_dist[0], np.tile(DIST, (3, 1)))
    assert not reader.read([0])['dist'].any()          # the stored points are undistorted


def test_fitted_slp_matches_the_session_field_by_field(round_trip):
    import h5py
    import sleap_io as sio
    folder, data, results, slp = round_trip
    labels = sio.load_slp(str(slp), open_videos=False)
    source = sio.load_slp(str(folder / 'cam0' / 'cam0.slp'), open_videos=False)
    calibration = tomllib.loads((folder / 'calibration.toml').read_text())
    cams = [calibration[k]['name'] for k in sorted(k for k in calibration if k != 'metadata')]

    # videos: the real files, with SLEAP's MediaVideo fields and the video's shape
    assert [v.filename for v in labels.videos] == [
        str((folder / c / f'{c}.mp4').resolve()) for c in cams]
    for video in labels.videos:
        meta = video.backend_metadata
        assert meta['bgr'] is True and meta['grayscale'] is False
        assert tuple(meta['shape']) == (6, 80, 96, 3)
    # skeleton: nodes, edges and symmetries of the source
    (skeleton,) = labels.skeletons
    assert skeleton.node_names == source.skeleton.node_names
    assert sorted(skeleton.edge_names) == sorted(source.skeleton.edge_names)
    assert sorted(sorted(n.name for n in s.nodes) for s in skeleton.symmetries) == sorted(
        sorted(n.name for n in s.nodes) for s in source.skeleton.symmetries)
    assert len(skeleton.symmetries) == 3
    # the recording session's cameras are the calibration, each on its camera's video
    (rec,) = labels.sessions
    for camera, name in zip(rec.camera_group.cameras, cams):
        table = next(v for v in calibration.values() if v.get('name') == name)
        assert camera.name == name and tuple(camera.size) == tuple(table['size'])
        np.testing.assert_allclose(camera.matrix, table['matrix'], atol=1e-9)
        np.testing.assert_allclose(camera.dist, table['distortions'], atol=1e-12)
        np.testing.assert_allclose(camera.rvec, table['rotation'], atol=1e-9)
        np.testing.assert_allclose(camera.tvec, table['translation'], atol=1e-9)
        assert rec.get_video(camera).filename.endswith(f'{name}.mp4')
    # frame groups and instance groups across the views, with the fitted 3D points
    with h5py.File(results) as f:
        fitted = f['fitted_keypoints_3d'][:]
        frames = f['samples/frame'][:]
    assert sorted(rec.frame_groups) == sorted(frames.tolist())
    errors = []
    for b, frame in enumerate(frames):
        group_of_frame = rec.frame_groups[int(frame)]
        (group,) = group_of_frame.instance_groups
        np.testing.assert_allclose(group.instance_3d.numpy(), fitted[b], rtol=1e-6)
        assert sorted(c.name for c in group.cameras) == sorted(cams)
        for camera, instance in group.instance_by_camera.items():
            frame_of_camera = group_of_frame.get_frame(camera)
            assert frame_of_camera.video is rec.get_video(camera)
            assert frame_of_camera.frame_idx == frame
            assert any(instance is i for i in frame_of_camera.instances)
            assert instance.track.name == 'mouse_1'
            # 2D points = the 3D instance through the stored camera (OpenCV/anipose
            # conventions): SLEAP draws what was fitted
            uv = cv2.projectPoints(fitted[b].astype(np.float64), camera.rvec, camera.tvec,
                                   camera.matrix, camera.dist)[0].reshape(-1, 2)
            np.testing.assert_allclose(instance.numpy(), uv, atol=1e-3)
            # ... and on the real (distorted) video they sit on the source labels
            labelled = next(lf for lf in sio.load_slp(
                str(folder / camera.name / f'{camera.name}.slp'), open_videos=False)
                if lf.frame_idx == frame).instances[0].numpy()
            errors.append(np.linalg.norm(instance.numpy() - labelled, axis=-1))
    assert np.median(np.concatenate(errors)) < 0.5
    assert len(labels.tracks) == 1 and labels.tracks[0].name == 'mouse_1'


def test_anipose_files_cover_the_videos(round_trip, tmp_path):
    """anipose writes one row per video frame: so does the export when ingestion recorded
    the videos' lengths."""
    import h5py
    from smilfit.datasets.anipose_export import export_fit_anipose
    _, data, results, _ = round_trip
    table, points3d = export_fit_anipose(results, tmp_path)
    with h5py.File(results) as f:
        fitted = f['fitted_keypoints_3d'][:]
        frames = f['samples/frame'][:]
    with h5py.File(points3d) as f:
        tracks = f['tracks'][:]
    assert tracks.shape == (6, 1, len(DatasetReader(data).keypoint_names), 3)
    np.testing.assert_allclose(tracks[frames, 0], fitted, rtol=1e-6)
    assert np.isnan(tracks[4:]).all()
    lines = table.read_text().splitlines()
    assert len(lines) == 7 and [row.rsplit(',', 1)[1] for row in lines[1:]] == [
        str(f) for f in range(6)]


def test_infer_slp_lands_on_the_real_videos(tmp_path):
    """tools/infer.py on an undistorted dataset: its .slp names the source videos and puts
    the predictions back through the crop and the lens."""
    import h5py
    import sleap_io as sio
    from smilfit.apis.inference import (HDF5Frames, build_test_pipeline, load_regressor,
                                        run_inference)
    from .test_inference import MULTI, save_checkpoint
    folder, _ = make_sleap_session(tmp_path, num_views=2, frames=2)
    data = tmp_path / 'ingested.h5'
    ingest_sleap(folder, data, undistort=True, crop_mode='bbox_crop', target_size=48,
                 progress=False)
    model, cfg = load_regressor(save_checkpoint(tmp_path, MULTI, 'multi'))
    res = run_inference(model, build_test_pipeline(cfg), HDF5Frames(data), tmp_path / 'out',
                        progress=False)
    labels = sio.load_slp(str(res['slp']), open_videos=False)
    assert [v.filename for v in labels.videos] == [
        str((folder / c / f'{c}.mp4').resolve()) for c in ('cam0', 'cam1')]
    with h5py.File(res['predictions']) as f:
        predicted = f['keypoints_2d'][:]                      # (N, C, K, 2) stored pixels
    reader = DatasetReader(data)
    d = reader.read(np.arange(len(reader)), keys=['K', 'crop', 'frame'])
    for lf in labels.labeled_frames:
        c = labels.videos.index(lf.video)
        (b,) = np.flatnonzero(d['frame'] == lf.frame_idx)
        back = np.linalg.inv(d['crop'][b, c])
        K = back @ d['K'][b, c]
        # undistorting the exported points gives the (undistorted) predictions
        flat = cv2.undistortPoints(lf.instances[0].numpy().reshape(-1, 1, 2), K, DIST,
                                   P=K).reshape(-1, 2)
        expect = predicted[b, c] @ back[:2, :2].T + back[:2, 2]
        np.testing.assert_allclose(flat, expect, atol=0.05)
        assert np.abs(lf.instances[0].numpy() - expect).max() > 0.05   # the lens moved them
