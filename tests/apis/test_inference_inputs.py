"""Inference inputs from a recording's own layout (a sleap-anipose session folder) and the
crops a network was trained on (recorded in its checkpoint)."""
import numpy as np
import pytest
import torch

from smilfit.apis.inference import (DEFAULT_CROPS, InferenceError, crop_settings,
                                    is_session_folder, read_session_folder, trained_crops)
from smilfit.cameras import CameraGroup


def session_folder(root, cameras=('top', 'back', 'mid'), videos=None, slps=None):
    """A session folder: calibration.toml naming ``cameras`` in that order, and a folder
    per camera with ``videos[cam]`` video files and ``slps[cam]`` SLEAP files (empty files:
    the folder's layout is what is read)."""
    C = len(cameras)
    K = torch.eye(3, dtype=torch.float64).repeat(C, 1, 1)
    CameraGroup(list(cameras), K, rvec=torch.zeros(C, 3, dtype=torch.float64),
                t=torch.zeros(C, 3, dtype=torch.float64),
                image_sizes=[(64, 48)] * C).to_anipose_toml(root / 'calibration.toml')
    for cam in cameras:
        (root / cam).mkdir()
        for name in (videos or {}).get(cam, [f'{cam}.mp4']):
            (root / cam / name).touch()
        for name in (slps or {}).get(cam, [f'{cam}.slp']):
            (root / cam / name).touch()
        (root / cam / f'{cam}.analysis.h5').touch()   # other files are not read
    return root


def test_a_session_folder_gives_each_calibrated_cameras_video_and_sleap_file(tmp_path):
    folder = session_folder(tmp_path)
    assert is_session_folder(folder) and not is_session_folder(folder / 'top')
    session = read_session_folder(folder)
    assert session.camera_names == ['top', 'back', 'mid']       # the calibration's order
    assert session.videos == [folder / c / f'{c}.mp4' for c in ('top', 'back', 'mid')]
    assert session.boxes() == [folder / c / f'{c}.slp' for c in ('top', 'back', 'mid')]
    assert session.calibration == folder / 'calibration.toml'


def test_a_session_folder_that_cannot_be_read_says_what_is_wrong(tmp_path):
    (tmp_path / 'none').mkdir()
    with pytest.raises(InferenceError, match='no calibration.toml'):
        read_session_folder(tmp_path / 'none')
    (tmp_path / 'two').mkdir()
    two = session_folder(tmp_path / 'two', videos={'back': ['a.mp4', 'b.avi']})
    with pytest.raises(InferenceError, match='several videos'):
        read_session_folder(two)
    (tmp_path / 'gone').mkdir()
    gone = session_folder(tmp_path / 'gone')
    for f in (gone / 'mid').iterdir():
        f.unlink()
    (gone / 'mid').rmdir()
    with pytest.raises(InferenceError, match="camera 'mid' has no folder"):
        read_session_folder(gone)
    # a camera with no SLEAP file, or two, gives no boxes (the videos are still read)
    (tmp_path / 'boxes').mkdir()
    session = read_session_folder(session_folder(tmp_path / 'boxes',
                                                 slps={'top': [], 'mid': ['a.slp', 'b.slp']}))
    assert session.labels[1] is not None and session.labels[0] is session.labels[2] is None
    with pytest.raises(InferenceError, match=r"\['top', 'mid'\].*--bbox-slp"):
        session.boxes()


def test_crops_default_to_the_networks_training_crops_and_a_different_one_is_named():
    trained = trained_crops({'input_crops': dict(crop_mode='bbox_crop', target_size=128,
                                                 bbox_margin=0.2)})
    assert trained == dict(crop_mode='bbox_crop', target_size=128, bbox_margin=0.2)
    none = dict(crop_mode=None, target_size=None, bbox_margin=None)
    settings, notes = crop_settings(none, trained)
    assert settings == trained and notes == []
    settings, notes = crop_settings(dict(none, target_size=96), trained)
    assert settings == dict(trained, target_size=96)
    assert len(notes) == 1 and 'target-size 96' in notes[0] and '(128)' in notes[0]
    # a checkpoint that does not say: the whole frame, as before
    for meta in ({}, None, {'input_crops': {'crop_mode': 'sideways'}}):
        assert trained_crops(meta) is None
        assert crop_settings(none, trained_crops(meta)) == (DEFAULT_CROPS, [])
    assert crop_settings(dict(none, crop_mode='centred'), None)[0]['crop_mode'] == 'centred'


