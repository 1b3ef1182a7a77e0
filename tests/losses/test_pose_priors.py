"""PoseL2Prior, JointLimitPrior (limits by array, by name, from model data), GaussianPosePrior."""
import numpy as np
import pytest
import torch

from smilfit.losses import (GaussianPosePrior, JointLimitPrior, PoseL2Prior,
                            joint_limit_penalty)
from smilfit.registry import LOSSES
from tests.body_models.toy_models import toy_model_data

NAN = float('nan')


def t(x, **kw):
    return torch.tensor(x, dtype=torch.float64, **kw)


# ------------------------------------------------------------------- L2
def test_pose_l2():
    pose = t([[[1.0, 2.0, 2.0], [0.0, 0.0, 1.0]]])
    assert PoseL2Prior()(pose).item() == pytest.approx(10.0)
    assert PoseL2Prior(joint_weights=[0.5, 2.0])(pose).item() == pytest.approx(6.5)
    assert PoseL2Prior()(pose.reshape(1, 6)).item() == pytest.approx(10.0)
    with pytest.raises(ValueError, match='3 joints'):
        PoseL2Prior(joint_weights=[1.0, 1.0, 1.0])(pose)


# ---------------------------------------------------------- joint limits
LIMITS = [[[-1.0, 1.0], [NAN, NAN], [0.0, NAN]],
          [[NAN, NAN], [NAN, NAN], [NAN, NAN]]]


def test_joint_limits_hand_computed():
    pose = t([[[1.5, 100.0, -0.5], [7.0, 7.0, 7.0]]], requires_grad=True)
    loss = JointLimitPrior(limits=LIMITS)
    out = loss(pose)
    assert out.item() == pytest.approx(0.5)            # 0.5^2 + 0.5^2
    out.backward()
    assert torch.isfinite(pose.grad).all()
    assert torch.allclose(pose.grad, t([[[1.0, 0.0, -1.0], [0.0, 0.0, 0.0]]]))
    assert JointLimitPrior(limits=LIMITS, mode='linear')(pose).item() == pytest.approx(1.0)
    weighted = JointLimitPrior(limits=LIMITS, joint_weights=[4.0, 1.0])
    assert weighted(pose).item() == pytest.approx(2.0)


def test_inside_limits_is_zero():
    pose = t([[[0.3, -5.0, 0.2], [1.0, 2.0, 3.0]]])
    assert JointLimitPrior(limits=LIMITS)(pose).item() == 0.0
    pen = joint_limit_penalty(pose, t(LIMITS))
    assert pen.shape == (1, 2, 3) and torch.equal(pen, torch.zeros_like(pen))


def limited_model():
    # root at index 1 so that body_pose order (non-root, ascending) is j0, j2, j3
    data = toy_model_data(num_joints=4, parents=np.array([1, -1, 1, 2]))
    lim = np.full((4, 3, 2), np.nan)
    lim[2, 0] = [-0.5, 0.5]           # j2, x axis
    lim[1, 1] = [-0.1, 0.1]           # the root: dropped for body_pose
    data.joint_limits = lim
    return data


def test_from_model_data_drops_root():
    data = limited_model()
    prior = JointLimitPrior.from_model_data(data)
    assert prior.joint_names == ['j0', 'j2', 'j3']
    pose = torch.zeros(1, 3, 3)
    pose[0, 1, 0] = 1.0               # j2 x = 1 -> (1 - 0.5)^2
    assert prior(pose).item() == pytest.approx(0.25)
    full = JointLimitPrior(model_data=data, include_root=True)
    pose4 = torch.zeros(1, 4, 3)
    pose4[0, 2, 0] = 1.0
    pose4[0, 1, 1] = 0.3              # root y = 0.3 -> (0.3 - 0.1)^2
    assert full(pose4).item() == pytest.approx(0.25 + 0.04)


