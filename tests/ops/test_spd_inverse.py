"""Inverses of symmetric positive definite matrices through 2 x 2 blocks."""
import pytest
import torch

from smilfit.ops.spd_inverse import BLOCK_MIN_SIZE, spd_inverse


def _spd(batch, n, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    M = torch.randn(*batch, n, n + 3, generator=g, dtype=dtype)
    return M @ M.mT / n + 1e-3 * torch.eye(n, dtype=dtype)


@pytest.mark.parametrize('n', [5, BLOCK_MIN_SIZE - 1, BLOCK_MIN_SIZE, 84, 2 * BLOCK_MIN_SIZE + 3])
def test_the_inverse_is_the_matrix_inverse_at_every_width(n):
    A = _spd((2, 3), n)
    inverse, info = spd_inverse(A)
    assert inverse.shape == A.shape and info.shape == (2, 3) and (info == 0).all()
    torch.testing.assert_close(inverse, torch.linalg.inv(A), rtol=1e-8, atol=1e-8)
    torch.testing.assert_close(inverse, inverse.mT)     # symmetric by construction


def test_float32_inverses_are_as_accurate_as_lapacks():
    A = _spd((16,), 84, seed=3)
    exact = torch.linalg.inv(A)
    mine = spd_inverse(A.float())[0].double()
    lapack = torch.cholesky_inverse(torch.linalg.cholesky(A.float())).double()
    err = lambda X: float((X - exact).norm() / exact.norm())   # noqa: E731
    assert err(mine) < 4 * err(lapack) + 1e-6


@pytest.mark.parametrize('where', ['leading block', 'schur complement'])
def test_a_matrix_that_is_not_positive_definite_is_flagged_and_the_others_are_exact(where):
    n = 90
    A = _spd((3,), n, seed=1)
    # a negative eigenvalue along a vector inside the leading half, or inside the second
    v = torch.zeros(n, dtype=A.dtype)
    v[3 if where == 'leading block' else n - 4] = 1.0
    A[1] = A[1] - 10 * float(torch.linalg.eigvalsh(A[1]).max()) * torch.outer(v, v)
    inverse, info = spd_inverse(A)
    assert info[1] != 0 and info[0] == 0 and info[2] == 0
    assert torch.isfinite(inverse).all()
    torch.testing.assert_close(inverse[[0, 2]], torch.linalg.inv(A[[0, 2]]), rtol=1e-8,
                               atol=1e-8)
