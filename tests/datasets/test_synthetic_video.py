"""Synthetic sessions that are videos: poses that move a little every frame, and gaps."""
import numpy as np
import pytest

from smilfit.datasets import DatasetReader
from smilfit.datasets.synthetic_animals import generate_animal_session


def _keypoints(tmp_path, **kwargs):
    made = generate_animal_session(tmp_path / 's.h5', num_animals=2, frames=80,
                                   return_keypoints_3d=True, **kwargs)
    meta = DatasetReader(tmp_path / 's.h5').read(np.arange(len(DatasetReader(tmp_path / 's.h5'))),
                                                 keys=['frame', 'instance'])
    return made['keypoints_3d'], meta['frame'], meta['instance'], made['length']


def _steps(points, frames, animals):
    """Each animal's keypoints' mean move between consecutive frames."""
    out = []
    for a in np.unique(animals):
        rows = np.flatnonzero(animals == a)
        linked = np.diff(frames[rows]) == 1
        out.append(np.linalg.norm(np.diff(points[rows], axis=0), axis=-1).mean(-1)[linked])
    return np.concatenate(out)


def test_a_video_moves_a_little_every_frame(tmp_path):
    video = _keypoints(tmp_path / 'v', pose_correlation=0.98)
    anew = _keypoints(tmp_path / 'n')
    step_video = np.median(_steps(*video[:3]))
    step_anew = np.median(_steps(*anew[:3]))
    assert step_video < 0.3 * step_anew
    assert step_video > 0.0


def test_missing_frames_leave_gaps_in_each_track(tmp_path):
    points, frames, animals, _ = _keypoints(tmp_path, pose_correlation=0.98,
                                            missing_frames=0.2)
    assert 0.6 * 160 < len(frames) < 0.95 * 160 and points.shape[0] == len(frames)
    for a in (0, 1):
        assert (np.diff(frames[animals == a]) > 1).any()


def test_bad_video_settings_are_refused(tmp_path):
    with pytest.raises(ValueError, match='pose_correlation'):
        generate_animal_session(tmp_path / 's.h5', pose_correlation=1.0)
    with pytest.raises(ValueError, match='missing_frames'):
        generate_animal_session(tmp_path / 's.h5', missing_frames=0.1,
                                slp_path=tmp_path / 's.slp')
