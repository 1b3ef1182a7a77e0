"""The regressor's built-in terms as LOSSES: ground-truth parameters, triangulation."""
import math

import pytest
import torch

from smilfit.body_models.rotations import axis_angle_to_matrix
from smilfit.losses import (DEFAULT_PARAM_WEIGHTS, ParamSupervisionLoss,
                            TriangulationConsistencyLoss, triangulation_consistency)
from smilfit.registry import LOSSES


def test_param_loss_hand_computed():
    loss = LOSSES.build(dict(type='ParamSupervisionLoss', length_scale=2.0,
                             param_weights=dict(global_orient=1.0, betas=0.5, transl=1.0)))
    assert isinstance(loss, ParamSupervisionLoss)
    turn = torch.tensor([[0.0, 0.0, math.pi / 2]])
    params = dict(global_orient=axis_angle_to_matrix(turn), betas=torch.tensor([[1.0, 2.0]]),
                  transl=torch.tensor([[0.0, 0.0, 4.0]]),
                  body_pose=torch.eye(3).expand(1, 5, 3, 3))
    gt = dict(global_orient=torch.zeros(1, 3), betas=torch.tensor([[1.0]]),
              transl=torch.zeros(1, 3), body_pose=torch.ones(1, 5, 3))
    # 90 degrees: 8 sin^2(45 deg) = 4; betas padded with 0: 0.5 * 2^2 = 2; transl (4 / 2)^2;
    # body_pose weighs 0 here.
    assert torch.allclose(loss(params, gt), torch.tensor([4.0 + 2.0 + 4.0]))
    assert loss(dict(body_pose=params['body_pose']), gt) is None       # nothing comparable
    mean = LOSSES.build(dict(type='ParamSupervisionLoss', reduction='mean', loss_weight=2.0))
    assert mean.param_weights == DEFAULT_PARAM_WEIGHTS
    assert mean(dict(transl=params['transl']), gt).ndim == 0


def test_param_loss_raw_6d_uses_the_raw_vector_and_reference_frame():
    loss = ParamSupervisionLoss(dict(global_orient=1.0), rotation='raw_6d')
    params = dict(global_orient=torch.eye(3)[None])
    raw = dict(global_orient=torch.tensor([[2.0, 0, 0, 0, 1, 0]]))
    gt = dict(global_orient=torch.zeros(1, 3))
    assert torch.allclose(loss(params, gt, raw=raw), torch.tensor([1.0]))
    Rz = axis_angle_to_matrix(torch.tensor([[0.0, 0.0, math.pi / 2]]))
    assert torch.allclose(loss(params, gt, raw=raw, reference_R=Rz), torch.tensor([7.0]))
    # Without the raw vector (or with 'frobenius') the decoded matrices are compared.
    assert torch.allclose(loss(params, gt), torch.tensor([0.0]))
    frob = ParamSupervisionLoss(dict(global_orient=1.0))
    assert torch.allclose(frob(params, gt, raw=raw), torch.tensor([0.0]))


def test_param_loss_validation():
    with pytest.raises(KeyError, match=r"unknown parameters \['pose'\]"):
        ParamSupervisionLoss(dict(pose=1.0))
    with pytest.raises(ValueError, match='rotation'):
        ParamSupervisionLoss(rotation='geodesic')


def test_triangulation_loss_module_is_the_function():
    K = torch.tensor([[100.0, 0, 50], [0, 100.0, 50], [0, 0, 1]]).expand(1, 2, 3, 3)
    R = torch.stack([torch.eye(3), axis_angle_to_matrix(torch.tensor([0.0, 1.0, 0.0]))])[None]
    t = torch.tensor([[0.0, 0.0, 5.0], [0.0, 0.0, 5.0]])[None]
    uv = torch.rand(1, 2, 4, 2) * 100
    w = torch.ones(1, 2, 4)
    X = torch.rand(1, 4, 3)
    loss = LOSSES.build(dict(type='TriangulationConsistencyLoss', scale=3.0, loss_weight=2.0))
    assert isinstance(loss, TriangulationConsistencyLoss)
    want = 2.0 * triangulation_consistency(uv, w, K, R, t, None, X, scale=3.0)
    assert torch.allclose(loss(uv, w, K, R, t, None, X), want)
    assert want.shape == (1,) and float(want) > 0
