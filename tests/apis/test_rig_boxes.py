"""Boxes for a rig's videos from SLEAP's 2D keypoints of each camera: animals matched
across cameras by track, a camera without the animal an invalid view."""
import numpy as np
import pytest

from smilfit.apis.inference import InferenceError, RigBoxes, make_sample
from smilfit.datasets.slp_export import SlpPredictionWriter

NODES = ['nose', 'neck', 'tail']


def _points(x):
    return np.array([[x, 10.0], [x + 5, 12.0], [x + 10, 14.0]])


def _write(path, videos, frames, tracks=('a', 'b')):
    """frames: {(video, frame): [(track or None, x), ...]}"""
    writer = SlpPredictionWriter(NODES, [dict(filename=v, shape=(10, 64, 64, 3))
                                         for v in videos],
                                 tracks=list(tracks) if tracks else None)
    for (video, frame), instances in frames.items():
        for track, x in instances:
            writer.add(video, frame, _points(x)[None],
                       track_ids=[list(tracks).index(track)] if tracks else None)
    return writer.save(path)


def test_animals_are_matched_across_cameras_by_track(tmp_path):
    cam0 = _write(tmp_path / 'cam0.slp', ['cam0.mp4'], {(0, 3): [('a', 1.0), ('b', 30.0)]})
    cam1 = _write(tmp_path / 'cam1.slp', ['cam1.mp4'], {(0, 3): [('b', 40.0)],
                                                       (0, 4): [('a', 2.0)]})
    boxes = RigBoxes([cam0, cam1], ['cam0.mp4', 'cam1.mp4'])
    pts = boxes.points(3)
    assert pts.shape == (2, 2, 3, 2)                    # (animals, cameras, K, 2)
    assert np.allclose(pts[0, 0], _points(1.0)) and np.isnan(pts[0, 1]).all()   # a
    assert np.allclose(pts[1, 0], _points(30.0)) and np.allclose(pts[1, 1], _points(40.0))
    assert boxes.points(4).shape == (1, 2, 3, 2) and np.isnan(boxes.points(4)[0, 0]).all()
    assert boxes.points(9).shape[0] == 0                # no animal: the frame is skipped
    # a camera that does not see the animal is not a valid view of its sample
    images = [np.zeros((64, 64, 3), np.uint8)] * 2
    cams = dict(K=np.stack([np.eye(3)] * 2), R=np.stack([np.eye(3)] * 2),
                t=np.zeros((2, 3)), dist=np.zeros((2, 5)))
    sample = make_sample(images, cams, 'bbox_crop', pts[0], target_size=32)
    assert sample['view_valid'].tolist() == [True, False]
    assert make_sample(images, cams, 'bbox_crop', pts[1], 32)['view_valid'].all()


def test_one_file_holding_every_camera_is_matched_by_video_name(tmp_path):
    both = _write(tmp_path / 'rig.slp', ['x/cam0.mp4', 'y/cam1.mp4'],
                  {(0, 0): [('a', 1.0)], (1, 0): [('a', 9.0)]})
    boxes = RigBoxes([both], ['/data/cam1.mp4', '/data/cam0.mp4'])
    assert np.allclose(boxes.points(0)[0, 0], _points(9.0))    # the videos' order
    with pytest.raises(InferenceError, match='no single video named cam2.mp4'):
        RigBoxes([both], ['cam0.mp4', 'cam2.mp4'])
    with pytest.raises(InferenceError, match='3 SLEAP files for 2 cameras'):
        RigBoxes([both] * 3, ['cam0.mp4', 'cam1.mp4'])


def test_untracked_animals_cannot_be_matched(tmp_path):
    one = _write(tmp_path / 'one.slp', ['cam0.mp4'], {(0, 0): [(None, 1.0)]}, tracks=None)
    two = _write(tmp_path / 'two.slp', ['cam1.mp4'], {(0, 0): [(None, 1.0), (None, 20.0)],
                                                      (0, 1): [(None, 3.0)]}, tracks=None)
    boxes = RigBoxes([one, two], ['cam0.mp4', 'cam1.mp4'])
    assert boxes.points(1).shape == (1, 2, 3, 2)        # one animal: nothing to match
    with pytest.raises(InferenceError, match='untracked'):
        boxes.points(0)
