"""KeypointMSELoss / Keypoint3DLoss: hand-computed values, robust kernels, masking."""
import math

import pytest
import torch

from smilfit.losses import (Keypoint3DLoss, KeypointMSELoss, geman_mcclure, gmof,
                            keypoint_residual_sq)
from smilfit.registry import LOSSES

NAN = float('nan')


def t(x, **kw):
    return torch.tensor(x, dtype=torch.float64, **kw)


def test_gmof_values():
    # sigma^2 r^2 / (sigma^2 + r^2): sigma = 5, r^2 = 25 -> 625 / 50 = 12.5
    assert gmof(t(25.0), 5.0).item() == pytest.approx(12.5)
    assert gmof(t(0.0), 5.0).item() == 0.0
    # saturates at sigma^2
    assert gmof(t(1e12), 2.0).item() == pytest.approx(4.0, rel=1e-9)
    assert geman_mcclure is gmof


def test_plain_sum_2d():
    pred = t([[[0.0, 0.0], [1.0, 1.0]]])
    target = t([[[3.0, 4.0], [1.0, 1.0]]])
    loss = KeypointMSELoss()(pred, target)
    assert loss.shape == (1,)
    assert loss.item() == pytest.approx(25.0)
    # confidences (2, 1) -> 50; importance (0.5, 1) -> 12.5
    assert KeypointMSELoss()(pred, target, weight=t([[2.0, 1.0]])).item() == pytest.approx(50)
    loss = KeypointMSELoss(keypoint_weights=[0.5, 1.0])(pred, target)
    assert loss.item() == pytest.approx(12.5)


@pytest.mark.parametrize('robust', ['gmof', 'geman_mcclure'])
def test_robust(robust):
    pred = t([[[0.0, 0.0], [1.0, 1.0]]])
    target = t([[[3.0, 4.0], [1.0, 1.0]]])
    loss = KeypointMSELoss(robust=robust, sigma=5.0)(pred, target)
    assert loss.item() == pytest.approx(12.5)  # 25 * 25 / (25 + 25)


def test_normalizations_and_nan_targets():
    pred = t([[[0.0, 0.0], [1.0, 1.0], [2.0, 2.0]]])
    target = t([[[3.0, 4.0], [NAN, 1.0], [2.0, 3.0]]])
    conf = t([[1.0, 5.0, 3.0]])
    # valid residuals^2: 25 and 1
    assert KeypointMSELoss()(pred, target).item() == pytest.approx(26.0)
    assert KeypointMSELoss(normalize='mean')(pred, target).item() == pytest.approx(13.0)
    # (1 * 25 + 3 * 1) / (1 + 3)
    loss = KeypointMSELoss(normalize='weighted_mean')(pred, target, weight=conf)
    assert loss.item() == pytest.approx(7.0)


def test_nothing_valid_is_zero_not_nan():
    pred = t([[[1.0, 2.0]]], requires_grad=True)
    for norm in ('sum', 'mean', 'weighted_mean'):
        loss = KeypointMSELoss(normalize=norm)(pred, t([[[NAN, NAN]]]))
        assert loss.item() == 0.0
        loss.sum().backward()
        assert torch.equal(pred.grad, torch.zeros_like(pred))
        pred.grad = None


def test_nan_masking_finite_gradients():
    pred = t([[[0.0, 0.0], [1.0, 1.0], [2.0, 2.0]]], requires_grad=True)
    target = t([[[3.0, 4.0], [NAN, NAN], [2.0, 3.0]]])
    conf = t([[1.0, NAN, 2.0]])
    for robust in (None, 'gmof'):
        loss = KeypointMSELoss(robust=robust, sigma=3.0)(pred, target, weight=conf)
        assert torch.isfinite(loss).all()
        loss.sum().backward()
        assert torch.isfinite(pred.grad).all()
        assert torch.equal(pred.grad[0, 1], torch.zeros(2, dtype=torch.float64))
        if robust is None:  # d/dx c |x - y|^2 = 2 c (x - y)
            assert torch.allclose(pred.grad[0, 0], t([-6.0, -8.0]))
            assert torch.allclose(pred.grad[0, 2], t([0.0, -4.0]))
        pred.grad = None


def test_nan_confidence_and_mask():
    pred = t([[[0.0, 0.0], [0.0, 0.0]]])
    target = t([[[1.0, 0.0], [0.0, 2.0]]])
    loss = KeypointMSELoss()(pred, target, weight=t([[NAN, 1.0]]))
    assert loss.item() == pytest.approx(4.0)
    loss = KeypointMSELoss()(pred, target, mask=torch.tensor([[True, False]]))
    assert loss.item() == pytest.approx(1.0)


def test_views_batch_reductions_and_weight():
    # (B=2, V=2, K=1, D=3)
    pred = torch.zeros(2, 2, 1, 3, dtype=torch.float64)
    target = t([[[[1.0, 0.0, 0.0]], [[0.0, 2.0, 0.0]]],
                [[[0.0, 0.0, 3.0]], [[NAN, 0.0, 0.0]]]])
    per_sample = KeypointMSELoss()(pred, target)
    assert torch.allclose(per_sample, t([5.0, 9.0]))
    assert KeypointMSELoss(reduction='sum')(pred, target).item() == pytest.approx(14.0)
    assert KeypointMSELoss(reduction='mean')(pred, target).item() == pytest.approx(7.0)
    assert torch.allclose(KeypointMSELoss(loss_weight=0.5)(pred, target), t([2.5, 4.5]))
    # mean over valid views*keypoints: 5 / 2, 9 / 1
    assert torch.allclose(KeypointMSELoss(normalize='mean')(pred, target), t([2.5, 9.0]))
    # broadcast per-view confidence (B, V, 1)
    conf = t([[[1.0], [0.5]], [[2.0], [1.0]]])
    assert torch.allclose(KeypointMSELoss()(pred, target, weight=conf), t([3.0, 18.0]))


