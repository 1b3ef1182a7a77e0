"""TemporalSmoothnessLoss on known sequences, with gaps."""
import pytest
import torch

from smilfit.losses import TemporalSmoothnessLoss, finite_differences
from smilfit.registry import LOSSES

NAN = float('nan')


def seq(values, requires_grad=False):
    x = torch.tensor(values, dtype=torch.float64).reshape(1, -1, 1)
    return x.requires_grad_(requires_grad)


def test_known_sequence():
    x = seq([0.0, 1.0, 3.0, 6.0])
    # velocities 1, 2, 3 -> 14; accelerations 1, 1 -> 2
    assert TemporalSmoothnessLoss()(x).item() == pytest.approx(14.0)
    loss = TemporalSmoothnessLoss(velocity_weight=1.0, acceleration_weight=10.0)
    assert loss(x).item() == pytest.approx(34.0)
    loss = TemporalSmoothnessLoss(velocity_weight=1.0, acceleration_weight=10.0,
                                  normalize='mean')
    assert loss(x).item() == pytest.approx(14.0 / 3 + 10.0 * 2 / 2)


def test_gaps_by_mask_and_nan():
    x = seq([0.0, 1.0, 3.0, 6.0, 10.0])
    valid = torch.tensor([[True, True, False, True, True]])
    loss = TemporalSmoothnessLoss(velocity_weight=1.0, acceleration_weight=1.0)
    # velocity pairs (0,1) and (3,4): 1 + 16; no acceleration triple is complete
    assert loss(x, valid).item() == pytest.approx(17.0)
    xn = seq([0.0, 1.0, NAN, 6.0, 10.0], requires_grad=True)
    out = loss(xn)
    assert out.item() == pytest.approx(17.0)
    out.backward()
    assert torch.isfinite(xn.grad).all()
    # d/dx of (x1 - x0)^2 + (x4 - x3)^2
    assert torch.allclose(xn.grad.flatten(),
                          torch.tensor([-2.0, 2.0, 0.0, -8.0, 8.0], dtype=torch.float64))


def test_multidim_batch_and_registry():
    x = torch.zeros(2, 3, 4, 3)
    x[1, 1] = 1.0  # sample 1: a blip of 1 on 12 values at t = 1
    loss = LOSSES.build(dict(type='TemporalSmoothnessLoss', velocity_weight=0.5,
                             acceleration_weight=1.0))
    # velocity: 2 * 12 * 1 = 24 (x 0.5); acceleration: 12 * (-2)^2 = 48
    assert torch.allclose(loss(x), torch.tensor([0.0, 12.0 + 48.0]))
    assert loss(x[:, :1]).tolist() == [0.0, 0.0]  # one frame: nothing to compare


def test_differences_function():
    d, ok = finite_differences(torch.tensor([[[0.0], [2.0], [NAN], [5.0]]]),
                               torch.tensor([[True, True, False, True]]), 1)
    assert ok.tolist() == [[True, False, False]]
    assert d.flatten().tolist() == [2.0, 0.0, 0.0]
