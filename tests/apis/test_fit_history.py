"""The loss history of a dataset fit holds every iteration, not just stage start/end, and
the configuration it was fitted with."""
import json

import h5py
import numpy as np

from smilfit.visualization.plots import normalise_history

from ..conftest import benchmark_module, demo_fit


def test_loss_history_per_iteration(tmp_path):
    cfg, results = demo_fit(tmp_path)
    with h5py.File(results) as f:
        records = json.loads(f.attrs['loss_history'])
    assert len(records) == 2 * 2  # 2 stages x 2 batches of 4 samples
    for r in records:
        assert len(r['loss_trace']) == r['steps'] >= 2  # one value per LM iteration
        trace = np.array(r['loss_trace'])
        assert np.all(np.diff(trace) <= 1e-6 * trace[:-1])  # LM never accepts a rise
        assert np.isclose(trace[-1], r['mean_loss_end'], rtol=1e-4)
        # each sample's own iterations, summed: at least the slowest's, at most all four's
        assert r['steps'] <= r['unit_steps'] <= 4 * r['steps']
    curves = normalise_history(records)
    assert list(curves) == ['rigid', 'pose_shape']
    steps = max(r['steps'] for r in records if r['stage'] == 'rigid')
    assert len(curves['rigid']['mean loss']) == steps + 1  # the start, then every iteration


def test_the_real_session_benchmark_names_what_a_cached_fit_was_fitted_with(tmp_path):
    """The benchmark reuses a fit it finds in its output folder; one made with another
    registrant config (an older checkout's) is named, with what differs."""
    bench = benchmark_module('real_session_regression')
    cfg, results = demo_fit(tmp_path)
    assert bench.session.fit_config_changes(results, cfg) == []
    cfg.registrant.stages[0]['ftol'] = 0.5
    changes = bench.session.fit_config_changes(results, cfg)
    assert len(changes) == 1 and changes[0].startswith('registrant.stages[0].ftol: ')
    assert changes[0].endswith('-> 0.5')
