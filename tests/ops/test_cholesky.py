"""smilfit.ops.cholesky: the in-place LAPACK factorisation agrees with torch's, reports
failed factorisations as torch does, and falls back to torch where it cannot run."""
import pytest
import torch

from smilfit.ops import cholesky as chol_mod
from smilfit.ops.cholesky import LAPACK_MIN_SIZE, Factorization, cholesky, lapack_available


def _spd(n=5, P=17, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(n, P, 2 * P, generator=g, dtype=torch.float64)
    return ((A @ A.mT) / P + 0.1 * torch.eye(P, dtype=torch.float64)).to(dtype)


def _factor_matrix(f: Factorization) -> torch.Tensor:
    """The factor ``U`` (``A = U^T U``) without what lies below its diagonal."""
    return torch.triu(f.factor)


needs_lapack = pytest.mark.skipif(not lapack_available(torch.float64),
                                  reason='this torch build exports no LAPACK potrf')


@needs_lapack
@pytest.mark.parametrize('dtype,tol', [(torch.float64, 1e-12), (torch.float32, 1e-5)])
def test_lapack_factor_and_solve_match_torch(dtype, tol):
    A = _spd(dtype=dtype)
    f = cholesky(A, backend='lapack')
    assert f.backend == 'lapack' and f.factor.dtype == dtype and not f.info.any()
    U = _factor_matrix(f)
    torch.testing.assert_close(U, torch.linalg.cholesky(A).mT, rtol=tol, atol=tol)
    b = torch.randn(A.shape[0], A.shape[1], dtype=dtype)
    torch.testing.assert_close(f.solve(b), torch.linalg.solve(A, b), rtol=10 * tol,
                               atol=10 * tol)
    B = torch.randn(A.shape[0], A.shape[1], 3, dtype=dtype)   # several right-hand sides
    torch.testing.assert_close(f.solve(B), torch.linalg.solve(A, B), rtol=10 * tol,
                               atol=10 * tol)


@needs_lapack
def test_the_other_triangle_is_never_read():
    """Garbage below the diagonal of the factor (the LAPACK path leaves the input there)
    does not reach the solves."""
    A = _spd()
    f = cholesky(A, backend='lapack')
    b = torch.randn(A.shape[0], A.shape[1], dtype=A.dtype)
    x = f.solve(b)
    f.factor.copy_(torch.triu(f.factor) + torch.tril(torch.full_like(A, 1e6), -1))
    torch.testing.assert_close(f.solve(b), x)


@needs_lapack
def test_input_is_kept_unless_overwritten():
    A = _spd()
    A0 = A.clone()
    f = cholesky(A, backend='lapack')
    assert torch.equal(A, A0) and f.factor.data_ptr() != A.data_ptr()
    g = cholesky(A, overwrite=True, backend='lapack')
    assert g.factor.data_ptr() == A.data_ptr()
    torch.testing.assert_close(torch.triu(A), torch.triu(f.factor))


@needs_lapack
def test_non_contiguous_input():
    A = _spd()
    At = A.mT          # symmetric: the same matrices, other strides
    assert not At.is_contiguous()
    f = cholesky(At, overwrite=True, backend='lapack')
    torch.testing.assert_close(_factor_matrix(f), torch.linalg.cholesky(A).mT)


@pytest.mark.parametrize('backend', [pytest.param('lapack', marks=needs_lapack), 'torch'])
def test_failed_factorisations_are_reported_like_torch(backend):
    A = _spd(n=4)
    A[1] = -A[1]                           # negative definite: fails at order 1
    A[3, 5, 5] = -100.0                    # fails at order 6
    f = cholesky(A, backend=backend)
    _, expected = torch.linalg.cholesky_ex(A)
    assert f.info.tolist() == expected.tolist() == [0, 1, 0, 6]


def test_torch_backend_and_fallbacks():
    A = _spd()
    f = cholesky(A, backend='torch')
    assert f.backend == 'torch'
    torch.testing.assert_close(_factor_matrix(f), torch.linalg.cholesky(A).mT)
    b = torch.randn(A.shape[0], A.shape[1], dtype=A.dtype)
    torch.testing.assert_close(f.solve(b), torch.linalg.solve(A, b))
    # autograd needs torch's differentiable factorisation
    Ag = A.clone().requires_grad_(True)
    out = cholesky(Ag)
    assert out.backend == 'torch' and out.factor.requires_grad
    out.solve(b).sum().backward()
    assert torch.isfinite(Ag.grad).all()
    # dtypes without a real LAPACK routine here go to torch too
    assert cholesky(A.to(torch.complex128), backend='auto').backend == 'torch'


def test_lapack_backend_refuses_what_it_cannot_factorise():
    with pytest.raises(RuntimeError, match='no in-place LAPACK'):
        cholesky(torch.eye(3, device='meta')[None], backend='lapack')
    with pytest.raises(ValueError, match='backend'):
        cholesky(_spd(), backend='magma')
    with pytest.raises(ValueError, match=r'\(n, P, P\)'):
        cholesky(torch.eye(3))


def test_empty_batches_and_systems():
    for shape in ((0, 4, 4), (3, 0, 0)):
        f = cholesky(torch.zeros(shape, dtype=torch.float64))
        assert f.factor.shape == shape and f.info.shape == (shape[0],)
        assert f.solve(torch.zeros(shape[:2], dtype=torch.float64)).shape == shape[:2]


def test_lapack_info_is_read_from_lp64_and_ilp64_slots():
    assert chol_mod._lapack_int(0) == 0
    assert chol_mod._lapack_int(7) == 7
    assert chol_mod._lapack_int(2 ** 32 - 3) == -3          # LP64: 4 bytes of -3
    assert chol_mod._lapack_int(-3) == -3                   # ILP64: 8 bytes of -3


@pytest.mark.parametrize('backend', [pytest.param('lapack', marks=needs_lapack), 'torch'])
def test_whitening_gives_the_quadratic_form(backend):
    """``whiten(b)`` is ``L^-1 b``: ``Y^T Y = b^T A^-1 b`` from one triangular solve, as
    the group solver's Schur complement uses it."""
    A = _spd()
    b = torch.randn(A.shape[0], A.shape[1], 4, dtype=A.dtype)
    Y = cholesky(A, backend=backend).whiten(b)
    torch.testing.assert_close(Y.mT @ Y, b.mT @ torch.linalg.solve(A, b))


@needs_lapack
def test_auto_factorises_small_matrices_with_torch_and_large_ones_in_place():
    small = cholesky(_spd(P=LAPACK_MIN_SIZE - 1))
    large = cholesky(_spd(P=LAPACK_MIN_SIZE))
    assert small.backend == 'torch' and large.backend == 'lapack'
    for f, P in ((small, LAPACK_MIN_SIZE - 1), (large, LAPACK_MIN_SIZE)):
        A = _spd(P=P)
        torch.testing.assert_close(f.solve(A[:, :, 0]), torch.linalg.solve(A, A[:, :, 0]))


@pytest.mark.parametrize('backend', [pytest.param('lapack', marks=needs_lapack), 'torch'])
def test_only_the_upper_triangle_is_read(backend):
    """What lies below the diagonal never matters, on every backend: Levenberg-Marquardt
    builds only the upper triangle of its normal equations."""
    A = _spd(P=40)
    garbage = torch.triu(A) + torch.tril(torch.randn_like(A), -1)
    b = torch.randn(A.shape[0], A.shape[1], dtype=A.dtype)
    f = cholesky(garbage, backend=backend)
    assert not f.info.any()
    torch.testing.assert_close(f.solve(b), torch.linalg.solve(A, b))


def test_lapack_availability_is_only_claimed_for_real_floating_types():
    assert not lapack_available(torch.float16) and not lapack_available(torch.complex64)
