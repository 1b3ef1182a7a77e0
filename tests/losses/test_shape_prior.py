"""ShapePriorLoss: explicit Mahalanobis values, leading blocks, L2 fallback, model data."""
import numpy as np
import pytest
import torch

from smilfit.body_models.io import save_model_data
from smilfit.losses import ShapePriorLoss, mahalanobis_sq
from smilfit.registry import LOSSES
from tests.body_models.toy_models import toy_model_data

COV = [[4.0, 2.0], [2.0, 3.0]]


def test_hand_computed():
    # d = (2, 1); cov^-1 = [[3, -2], [-2, 4]] / 8 -> 4 * 3/8 - 2 * 2 * 2/8 + 4/8 = 1
    loss = ShapePriorLoss(mean=[1.0, 0.0], cov=COV)
    betas = torch.tensor([[3.0, 1.0], [1.0, 0.0]], dtype=torch.float64)
    assert torch.allclose(loss(betas), torch.tensor([1.0, 0.0], dtype=torch.float64))


def test_leading_block():
    loss = ShapePriorLoss(mean=[1.0, 0.0], cov=COV)
    # marginal of the first coefficient: (5 - 1)^2 / 4 = 4
    assert loss(torch.tensor([[5.0]])).item() == pytest.approx(4.0)
    with pytest.raises(ValueError, match='only 2'):
        loss(torch.zeros(1, 3))


def test_l2_fallback():
    assert ShapePriorLoss()(torch.tensor([[3.0, 4.0]])).item() == pytest.approx(25.0)
    assert ShapePriorLoss(mean=[1.0, 1.0])(torch.tensor([[3.0, 4.0]])).item() == \
        pytest.approx(13.0)


def test_equals_explicit_mahalanobis_random():
    rng = np.random.default_rng(0)
    A = rng.normal(size=(5, 5))
    cov = A @ A.T + 0.5 * np.eye(5)
    mean = rng.normal(size=5)
    betas = torch.as_tensor(rng.normal(size=(4, 5)))
    d = betas.numpy() - mean
    want = np.einsum('bi,ij,bj->b', d, np.linalg.inv(cov), d)
    got = ShapePriorLoss(mean=mean, cov=cov)(betas)
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-10)
    # leading 3 coefficients: the marginal's Mahalanobis distance
    d3 = d[:, :3]
    want3 = np.einsum('bi,ij,bj->b', d3, np.linalg.inv(cov[:3, :3]), d3)
    np.testing.assert_allclose(ShapePriorLoss(mean=mean, cov=cov)(betas[:, :3]).numpy(),
                               want3, rtol=1e-10)
    L = torch.linalg.cholesky(torch.as_tensor(cov))
    np.testing.assert_allclose(mahalanobis_sq(betas, torch.as_tensor(mean), L).numpy(), want,
                               rtol=1e-10)


def test_from_model_data_and_path(tmp_path):
    data = toy_model_data(num_betas=3)
    data.shape_mean = np.array([0.0, 1.0, 0.0])
    data.shape_cov = np.diag([1.0, 4.0, 9.0])
    betas = torch.tensor([[1.0, 3.0, 3.0]])
    want = 1.0 + 4.0 / 4.0 + 9.0 / 9.0
    assert ShapePriorLoss.from_model_data(data)(betas).item() == pytest.approx(want)
    path = tmp_path / 'toy.json'
    save_model_data(data, path)
    assert ShapePriorLoss.from_model_data(str(path))(betas).item() == pytest.approx(want)
    built = LOSSES.build(dict(type='ShapePriorLoss', model_data=str(path), loss_weight=2.0))
    assert built(betas).item() == pytest.approx(2 * want)


def test_invalid_covariance():
    with pytest.raises(ValueError, match='positive definite'):
        ShapePriorLoss(cov=[[1.0, 2.0], [2.0, 1.0]])
    with pytest.raises(ValueError, match='symmetric'):
        ShapePriorLoss(cov=[[1.0, 0.5], [0.0, 1.0]])
    with pytest.raises(ValueError, match='non-finite'):
        ShapePriorLoss(mean=[float('nan'), 0.0])


def test_gradient_and_dtype():
    loss = ShapePriorLoss(mean=[1.0, 0.0], cov=COV)
    b = torch.tensor([[3.0, 1.0]], requires_grad=True)  # float32 input, float64 buffers
    out = loss(b)
    assert out.dtype == torch.float32
    out.backward()
    # gradient 2 cov^-1 d = 2 * ([3, -2], [-2, 4]) / 8 @ (2, 1) = (1, 0)
    assert torch.allclose(b.grad, torch.tensor([[1.0, 0.0]]))
