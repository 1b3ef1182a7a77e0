"""The Ensemble Kalman Smoother as a peer: each run of an animal's consecutive frames goes
to the smoother's own interpreter and its answer comes back to those samples, in frame
order. The smoother itself (``ensemble-kalman-smoother``, in an environment of its own)
is run where ``SMILFIT_EKS_PYTHON`` names that interpreter; elsewhere a stand-in
interpreter checks the hand-over."""
import os
import sys

import numpy as np
import pytest

from smilfit.evaluation.eks_peer import eks_peer
from smilfit.evaluation.triangulation_peers import dlt_peer

from ..conftest import benchmark_module
from .test_triangulation_peers import _cameras

#: A stand-in for the smoother's interpreter: every run's answer is (run, place in the
#: run, run length) at every keypoint.
STAND_IN = '''#!{python}
import sys
import numpy as np
src, dst = sys.argv[2:]
out = {{}}
with np.load(src) as data:
    for i in range(int(data['runs'])):
        C, T, K, _ = data[f'points_{{i}}'].shape
        assert data[f'K_{{i}}'].shape == (C, 3, 3) and data[f'confidence_{{i}}'].shape == (C, T, K)
        out[f'points_{{i}}'] = np.stack(np.broadcast_arrays(
            float(i), np.arange(T, dtype=float)[:, None], float(T)), -1) * np.ones((T, K, 1))
np.savez(dst, **out)
'''


def _video(T=40, K=4, noise=0.0, seed=0):
    """Labels of K points on a slow random walk (a step of 0.03 a frame) in three cameras,
    with Gaussian noise of ``noise`` px."""
    from smilfit.cameras.projection import project_points_numpy
    rng = np.random.default_rng(seed)
    points = np.cumsum(rng.normal(0, 0.03, (T, K, 3)), 0) + rng.normal(0, 3, (1, K, 3))
    Kc, Rc, tc, dist = (np.broadcast_to(a, (T,) + a.shape).copy() for a in _cameras(1))
    uv, _ = project_points_numpy(points[:, None], Kc, Rc, tc, dist)
    uv = uv + rng.normal(0, noise, uv.shape)
    obs = dict(keypoints_2d=uv, confidence=np.ones(uv.shape[:3]), K=Kc, R=Rc, t=tc, dist=dist,
               frame_index=np.arange(T), animal=np.zeros(T, int))
    return obs, points


def test_each_run_goes_to_the_smoother_and_comes_back_in_frame_order(tmp_path):
    stand_in = tmp_path / 'python'
    stand_in.write_text(STAND_IN.format(python=sys.executable))
    stand_in.chmod(0o755)
    obs, _ = _video(T=7)
    order = np.array([3, 0, 6, 1, 5, 2, 4])                 # samples not in frame order
    obs = {k: v[order] for k, v in obs.items()}
    obs['frame_index'] = np.array([3, 0, 9, 1, 8, 2, 4])    # frames 0-4, then 8-9 (a gap)
    obs['animal'] = np.zeros(7, int)
    obs['keypoints_2d'][0, 1:] = np.nan     # frame 3 seen by one view only: left out
    got = eks_peer(str(stand_in))(obs)
    run, place, length = got[..., 0], got[..., 1], got[..., 2]
    frames = obs['frame_index']
    assert np.isnan(got[0]).all()
    first = np.isin(frames, [0, 1, 2])
    assert (length[first] == 3).all() and len(np.unique(run[first])) == 1
    np.testing.assert_array_equal(place[first][:, 0], frames[first])
    assert (length[frames == 4] == 1).all()
    late = np.isin(frames, [8, 9])
    assert (length[late] == 2).all()
    np.testing.assert_array_equal(place[late][:, 0], frames[late] - 8)


def test_the_benchmarks_eks_option_adds_the_smoother_as_a_peer(tmp_path):
    import argparse
    methods = benchmark_module('holdout_methods')
    parser = argparse.ArgumentParser()
    methods.add_arguments(parser)
    stand_in = tmp_path / 'python'
    stand_in.write_text(STAND_IN.format(python=sys.executable))
    stand_in.chmod(0o755)
    assert methods.make_peers(parser.parse_args(['--peers', 'none']), []) == {}
    peers = methods.make_peers(parser.parse_args(['--peers', 'none', '--eks-python',
                                                  str(stand_in)]), [])
    assert list(peers) == ['EKS']
    obs, _ = _video(T=3)
    assert peers['EKS'](obs).shape == (3, 4, 3)


def test_a_missing_interpreter_says_how_to_make_one(tmp_path):
    with pytest.raises(FileNotFoundError, match='ensemble-kalman-smoother'):
        eks_peer(str(tmp_path / 'nowhere' / 'python'))


@pytest.mark.skipif(not os.environ.get('SMILFIT_EKS_PYTHON'),
                    reason='SMILFIT_EKS_PYTHON names no interpreter with eks installed')
def test_the_smoother_beats_each_frames_triangulation_on_a_slow_walk():
    obs, points = _video(T=60, noise=3.0, seed=2)
    obs['confidence'] = np.full_like(obs['confidence'], 1 / 9)   # (the labels' variance, px^2)
    obs['keypoints_2d'][10, 2, 1] = np.nan                 # a label one view misses
    smoothed = eks_peer(os.environ['SMILFIT_EKS_PYTHON'])(obs)
    assert np.isfinite(smoothed).all()
    error = np.linalg.norm(smoothed - points, axis=-1)
    alone = np.linalg.norm(dlt_peer(obs) - points, axis=-1)
    assert np.median(error) < 0.6 * np.median(alone)
