"""CameraPriorLoss: rotation distances, translation, focal, per-camera weights."""
import math

import pytest
import torch

from smilfit.body_models.rotations import axis_angle_to_matrix
from smilfit.losses import CameraPriorLoss, rotation_distance_sq
from smilfit.registry import LOSSES

NAN = float('nan')


def aa(z):
    return torch.tensor([[[0.0, 0.0, z]]], dtype=torch.float64)


def test_rotation_modes():
    cur, init = aa(0.3), aa(0.0)
    assert rotation_distance_sq(cur, init, 'geodesic').item() == pytest.approx(0.09)
    assert rotation_distance_sq(cur, init, 'axis_angle').item() == pytest.approx(0.09)
    # 4 (1 - cos 0.3)
    assert rotation_distance_sq(cur, init, 'chordal').item() == pytest.approx(
        0.178654043497576)
    # mixed representations: matrix init
    assert rotation_distance_sq(cur, axis_angle_to_matrix(aa(0.1)), 'geodesic').item() == \
        pytest.approx(0.04)


def test_geodesic_gradient_finite_at_init():
    cur = aa(0.0).requires_grad_()
    out = CameraPriorLoss()(rotation=cur, init_rotation=aa(0.0))
    out.backward()
    assert out.item() == 0.0 and torch.isfinite(cur.grad).all()


def test_all_terms_and_weights():
    B, C = 1, 2
    rot = torch.cat([aa(0.3), aa(0.0)], 1)
    init_rot = torch.zeros(B, C, 3, dtype=torch.float64)
    trans = torch.tensor([[[1.0, 2.0, 2.0], [0.0, 0.0, 1.0]]], dtype=torch.float64)
    init_trans = torch.zeros(B, C, 3, dtype=torch.float64)
    focal = torch.tensor([[1100.0, 1000.0]], dtype=torch.float64)
    init_focal = torch.tensor([[1000.0, 1000.0]], dtype=torch.float64)
    loss = CameraPriorLoss(rotation_weight=1.0, translation_weight=2.0, focal_weight=100.0)
    out = loss(rot, trans, focal, init_rot, init_trans, init_focal)
    # cam 0: 0.09 + 2 * 9 + 100 * 0.01; cam 1: 2 * 1
    assert out.item() == pytest.approx(0.09 + 18.0 + 1.0 + 2.0)
    w = torch.tensor([[1.0, 0.5]], dtype=torch.float64)
    assert loss(rot, trans, focal, init_rot, init_trans, init_focal, weight=w).item() == \
        pytest.approx(19.09 + 1.0)
    log = CameraPriorLoss(focal_mode='log')(focal=focal, init_focal=init_focal)
    assert log.item() == pytest.approx(math.log(1.1) ** 2)
    ab = CameraPriorLoss(focal_mode='abs')(focal=focal, init_focal=init_focal)
    assert ab.item() == pytest.approx(1e4)
    # (fx, fy)
    f2 = CameraPriorLoss()(focal=torch.tensor([[[1100.0, 900.0]]]),
                           init_focal=torch.tensor([[[1000.0, 1000.0]]]))
    assert f2.item() == pytest.approx(0.02)


def test_absent_camera_with_nan_init():
    trans = torch.tensor([[[1.0, 0.0, 0.0], [5.0, 5.0, 5.0]]], requires_grad=True)
    init = torch.tensor([[[0.0, 0.0, 0.0], [NAN, NAN, NAN]]])
    rot = torch.zeros(1, 2, 3, requires_grad=True)
    init_rot = torch.tensor([[[0.0, 0.0, 0.0], [NAN, NAN, NAN]]])
    loss = LOSSES.build(dict(type='CameraPriorLoss'))
    out = loss(rotation=rot, translation=trans, init_rotation=init_rot,
               init_translation=init, weight=torch.tensor([[True, False]]))
    assert out.item() == pytest.approx(1.0)
    out.backward()
    assert torch.isfinite(trans.grad).all() and torch.isfinite(rot.grad).all()
    assert torch.equal(trans.grad[0, 1], torch.zeros(3))
    # NaN init without a weight is masked too
    assert loss(translation=trans, init_translation=init).item() == pytest.approx(1.0)


def test_errors():
    with pytest.raises(ValueError, match='init_translation'):
        CameraPriorLoss()(translation=torch.zeros(1, 1, 3))
    with pytest.raises(ValueError, match='at least one'):
        CameraPriorLoss()()
    with pytest.raises(ValueError, match='rotation_mode'):
        CameraPriorLoss(rotation_mode='euler')
