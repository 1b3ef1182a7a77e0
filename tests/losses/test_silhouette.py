"""SilhouetteLoss: l2 / bce / iou on a 2x2 image, masking, views."""
import math

import pytest
import torch

from smilfit.losses import SilhouetteLoss
from smilfit.registry import LOSSES

NAN = float('nan')
R = torch.tensor([[[[1.0, 0.5], [0.0, 0.0]]]], dtype=torch.float64)
O = torch.tensor([[[[1.0, 1.0], [0.0, 1.0]]]], dtype=torch.float64)


def test_l2():
    assert SilhouetteLoss()(R, O).item() == pytest.approx(1.25 / 4)      # (0 + .25 + 0 + 1)/4
    assert SilhouetteLoss(normalize='sum')(R, O).item() == pytest.approx(1.25)


def test_iou():
    # I = 1 + 0.5 = 1.5; U = 1 + 1 + 0 + 1 = 3
    assert SilhouetteLoss(mode='iou', eps=0.0)(R, O).item() == pytest.approx(0.5)
    empty = torch.zeros(1, 1, 2, 2)
    assert SilhouetteLoss(mode='iou')(empty, empty).item() == pytest.approx(0.0)


def test_bce():
    eps = 1e-6
    want = (-math.log(1 - eps) + math.log(2) - math.log(1 - eps) - math.log(eps)) / 4
    assert SilhouetteLoss(mode='bce', eps=eps)(R, O).item() == pytest.approx(want)


def test_nan_pixels_views_and_gradients():
    r = torch.cat([R, R], 1).clone().requires_grad_()            # (1, 2, 2, 2)
    o = torch.cat([O, torch.full_like(O, NAN)], 1).clone()
    o[0, 0, 1, 1] = NAN                                            # ignore the 1.0 error
    for mode in ('l2', 'bce', 'iou'):
        out = LOSSES.build(dict(type='SilhouetteLoss', mode=mode))(
            r, o, valid=torch.tensor([[True, False]]))
        assert torch.isfinite(out).all()
        out.sum().backward()
        assert torch.isfinite(r.grad).all()
        assert torch.equal(r.grad[0, 1], torch.zeros(2, 2, dtype=torch.float64))
        r.grad = None
    out = SilhouetteLoss()(r, o, valid=torch.tensor([[True, False]]))
    assert out.item() == pytest.approx(0.25 / 3)                    # 3 valid pixels


def test_pixel_weight_batch_and_reduction():
    r = torch.cat([R, torch.zeros_like(R)])                         # B = 2
    o = torch.cat([O, torch.zeros_like(O)])
    pw = torch.tensor([[[[1.0, 2.0], [1.0, 0.0]]]], dtype=torch.float64)
    out = SilhouetteLoss(normalize='sum')(r, o, pixel_weight=pw)
    assert torch.allclose(out, torch.tensor([0.5, 0.0], dtype=torch.float64))
    assert SilhouetteLoss(reduction='mean', loss_weight=4.0)(r, o).item() == \
        pytest.approx(4.0 * 0.3125 / 2)
    with pytest.raises(ValueError, match='B, C, H, W'):
        SilhouetteLoss()(R[0], O[0])
