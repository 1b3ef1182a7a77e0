"""The real-session benchmark's starts between a network's and the fit's answer (what a
better network would give): the parameters lie the given fraction of the way, and posed
with the animal's skeleton they are where the fit itself puts the keypoints at 0."""
import h5py
import numpy as np
import pytest
import torch

from smilfit.apis.fitting.network_starts import START_PARAMS
from smilfit.registry import BODY_MODELS
from smilfit.utils import register_all_modules

from ..conftest import benchmark_module, demo_fit


@pytest.fixture(scope='module')
def fitted(tmp_path_factory):
    """A demo fit and a predictions file (tools/infer.py's layout) off its answer."""
    tmp = tmp_path_factory.mktemp('closer')
    cfg, results = demo_fit(tmp)
    predictions = tmp / 'predictions.h5'
    gen = np.random.default_rng(0)
    with h5py.File(results, 'r') as f, h5py.File(predictions, 'w') as out:
        frames = f['samples/frame'][:]
        order = gen.permutation(len(frames))          # rows in another order than the fit's
        out['frame'] = frames[order]
        out['session'] = np.array([b'demo'] * len(frames))
        for name in START_PARAMS:
            value = f[f'params/{name}'][:]
            out[f'params/{name}'] = (value + 0.2 * gen.standard_normal(value.shape))[order]
    return cfg, results, predictions, order


def _params(path, rows=None):
    with h5py.File(path, 'r') as f:
        return {k: f[f'params/{k}'][:].astype(np.float64)[rows if rows is not None else
                                                         slice(None)]
                for k in START_PARAMS}


def test_starts_lie_the_fraction_of_the_way_from_the_answer(fitted, tmp_path):
    bench = benchmark_module('real_session_regression')
    _, results, predictions, order = fitted
    answer, network = _params(results, order), _params(predictions)
    for fraction in (0.0, 0.5, 1.0):
        start = _params(bench.closer_starts(predictions, results, fraction,
                                            tmp_path / f'p{fraction}.h5'))
        for name in START_PARAMS:
            want = answer[name] + fraction * (network[name] - answer[name])
            np.testing.assert_allclose(start[name], want, atol=1e-5)
    with h5py.File(predictions, 'r+') as f:          # a frame the fit does not hold
        frames = f['frame'][:]
        f['frame'][0] = frames.max() + 1
    try:
        with pytest.raises(ValueError, match='are missing'):
            bench.closer_starts(predictions, results, 0.5, tmp_path / 'bad.h5')
        assert not (tmp_path / 'bad.h5').exists()      # no partial output
    finally:
        with h5py.File(predictions, 'r+') as f:
            f['frame'][...] = frames
    with pytest.raises(ValueError, match='appears twice'):
        bench.frame_rows([0, 1], [0, 1, 1], 'two animals')


def test_the_answer_as_a_start_puts_the_keypoints_where_the_fit_does(fitted, tmp_path):
    """Posed with the fit's skeleton and keypoint offsets, the fit's own parameters give
    its fitted keypoints; the network's do not."""
    bench = benchmark_module('real_session_regression')
    cfg, results, predictions, _ = fitted
    register_all_modules()
    model = BODY_MODELS.build(dict(cfg.body_model, dtype=torch.float64))
    keypoints = cfg.data.path
    fit, keys, _ = bench.fit_points(results, keypoints)
    at_answer = bench.start_points(
        results, bench.closer_starts(predictions, results, 0.0, tmp_path / 'p0.h5'),
        keypoints, model)
    at_network = bench.start_points(results, predictions, keypoints, model)
    size = np.ptp(np.stack(list(fit.values())), axis=(0, 1)).max()
    assert sorted(at_answer) == sorted(keys)
    assert max(np.abs(at_answer[k] - fit[k]).max() for k in keys) < 1e-4 * size
    assert max(np.abs(at_network[k] - fit[k]).max() for k in keys) > 1e-2 * size


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
    monkeypatch.setattr(bench, 'time', clock)

    def fit(self, *args, **kwargs):
        clock.now += 5.0
        return 'fitted'

    def network_starts(*args, **kwargs):
        clock.now += 2.0
        return 'started'
    monkeypatch.setattr(SMILRegistrant, 'fit', fit)
    monkeypatch.setattr(dataset_fit, '_network_starts', network_starts)
    with bench.fitting_clock() as spent:
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
    with bench.fitting_clock() as spent:
        start = time.perf_counter()
        fit_dataset(cfg, tmp_path / 'again', progress=False)
        seconds = time.perf_counter() - start
    assert 0.0 < spent[0] < seconds
