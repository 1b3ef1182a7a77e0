"""Held-out-view evaluation (tools/test.py --holdout-views) on a small synthetic 4-camera
session with known truth and 2D noise: subsets, the report's structure, DLT and fit numbers
against a direct computation, and that a view left out is not used by the fit."""
import itertools
import json
import shutil

import h5py
import numpy as np
import pytest
import torch

from smilfit.apis.fitting import fit_dataset, prepare_data
from smilfit.apis.holdout import (HOLDOUT_JSON, HOLDOUT_TEXT, HoldoutConfigError,
                                  evaluate_holdout_views, view_subsets)
from smilfit.cameras import triangulate_dlt

from ..conftest import REPO_ROOT, demo_fit_config

CAMS = ['cam_0', 'cam_1', 'cam_2', 'cam_3']
NOISE_PX = 1.5


def _add_noise(path, seed=0):
    """Labelling noise and uneven confidences, so DLT from k views is not exact and a view
    used where it should not be changes the numbers."""
    rng = np.random.default_rng(seed)
    with h5py.File(path, 'r+') as f:
        kp = f['views/keypoints_2d']
        kp[...] = kp[...] + rng.normal(0.0, NOISE_PX, kp.shape).astype(np.float32)
        conf = f['views/confidence']
        vis = f['views/visible'][...]
        conf[...] = np.where(vis, rng.uniform(0.3, 1.0, conf.shape), 0.0).astype(np.float32)


