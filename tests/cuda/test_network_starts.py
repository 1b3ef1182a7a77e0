"""Fits started from a network's predictions (``data.init_from``) on CUDA: the choice of
each frame's start (the default, the parameters as predicted, the pose placed where the
network's keypoints are) and the fits from it, against the same run on the CPU."""
import json

import h5py
import numpy as np
import pytest

from smilfit.apis.fitting import fit_dataset
from smilfit.datasets import DatasetReader
from tests.apis.test_network_starts import _first_fit, _write_predictions

pytestmark = pytest.mark.gpu


def _fits_from_predictions(tmp_path, devices):
    """{device: (network_start flags, fitted joints, stages that ran)} of one fit per
    device from the same predictions: every frame placed where the first fit's keypoints
    are, frame 1 turned the wrong way round (its default start must win)."""
    cfg, first, fitted = _first_fit(tmp_path, seed=5)
    with h5py.File(first) as f:
        keypoints = f['fitted_keypoints_3d'][:]
    predicted = dict(fitted, global_orient=fitted['global_orient'].copy())
    predicted['global_orient'][1] += np.array([0.0, 0.0, np.pi])
    keypoints = keypoints.copy()
    keypoints[1] = keypoints[1, :, ::-1] * np.array([-1.0, -1.0, 1.0])  # nowhere near
    predictions = tmp_path / 'predictions.h5'
    with DatasetReader(cfg.data.path) as reader:
        _write_predictions(predictions, reader, predicted, keypoints=keypoints,
                           keypoint_names=list(reader.keypoint_names))
    cfg.data.update(init_from=str(predictions), skeleton=dict(path=str(first)))
    runs = {}
    for device in devices:
        results = fit_dataset(cfg, tmp_path / device, progress=False, device=device)
        with h5py.File(results) as f:
            runs[device] = (f['samples/network_start'][:], f['joints'][:],
                            [r['stage'] for r in json.loads(f.attrs['loss_history'])
                             if r['steps'] > 0])
    return runs


def test_fits_from_a_network_on_cuda_match_the_cpu(tmp_path):
    runs = _fits_from_predictions(tmp_path, ('cpu', 'cuda'))
    (cpu_won, cpu_joints, cpu_stages), (gpu_won, gpu_joints, gpu_stages) = \
        runs['cpu'], runs['cuda']
    assert not cpu_won[1] and cpu_won.sum() == len(cpu_won) - 1
    np.testing.assert_array_equal(gpu_won, cpu_won)
    assert gpu_stages == cpu_stages
    extent = float(np.ptp(cpu_joints.reshape(-1, 3), axis=0).max())
    # (the pose stages stop at a relative decrease of 1e-4: float32 rounding may stop them
    # an iteration apart on the two devices)
    np.testing.assert_allclose(gpu_joints, cpu_joints, rtol=0, atol=2e-3 * extent)
