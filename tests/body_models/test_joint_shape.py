"""Static-joint models: shape that moves the joints (``static_joints_follow_shape``), and
the registrant's warning when fitted betas can move nothing it reads."""
import warnings

import numpy as np
import pytest
import torch

from smilfit.body_models import SMILModel
from smilfit.body_models.joint_shape import skin_joint_regressor, static_joint_shape_dirs
from smilfit.registrants import SMILRegistrant

from .toy_models import toy_model_data


def test_regressor_rows_are_convex_and_local():
    data = toy_model_data(static_joints=True, num_vertices=80, seed=3)
    R = skin_joint_regressor(data.v_template, data.weights, data.parents, data.J, 8)
    assert R.shape == (data.num_joints, data.num_vertices)
    np.testing.assert_allclose(R.sum(1), 1.0)
    assert (R >= 0).all() and ((R > 0).sum(1) == 8).all()
    for j in range(data.num_joints):   # only vertices skinned to the joint or its parent
        tied = data.weights[:, j] > 0
        if data.parents[j] >= 0:
            tied |= data.weights[:, data.parents[j]] > 0
        if tied.sum() >= 8:
            assert tied[R[j] > 0].all()


def test_uniform_scale_shape_moves_joints_with_the_skin():
    """A shape direction that scales the whole mesh about the origin moves each joint by
    about the same scaling (its nearby skin does), and nothing at betas = 0."""
    data = toy_model_data(static_joints=True, num_vertices=400, num_betas=1, seed=1)
    data.shapedirs = data.v_template[:, :, None].copy()           # d v / d beta = v
    dirs = static_joint_shape_dirs(data.v_template, data.weights, data.parents, data.J,
                                   data.shapedirs)
    moved = dirs[:, :, 0]                                           # ~ the joints' positions
    err = np.linalg.norm(moved - data.J, axis=1) / np.linalg.norm(data.J, axis=1).clip(1)
    assert np.median(err) < 0.35
    fixed = SMILModel(data=data, dtype=torch.float64)
    follow = SMILModel(data=data, static_joints_follow_shape=True, dtype=torch.float64)
    torch.testing.assert_close(follow(return_vertices=False).joints,
                               fixed(return_vertices=False).joints)
    betas = torch.ones(1, 1, dtype=torch.float64)
    assert torch.equal(fixed(betas=betas, return_vertices=False).joints,
                       fixed(return_vertices=False).joints)
    assert not torch.allclose(follow(betas=betas, return_vertices=False).joints,
                              follow(return_vertices=False).joints)


@pytest.mark.parametrize('follow', [False, True])
def test_registrant_warns_when_shape_cannot_move_keypoints(follow):
    data = toy_model_data(static_joints=True, num_vertices=120, seed=2)
    model = SMILModel(data=data, static_joints_follow_shape=follow, dtype=torch.float64)
    reg = SMILRegistrant(
        body_model=model,
        handlers=[dict(type='Keypoint3DHandler', name='kp3d', loss=dict(type='KeypointMSELoss'))],
        stages=[dict(name='shape', fit=['betas'], n_iter=1)])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        reg.setup(dict(keypoint_names=model.keypoint_names))
    messages = [str(w.message) for w in caught if 'betas' in str(w.message)]
    if follow:
        assert messages == []
    else:
        assert len(messages) == 1 and 'static_joints_follow_shape=True' in messages[0]
