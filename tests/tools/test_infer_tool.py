"""tools/infer.py (smilfit.cli.infer) on the shared fly clip and 4-camera mouse session."""
import subprocess
import sys

import cv2
import h5py
import numpy as np
import pytest
import sleap_io as sio

from smilfit.cli import infer as infer_cli
from tests.apis.test_inference import MULTI, SINGLE, save_checkpoint
from tests.conftest import REPO_ROOT, shared_path


def frame_count(path):
    return int(cv2.VideoCapture(str(path)).get(cv2.CAP_PROP_FRAME_COUNT))


@pytest.fixture(scope='module')
def checkpoints(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('infer_tool')
    return dict(single=save_checkpoint(tmp, SINGLE, 'single'),
                multi4=save_checkpoint(tmp, MULTI.replace('num_views=2', 'num_views=4'),
                                       'multi4'))


def test_fly_clip_bbox_crops_give_one_instance_per_sleap_instance(checkpoints, tmp_path):
    clip = shared_path('data', 'sleap_flies_clip', 'clip.mp4')
    slp = shared_path('data', 'sleap_flies_clip', 'clip.slp')
    out = tmp_path / 'fly'
    assert infer_cli.main([str(checkpoints['single']), str(clip), '--crop-mode', 'bbox_crop',
                           '--bbox-slp', str(slp), '--target-size', '48', '--frames', '0:3',
                           '--chunk-size', '2', '--video-scale', '0.125', '--out-dir',
                           str(out), '--no-progress', '--camera-smoothing', '0.5']) == 0
    truth = sio.load_slp(str(slp))
    want = {lf.frame_idx: len(lf.instances) for lf in truth.labeled_frames
            if lf.frame_idx < 3}
    labels = sio.load_slp(str(out / 'predictions.slp'))
    assert {lf.frame_idx: len(lf.instances) for lf in labels.labeled_frames} == want
    assert len(labels.tracks) == max(want.values())
    assert labels.video.filename == str(clip)
    assert frame_count(out / 'overlay.mp4') == 3
    with h5py.File(out / 'predictions.h5', 'r') as f:
        assert f['keypoints_2d'].shape[0] == sum(want.values())
        # Crops around each fly: an (untrained) prediction lands inside its fly's box.
        kp = f['keypoints_2d'][()][:, 0]
        inst = f['instance'][()]
    gt = truth.labeled_frames[0].instances
    for i in range(len(gt)):
        box = gt[i].numpy()
        lo, hi = np.nanmin(box, 0) - 40, np.nanmax(box, 0) + 40
        pred = kp[inst == i][0]
        assert np.all(np.nanmedian(pred, 0) > lo) and np.all(np.nanmedian(pred, 0) < hi)


def test_mouse_session_four_calibrated_cameras(checkpoints, tmp_path):
    session = shared_path('data', 'sleap_anipose_minimal_session', 'minimal_session')
    videos = [session / c / f'minimal_{c}.mp4' for c in ('back', 'mid', 'side', 'top')]
    out = tmp_path / 'mouse'
    assert infer_cli.main([str(checkpoints['multi4']), *map(str, videos), '--calibration',
                           str(session / 'calibration.toml'), '--frames', '0:2',
                           '--video', 'side_by_side', '--video-scale', '0.1',
                           '--out-dir', str(out), '--no-progress']) == 0
    labels = sio.load_slp(str(out / 'predictions.slp'))
    assert [v.filename for v in labels.videos] == list(map(str, videos))
    assert len(labels.labeled_frames) == 8                  # 2 frames x 4 cameras
    assert all(len(lf.instances) == 1 for lf in labels.labeled_frames)
    assert frame_count(out / 'overlay.mp4') == 2
    with h5py.File(out / 'predictions.h5', 'r') as f:
        assert f['keypoints_2d'].shape[:2] == (2, 4)
        assert f['cameras/K'].shape == (2, 4, 3, 3)
        # Calibrated cameras pass through unchanged (source pixels).
        np.testing.assert_allclose(f['cameras/K'][0, 0, 0, 0], 769.8864926727645, rtol=1e-6)


def test_image_folder_and_errors(checkpoints, tmp_path, capsys):
    imgs = shared_path('data', 'sleap_io_js_testdata', 'tests', 'data', 'videos', 'imgs')
    out = tmp_path / 'imgs'
    assert infer_cli.main([str(checkpoints['single']), str(imgs), '--video', 'none',
                           '--out-dir', str(out), '--no-progress', '--meshes']) == 0
    labels = sio.load_slp(str(out / 'predictions.slp'))
    assert len(labels.labeled_frames) == 3 and not (out / 'overlay.mp4').exists()
    assert len(list((out / 'meshes').glob('*.obj'))) == 3
    # Re-running into the same folder needs --resume or --overwrite.
    assert infer_cli.main([str(checkpoints['single']), str(imgs), '--out-dir', str(out),
                           '--no-progress']) == 1
    assert '--resume' in capsys.readouterr().err
    assert infer_cli.main([str(checkpoints['single']), str(imgs), str(imgs)]) == 1
    assert '--calibration' in capsys.readouterr().err
    assert infer_cli.main([str(checkpoints['single']), str(imgs), '--crop-mode',
                           'bbox_crop', '--out-dir', str(tmp_path / 'x')]) == 1
    assert 'bbox' in capsys.readouterr().err
    res = subprocess.run([sys.executable, str(REPO_ROOT / 'tools' / 'infer.py'), '--help'],
                         capture_output=True, text=True, cwd=REPO_ROOT)
    assert res.returncode == 0 and '--bbox-slp' in res.stdout
