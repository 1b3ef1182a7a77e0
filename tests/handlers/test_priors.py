"""Shape, pose, joint-limit, scale/translation and camera prior handlers."""
import numpy as np
import pytest
import torch

from smilfit.body_models import SMILModel
from smilfit.body_models.rotations import axis_angle_to_matrix, matrix_to_rotation_6d
from smilfit.losses import (BoneTranslationPrior, CameraPriorLoss, JointLimitPrior,
                            LogScalePrior, ShapePriorLoss)
from smilfit.registry import HANDLERS
from tests.body_models.toy_models import toy_model_data

from .helpers import DT, forward, observe, random_params, toy_model


@pytest.fixture(scope='module')
def model():
    data = toy_model_data(num_joints=6, num_vertices=40, num_betas=3, seed=3)
    cov = np.diag([4.0, 1.0, 0.25])
    data.shape_cov = cov
    data.shape_mean = np.array([0.5, 0.0, 0.0])
    data.sym_joint_pairs = np.array([[2, 3], [4, 5]])
    limits = np.full((6, 3, 2), np.nan)
    limits[1:, :, 0], limits[1:, :, 1] = -0.2, 0.2
    data.joint_limits = limits
    return SMILModel(data=data, dtype=DT)


def build(model, cfg):
    h = HANDLERS.build(cfg)
    h.setup(model, {})
    return h


def test_shape_prior_uses_model_distribution(model):
    params = random_params(model, 3)
    out = forward(model, params)
    h = build(model, dict(type='ShapePriorHandler', name='shape', weight=0.5))
    d = params['betas'] - torch.tensor([0.5, 0.0, 0.0], dtype=DT)
    expected = (d ** 2 / torch.tensor([4.0, 1.0, 0.25], dtype=DT)).sum(-1)
    torch.testing.assert_close(h(out, {}, params), 0.5 * expected)
    assert torch.all(h(out, {}, {}) == 0)            # betas not fitted
    # a built module is used as it is
    h = build(model, dict(type='ShapePriorHandler', name='shape', loss=ShapePriorLoss()))
    torch.testing.assert_close(h(out, {}, params), (params['betas'] ** 2).sum(-1))


@pytest.mark.parametrize('loss', [dict(type='PoseL2Prior'),
                                  dict(type='GaussianPosePrior', mean=[0.0] * 15,
                                       precision=np.eye(15) * 2.0)])
def test_pose_prior_any_loss_and_representation(model, loss):
    params = random_params(model, 2)
    out = forward(model, params)
    h = build(model, dict(type='PosePriorHandler', name='pose', loss=loss))
    aa = h(out, {}, params)
    scale = 2.0 if loss['type'] == 'GaussianPosePrior' else 1.0
    torch.testing.assert_close(aa, scale * (params['body_pose'] ** 2).sum((-1, -2)))
    as6d = dict(params, body_pose=matrix_to_rotation_6d(
        axis_angle_to_matrix(params['body_pose'])))
    torch.testing.assert_close(h(out, {}, as6d), aa)
    assert torch.all(h(out, {}, {}) == 0)


def test_max_mixture_pose_prior(model):
    rng = np.random.default_rng(0)
    means = rng.normal(0, 0.1, (2, 15))
    h = build(model, dict(type='PosePriorHandler', name='gmm',
                          loss=dict(type='MaxMixturePosePrior', means=means,
                                    covariances=np.stack([np.eye(15)] * 2),
                                    weights=[0.5, 0.5])))
    params = random_params(model, 2)
    assert h(forward(model, params), {}, params).shape == (2,)


