"""The ground-truth parameter loss on raw 6D rotations (``rotation_loss='raw_6d'``)."""
import copy
import math

import pytest
import torch

from smilfit.body_models.rotations import axis_angle_to_matrix

from .helpers import ground_truth_in_view0, tiny_multiview


def _model(**kw):
    return tiny_multiview(param_weights=dict(global_orient=1.0), **kw)


def test_raw_6d_loss_hand_computed():
    model = _model(rotation_loss='raw_6d')
    frob = _model()
    body = model.body_codec.init_vector[None].clone()
    sl = model.body_codec.slices['global_orient']
    body[0, sl] = torch.tensor([2.0, 0, 0, 0, 1, 0])    # decodes to the identity
    params = model.body_codec.decode(body)
    gt = dict(global_orient=torch.zeros(1, 3))
    # Identity target: only the unnormalised first column differs, by (1, 0, 0).
    assert torch.allclose(model.param_loss(params, gt, body=body), torch.tensor([1.0]))
    assert torch.allclose(frob.param_loss(params, gt, body=body), torch.tensor([0.0]),
                          atol=1e-10)
    # In a reference frame turned 90 degrees about z the target's columns are (0, 1, 0)
    # and (-1, 0, 0): |(2, -1, 0, 1, 1, 0)|^2 = 7.
    Rz = axis_angle_to_matrix(torch.tensor([[0.0, 0.0, math.pi / 2]]))
    loss = model.param_loss(params, gt, body=body, reference_R=Rz)
    assert torch.allclose(loss, torch.tensor([7.0]), atol=1e-5)


def test_raw_6d_zero_at_ground_truth_in_calibrated_frame(multiview_batch):
    """The GT expressed in view 0's camera frame has zero raw-6D loss through
    frame_losses (the reference rotation is the calibrated view 0's)."""
    model = tiny_multiview(rotation_loss='raw_6d')
    data = model.data_preprocessor(copy.deepcopy(multiview_batch), False)
    s = data['data_samples']
    decoded, params_c = ground_truth_in_view0(model, s)
    assert model.frame_losses(decoded, s)['param'].max() < 1e-6
    # A 90-degree turn about the camera's y axis moves both 6D columns: the loss is
    # |R c1 - c1|^2 + |R c2 - c2|^2 = 2 (1 - cos 90deg) (|c1_perp|^2 + |c2_perp|^2) > 1.
    turn = axis_angle_to_matrix(torch.tensor([0.0, math.pi / 2, 0.0]))
    vec2 = model.body_codec.encode(dict(params_c,
                                        global_orient=turn @ params_c['global_orient']))
    decoded2 = model.decode(dict(body=vec2, cameras=None), s, (64, 64))
    assert model.frame_losses(decoded2, s)['param'].min() > 1.0


def test_raw_6d_needs_6d_codec():
    with pytest.raises(ValueError, match='raw_6d'):
        _model(rotation_loss='raw_6d', param_codec=dict(rotation='axis_angle'))
    with pytest.raises(ValueError, match='rotation_loss'):
        _model(rotation_loss='geodesic')
