"""PCA, component choice, principal angles, joint regressor re-fit."""
import math

import numpy as np
import pytest

from smilfit.body_models import demo_model_data
from smilfit.model_learning import (choose_num_components, fit_pca, joint_support,
                                    principal_angles, refit_joint_regressor)


def test_choose_num_components_hand_computed():
    ratio = np.array([0.5, 0.3, 0.15, 0.05])
    assert choose_num_components(ratio, 0.5) == 1
    assert choose_num_components(ratio, 0.8) == 2
    assert choose_num_components(ratio, 0.81) == 3
    assert choose_num_components(ratio, 1.0) == 4
    with pytest.raises(ValueError, match='threshold'):
        choose_num_components(ratio, 0.0)


def test_fit_pca_recovers_known_variances():
    rng = np.random.default_rng(0)
    basis = np.linalg.qr(rng.normal(size=(20, 3)))[0].T  # (3, 20) orthonormal
    z = rng.normal(size=(5000, 3))
    z = (z - z.mean(0)) @ np.linalg.inv(np.linalg.cholesky(np.cov(z.T))).T  # whiten exactly
    X = (z * np.array([3.0, 2.0, 1.0])) @ basis + 7.0
    pca = fit_pca(X, explained_variance=0.9)
    # variances 9, 4, 1 (sum 14): 9/14 = 0.64 < 0.9 <= 13/14 = 0.93 -> 2 components
    assert pca.num_components == 2
    np.testing.assert_allclose(pca.variances, [9.0, 4.0], rtol=1e-9)
    np.testing.assert_allclose(pca.explained_ratio, [9 / 14, 4 / 14], rtol=1e-9)
    assert principal_angles(pca.components.T, basis[:2].T).max() < 1e-9
    assert fit_pca(X, num_components=3).num_components == 3
    with pytest.raises(ValueError, match='rank'):
        fit_pca(X[:3], num_components=3)  # 3 samples have rank 2


def test_principal_angles_known():
    a = np.array([[1.0, 0], [0, 1], [0, 0]])
    for theta in (1e-7, 0.3, math.pi / 2):
        b = np.array([[1.0, 0], [0, math.cos(theta)], [0, math.sin(theta)]])
        np.testing.assert_allclose(principal_angles(a, b), [0.0, theta], atol=1e-12)


def test_refit_joint_regressor():
    data = demo_model_data()
    rng = np.random.default_rng(1)
    N = 12
    betas = rng.normal(size=(N, data.num_betas))
    meshes = data.v_template[None] + np.einsum('vck,nk->nvc', data.shapedirs, betas)
    R0 = np.asarray(data.J_regressor, dtype=np.float64)
    support = joint_support(data.weights, data.parents, R0)
    joints = np.einsum('jv,nvc->njc', R0, meshes)
    # targets the prior regressor already meets: (almost) no change
    same = refit_joint_regressor(meshes, joints, support, R0, ridge=1e-6)
    assert np.abs(same - R0).max() < 1e-9
    # targets of another regressor on the same support (so they are reachable): met on
    # the training meshes, rows sum to 1, support kept
    other = np.where(support, rng.random(support.shape), 0.0)
    other /= other.sum(1, keepdims=True)
    shift = np.einsum('jv,nvc->njc', other, meshes) - joints
    new = refit_joint_regressor(meshes, joints + shift, support, R0, ridge=1e-9)
    fit = np.einsum('jv,nvc->njc', new, meshes)
    assert np.abs(fit - joints - shift).max() < 1e-4 * np.abs(shift).max()
    np.testing.assert_allclose(new.sum(1), 1.0, atol=1e-9)
    assert not np.any(new[~support])
    # translating a mesh translates its regressed joints
    np.testing.assert_allclose(new @ (meshes[0] + 5.0), fit[0] + 5.0, atol=1e-9)