def test_joint_limits_from_model_and_by_name(model):
    params = random_params(model, 2)
    pose = torch.zeros(2, 5, 3, dtype=DT)
    pose[0, 0, 0] = 0.5                              # j1 x: 0.3 over
    p = dict(params, body_pose=pose)
    out = forward(model, p)
    h = build(model, dict(type='JointLimitHandler', name='limits'))
    torch.testing.assert_close(h(out, {}, p), torch.tensor([0.09, 0.0], dtype=DT))
    # override j1 by name: x up to 1.0 -> no penalty
    h = build(model, dict(type='JointLimitHandler', name='limits',
                          limits={'j1': [[-1.0, 1.0], None, None]}))
    torch.testing.assert_close(h(out, {}, p), torch.zeros(2, dtype=DT))
    with pytest.raises(KeyError, match='nope'):
        build(model, dict(type='JointLimitHandler', name='l', limits={'nope': None}))
    # explicit joint names in the loss config: the model is not injected
    h = build(model, dict(type='JointLimitHandler', name='l', loss=dict(
        type='JointLimitPrior', joint_names=['a', 'b', 'c', 'd', 'e'],
        limits={'a': [[-0.1, 0.1]] * 3})))
    torch.testing.assert_close(h(out, {}, p), torch.tensor([0.16, 0.0], dtype=DT))
    assert isinstance(h.loss, JointLimitPrior)


def test_scale_translation_prior_with_model_symmetry(model):
    g = torch.Generator().manual_seed(0)
    log_scale = 0.1 * torch.randn(2, 6, 3, generator=g, dtype=DT)
    bone_trans = 0.1 * torch.randn(2, 6, 3, generator=g, dtype=DT)
    p = dict(log_scale=log_scale, bone_trans=bone_trans)
    out = forward(model, dict(random_params(model, 2), **p))
    h = build(model, dict(type='ScaleTranslationPriorHandler', name='st'))
    sym = log_scale[:, [2, 4]] - log_scale[:, [3, 5]]
    expected = (log_scale ** 2).sum((1, 2)) + (sym ** 2).sum((1, 2)) + (
        bone_trans ** 2).sum((1, 2))
    torch.testing.assert_close(h(out, {}, p), expected)
    assert isinstance(h.loss, LogScalePrior)
    assert isinstance(h.bone_trans_loss, BoneTranslationPrior)
    only_scale = build(model, dict(type='ScaleTranslationPriorHandler', name='s',
                                   bone_trans_loss=None))
    torch.testing.assert_close(only_scale(out, {}, p), expected - (bone_trans ** 2).sum((1, 2)))
    assert torch.all(h(out, {}, {}) == 0)


def test_camera_prior(model):
    params = random_params(model, 2)
    km = toy_model()
    obs = observe(km, random_params(km, 2))
    out = forward(model, params)
    h = build(model, dict(type='CameraPriorHandler', name='cam'))
    assert isinstance(h.loss, CameraPriorLoss)
    assert torch.all(h(out, obs, params) == 0)       # nothing fitted
    fitted = dict(camera_R=obs['R'].clone(), camera_t=obs['t'].clone())
    assert h(out, obs, fitted).abs().max() < 1e-12
    fitted['camera_t'] = fitted['camera_t'] + torch.tensor([0.0, 0.0, 1.0], dtype=DT)
    torch.testing.assert_close(h(out, obs, fitted), torch.full((2,), 2.0, dtype=DT))
    obs_bad_view = dict(obs, view_valid=torch.tensor([[True, False], [True, True]]))
    torch.testing.assert_close(h(out, obs_bad_view, fitted), torch.tensor([1.0, 2.0], dtype=DT))
    # a shared rig (1, C, ...) in axis-angle is scored once over the batch
    shared = dict(camera_R=torch.tensor([[[0.0, 0.0, 0.0], [0.0, np.pi / 2, 0.0]]], dtype=DT),
                  camera_t=obs['t'][:1] + torch.tensor([0.0, 1.0, 0.0], dtype=DT))
    loss = h(out, obs, shared)
    torch.testing.assert_close(loss, torch.full((2,), 1.0, dtype=DT))
    # focal lengths from camera_K, relative deviation
    K = obs['K'].clone()
    K[..., 0, 0] *= 1.1
    torch.testing.assert_close(h(out, obs, dict(camera_K=K)), torch.full((2,), 0.02, dtype=DT))
    # an explicit initial value wins over the observed cameras
    init = dict(camera_t=obs['t'], camera_t_init=obs['t'] + 2.0)
    torch.testing.assert_close(h(out, obs, init), torch.full((2,), 24.0, dtype=DT))
