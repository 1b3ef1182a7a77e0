"""Inverses of positive semi-definite normal matrices: a direction the data leave free has
a large variance, never an undefined one, however the matrix's rounding fell."""
import math

import torch

from smilfit.ops.psd_inverse import RIDGE_ROUNDING, psd_inverse


def _normal_matrix(n, P, rows, free, prior, seed=0, dtype=torch.float32):
    """(n, P, P) ``J^T J + prior I`` of random Jacobians (rows, P) blind to the last
    ``free`` columns' combination with the first ones (a twist the labels cannot see),
    and (n, P) gradients."""
    g = torch.Generator().manual_seed(seed)
    J = torch.randn(n, rows, P, generator=g, dtype=torch.float64)
    J[:, :, P - free:] = J[:, :, :free]            # columns that move the points alike
    A = J.mT @ J + prior * torch.eye(P, dtype=torch.float64)
    return A.to(dtype), torch.randn(n, P, generator=g, dtype=torch.float64).to(dtype)


def test_a_well_posed_matrix_is_inverted_as_it_is():
    A, g = _normal_matrix(4, 12, 40, free=0, prior=0.0, dtype=torch.float64)
    inverse, solution, ridge = psd_inverse(A, g)
    assert (ridge == 0).all()
    torch.testing.assert_close(inverse, torch.linalg.inv(A))
    torch.testing.assert_close(solution, torch.linalg.solve(A, g))


def test_a_free_direction_gets_a_large_finite_variance_whatever_the_rounding():
    """float32 normal matrices with a direction held by a prior 1e-12 of the data's
    curvature: below their rounding, so a plain factorisation fails or not by chance.
    Every one is inverted; along the free direction the variance is far above the seen
    ones'; the inverse is symmetric positive definite."""
    A, g = _normal_matrix(64, 20, 60, free=3, prior=1e-12)
    plain = torch.linalg.cholesky_ex(A)[1] != 0
    assert plain.any()                              # the case this is for
    inverse, solution, ridge = psd_inverse(A, g)
    assert torch.isfinite(inverse).all() and torch.isfinite(solution).all()
    assert (ridge[plain] >= RIDGE_ROUNDING * torch.finfo(torch.float32).eps).all()
    assert (ridge[plain] <= 1).all() and (ridge[~plain] == 0).all()
    variance = inverse.diagonal(dim1=-2, dim2=-1).double()
    seen = variance[:, 3:17]                        # columns the data see alone
    assert (variance[plain][:, :3].min(1).values > 1e3 * seen[plain].max(1).values).all()
    inv = inverse[plain].double()
    torch.testing.assert_close(inv, inv.mT, rtol=1e-5, atol=0)
    assert (torch.linalg.eigvalsh((inv + inv.mT) / 2) > 0).all()
    # the free direction's combination (a column against its twin) is what is unknown
    twin = torch.zeros(20, dtype=torch.float64)
    twin[0], twin[17] = 1.0, -1.0
    along = torch.einsum('p,npq,q->n', twin, inv, twin)
    assert (along > 1e3 * seen[plain].max(1).values).all()


def test_the_ridge_is_free_of_the_parameters_units():
    """A column in other units (scaled by 1000) changes the inverse by that factor only."""
    A, g = _normal_matrix(8, 10, 30, free=2, prior=0.0, dtype=torch.float64)
    A[:, 0, 0] -= 1e-9                      # (not semi-definite by a rounding's worth)
    inverse, solution, ridge = psd_inverse(A, g)
    assert (ridge > 0).all()
    s = torch.ones(10, dtype=torch.float64)
    s[4] = 1000.0
    S = torch.diag(s)
    inverse_s, solution_s, ridge_s = psd_inverse(S @ A @ S, g * s)
    torch.testing.assert_close(ridge_s, ridge)
    # (to the rounding of the largest entries: the free direction's, 1 / ridge)
    big = float(inverse.abs().max())
    torch.testing.assert_close(S @ inverse_s @ S, inverse, rtol=1e-6, atol=1e-9 * big)
    torch.testing.assert_close(solution_s * s, solution, rtol=1e-6,
                               atol=1e-9 * float(solution.abs().max()))


def test_a_parameter_without_information_and_a_matrix_that_is_not_semi_definite():
    A, g = _normal_matrix(3, 6, 20, free=0, prior=0.0, dtype=torch.float64)
    A[0, 2, :] = 0
    A[0, :, 2] = 0                                  # parameter 2 of sample 0 does nothing
    A[1] = -torch.eye(6, dtype=torch.float64)       # no variance at all
    A[2, 0, 0] = math.nan
    inverse, solution, ridge = psd_inverse(A, g)
    assert ridge[0] > 0 and torch.isnan(ridge[1:]).all()
    assert (inverse[0, 2] == 0).all() and (inverse[0, :, 2] == 0).all() and solution[0, 2] == 0
    assert torch.isfinite(inverse[0]).all() and (inverse[0].diagonal()[[0, 1, 3, 4, 5]] > 0).all()
    assert torch.isnan(inverse[1:]).all() and torch.isnan(solution[1:]).all()
