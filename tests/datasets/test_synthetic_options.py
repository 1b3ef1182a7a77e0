"""Synthetic generator options: headings relative to the rig; sessions that are videos."""
import h5py
import numpy as np
import pytest
import torch

from smilfit.body_models.rotations import axis_angle_to_matrix
from smilfit.datasets import DatasetReader, generate_synthetic_dataset


def _relative_headings(path):
    """Angle (degrees, about +z up) between the body's first axis and camera 0's viewing
    direction, both projected on the ground plane, per sample."""
    reader = DatasetReader(path)
    batch = reader.read(np.arange(len(reader)), keys=['R'])
    with h5py.File(path) as f:
        orient = torch.as_tensor(f['params/global_orient'][:])
    body = axis_angle_to_matrix(orient).numpy()[:, :, 0]        # body x axis in the world
    view = batch['R'][:, 0, 2, :]                               # camera 0's +z in the world
    angle = lambda v: np.arctan2(v[:, 1], v[:, 0])  # noqa: E731
    return np.degrees(np.angle(np.exp(1j * (angle(body) - angle(view)))))


def test_heading_range_is_relative_to_the_rig(tmp_path):
    common = dict(num_sessions=6, frames_per_session=4, num_views=2, image_size=32,
                  masks=False, progress=False, tilt_std=0.0, azimuth_jitter_deg=0.0, seed=1)
    narrow = _relative_headings(generate_synthetic_dataset(tmp_path / 'n.h5',
                                                           heading_range_deg=20.0, **common))
    wide = _relative_headings(generate_synthetic_dataset(tmp_path / 'w.h5', **common))
    spread = lambda a: np.ptp(np.unwrap(np.radians(a)))  # noqa: E731
    assert np.degrees(spread(narrow)) <= 20.0 + 1e-6
    assert np.degrees(spread(wide)) > 90.0


def test_heading_range_is_validated(tmp_path):
    with pytest.raises(ValueError, match='heading_range_deg'):
        generate_synthetic_dataset(tmp_path / 'x.h5', heading_range_deg=400.0, progress=False)


def _params(path):
    with h5py.File(path) as f:
        return {k: f[f'params/{k}'][:] for k in ('body_pose', 'transl', 'global_orient')}


def test_pose_correlation_makes_each_session_a_video(tmp_path):
    common = dict(num_sessions=2, frames_per_session=40, num_views=1, image_size=32,
                  masks=False, progress=False, seed=2)
    video = _params(generate_synthetic_dataset(tmp_path / 'v.h5', pose_correlation=0.98,
                                               **common))
    anew = _params(generate_synthetic_dataset(tmp_path / 'a.h5', **common))
    for name in ('body_pose', 'transl'):
        step = lambda p, lag: np.abs(p[lag:40] - p[:40 - lag]).mean()  # noqa: E731
        # a video moves a little every frame and drifts further over more frames ...
        assert step(video[name], 1) < 0.4 * step(anew[name], 1)
        assert step(video[name], 8) > 1.5 * step(video[name], 1)
        # ... frames drawn anew are as far from their neighbours as from any frame
        assert step(anew[name], 8) < 1.3 * step(anew[name], 1)
    # the same spread of poses either way (the pose_std the options give)
    assert 0.5 < video['body_pose'].std() / anew['body_pose'].std() < 2.0


def test_pose_correlation_is_validated(tmp_path):
    with pytest.raises(ValueError, match='pose_correlation'):
        generate_synthetic_dataset(tmp_path / 'x.h5', pose_correlation=1.0, progress=False)


def test_the_command_makes_videos_and_refuses_a_correlation_of_one(tmp_path, capsys):
    from smilfit.cli.make_synthetic import main
    common = ['--sessions', '1', '--frames', '24', '--views', '1', '--image-size', '32',
              '--no-masks', '--quiet']
    assert main([str(tmp_path / 'v.h5'), '--pose-correlation', '0.98'] + common) == 0
    assert main([str(tmp_path / 'a.h5')] + common) == 0
    video, anew = _params(tmp_path / 'v.h5'), _params(tmp_path / 'a.h5')
    step = lambda p: np.abs(np.diff(p, axis=0)).mean()  # noqa: E731
    assert step(video['body_pose']) < 0.4 * step(anew['body_pose'])
    assert main([str(tmp_path / 'x.h5'), '--pose-correlation', '1'] + common) == 1
    assert 'pose_correlation must be in [0, 1)' in capsys.readouterr().err
    assert not (tmp_path / 'x.h5').exists()
