"""Fits started from a network's predictions (``data.init_from``): a good prediction saves
iterations and reaches the same fit; a wrong one is not used, so the fit is never worse."""
import json
from unittest import mock

import h5py
import numpy as np
import pytest

from smilfit.apis.fitting import QUALITY_JSON, dataset_fit, fit_dataset, prepare_data
from smilfit.apis.fitting.config import FittingConfigError
from smilfit.apis.fitting.network_starts import load_network_starts, predicted_keypoint_names
from smilfit.datasets import DatasetReader

from ..conftest import demo_fit_config

#: Samples whose prediction is turned the wrong way round.
WRONG = (2, 5)


def _write_predictions(path, reader, params, session=None, keypoints=None,
                       keypoint_names=None):
    """A predictions file as tools/infer.py writes it, from per-row parameters (and 3D
    keypoints (R, K, 3) named ``keypoint_names``, where given)."""
    cols = reader.read(np.arange(len(reader)), keys=['session', 'frame', 'instance'])
    names = [session or reader.session_names[int(s)] for s in cols['session']]
    with h5py.File(path, 'w') as f:
        f.attrs['format'] = 'smilfit-inference'
        f.create_dataset('session', data=np.array(names, dtype=object),
                         dtype=h5py.string_dtype())
        f.create_dataset('frame', data=cols['frame'])
        f.create_dataset('instance', data=cols['instance'])
        for k, v in params.items():
            f.create_dataset(f'params/{k}', data=v)
        if keypoints is not None:
            f.attrs['keypoint_names'] = json.dumps(list(keypoint_names))
            f.create_dataset('keypoints_3d', data=keypoints)


def _steps(results):
    with h5py.File(results) as f:
        return sum(r['steps'] for r in json.loads(f.attrs['loss_history']))


def _errors(results):
    with h5py.File(results) as f:
        return np.nanmedian(f['metrics/reprojection_point_px'][:], axis=(1, 2))


