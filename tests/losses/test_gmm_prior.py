"""MaxMixturePosePrior against brute force; EM recovers known mixtures; prior file IO."""
import math

import numpy as np
import pytest
import torch
from scipy.stats import multivariate_normal

from smilfit.losses import (MaxMixturePosePrior, fit_gmm_pose_prior, load_gmm_prior,
                            save_gmm_prior)
from smilfit.registry import LOSSES


def random_gmm(C=3, D=4, seed=0):
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(C, D))
    A = rng.normal(size=(C, D, D))
    covs = A @ A.transpose(0, 2, 1) + 0.3 * np.eye(D)
    weights = rng.uniform(0.2, 1.0, C)
    return means, covs, weights / weights.sum()


def test_hand_computed_1d():
    # components N(0, 1) and N(10, 4), equal weights, x = 1:
    # without det: min(0.5 * 1 + ln 2, 0.5 * 81 / 4 + ln 2) = 0.5 + ln 2
    kw = dict(means=[[0.0], [10.0]], covariances=[[[1.0]], [[4.0]]], weights=[0.5, 0.5])
    x = torch.tensor([[1.0]], dtype=torch.float64)
    assert MaxMixturePosePrior(include_det=False, **kw)(x).item() == pytest.approx(
        0.5 + math.log(2))
    # with det: + 0.5 ln(2 pi * 1)
    assert MaxMixturePosePrior(**kw)(x).item() == pytest.approx(
        0.5 + math.log(2) + 0.5 * math.log(2 * math.pi))


def test_equals_brute_force():
    means, covs, weights = random_gmm()
    rng = np.random.default_rng(1)
    x = rng.normal(size=(6, 4)) * 2.0
    want = np.min([-(np.log(w) + multivariate_normal(m, c).logpdf(x))
                   for m, c, w in zip(means, covs, weights)], axis=0)
    prior = MaxMixturePosePrior(means=means, covariances=covs, weights=weights)
    got = prior(torch.as_tensor(x))
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-10)
    # without the determinant constant, from precisions
    precs = np.linalg.inv(covs)
    want_nodet = np.min([0.5 * np.einsum('bi,ij,bj->b', x - m, p, x - m) - np.log(w)
                         for m, p, w in zip(means, precs, weights)], axis=0)
    prior = MaxMixturePosePrior(means=means, precisions=precs, weights=weights,
                                include_det=False)
    np.testing.assert_allclose(prior(torch.as_tensor(x)).numpy(), want_nodet, rtol=1e-9)
    assert prior.component_nll(torch.as_tensor(x)).shape == (6, 3)


def test_pose_layout_gradient_and_registry():
    means, covs, weights = random_gmm(C=2, D=6)
    prior = LOSSES.build(dict(type='MaxMixturePosePrior', means=means, covariances=covs,
                              weights=weights, reduction='sum'))
    pose = torch.zeros(3, 2, 3, requires_grad=True)  # (B, J - 1, 3), float32
    out = prior(pose)
    assert out.shape == () and torch.isfinite(out)
    out.backward()
    assert torch.isfinite(pose.grad).all()
    with pytest.raises(ValueError, match='flattens'):
        prior(torch.zeros(1, 5))


def test_invalid_mixtures():
    means, covs, weights = random_gmm(C=2, D=2)
    with pytest.raises(ValueError, match='positive'):
        MaxMixturePosePrior(means=means, covariances=covs, weights=[1.0, 0.0])
    bad = covs.copy()
    bad[1] = [[1.0, 2.0], [2.0, 1.0]]
    with pytest.raises(ValueError, match=r'component\(s\) \[1\]'):
        MaxMixturePosePrior(means=means, covariances=bad, weights=weights)
    with pytest.raises(ValueError, match='exactly one'):
        MaxMixturePosePrior(means=means, weights=weights)