@pytest.fixture(scope='module')
def session(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('holdout')
    cfg = demo_fit_config(tmp, batch_size=6)
    cfg.data.synthetic.update(frames_per_session=6, num_views=4, image_size=128, seed=3)
    prepare_data(cfg, progress=False)
    _add_noise(cfg.data.path)
    cfg.data.synthetic = None                       # the noisy file as it is
    report = evaluate_holdout_views(cfg, tmp / 'out', [2], progress=False,
                                    config_name='demo')
    return cfg, tmp / 'out', report


def test_view_subsets_all_or_a_seeded_sample():
    every, total = view_subsets(CAMS, 2)
    assert every == list(itertools.combinations(CAMS, 2)) and total == 6
    some, total = view_subsets(CAMS, 2, max_subsets=4, seed=1)
    assert total == 6 and len(some) == 4 == len(set(some)) and set(some) <= set(every)
    assert some == view_subsets(CAMS, 2, max_subsets=4, seed=1)[0]
    assert any(view_subsets(CAMS, 2, max_subsets=3, seed=s)[0] != some[:3] for s in range(5))
    assert view_subsets(CAMS, 3, max_subsets=10)[0] == list(itertools.combinations(CAMS, 3))
    for k in (0, 4):
        with pytest.raises(HoldoutConfigError, match='k must be 1 to 3'):
            view_subsets(CAMS, k)
    assert view_subsets(CAMS, 4, all_views=True) == ([tuple(CAMS)], 1)
    with pytest.raises(HoldoutConfigError, match='k must be 1 to 4'):
        view_subsets(CAMS, 5, all_views=True)
    with pytest.raises(HoldoutConfigError, match='max-subsets'):
        view_subsets(CAMS, 2, max_subsets=0)


def test_report_structure_and_files(session):
    cfg, out, report = session
    assert report['views'] == CAMS and report['samples'] == 6
    assert list(report['k']) == ['2']
    for k, count in ((2, 6),):
        block = report['k'][str(k)]
        assert block['selection'] == dict(count=count, total=count, sampled=False, seed=0,
                                          max_subsets=None)
        assert [tuple(s['views']) for s in block['subsets']] == \
            list(itertools.combinations(CAMS, k))
        for s in block['subsets']:
            assert s['held_out'] == sorted(set(CAMS) - set(s['views']))
            assert s['failed_samples'] == 0 and s['points'] > 0
            assert s['fit_wins'] == (s['fit_median_px'] < s['dlt_median_px'])
        assert list(block['cameras']) == CAMS
        for cam, group in block['cameras'].items():     # each camera is held out by
            held = [s for s in block['subsets'] if cam in s['held_out']]   # C(3, k) subsets
            assert group['compared_subsets'] == len(held) == len(list(
                itertools.combinations(range(3), k)))
        every = block['all']
        assert every['fit_wins'] == sum(s['fit_wins'] for s in block['subsets'])
        assert every['compared_subsets'] == count
        worst = max(block['subsets'], key=lambda s: s['dlt_median_px'])
        assert every['dlt_worst'] == dict(views=worst['views'], median_px=worst['dlt_median_px'])
        assert every['points'] == sum(s['points'] for s in block['subsets'])
        assert every['points_all'] >= every['points']
        with h5py.File(cfg.data.path, 'r') as f:
            names = [n.decode() if isinstance(n, bytes) else n for n in f['keypoint_names']]
        assert list(block['keypoints']) == names
    assert json.loads((out / HOLDOUT_JSON).read_text()) == report
    text = (out / HOLDOUT_TEXT).read_text()
    assert 'k = 2: 6 of 6 subsets' in text
    assert 'fit med' in text and 'DLT med' in text and 'fit p90' in text
    # DLT from noisy labels is not exact, and the fit sees the same noise
    assert 0.2 < report['k']['2']['all']['dlt_median_px'] < 20 * NOISE_PX
    assert report['k']['2']['all']['fit_median_px'] < 20 * NOISE_PX


def _direct(cfg, out, k, subset):
    """Held-out pixel errors of DLT (from the subset's views) and of the fit, computed here
    from the HDF5 arrays: numpy pinhole projection (the synthetic cameras have no
    distortion), triangulate_dlt with confidence x visible weights."""
    with h5py.File(cfg.data.path, 'r') as f:
        kp = f['views/keypoints_2d'][:].astype(np.float64)
        conf = f['views/confidence'][:].astype(np.float64)
        vis = f['views/visible'][:]
        K, R, t = f['views/K'][:], f['views/R'][:], f['views/t'][:]
        assert not f['views/dist'][:].any()
    used = np.array([c in subset for c in CAMS])
    P = K @ np.concatenate([R, t[..., None]], axis=-1)                 # (B, C, 3, 4)
    w = np.where(vis & used[None, :, None], conf, 0.0)
    dlt = triangulate_dlt(torch.as_tensor(kp), torch.as_tensor(P), torch.as_tensor(w)).numpy()
    name = f'k{k}_{"+".join(subset)}'
    with h5py.File(out / 'fits' / name / 'fit_results.h5', 'r') as f:
        fit = f['fitted_keypoints_3d'][:].astype(np.float64)

    def err(X):
        h = np.einsum('bcij,bkj->bcki', P, np.concatenate([X, np.ones_like(X[..., :1])], -1))
        return np.linalg.norm(h[..., :2] / h[..., 2:] - kp, axis=-1)   # (B, C, K)

    scored = vis & ~used[None, :, None] & np.isfinite(kp).all(-1)
    common = scored & np.isfinite(dlt).all(-1)[:, None]
    camera = np.broadcast_to(np.arange(len(CAMS))[None, :, None], common.shape)[common]
    return err(fit)[common], err(dlt)[common], camera


def test_numbers_match_a_direct_computation(session):
    cfg, out, report = session
    for k in (2,):
        block = report['k'][str(k)]
        pooled_fit, pooled_dlt = [], []
        for s in block['subsets']:
            fit, dlt, camera = _direct(cfg, out, k, s['views'])
            assert s['points'] == fit.size
            np.testing.assert_allclose(s['dlt_median_px'], np.median(dlt), rtol=1e-5)
            np.testing.assert_allclose(s['fit_median_px'], np.median(fit), rtol=1e-4)
            np.testing.assert_allclose(s['dlt_p90_px'], np.percentile(dlt, 90), rtol=1e-5)
            np.testing.assert_allclose(s['fit_p90_px'], np.percentile(fit, 90), rtol=1e-4)
            assert list(s['cameras']) == s['held_out']
            for name, per in s['cameras'].items():
                here = camera == CAMS.index(name)
                assert per['points'] == here.sum() > 0
                np.testing.assert_allclose(per['dlt_median_px'], np.median(dlt[here]),
                                           rtol=1e-5)
                np.testing.assert_allclose(per['fit_median_px'], np.median(fit[here]),
                                           rtol=1e-4)
                np.testing.assert_allclose(per['fit_p90_px'], np.percentile(fit[here], 90),
                                           rtol=1e-4)
            pooled_fit.append(fit)
            pooled_dlt.append(dlt)
        np.testing.assert_allclose(block['all']['dlt_median_px'],
                                   np.median(np.concatenate(pooled_dlt)), rtol=1e-5)
        np.testing.assert_allclose(block['all']['fit_median_px'],
                                   np.median(np.concatenate(pooled_fit)), rtol=1e-4)
        np.testing.assert_allclose(block['all']['fit_p90_px'],
                                   np.percentile(np.concatenate(pooled_fit), 90), rtol=1e-4)
        np.testing.assert_allclose(block['all']['dlt_p90_px'],
                                   np.percentile(np.concatenate(pooled_dlt), 90), rtol=1e-5)


def test_a_view_left_out_is_not_used_by_the_fit(session, tmp_path):
    cfg, _, _ = session
    bad = tmp_path / 'corrupt.h5'
    shutil.copy(cfg.data.path, bad)
    with h5py.File(bad, 'r+') as f:                 # cam_3's labels: 40 px off, random
        kp = f['views/keypoints_2d']
        kp[:, 3] = kp[:, 3] + np.random.default_rng(1).uniform(20, 60, kp[:, 3].shape)

    def fit(path, name, **views):
        c = cfg.copy()
        c.data = dict(cfg.data, path=str(path), **views)
        with h5py.File(fit_dataset(c, tmp_path / name, progress=False), 'r') as f:
            return f['fitted_keypoints_3d'][:]

    three = dict(views=['cam_0', 'cam_1', 'cam_2'])
    np.testing.assert_array_equal(fit(cfg.data.path, 'clean', **three),
                                  fit(bad, 'corrupt', **three))
    np.testing.assert_array_equal(fit(cfg.data.path, 'clean_x', exclude_views=['cam_3']),
                                  fit(bad, 'corrupt_x', exclude_views=['cam_3']))
    # the control: fitted with cam_3, the corruption moves the fit
    moved = np.abs(fit(bad, 'corrupt_all') - fit(cfg.data.path, 'clean_all'))
    assert np.nanmax(moved) > 1e-3


def test_tool_samples_subsets_and_reports_errors(tmp_path, capsys):
    from smilfit.cli.test import main
    config = str(REPO_ROOT / 'configs' / 'fitting' / 'demo_mouse.py')
    common = [config, '--out-dir', str(tmp_path / 'out'), '--no-progress', '--cfg-options',
              f'data.path={tmp_path / "data.h5"}', 'data.synthetic.num_sessions=1',
              'data.synthetic.frames_per_session=4', 'data.synthetic.image_size=96',
              'data.synthetic.masks=False']
    assert main(common[:1] + ['--holdout-views', '3', '--max-subsets', '2', '--seed', '1',
                              '--frames', '3'] + common[1:]) == 0
    printed = capsys.readouterr().out
    assert 'k = 3: 2 of 4 subsets (random sample, seed 1)' in printed
    assert '3 samples (frames)' in printed
    report = json.loads((tmp_path / 'out' / HOLDOUT_JSON).read_text())
    expected = view_subsets(CAMS, 3, max_subsets=2, seed=1)[0]
    assert [tuple(s['views']) for s in report['k']['3']['subsets']] == expected
    assert report['k']['3']['selection']['sampled'] and report['frames'] == 3
    # a rerun reuses the finished fits
    chunk = next((tmp_path / 'out' / 'fits').rglob('batch_00000.npz'))
    stamp = chunk.stat().st_mtime_ns
    assert main(common[:1] + ['--holdout-views', '3', '--max-subsets', '2', '--seed', '1',
                              '--frames', '3'] + common[1:]) == 0
    assert chunk.stat().st_mtime_ns == stamp
    capsys.readouterr()
    assert main(common[:1] + ['--holdout-views', '4'] + common[1:]) == 1
    assert 'k must be 1 to 3' in capsys.readouterr().err
    assert main(common[:1] + ['--holdout-views', '2'] + common[1:] +
                ['data.exclude_views=[cam_7]']) == 1
    assert "'cam_7'" in capsys.readouterr().err
    assert main(common[:1] + ['--holdout-views', '3', '--label-noise', '3,x'] + common[1:]) == 1
    assert 'numbers' in capsys.readouterr().err
    noisy = [config, '--out-dir', str(tmp_path / 'noisy')] + common[3:]
    assert main(noisy[:1] + ['--holdout-views', '3', '--max-subsets', '1', '--frames', '3',
                             '--label-noise', '2,0.1'] + noisy[1:]) == 0
    assert 'fitted labels with added errors: 2 px, 10 % outliers' in capsys.readouterr().out


def test_label_noise_reaches_the_fit_and_triangulations_not_the_scoring(session, tmp_path):
    """With added label errors, the fit, DLT and every peer see the noisy labels of the
    fitting views only; the held-out views are scored against the labels as they were;
    every method is also measured in 3D against the dataset's own 3D points."""
    from smilfit.apis.holdout import NOISY_DATASET
    from smilfit.datasets.label_noise import LabelNoise
    from smilfit.evaluation.triangulation_peers import dlt_peer
    cfg, _, clean = session
    seen_views = []

    def copy_of_dlt(obs):
        seen_views.append(np.isfinite(obs['keypoints_2d']).all(-1).any((0, 2)))
        return dlt_peer(obs)

    noise = LabelNoise(4.0, 0.1, 0.0, seed=5)
    out = tmp_path / 'noisy'
    report = evaluate_holdout_views(cfg, out, [2], progress=False, noise=noise,
                                    peers={'copy of DLT': copy_of_dlt})
    assert report['noise']['sigma_px'] == 4.0 and '10 % outliers' in report['noise'][
        'description']
    assert report['dataset'] == clean['dataset']                 # scored against this one
    with h5py.File(cfg.data.path, 'r') as a, h5py.File(out / NOISY_DATASET, 'r') as b:
        moved = np.abs(b['views/keypoints_2d'][()] - a['views/keypoints_2d'][()])
        assert np.nanmedian(moved) > 1.0
    block, before = report['k']['2'], clean['k']['2']
    # Noisy fitting labels: DLT from them is further from the clean held-out labels
    assert block['all']['dlt_median_px'] > before['all']['dlt_median_px']
    for s, views in zip(seen_views, [sub['views'] for sub in block['subsets']]):
        assert s.tolist() == [c in views for c in CAMS]          # the k fitting views only
    methods = block['methods']
    assert list(methods['px']['by']) == ['fit', 'DLT', 'copy of DLT']
    assert methods['px']['by']['DLT'] == methods['px']['by']['copy of DLT']
    assert methods['px']['points'] == block['all']['points']
    np.testing.assert_allclose(methods['px']['by']['DLT']['median'],
                               block['all']['dlt_median_px'])
    assert report['reference_3d'] == 'DLT of the scored labels in every fitting view'
    world = methods['world']
    assert world['points'] > 0 and world['by']['DLT'] == world['by']['copy of DLT']
    assert 'copy of DLT' in (out / HOLDOUT_TEXT).read_text()
    # The noisy copy is reused while the noise is the same; other noise is other labels,
    # so the fits made from the first cannot be resumed
    stamp = (out / NOISY_DATASET).stat().st_mtime_ns
    evaluate_holdout_views(cfg, out, [2], max_subsets=1, progress=False, noise=noise)
    assert (out / NOISY_DATASET).stat().st_mtime_ns == stamp
    other = LabelNoise(4.0, 0.1, 0.0, seed=6)
    with pytest.raises(FileExistsError, match='another dataset file'):
        evaluate_holdout_views(cfg, out, [2], max_subsets=1, progress=False, noise=other)
    evaluate_holdout_views(cfg, out, [2], max_subsets=1, progress=False, noise=other,
                           overwrite=True)
    with h5py.File(out / NOISY_DATASET, 'r') as f:
        assert json.loads(f.attrs['label_noise'])['seed'] == 6


def test_without_peers_the_report_measures_fit_and_dlt_in_3d(session):
    _, _, report = session
    methods = report['k']['2']['methods']
    assert methods['px'] is None and list(methods['world']['by']) == ['fit', 'DLT']
    assert report['noise'] is None


def test_3d_errors_are_measured_against_the_truth_where_given(session, tmp_path):
    cfg, out, report = session
    with h5py.File(cfg.data.path, 'r') as f:
        n, k = f['views/keypoints_2d'].shape[0], f['views/keypoints_2d'].shape[2]
    with pytest.raises(HoldoutConfigError, match='reference_3d must be'):
        evaluate_holdout_views(cfg, out, [2], progress=False, reference_3d=np.zeros((n, 2, 3)))
    far = np.zeros((n, k, 3))
    far[..., 0] = 1e5                                           # far from every point
    origin = evaluate_holdout_views(cfg, out, [2], progress=False,   # the fits are reused
                                    reference_3d=far)
    assert origin['reference_3d'] == 'the true 3D keypoints'
    world = origin['k']['2']['methods']['world']
    fits = []
    for s in origin['k']['2']['subsets']:
        with h5py.File(out / 'fits' / f'k2_{"+".join(s["views"])}' / 'fit_results.h5') as f:
            fits.append(f['fitted_keypoints_3d'][:].astype(np.float64))
    distances = np.linalg.norm(np.stack(fits) - far[0, 0], axis=-1)
    assert 9e4 < np.nanmin(distances) <= world['by']['fit']['median'] <= np.nanmax(distances)
    assert report['k']['2']['methods']['world']['by']['fit']['median'] < 1e3


def test_left_right_exchanges_are_counted_against_the_ones_made(session, tmp_path):
    from smilfit.datasets.label_noise import LabelNoise
    import copy
    cfg = copy.deepcopy(session[0])
    for handler in cfg.registrant.handlers:
        if handler['type'] == 'Keypoint2DHandler':
            handler['exchange_left_right'] = True
    report = evaluate_holdout_views(cfg, tmp_path / 'swaps', [3], max_subsets=2,
                                    progress=False, noise=LabelNoise(1.0, 0.0, 0.3, seed=2))
    ex = report['k']['3']['exchanges']
    assert ex['made'] > 0 and 0 <= ex['found'] <= ex['made'] and ex['wrong'] >= 0
    assert 'left/right exchanges made in the fitting views' in (
        tmp_path / 'swaps' / HOLDOUT_TEXT).read_text()
    # without the exchange option the fit reports none: the counts are left out
    plain = evaluate_holdout_views(session[0], tmp_path / 'plain', [3], max_subsets=1,
                                   progress=False, noise=LabelNoise(1.0, 0.0, 0.3, seed=2))
    assert plain['k']['3']['exchanges'] is None


def test_every_view_fitted_is_scored_in_3d_only_against_a_reference_it_has_not_seen(
        session, tmp_path):
    """k = n holds nothing out: without added noise or true 3D points it is refused (the
    3D reference would be DLT of the very labels the fit saw); with noise every method is
    measured in 3D against the clean labels' DLT, and no held-out pixel is scored."""
    from smilfit.apis.holdout import fitting_views
    from smilfit.datasets import DatasetReader
    from smilfit.datasets.label_noise import LabelNoise
    cfg = session[0]
    reader = DatasetReader(cfg.data.path)
    assert fitting_views(reader, cfg.data)[0] == CAMS            # what k = n counts
    assert fitting_views(reader, dict(exclude_views=[CAMS[0]]))[0] == CAMS[1:]
    with pytest.raises(HoldoutConfigError, match='3D only'):
        evaluate_holdout_views(cfg, tmp_path / 'clean', [4], progress=False)
    report = evaluate_holdout_views(cfg, tmp_path / 'noisy', [4], progress=False,
                                    noise=LabelNoise(3.0, 0.0, 0.0, seed=1))
    block = report['k']['4']
    assert [s['views'] for s in block['subsets']] == [CAMS]
    assert block['all']['points_all'] == 0 and block['all']['fit_median_px'] is None
    world = block['methods']['world']
    assert world['points'] > 0 and world['by']['fit']['median'] > 0
    assert world['by']['DLT']['median'] > 0                # noisy labels against clean
    text = (tmp_path / 'noisy' / HOLDOUT_TEXT).read_text()
    assert 'every view fitted, none held out: 3D only' in text
    assert 'per subset' not in text.split('k = 4')[1]