def test_keypoint3d_checks_dim():
    loss = Keypoint3DLoss()
    p = torch.zeros(1, 2, 3)
    assert loss(p, p + 1).item() == pytest.approx(6.0)
    with pytest.raises(ValueError, match='D = 3'):
        loss(torch.zeros(1, 2, 2), torch.zeros(1, 2, 2))


def test_shape_errors():
    with pytest.raises(ValueError, match='same shape'):
        KeypointMSELoss()(torch.zeros(1, 2, 2), torch.zeros(1, 3, 2))
    with pytest.raises(ValueError, match='keypoint_weights'):
        KeypointMSELoss(keypoint_weights=[1.0])(torch.zeros(1, 2, 2), torch.zeros(1, 2, 2))
    with pytest.raises(ValueError, match='robust'):
        KeypointMSELoss(robust='huber')
    with pytest.raises(ValueError, match='reduction'):
        KeypointMSELoss(reduction='avg')


def test_residual_function_zero_where_invalid():
    r2 = keypoint_residual_sq(t([[1.0, 1.0], [2.0, 2.0]]), t([[NAN, 0.0], [0.0, 0.0]]),
                              torch.tensor([False, True]))
    assert torch.equal(r2, t([0.0, 8.0]))


def test_registry_build():
    loss = LOSSES.build(dict(type='KeypointMSELoss', robust='gmof', sigma=100))
    assert isinstance(loss, KeypointMSELoss) and loss.sigma == 100.0
    loss3 = LOSSES.build(dict(type='Keypoint3DLoss', loss_weight=2.0, reduction='sum'))
    assert isinstance(loss3, Keypoint3DLoss) and loss3.dim == 3


def test_gradcheck_gmof_with_nan_targets():
    torch.manual_seed(0)
    pred = torch.randn(2, 2, 4, 2, dtype=torch.float64, requires_grad=True)
    target = torch.randn(2, 2, 4, 2, dtype=torch.float64)
    target[0, 1, 2] = NAN
    conf = torch.rand(2, 2, 4, dtype=torch.float64)
    loss = KeypointMSELoss(robust='gmof', sigma=0.7, normalize='mean')
    assert torch.autograd.gradcheck(lambda p: loss(p, target, weight=conf), (pred,))


def test_value_matches_formula_random():
    torch.manual_seed(1)
    pred, target = torch.randn(3, 5, 2), torch.randn(3, 5, 2)
    sigma = 0.5
    r2 = ((pred - target) ** 2).sum(-1)
    want = (sigma ** 2 * r2 / (sigma ** 2 + r2)).sum(-1)
    got = KeypointMSELoss(robust='gmof', sigma=sigma)(pred, target)
    assert torch.allclose(got, want, atol=1e-6)
    assert math.isfinite(got.sum().item())


@pytest.mark.parametrize('robust', [None, 'gmof'])
def test_residual_jacobian_matches_autograd_and_chains(robust):
    """The residuals' derivative w.r.t. the predictions is autograd's, and with
    ``chain`` it is that derivative times the chained one."""
    g = torch.Generator().manual_seed(0)
    pred = 30.0 * torch.randn(2, 3, 5, 2, generator=g, dtype=torch.float64)
    target = pred + 20.0 * torch.randn(pred.shape, generator=g, dtype=torch.float64)
    target[0, 1, 2] = float('nan')
    weight = torch.rand(2, 3, 5, generator=g, dtype=torch.float64)
    loss = KeypointMSELoss(robust=robust, sigma=10.0, normalize='weighted_mean')
    r, jac = loss.residual_jacobian(pred, target, weight=weight)
    full = torch.autograd.functional.jacobian(
        lambda p: loss.residuals(p, target, weight=weight), pred)     # (..., 2, ..., 2)
    per_point = full.reshape(30, 2, 30, 2).diagonal(dim1=0, dim2=2).permute(2, 0, 1)
    torch.testing.assert_close(jac.reshape(30, 2, 2), per_point)
    torch.testing.assert_close(r, loss.residuals(pred, target, weight=weight))
    chain = torch.randn(2, 3, 5, 2, 4, generator=g, dtype=torch.float64)
    r2, chained = loss.residual_jacobian(pred, target, weight=weight, chain=chain)
    torch.testing.assert_close(r2, r)
    torch.testing.assert_close(chained, jac @ chain)


def test_robust_residuals_of_an_overflowing_error_are_nan_like_the_loss():
    """An error whose square overflows (a keypoint at 1e30 px in float32) makes the
    robust loss NaN; its least-squares residuals and their derivative are NaN too, not 0
    (a perfect fit), so a Levenberg-Marquardt stage reports the sample as failed."""
    loss = KeypointMSELoss(robust='gmof', sigma=10.0)
    pred = torch.zeros(1, 2, 2)
    target = torch.tensor([[[1e30, 0.0], [3.0, 4.0]]])
    assert torch.isnan(loss(pred, target)).all()
    r = loss.residuals(pred, target)
    r2, jac = loss.residual_jacobian(pred, target, chain=torch.ones(1, 2, 2, 3))
    for value in (r, r2, jac):
        assert torch.isnan(value[0, 0]).all() and torch.isfinite(value[0, 1]).all()