def test_em_recovers_two_gaussians():
    rng = np.random.default_rng(42)
    D = 6
    mu_a, mu_b = np.full(D, -2.0), np.full(D, 3.0)
    a = rng.normal(mu_a, 0.5, size=(900, D))
    b = rng.normal(mu_b, 0.3, size=(2100, D))
    X = rng.permutation(np.concatenate([a, b]))
    seen = []
    gmm = fit_gmm_pose_prior(torch.as_tensor(X).reshape(-1, 2, 3), n_components=2, iters=50,
                             reg=1e-6, seed=0, progress=lambda it, ll: seen.append(ll))
    assert set(gmm) == {'means', 'covariances', 'weights'}
    assert gmm['means'].shape == (2, D) and gmm['covariances'].shape == (2, D, D)
    # sorted by weight: the 0.7 component first
    np.testing.assert_allclose(gmm['weights'], [0.7, 0.3], atol=0.01)
    np.testing.assert_allclose(gmm['means'][0], mu_b, atol=0.05)
    np.testing.assert_allclose(gmm['means'][1], mu_a, atol=0.08)
    np.testing.assert_allclose(np.diagonal(gmm['covariances'][0]), 0.09, atol=0.02)
    np.testing.assert_allclose(np.diagonal(gmm['covariances'][1]), 0.25, atol=0.05)
    assert seen and all(np.diff(seen) > -1e-9)  # EM never decreases the likelihood
    # the same seed gives the same fit
    again = fit_gmm_pose_prior(X, n_components=2, iters=50, reg=1e-6, seed=0)
    np.testing.assert_allclose(again['means'], gmm['means'])


def test_em_input_errors():
    with pytest.raises(ValueError, match='NaN'):
        fit_gmm_pose_prior(np.array([[0.0, np.nan], [1.0, 1.0], [2.0, 2.0]]), 1)
    with pytest.raises(ValueError, match='cannot fit'):
        fit_gmm_pose_prior(np.zeros((2, 3)), 3)


def test_save_load_roundtrip(tmp_path):
    means, covs, weights = random_gmm(C=2, D=6)
    path = tmp_path / 'prior.npz'
    save_gmm_prior(path, dict(means=means, covariances=covs, weights=weights,
                              pose_shape=(2, 3)), metadata={'source': 'fits.h5'})
    loaded = load_gmm_prior(path)
    np.testing.assert_allclose(loaded['means'], means)
    np.testing.assert_allclose(loaded['covariances'], covs)
    np.testing.assert_allclose(loaded['weights'], weights)
    assert loaded['pose_shape'] == (2, 3) and loaded['metadata'] == {'source': 'fits.h5'}
    assert [p.name for p in tmp_path.iterdir()] == ['prior.npz']  # no temp file left
    x = torch.randn(4, 2, 3, dtype=torch.float64)
    from_file = MaxMixturePosePrior(path=str(path))(x)
    direct = MaxMixturePosePrior(means=means, covariances=covs, weights=weights)(x)
    torch.testing.assert_close(from_file, direct)
    # precisions and SMPLify's "covars" name load too
    np.savez(tmp_path / 'prec.npz', means=means, precisions=np.linalg.inv(covs),
             weights=weights)
    np.testing.assert_allclose(load_gmm_prior(tmp_path / 'prec.npz')['covariances'], covs,
                               rtol=1e-8, atol=1e-10)
    np.savez(tmp_path / 'covars.npz', means=means, covars=covs, weights=weights)
    np.testing.assert_allclose(load_gmm_prior(tmp_path / 'covars.npz')['covariances'], covs)
    np.savez(tmp_path / 'bad.npz', means=means, weights=weights)
    with pytest.raises(KeyError, match='found'):
        load_gmm_prior(tmp_path / 'bad.npz')
    with pytest.raises(FileNotFoundError):
        load_gmm_prior(tmp_path / 'missing.npz')
    with pytest.raises(ValueError, match='pose_shape'):
        save_gmm_prior(tmp_path / 'x.npz', dict(means=means, covariances=covs,
                                                weights=weights, pose_shape=(5,)))
