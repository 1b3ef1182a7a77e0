"""smilfit.apis.inference: crop geometry, streaming outputs, resume, camera smoothing."""
import textwrap

import cv2
import h5py
import numpy as np
import pytest
import sleap_io as sio
import torch

from smilfit.apis.inference import (CameraSmoother, HDF5Frames, InferenceError, VideoFrames,
                                    build_test_pipeline, load_regressor, make_sample,
                                    run_inference)
from smilfit.cameras import project_points

SINGLE = '''
default_scope = 'smilfit'
model = dict(type='SingleViewRegressor',
             backbone=dict(type='TimmBackbone', model_name='test_resnet'),
             head=dict(type='IEFTransformerDecoderHead', dim=32, depth=1, num_heads=4,
                       num_iterations=2),
             body_model=dict(type='DemoSMILModel'))
test_pipeline = [dict(type='ResizeViews', size=48), dict(type='PackInputs')]
'''
MULTI = SINGLE.replace("type='SingleViewRegressor'", "type='MultiViewRegressor', num_views=2,"
                       "\n             neck=dict(type='CrossViewFusion', dim=32, depth=1, "
                       "num_heads=4)")


def save_checkpoint(tmp, text, name):
    """An untrained checkpoint carrying its config, as tools/train.py writes them."""
    from mmengine.config import Config

    from smilfit.engine.config_data import config_to_data
    from smilfit.registry import MODELS
    from smilfit.utils import register_all_modules
    register_all_modules()
    cfg_path = tmp / f'{name}.py'
    cfg_path.write_text(textwrap.dedent(text))
    cfg = Config.fromfile(str(cfg_path))
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    path = tmp / f'{name}.pth'
    torch.save(dict(state_dict=model.state_dict(),
                    meta=dict(smilfit=dict(config_data=config_to_data(cfg)))), path)
    return path


@pytest.fixture(scope='module')
def single(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('infer_api')
    model, cfg = load_regressor(save_checkpoint(tmp, SINGLE, 'single'))
    return model, build_test_pipeline(cfg)


@pytest.fixture(scope='module')
def video(tmp_path_factory):
    """5 frames, 96 x 80: a bright moving blob on grey."""
    path = tmp_path_factory.mktemp('video') / 'clip.mp4'
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*'mp4v'), 10, (96, 80))
    for i in range(5):
        frame = np.full((80, 96, 3), 90, np.uint8)
        cv2.circle(frame, (30 + 8 * i, 40), 12, (230, 230, 230), -1)
        writer.write(frame)
    writer.release()
    return path


def test_make_sample_crop_maps_pixels_and_cameras():
    rng = np.random.default_rng(1)
    img = rng.integers(0, 255, (60, 100, 3), dtype=np.uint8)
    K = np.array([[120.0, 0, 49.5], [0, 120, 29.5], [0, 0, 1]])
    cams = dict(K=K[None], R=np.eye(3)[None], t=np.array([[0.1, -0.2, 3.0]]),
                dist=np.zeros((1, 5)))
    s = make_sample([img], cams, 'centred', target_size=30, num_keypoints=4)
    # centred: the 60 x 60 centre square (x0 = 20), halved to 30 x 30.
    A = s['crop'][0]
    np.testing.assert_allclose(A, [[0.5, 0, -10.25], [0, 0.5, -0.25], [0, 0, 1]])
    assert s['images'].shape == (1, 30, 30, 3) and s['keypoints_2d'].shape == (1, 4, 2)
    X = torch.tensor([[[0.3, 0.1, 0.5]]], dtype=torch.float64)
    uv = project_points(X, torch.tensor(K), torch.eye(3, dtype=torch.float64),
                        torch.tensor(cams['t'][0]))[0, 0].numpy()
    uv_crop = project_points(X, torch.tensor(s['K'][0]), torch.eye(3, dtype=torch.float64),
                             torch.tensor(cams['t'][0]))[0, 0].numpy()
    np.testing.assert_allclose(uv_crop, A[:2, :2] @ uv + A[:2, 2])
    with pytest.raises(InferenceError, match='bbox-slp'):
        make_sample([img], cams, 'bbox_crop')


