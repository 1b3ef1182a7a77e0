"""LimbLengthLoss: hand-computed lengths, modes, target sources and masking."""
import pytest
import torch

from smilfit.losses import LimbLengthLoss, limb_lengths, resolve_pairs
from smilfit.registry import LOSSES

NAN = float('nan')


def points():
    # lengths: |p0 p1| = 5, |p1 p2| = 12
    return torch.tensor([[[0.0, 0.0, 0.0], [3.0, 4.0, 0.0], [3.0, 4.0, 12.0]]],
                        dtype=torch.float64, requires_grad=True)


def test_lengths():
    assert torch.allclose(limb_lengths(points(), torch.tensor([[0, 1], [1, 2], [0, 2]])),
                          torch.tensor([[5.0, 12.0, 13.0]], dtype=torch.float64))


def test_squared_and_relative():
    loss = LimbLengthLoss(pairs=[[0, 1], [1, 2]], target_lengths=[4.0, 12.0])
    assert loss(points()).item() == pytest.approx(1.0)           # (5 - 4)^2
    rel = LimbLengthLoss(pairs=[[0, 1], [1, 2]], target_lengths=[4.0, 12.0], mode='relative')
    assert rel(points()).item() == pytest.approx(0.0625)         # (1 / 4)^2
    weighted = LimbLengthLoss(pairs=[[0, 1], [1, 2]], target_lengths=[4.0, 10.0],
                              pair_weights=[2.0, 0.5])
    assert weighted(points()).item() == pytest.approx(2.0 + 2.0)  # 2 * 1 + 0.5 * 4


def test_per_call_targets_with_nan():
    loss = LimbLengthLoss(pairs=[[0, 1], [1, 2]])
    p = points()
    out = loss(p, target_lengths=torch.tensor([[NAN, 10.0]], dtype=torch.float64))
    assert out.item() == pytest.approx(4.0)  # (12 - 10)^2
    out.backward()
    assert torch.isfinite(p.grad).all()
    # gradient of (|p2 - p1| - 10)^2 w.r.t. p2: 2 * 2 * (0, 0, 1)
    assert torch.allclose(p.grad[0, 2], torch.tensor([0.0, 0.0, 4.0], dtype=torch.float64))
    assert torch.equal(p.grad[0, 0], torch.zeros(3, dtype=torch.float64))


def test_observed_points_and_confidence():
    loss = LimbLengthLoss(pairs=[[0, 1], [1, 2]])
    observed = torch.tensor([[[0.0, 0.0, 0.0], [0.0, 0.0, 6.0], [NAN, NAN, NAN]]],
                            dtype=torch.float64)
    p = points()
    out = loss(p, observed=observed)
    assert out.item() == pytest.approx(1.0)  # (5 - 6)^2; second pair unobserved
    out.backward()
    assert torch.isfinite(p.grad).all()
    out = loss(points(), observed=observed, weight=torch.tensor([[3.0, 1.0]]))
    assert out.item() == pytest.approx(3.0)


def test_named_pairs_registry_and_errors():
    loss = LOSSES.build(dict(type='LimbLengthLoss', pairs=[['a', 'b'], ['b', 'c']],
                             names=['a', 'b', 'c'], target_lengths=[5.0, 11.0]))
    assert torch.equal(loss.pairs, torch.tensor([[0, 1], [1, 2]]))
    assert loss(points()).item() == pytest.approx(1.0)
    with pytest.raises(KeyError, match='zz'):
        resolve_pairs([['a', 'zz']], ['a', 'b'])
    with pytest.raises(ValueError, match='target'):
        LimbLengthLoss(pairs=[[0, 1]])(points())
    with pytest.raises(ValueError, match='only 3'):
        LimbLengthLoss(pairs=[[0, 5]], target_lengths=[1.0])(points())


def test_zero_length_limb_has_finite_gradient():
    p = torch.zeros(1, 2, 3, dtype=torch.float64, requires_grad=True)
    out = LimbLengthLoss(pairs=[[0, 1]], target_lengths=[1.0])(p)
    assert out.item() == pytest.approx(1.0)
    out.backward()
    assert torch.isfinite(p.grad).all()