def test_a_prepared_dataset_says_how_its_images_were_cropped_and_training_keeps_it(tmp_path):
    import h5py

    from smilfit.datasets import DatasetReader, MultiViewHDF5Dataset
    from smilfit.datasets.synthetic import generate_synthetic_dataset
    path = generate_synthetic_dataset(tmp_path / 'crops.h5', num_sessions=1,
                                      frames_per_session=3, num_views=2, image_size=32,
                                      progress=False, seed=1)
    with DatasetReader(path) as reader:
        assert reader.input_crops is None                 # made without a crop record
    assert 'input_crops' not in MultiViewHDF5Dataset(str(path), load_images=False).metainfo
    # as tools/preprocess_sleap.py records it
    with h5py.File(path, 'r+') as f:
        f.attrs['crop_mode'] = 'bbox_crop'
        f.attrs['target_size'] = np.int64(64)
        f.attrs['ingest_options'] = '{"bbox_margin": 0.25, "target_size": 64}'
    crops = dict(crop_mode='bbox_crop', target_size=64, bbox_margin=0.25)
    with DatasetReader(path) as reader:
        assert reader.input_crops == crops
    # the training dataset's metainfo is what mmengine saves in every checkpoint
    meta = MultiViewHDF5Dataset(str(path), load_images=False).metainfo
    assert meta['input_crops'] == crops and trained_crops(meta) == crops


class _Sleap:
    """SLEAP boxes with keypoints in the frames of ``points`` only."""

    def __init__(self, points, num_views):
        self.points_by_frame, self.num_views = points, num_views

    def points(self, frame):
        shape = (0, self.num_views, 3, 2) if self.num_views > 1 else (0, 3, 2)
        return self.points_by_frame.get(frame, np.zeros(shape))


def _prediction(uv, crop=None):
    """A prediction dict as predict_samples gives it: keypoints in model-input pixels of
    a crop (source -> input affine)."""
    C = uv.shape[0]
    crop = np.tile(np.diag([2.0, 2.0, 1.0]), (C, 1, 1)) if crop is None else crop
    moved = np.einsum('cij,ckj->cki', crop[:, :2, :2], uv) + crop[:, None, :2, 2]
    return dict(crop=crop, pred_keypoints_2d=torch.as_tensor(moved))


def test_following_boxes_fill_what_sleap_leaves_empty_with_the_last_prediction():
    from smilfit.apis.inference import FollowingBoxes
    first = np.arange(2 * 3 * 2, dtype=float).reshape(1, 2, 3, 2)        # frame 0, 2 cameras
    later = np.full((1, 2, 3, 2), np.nan)
    later[0, 1] = 100.0                                                  # frame 2: camera 1
    boxes = FollowingBoxes(_Sleap({0: first, 2: later}, 2))
    assert np.array_equal(boxes.points(0), first)
    assert boxes.points(1).shape[0] == 0            # nothing predicted yet: nothing to box
    predicted = np.stack([np.full((3, 2), 10.0), np.full((3, 2), 20.0)])  # source pixels
    boxes.observe([_prediction(predicted)])
    np.testing.assert_allclose(boxes.points(1), predicted[None])
    # a camera SLEAP sees keeps SLEAP's keypoints; the other follows the network
    both = boxes.points(2)
    np.testing.assert_allclose(both[0, 0], predicted[0])
    np.testing.assert_allclose(both[0, 1], 100.0)
    # no prediction (nothing boxed), or several animals: the last one is kept
    boxes.observe([])
    boxes.observe([_prediction(predicted + 5), _prediction(predicted + 9)])
    np.testing.assert_allclose(boxes.points(1), predicted[None])
    # a resumed run continues from a finished chunk's last item
    boxes.resume(predicted + 1)
    np.testing.assert_allclose(boxes.points(1), predicted[None] + 1)
    with pytest.raises(InferenceError, match='2 animals'):
        FollowingBoxes(_Sleap({0: np.zeros((2, 2, 3, 2))}, 2)).points(0)


def test_following_boxes_for_one_camera():
    from smilfit.apis.inference import FollowingBoxes
    boxes = FollowingBoxes(_Sleap({0: np.ones((1, 3, 2))}, 1))
    assert boxes.points(0).shape == (1, 3, 2)
    boxes.observe([_prediction(np.full((1, 3, 2), 7.0))])
    np.testing.assert_allclose(boxes.points(1), np.full((1, 1, 3, 2), 7.0))
