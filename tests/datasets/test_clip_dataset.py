"""ClipHDF5Dataset: consecutive frames of one session as (T, ...) samples."""
import numpy as np
import pytest
import torch
from mmengine.dataset import default_collate

from smilfit.datasets.clip_dataset import ClipHDF5Dataset
from smilfit.datasets.multiview_dataset import MultiViewHDF5Dataset
from smilfit.registry import DATASETS
from smilfit.utils import register_all_modules


@pytest.fixture(scope='module')
def clip_h5(tmp_path_factory):
    from smilfit.datasets.synthetic import generate_synthetic_dataset
    path = tmp_path_factory.mktemp('clips') / 'clips.h5'
    generate_synthetic_dataset(path, num_sessions=2, frames_per_session=5, num_views=2,
                               image_size=32, progress=False, seed=5)
    return str(path)


def _build(path, **kw):
    register_all_modules()
    return DATASETS.build(dict(type='ClipHDF5Dataset', ann_file=path,
                               pipeline=[dict(type='PackInputs')], **kw))


def test_registered_and_index(clip_h5):
    ds = _build(clip_h5, clip_length=3)
    assert isinstance(ds, ClipHDF5Dataset)
    # 5 frames, non-overlapping clips of 3: starts 0 and 3 in each of the 2 sessions.
    assert len(ds) == 4
    assert [ds.get_data_info(i)['frames'] for i in range(2)] == [[0, 1, 2], [3, 4, 5]]
    assert ds.get_data_info(1)['indices'][-1] == -1          # frame 5 does not exist
    overlapping = _build(clip_h5, clip_length=3, clip_stride=1, min_valid_frames=3)
    assert len(overlapping) == 2 * 3                          # starts 0, 1, 2
    stepped = _build(clip_h5, clip_length=2, clip_stride=1, frame_step=2)
    assert [stepped.get_data_info(i)['frames'] for i in range(3)] == [[0, 2], [2, 4], [4, 6]]


def test_clip_frames_match_frame_dataset_and_padding(clip_h5):
    ds = _build(clip_h5, clip_length=3, split=None)
    frames = MultiViewHDF5Dataset(clip_h5, pipeline=[dict(type='PackInputs')])
    clip = ds[1]                                  # session 0, frames 3, 4 and padding 5
    s = clip['data_samples']
    assert clip['inputs'].shape == (3, 2, 3, 32, 32)
    assert s['keypoints_2d'].shape == (3, 2, frames.reader.num_keypoints, 2)
    assert s['frame'].tolist() == [3, 4, 5]
    assert s['frame_valid'].tolist() == [True, True, False]
    for t, row in enumerate([3, 4, 4]):           # the padding frame copies frame 4
        ref = frames[row]
        assert torch.equal(clip['inputs'][t], ref['inputs'])
        np.testing.assert_array_equal(s['keypoints_2d'][t], ref['data_samples']['keypoints_2d'])
        np.testing.assert_array_equal(s['params']['body_pose'][t],
                                      ref['data_samples']['params']['body_pose'])
    assert s['session'] == 'synthetic_0000'


def test_collate_gives_batch_and_frame_axes(clip_h5):
    ds = _build(clip_h5, clip_length=4, load_images=False)
    batch = default_collate([ds[0], ds[1]])
    s = batch['data_samples']
    assert s['keypoints_2d'].shape[:3] == (2, 4, 2)
    assert s['frame_valid'].shape == (2, 4) and s['frame_valid'].dtype == torch.bool
    assert s['params']['global_orient'].shape == (2, 4, 3)


def test_bad_arguments(clip_h5):
    with pytest.raises(ValueError, match='clip_length'):
        ClipHDF5Dataset(clip_h5, clip_length=0)
    with pytest.raises(ValueError, match='min_valid_frames'):
        ClipHDF5Dataset(clip_h5, clip_length=2, min_valid_frames=3)