def read_h5(path):
    with h5py.File(path, 'r') as f:
        return {k: f[k][()] for k in ('frame', 'keypoints_2d', 'keypoints_3d', 'cameras/K',
                                      'cameras/R', 'cameras/t', 'cameras/dist')}


def projected(d):
    return project_points(torch.tensor(d['keypoints_3d'])[:, None], torch.tensor(d['cameras/K']),
                          torch.tensor(d['cameras/R']), torch.tensor(d['cameras/t']),
                          torch.tensor(d['cameras/dist'])).numpy()


def test_streamed_outputs_are_consistent_and_resume_exactly(single, video, tmp_path):
    model, pipeline = single
    out = tmp_path / 'run'
    res = run_inference(model, pipeline, VideoFrames(video), out, crop_mode='centred',
                        chunk_size=2, batch_size=3, video=None, progress=False)
    assert sorted(p.name for p in (out / 'chunks').glob('chunk_*.npz')) == \
        ['chunk_00000.npz', 'chunk_00001.npz', 'chunk_00002.npz']
    first = read_h5(res['predictions'])
    np.testing.assert_array_equal(first['frame'], np.arange(5))
    # 2D keypoints (source pixels) = 3D keypoints through the source-pixel cameras.
    np.testing.assert_allclose(first['keypoints_2d'], projected(first), atol=1e-3)
    labels = sio.load_slp(str(res['slp']))
    assert len(labels.labeled_frames) == 5
    np.testing.assert_allclose(labels.labeled_frames[3].instances[0].numpy(),
                               first['keypoints_2d'][3, 0], atol=1e-4)
    # Interrupted run: a chunk and the merged outputs are gone; --resume redoes only it.
    (out / 'chunks' / 'chunk_00001.npz').unlink()
    (out / 'predictions.h5').unlink()
    kept = (out / 'chunks' / 'chunk_00000.npz').stat().st_mtime_ns
    res = run_inference(model, pipeline, VideoFrames(video), out, crop_mode='centred',
                        chunk_size=2, video=None, resume=True, progress=False)
    assert (out / 'chunks' / 'chunk_00000.npz').stat().st_mtime_ns == kept
    again = read_h5(res['predictions'])
    for k in first:
        np.testing.assert_allclose(again[k], first[k], atol=1e-5)
    # A chunk damaged since it was written (cut short) is run again, with a warning.
    damaged = out / 'chunks' / 'chunk_00002.npz'
    damaged.write_bytes(damaged.read_bytes()[:100])
    (out / 'predictions.h5').unlink()
    with pytest.warns(UserWarning, match='chunk_00002.npz cannot be read whole'):
        res = run_inference(model, pipeline, VideoFrames(video), out, crop_mode='centred',
                            chunk_size=2, video=None, resume=True, progress=False)
    again = read_h5(res['predictions'])
    for k in first:
        np.testing.assert_allclose(again[k], first[k], atol=1e-5)
    with pytest.raises(FileExistsError, match='other options'):
        run_inference(model, pipeline, VideoFrames(video), out, crop_mode='default',
                      chunk_size=2, video=None, resume=True, progress=False)
    # another network's chunks are not resumed either (one weight changed)
    weight = next(p for p in model.parameters() if p.numel() > 1)
    kept = weight.detach().clone()
    with torch.no_grad():
        weight.view(-1)[0] += 1.0
    try:
        with pytest.raises(FileExistsError, match='model weights'):
            run_inference(model, pipeline, VideoFrames(video), out, crop_mode='centred',
                          chunk_size=2, video=None, resume=True, progress=False)
    finally:
        with torch.no_grad():
            weight.copy_(kept)
    with pytest.raises(FileExistsError, match='resume'):
        run_inference(model, pipeline, VideoFrames(video), out, video=None, progress=False)