def test_limits_by_name_override_model():
    data = limited_model()
    prior = LOSSES.build(dict(type='JointLimitPrior', model_data=data,
                              limits={'j3': [[None, 0.1], None, [-1.0, 1.0]]}))
    pose = torch.zeros(1, 3, 3)
    pose[0, 1, 0] = 1.0               # j2 from the model: 0.25
    pose[0, 2, 0] = 0.3               # j3 x: (0.3 - 0.1)^2 = 0.04
    pose[0, 2, 1] = 50.0              # j3 y unlimited
    pose[0, 2, 2] = -3.0              # j3 z: (-1 - -3)^2 = 4
    assert prior(pose).item() == pytest.approx(0.25 + 0.04 + 4.0)


def test_limits_by_name_with_joint_names():
    prior = JointLimitPrior(limits={'b': [[0.0, 0.0]] * 3}, joint_names=['a', 'b'])
    pose = t([[[9.0, 9.0, 9.0], [1.0, -2.0, 0.0]]])
    assert prior(pose).item() == pytest.approx(5.0)


def test_name_errors():
    data = limited_model()
    with pytest.raises(KeyError, match='include_root'):
        JointLimitPrior(model_data=data, limits={'j1': [[0, 1]] * 3})
    with pytest.raises(KeyError, match='unknown joint'):
        JointLimitPrior(model_data=data, limits={'nope': [[0, 1]] * 3})
    with pytest.raises(ValueError, match='min > max'):
        JointLimitPrior(limits={'a': [[1.0, 0.0], None, None]}, joint_names=['a'])
    with pytest.raises(ValueError, match='not inf'):
        JointLimitPrior(limits=[[[-np.inf, 1.0]] * 3])
    with pytest.raises(ValueError, match='joint_names or model_data'):
        JointLimitPrior(limits={'a': [[0, 1]] * 3})
    with pytest.raises(ValueError, match='no joint_limits'):
        JointLimitPrior(model_data=toy_model_data(num_joints=3))
    with pytest.raises(ValueError, match='3 axes'):
        JointLimitPrior(limits={'a': [[0, 1]] * 2}, joint_names=['a'])


def test_array_of_all_joints_loses_root():
    data = limited_model()
    lim = np.full((4, 3, 2), np.nan)
    lim[3, 2] = [0.0, 0.2]
    prior = JointLimitPrior(model_data=data, limits=lim)
    assert prior.limits.shape == (3, 3, 2)
    pose = torch.zeros(1, 3, 3)
    pose[0, 2, 2] = 0.5
    assert prior(pose).item() == pytest.approx(0.09)


def test_gradcheck_joint_limits():
    torch.manual_seed(0)
    lim = t([[[-0.5, 0.5], [NAN, 0.2], [-0.1, NAN]]] * 4)
    pose = torch.randn(2, 4, 3, dtype=torch.float64)
    pose = (pose + 0.05 * torch.sign(pose)).requires_grad_()  # keep away from the kinks
    prior = JointLimitPrior(limits=lim)
    assert torch.autograd.gradcheck(prior, (pose,))


# -------------------------------------------------------------- Gaussian
def test_gaussian_pose_prior(tmp_path):
    # d = (1, 1), P = [[2, 1], [1, 2]] -> 6
    x = t([[2.0, 1.0]])
    p = GaussianPosePrior(mean=[1.0, 0.0], precision=[[2.0, 1.0], [1.0, 2.0]])
    assert p(x).item() == pytest.approx(6.0)
    cov = np.array([[2.0, -1.0], [-1.0, 2.0]]) / 3.0
    assert GaussianPosePrior(mean=[1.0, 0.0], covariance=cov)(x).item() == pytest.approx(6.0)
    path = tmp_path / 'gauss.npz'
    np.savez(path, mean=np.array([1.0, 0.0]), precision=np.array([[2.0, 1.0], [1.0, 2.0]]))
    built = LOSSES.build(dict(type='GaussianPosePrior', path=str(path)))
    assert built(x).item() == pytest.approx(6.0)
    # (B, J, 3) poses are flattened
    p6 = GaussianPosePrior(mean=np.zeros(6), precision=np.eye(6))
    assert p6(torch.ones(2, 2, 3)).tolist() == [6.0, 6.0]
    with pytest.raises(ValueError, match='flattens'):
        p6(torch.ones(1, 5))
    with pytest.raises(ValueError, match='semi-definite'):
        GaussianPosePrior(mean=[0.0, 0.0], precision=[[1.0, 2.0], [2.0, 1.0]])
