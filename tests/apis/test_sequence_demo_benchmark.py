"""``benchmarks/sequence_demo.py`` fits the sequence demo's video with the motion prior and
with every frame alone and scores both against the truth."""
import h5py
import numpy as np

from ..conftest import benchmark_module


def test_the_sequence_demo_is_scored_against_its_truth(tmp_path):
    bench = benchmark_module('sequence_demo')
    assert bench.main(['--seeds', '1', '--tables', str(tmp_path)]) == 0
    lines = (tmp_path / 'sequence_demo.md').read_text().splitlines()
    assert lines[0].startswith('<!-- written by `python benchmarks/sequence_demo.py --seeds 1')
    rows = [line.strip('|').split('|') for line in lines[4:]]
    assert [r[1].strip() for r in rows] == ['motion prior', 'every frame alone']
    for row in rows:
        median, p90 = float(row[2]), float(row[3])
        # both fit their exact labels closely: well under 1 % of the body length
        assert 0.0 < median <= p90 < 1.0


def test_keypoint_errors_match_names_not_places(tmp_path):
    bench = benchmark_module('sequence_demo')
    truth = np.arange(2 * 3 * 3, dtype=float).reshape(2, 3, 3)
    with h5py.File(tmp_path / 'data.h5', 'w') as f:
        f['keypoint_names'] = np.array([b'a', b'b', b'c'])
        f['keypoints_3d'] = truth
    with h5py.File(tmp_path / 'fit.h5', 'w') as f:
        f['keypoint_names'] = np.array([b'c', b'a'])           # another order, one fewer
        fitted = truth[:, [2, 0]].copy()
        fitted[0, 0, 0] += 3.0                                  # 'c' of frame 0 3 units off
        fitted[1, 1] = np.nan                                   # 'a' of frame 1 not fitted
        f['keypoints'] = fitted
    err = bench.keypoint_errors(tmp_path / 'fit.h5', tmp_path / 'data.h5')
    assert sorted(err.tolist()) == [0.0, 0.0, 3.0]