def test_the_viewer_poses_the_predicted_meshes_without_mesh_files(single, video, tmp_path):
    """predictions.h5 records the body model: the viewer poses the predicted parameters
    into the meshes --save-meshes would have written."""
    import shutil

    from smilfit.visualization.scene import load_scene
    model, pipeline = single
    out = tmp_path / 'run'
    run_inference(model, pipeline, VideoFrames(video), out, crop_mode='centred',
                  video=None, slp=False, save_meshes=True, progress=False,
                  body_model=dict(type='DemoSMILModel'))
    saved = load_scene(out)
    shutil.rmtree(out / 'meshes')
    posed = load_scene(out)
    assert posed.vertices.shape == saved.vertices.shape == (5, 1, model.body_model.num_vertices,
                                                             3)
    np.testing.assert_allclose(posed.vertices, saved.vertices, atol=1e-4)
    np.testing.assert_array_equal(posed.faces, saved.faces)


def test_camera_smoothing_is_an_exponential_average(single, video, tmp_path):
    model, pipeline = single
    raw = read_h5(run_inference(model, pipeline, VideoFrames(video), tmp_path / 'raw',
                                chunk_size=2, video=None, slp=False,
                                progress=False)['predictions'])
    alpha = 0.6
    smooth = read_h5(run_inference(model, pipeline, VideoFrames(video), tmp_path / 's',
                                   chunk_size=2, camera_smoothing=alpha, video=None,
                                   slp=False, progress=False)['predictions'])
    K, t = raw['cameras/K'][:, 0], raw['cameras/t'][:, 0]
    eK, et = [K[0]], [t[0]]
    for i in range(1, 5):                 # across chunk boundaries too (chunk_size 2)
        eK.append(alpha * eK[-1] + (1 - alpha) * K[i])
        et.append(alpha * et[-1] + (1 - alpha) * t[i])
    np.testing.assert_allclose(smooth['cameras/K'][:, 0], np.stack(eK), rtol=1e-6)
    np.testing.assert_allclose(smooth['cameras/t'][:, 0], np.stack(et), rtol=1e-6)
    np.testing.assert_allclose(smooth['keypoints_2d'], projected(smooth), atol=1e-3)
    with pytest.raises(InferenceError):
        CameraSmoother(1.0)


def test_hdf5_multiview_source(tmp_path):
    from smilfit.datasets.synthetic import generate_synthetic_dataset
    h5 = tmp_path / 'syn.h5'
    generate_synthetic_dataset(h5, num_sessions=2, frames_per_session=2, num_views=2,
                               image_size=64, progress=False, seed=1)
    model, cfg = load_regressor(save_checkpoint(tmp_path, MULTI, 'multi'))
    res = run_inference(model, build_test_pipeline(cfg), HDF5Frames(h5), tmp_path / 'out',
                        video='side_by_side', save_meshes=True, progress=False)
    d = read_h5(res['predictions'])
    assert d['keypoints_2d'].shape == (4, 2, len(model.keypoint_names), 2)
    np.testing.assert_allclose(d['keypoints_2d'], projected(d), atol=1e-3)
    labels = sio.load_slp(str(res['slp']))
    # One placeholder video per (session, camera); each frame of each view: 1 instance.
    assert len(labels.videos) == 4 and len(labels.labeled_frames) == 8
    assert all(len(lf.instances) == 1 for lf in labels.labeled_frames)
    assert len(res['meshes']) == 4 and res['video'].is_file()
    with pytest.raises(InferenceError, match='view slots'):
        single_model, single_cfg = load_regressor(save_checkpoint(tmp_path, SINGLE, 's'))
        run_inference(single_model, build_test_pipeline(single_cfg), HDF5Frames(h5),
                      tmp_path / 'bad', progress=False)
