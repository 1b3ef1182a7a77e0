"""``benchmarks/long_session.py`` makes its session with exact labels or with a pose
estimator's kind of errors."""
import json

import h5py
import numpy as np
import pytest

from ..conftest import benchmark_module


def test_the_session_gets_the_label_errors_asked_for_and_no_clean_copy_is_left(tmp_path):
    bench = benchmark_module('long_session')
    (tmp_path / 'exact').mkdir()
    (tmp_path / 'noisy').mkdir()
    bench.make(tmp_path / 'exact', frames=6, animals=2)
    bench.make(tmp_path / 'noisy', frames=6, animals=2, noise='2')
    assert sorted(p.name for p in (tmp_path / 'noisy').iterdir()) == ['session.h5',
                                                                      'truth.npz']
    with h5py.File(tmp_path / 'exact' / 'session.h5') as f:
        exact = f['views/keypoints_2d'][()]
        assert 'label_noise' not in f.attrs
    with h5py.File(tmp_path / 'noisy' / 'session.h5') as f:
        noisy = f['views/keypoints_2d'][()]
        assert json.loads(f.attrs['label_noise'])['sigma_px'] == 2.0
    seen = np.isfinite(exact)
    assert np.array_equal(seen, np.isfinite(noisy))
    errors = (noisy - exact)[seen]
    assert 1.5 < errors.std() < 2.5                     # 2 px, every coordinate


def test_bad_label_errors_are_refused_before_anything_runs(capsys):
    bench = benchmark_module('long_session')
    with pytest.raises(SystemExit):
        bench.main(['--noise', 'two'])
    assert 'SIGMA, OUTLIERS and SWAPS are numbers' in capsys.readouterr().err
