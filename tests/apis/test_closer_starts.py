"""The real-session benchmark's starts between a network's and the fit's answer (what a
better network would give): the parameters and 3D keypoints lie the given fraction of the
way, and a fit from them starts where the fit itself put the keypoints at 0."""
import json

import h5py
import numpy as np
import pytest

from smilfit.apis.fitting.network_starts import START_PARAMS

from ..conftest import benchmark_module, demo_fit_config


@pytest.fixture(scope='module')
def fitted(tmp_path_factory):
    """A demo fit and a predictions file (tools/infer.py's layout) off its answer. The fit
    fits the per-frame parameters a network start sets and no others (not the shape), as
    the mouse config's per-frame pass does, so that the fit's answer is a start."""
    from smilfit.apis.fitting import fit_dataset, prepare_data
    tmp = tmp_path_factory.mktemp('closer')
    cfg = demo_fit_config(tmp)
    for stage in cfg.registrant.stages:
        stage['fit'] = [k for k in stage['fit'] if k in START_PARAMS]
    prepare_data(cfg, progress=False)
    results = fit_dataset(cfg, tmp / 'work', progress=False)
    predictions = tmp / 'predictions.h5'
    gen = np.random.default_rng(0)
    with h5py.File(results, 'r') as f, h5py.File(predictions, 'w') as out:
        frames = f['samples/frame'][:]
        order = gen.permutation(len(frames))          # rows in another order than the fit's
        out['frame'] = frames[order]
        out.attrs['format'] = 'smilfit-inference'
        out['session'] = np.array([b'demo'] * len(frames))
        out['instance'] = np.zeros(len(frames), dtype=np.int64)
        for name in START_PARAMS:
            value = f[f'params/{name}'][:]
            out[f'params/{name}'] = (value + 0.2 * gen.standard_normal(value.shape))[order]
        # the network's 3D keypoints, in its own order (reversed), off the fit's
        points = f['fitted_keypoints_3d'][:][order][:, ::-1]
        names = [n.decode() for n in f['data_keypoint_names'][:]][::-1]
        out['keypoints_3d'] = points + gen.standard_normal(points.shape)
        out.attrs['keypoint_names'] = json.dumps(names)
    return cfg, results, predictions, order


def _params(path, rows=None):
    with h5py.File(path, 'r') as f:
        return {k: f[f'params/{k}'][:].astype(np.float64)[rows if rows is not None else
                                                         slice(None)]
                for k in START_PARAMS}


def _keypoints(path):
    with h5py.File(path, 'r') as f:
        return f['keypoints_3d'][:].astype(np.float64)


def test_starts_lie_the_fraction_of_the_way_from_the_answer(fitted, tmp_path):
    bench = benchmark_module('real_session_regression')
    _, results, predictions, order = fitted
    answer, network = _params(results, order), _params(predictions)
    with h5py.File(results, 'r') as f:
        answer_points = f['fitted_keypoints_3d'][:].astype(np.float64)[order][:, ::-1]
    network_points = _keypoints(predictions)
    for fraction in (0.0, 0.5, 1.0):
        path = bench.start_fits.closer_starts(predictions, results, fraction,
                                              tmp_path / f'p{fraction}.h5')
        start = _params(path)
        for name in START_PARAMS:
            want = answer[name] + fraction * (network[name] - answer[name])
            np.testing.assert_allclose(start[name], want, atol=1e-5)
        np.testing.assert_allclose(
            _keypoints(path), answer_points + fraction * (network_points - answer_points),
            atol=1e-5)
    with h5py.File(predictions, 'r+') as f:          # a frame the fit does not hold
        frames = f['frame'][:]
        f['frame'][0] = frames.max() + 1
    try:
        with pytest.raises(ValueError, match='are missing'):
            bench.start_fits.closer_starts(predictions, results, 0.5, tmp_path / 'bad.h5')
        assert not (tmp_path / 'bad.h5').exists()      # no partial output
    finally:
        with h5py.File(predictions, 'r+') as f:
            f['frame'][...] = frames
    with pytest.raises(ValueError, match='appears twice'):
        bench.start_fits.frame_rows([0, 1], [0, 1, 1], 'two animals')


def test_a_fit_from_the_answer_starts_where_the_fit_put_the_keypoints(fitted, tmp_path):
    """The start recorder sees where a fit's stages start: from the fit's own parameters
    and keypoints (fraction 0), its fitted keypoints; from the network's, elsewhere."""
    from smilfit.apis.fitting import fit_dataset
    bench = benchmark_module('real_session_regression')
    cfg, results, predictions, _ = fitted
    fit, keys, _ = bench.session.fit_points(results, cfg.data.path)
    size = np.ptp(np.stack(list(fit.values())), axis=(0, 1)).max()
    starts = {}
    for fraction in (0.0, 1.0):
        cfg.data.init_from = str(bench.start_fits.closer_starts(
            predictions, results, fraction, tmp_path / f'p{fraction}.h5'))
        try:
            with bench.start_fits.start_recorder() as batches:
                fit_dataset(cfg, tmp_path / f'fit{fraction}', progress=False)
        finally:
            cfg.data.pop('init_from')
        starts[fraction] = np.concatenate(batches)
    answer = np.stack([fit[k] for k in keys])
    assert starts[0.0].shape == answer.shape
    assert np.nanmax(np.abs(starts[0.0] - answer)) < 1e-4 * size
    assert np.nanmax(np.abs(starts[1.0] - answer)) > 1e-2 * size


def test_the_fitting_clock_counts_the_fits_and_the_choice_of_starts(monkeypatch):
    """Fitting alone is every batch's registrant fit and the choice of each frame's start,
    not what a dataset fit does around them (reading, writing), which every start shares;
    the originals are back afterwards."""
    bench = benchmark_module('real_session_regression')
    from smilfit.apis.fitting import dataset_fit
    from smilfit.registrants.registrant import SMILRegistrant

    class Clock:
        now = 0.0

        def perf_counter(self):
            return self.now
    clock = Clock()
    monkeypatch.setattr(bench.start_fits, 'time', clock)

    def fit(self, *args, **kwargs):
        clock.now += 5.0
        return 'fitted'

    def network_starts(*args, **kwargs):
        clock.now += 2.0
        return 'started'
    monkeypatch.setattr(SMILRegistrant, 'fit', fit)
    monkeypatch.setattr(dataset_fit, '_network_starts', network_starts)
    with bench.start_fits.fitting_clock() as spent:
        clock.now += 100.0                                   # reading the data
        assert dataset_fit._network_starts() == 'started'
        assert SMILRegistrant.fit(object()) == 'fitted'
        assert SMILRegistrant.fit(object()) == 'fitted'
        clock.now += 100.0                                   # writing the results
    assert spent == [12.0]
    assert SMILRegistrant.fit is fit and dataset_fit._network_starts is network_starts


def test_the_fitting_clock_sees_a_dataset_fit(fitted, tmp_path):
    """The functions the clock wraps are the ones a dataset fit calls: a real fit spends
    some but not all of its seconds in them."""
    import time

    from smilfit.apis.fitting import fit_dataset
    bench = benchmark_module('real_session_regression')
    cfg, _, _, _ = fitted
    with bench.start_fits.fitting_clock() as spent:
        start = time.perf_counter()
        fit_dataset(cfg, tmp_path / 'again', progress=False)
        seconds = time.perf_counter() - start
    assert 0.0 < spent[0] < seconds