@pytest.fixture(scope='module')
def session(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('network_starts')
    cfg = demo_fit_config(tmp)
    prepare_data(cfg, progress=False)
    with DatasetReader(cfg.data.path) as reader:
        truth = reader.read(np.arange(len(reader)), keys=['params'])['params']
    default = fit_dataset(cfg, tmp / 'default', progress=False)
    return tmp, cfg, truth, default


def test_a_good_network_saves_iterations_and_reaches_the_same_fit(session):
    tmp, cfg, truth, default = session
    predictions = tmp / 'good.h5'
    with DatasetReader(cfg.data.path) as reader:
        _write_predictions(predictions, reader, {k: truth[k] for k in
                                                 ('global_orient', 'body_pose', 'transl')})
    cfg.data.init_from = str(predictions)
    started = fit_dataset(cfg, tmp / 'good', progress=False)
    cfg.data.pop('init_from')
    with h5py.File(started) as f:
        assert f['samples/network_start'][:].all()
        history = json.loads(f.attrs['loss_history'])
    # every frame starts near the answer: the coarse stages (the rigid alignment) are
    # not run
    coarse = [r for r in history if r['stage'] == 'rigid']
    assert coarse and all(r['skipped'] == 'every sample starts near the answer'
                          for r in coarse)
    assert _steps(started) < _steps(default)
    assert np.median(_errors(started)) <= 1.05 * np.median(_errors(default))


def test_a_wrong_prediction_is_not_used(session):
    tmp, cfg, truth, default = session
    orient = truth['global_orient'].copy()
    orient[list(WRONG)] = orient[list(WRONG)] + np.array([0.0, 0.0, np.pi])  # turned round
    predictions = tmp / 'wrong.h5'
    with DatasetReader(cfg.data.path) as reader:
        _write_predictions(predictions, reader, dict(global_orient=orient,
                                                     body_pose=truth['body_pose'],
                                                     transl=truth['transl'] + 0.5))
    cfg.data.init_from = str(predictions)
    started = fit_dataset(cfg, tmp / 'wrong', progress=False)
    cfg.data.pop('init_from')
    with h5py.File(started) as f:
        won = f['samples/network_start'][:]
        history = json.loads(f.attrs['loss_history'])
    assert not won[list(WRONG)].any()
    # the fit's report says how many started from the network
    quality = started.parent / QUALITY_JSON
    assert json.loads(quality.read_text())['network_starts'] == won.sum()
    assert f'{won.sum()} of {len(won)} samples started from the network' in \
        quality.with_suffix('.txt').read_text()
    assert 'network_starts' not in json.loads((default.parent / QUALITY_JSON).read_text())
    # the frames started from the network skip the rigid alignment; the others run it
    assert sum(r.get('skipped_samples', 0) for r in history if r['stage'] == 'rigid') \
        == won.sum() > 0
    # where the default start was kept, the fit is the default fit
    kept = ~won
    assert np.allclose(_errors(started)[kept], _errors(default)[kept], rtol=1e-4,
                       atol=1e-4)
    assert (_errors(started) <= _errors(default) * 1.05 + 1e-3).all()


def test_predictions_of_another_recording_are_refused(session, tmp_path):
    _, cfg, truth, _ = session
    with DatasetReader(cfg.data.path) as reader:
        other = tmp_path / 'other.h5'
        _write_predictions(other, reader, {k: truth[k] for k in ('global_orient',
                                                                  'body_pose', 'transl')})
        with h5py.File(other, 'r+') as f:
            f['frame'][...] = f['frame'][:] + 1000
        with pytest.raises(FittingConfigError, match='no prediction'):
            load_network_starts(other, reader)
        not_predictions = tmp_path / 'not.h5'
        with h5py.File(not_predictions, 'w') as f:
            f.attrs['format'] = 'something else'
        with pytest.raises(FittingConfigError, match='not a tools/infer.py'):
            load_network_starts(not_predictions, reader)


def test_one_session_joins_videos_named_after_the_rig(session, tmp_path):
    """A network run on the session's videos names its session 'rig': with one session on
    both sides, frames and instances match."""
    _, cfg, truth, _ = session
    with DatasetReader(cfg.data.path) as reader:
        path = tmp_path / 'rig.h5'
        _write_predictions(path, reader, {k: truth[k] for k in ('global_orient',
                                                                 'body_pose', 'transl')},
                           session='rig')
        starts = load_network_starts(path, reader)
    assert starts.found.all()
    assert np.allclose(starts.params['transl'], truth['transl'])
    assert starts.keypoints is None          # the file has no 3D keypoints


def test_the_networks_keypoints_are_read_in_the_datas_order(session, tmp_path):
    """3D keypoints are matched to the data's keypoints by name (the network may order
    them otherwise, or predict fewer); a malformed array is an error naming the file."""
    _, cfg, truth, _ = session
    with DatasetReader(cfg.data.path) as reader:
        names = list(reader.keypoint_names)
        R, K = len(reader), len(names)
        points = np.arange(R * K * 3, dtype=np.float64).reshape(R, K, 3)
        order = np.arange(K)[::-1][:-1]       # reversed, and the first name not predicted
        params = {k: truth[k] for k in ('global_orient', 'body_pose', 'transl')}
        path = tmp_path / 'named.h5'
        _write_predictions(path, reader, params, keypoints=points[:, order],
                           keypoint_names=[names[i] for i in order])
        starts = load_network_starts(path, reader)
        assert np.array_equal(starts.keypoints[:, 1:], points[:, 1:])
        assert np.isnan(starts.keypoints[:, 0]).all()
        bad = tmp_path / 'bad.h5'
        _write_predictions(bad, reader, params, keypoints=points[:, :, :2],
                           keypoint_names=names)
        with pytest.raises(FittingConfigError, match='keypoints_3d has shape'):
            load_network_starts(bad, reader)


def _first_fit(tmp_path, seed: int):
    """``(config, fit_results.h5, its fitted per-frame start parameters)``: the mouse
    config with the demo mouse on a small synthetic 2-camera session, fitted from the
    default start (the animal's skeleton estimated)."""
    from smilfit.datasets.synthetic_animals import generate_animal_session
    from smilfit.utils import register_all_modules

    from ..conftest import benchmark_module, mouse_session_config_on_demo_mouse
    register_all_modules()
    generate_animal_session(tmp_path / 'data.h5', num_animals=1, frames=6, num_views=2,
                            noise_px=0.5, seed=seed)
    cfg = mouse_session_config_on_demo_mouse(tmp_path / 'data.h5')
    # (poses drawn anew every frame, not a video: without the motion prior the fits
    # differ by their starts alone, not by how much each start lets it measure motion)
    benchmark_module('holdout').apply_variant(cfg, 'no_motion')
    first = fit_dataset(cfg, tmp_path / 'first', progress=False)
    with h5py.File(first) as f:
        fitted = {k: f[f'params/{k}'][:] for k in ('global_orient', 'body_pose', 'transl',
                                                    'global_log_scale')}
    return cfg, first, fitted


def test_a_refit_from_the_network_keeps_the_first_fits_skeleton(tmp_path):
    """The task guide's refit: frames started from the network's predictions, the
    animal's skeleton taken from the first fit (``data.skeleton``) instead of estimated
    again, so that only the frames' fits run."""
    cfg, first, fitted = _first_fit(tmp_path, seed=3)
    with h5py.File(first) as f:
        skeleton = {k: f[f'animals/param_{k}'][:] for k in ('bone_trans', 'keypoint_offsets')}
    # a network a little off the first fit's answer
    fitted['transl'] = fitted['transl'] + 0.02 * np.abs(fitted['transl']).max()
    predictions = tmp_path / 'predictions.h5'
    with DatasetReader(cfg.data.path) as reader:
        _write_predictions(predictions, reader, fitted)
    cfg.data.update(init_from=str(predictions), skeleton=dict(path=str(first)))
    with mock.patch.object(dataset_fit, 'estimate_skeletons',
                           side_effect=AssertionError('the skeleton was estimated again')):
        refit = fit_dataset(cfg, tmp_path / 'refit', progress=False)
    with h5py.File(refit) as f:
        assert f['samples/network_start'][:].all()
        for k, v in skeleton.items():
            assert np.array_equal(f[f'animals/param_{k}'][:], v), k
        history = json.loads(f.attrs['loss_history'])
    run = {r['stage'] for r in history if r['steps'] > 0}
    assert run == {'refine', 'refine2'}, run     # no skeleton stage, no coarse stage
    assert np.median(_errors(refit)) <= 1.05 * np.median(_errors(first)) + 1e-3


def test_a_pose_predicted_for_another_skeleton_starts_where_its_keypoints_are(tmp_path):
    """A network poses its own template skeleton: its parameters put the animal's skeleton
    somewhere else than its keypoints. Placed where its own 3D keypoints are, its pose is
    the best start of every frame and the fits take fewer iterations than from the
    parameters as predicted."""
    cfg, first, fitted = _first_fit(tmp_path, seed=4)
    with h5py.File(first) as f:
        keypoints = f['fitted_keypoints_3d'][:]
    # the pose of another skeleton: its global orientation off by about 0.5 rad, larger and
    # moved by a fifth of the animal's extent, while the network's keypoints are where the
    # animal is
    extent = np.nanmax(np.ptp(keypoints, axis=1))
    other = dict(fitted, global_orient=fitted['global_orient'] + np.array([0.0, 0.0, 0.5]),
                 transl=fitted['transl'] + 0.2 * extent,
                 global_log_scale=fitted['global_log_scale'] + 0.1)
    cfg.data.update(skeleton=dict(path=str(first)))
    runs = {}
    with DatasetReader(cfg.data.path) as reader:
        names = list(reader.keypoint_names)
    for label, points in (('as predicted', None), ('placed', keypoints)):
        predictions = tmp_path / f'{label}.h5'
        with DatasetReader(cfg.data.path) as reader:
            _write_predictions(predictions, reader, other, keypoints=points,
                               keypoint_names=names)
        cfg.data.init_from = str(predictions)
        runs[label] = fit_dataset(cfg, tmp_path / label, progress=False)
    with h5py.File(runs['placed']) as f:
        assert f['samples/network_start'][:].all()
    assert _steps(runs['placed']) < _steps(runs['as predicted'])
    assert np.median(_errors(runs['placed'])) <= 1.05 * np.median(_errors(first)) + 1e-3


def test_predicted_keypoint_names_read_either_encoding_and_refuse_garbage(tmp_path):
    path = tmp_path / 'predictions.h5'
    with h5py.File(path, 'w') as f:
        assert predicted_keypoint_names(f, path) is None          # no 3D keypoints
        f['keypoints_3d'] = np.zeros((1, 2, 3))
        assert predicted_keypoint_names(f, path) is None          # no names
        f.attrs['keypoint_names'] = json.dumps(['Nose', 'Tail'])
        assert predicted_keypoint_names(f, path) == ['Nose', 'Tail']
        f.attrs['keypoint_names'] = np.array([b'Nose', b'Tail'])
        assert predicted_keypoint_names(f, path) == ['Nose', 'Tail']
        f.attrs['keypoint_names'] = '["Nose", '
        with pytest.raises(FittingConfigError, match='keypoint_names is not a list'):
            predicted_keypoint_names(f, path)
