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


def _run(frames, motion, repeat, fit_s):
    return dict(frames=frames, animals=2, motion=motion, samples=2 * frames, make_s=1.0,
                skeleton_s=2.0, fit_s=fit_s, samples_per_s=0.0, reprojection_px=0.1,
                peak_mb=700.0, between_batches_mb=600.0 + fit_s, bone_error_pct=0.2,
                repeat=repeat)


def test_repeated_runs_give_medians_and_the_ratio_of_runs_side_by_side():
    bench = benchmark_module('long_session')
    # the machine's speed drifts between the repeats: the ratio is taken pair by pair
    # (3.0, 1.1, 1.2: median 1.2), not of the median times (30 / 20 = 1.5)
    runs = [_run(100, False, 0, 10.0), _run(100, True, 0, 30.0),
            _run(100, False, 1, 20.0), _run(100, True, 1, 22.0),
            _run(100, False, 2, 40.0), _run(100, True, 2, 48.0)]
    off, on = bench.summarize(runs)
    assert off[2] == 'off' and on[2] == 'on'
    assert off[5] == '20.0' and on[5] == '30.0'          # median times
    assert off[6] == ''
    assert on[6] == '1.20 (1.10-3.00)'                   # median ratio and its range
    assert on[7] == f'{1000 * 30.0 / 200:.2f}'           # ms per sample of the median
    assert (off[8], off[9]) == ('700', '620')           # peak, and between batches


def test_one_run_gives_its_ratio_alone_and_sizes_are_rows_in_order():
    bench = benchmark_module('long_session')
    rows = bench.summarize([_run(200, False, 0, 8.0), _run(200, True, 0, 10.0),
                            _run(100, False, 0, 4.0)])
    assert [(r[0], r[2], r[6]) for r in rows] == [('100', 'off', ''), ('200', 'off', ''),
                                                   ('200', 'on', '1.25')]


def test_memory_between_batches_is_read_after_every_batch_and_left_blank_unmeasured():
    import mmap
    from types import SimpleNamespace
    bench = benchmark_module('long_session')
    held = []

    def fit_batch(size):
        # Fresh anonymous pages, every one written: a malloc'd buffer may reuse pages
        # this process already holds (freed by an earlier test), which adds nothing.
        pages = mmap.mmap(-1, size)
        pages.write(b'x' * size)
        held.append(pages)
        return size
    module = SimpleNamespace(_fit_batch=fit_batch)
    seen = bench.watch_batches(module)
    assert [module._fit_batch(n << 20) for n in (8, 64)] == [8 << 20, 64 << 20]
    if np.isnan(bench.resident_mb()):
        pytest.skip('no /proc here to read the resident memory from')
    assert len(seen) == 2 and seen[1] - seen[0] > 40    # the 64 MB still held
    rows = bench.summarize([dict(_run(100, False, 0, 5.0), between_batches_mb=float('nan'))])
    assert rows[0][9] == ''


def test_repeats_below_one_are_refused(capsys):
    bench = benchmark_module('long_session')
    with pytest.raises(SystemExit):
        bench.main(['--repeats', '0'])
    assert '--repeats must be at least 1' in capsys.readouterr().err


def test_the_config_keeps_its_batch_unless_asked_and_passes_the_chain_length(tmp_path):
    bench = benchmark_module('long_session')
    shipped = bench.config(tmp_path / 's.h5', None, 50, motion=False)
    assert shipped.data.batch_size == 1024 and shipped.data.skeleton_frames == 50
    assert 'MotionPriorHandler' not in {h['type'] for h in shipped.registrant.handlers}
    cut = bench.config(tmp_path / 's.h5', 256, 50, motion=True, chain_frames=64)
    assert cut.data.batch_size == 256
    motion = [h for h in cut.registrant.handlers if h['type'] == 'MotionPriorHandler']
    assert len(motion) == 1 and motion[0]['chain_frames'] == 64
    default = bench.config(tmp_path / 's.h5', None, 50, motion=True)
    assert 'chain_frames' not in [h for h in default.registrant.handlers
                                  if h['type'] == 'MotionPriorHandler'][0]
