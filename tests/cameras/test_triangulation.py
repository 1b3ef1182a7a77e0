"""Batched weighted DLT: exact recovery, NaN handling, weights, conditioning, gradients."""
import pytest
import torch

from smilfit.cameras import project_points, projection_matrices, triangulate_dlt

from .helpers import random_points, ring_cameras

NAN = float('nan')


@pytest.fixture
def scene():
    K, R, t, _, _ = ring_cameras(C=4, distortion=False)
    X = random_points(5, 30)
    uv = project_points(X[:, None], K, R, t)  # (5, 4, 30, 2) pixels
    return K, R, t, X, uv


def test_exact_recovery_pixels_and_normalized(scene):
    K, R, t, X, uv = scene
    out = triangulate_dlt(uv, projection_matrices(R, t, K))
    assert out.shape == (5, 30, 3)
    torch.testing.assert_close(out, X, atol=1e-8, rtol=0)
    xy = project_points(X[:, None], torch.eye(3, dtype=X.dtype).expand(4, 3, 3), R, t)
    torch.testing.assert_close(triangulate_dlt(xy, projection_matrices(R, t)), X, atol=1e-8,
                               rtol=0)


def test_per_batch_projections_and_float32(scene):
    K, R, t, X, uv = scene
    P = projection_matrices(R, t, K)
    out = triangulate_dlt(uv, P.expand(5, 4, 3, 4))
    torch.testing.assert_close(out, X, atol=1e-8, rtol=0)
    out32 = triangulate_dlt(uv.float(), P.float())
    assert out32.dtype == torch.float32
    torch.testing.assert_close(out32.double(), X, atol=1e-3, rtol=0)


def test_world_units_do_not_matter(scene):
    """Conditioning: the same scene in metres and in micrometres is recovered equally."""
    K, R, t, X, uv = scene
    for scale in (1e-3, 1e3):
        out = triangulate_dlt(uv, projection_matrices(R, t * scale, K))
        torch.testing.assert_close(out / scale, X, atol=1e-7, rtol=0)


def test_nan_views_and_min_views(scene):
    K, R, t, X, uv = scene
    P = projection_matrices(R, t, K)
    uv = uv.clone()
    uv[0, 1:, 0] = NAN            # point (0, 0): one view -> NaN
    uv[1, 2:, 1] = NAN            # point (1, 1): two views -> recovered
    uv[2, :, 2, 1] = NAN          # point (2, 2): NaN y in every view -> NaN
    uv[3, 0, 3] = NAN             # point (3, 3): three views
    out = triangulate_dlt(uv, P)
    assert torch.isnan(out[0, 0]).all() and torch.isnan(out[2, 2]).all()
    torch.testing.assert_close(out[1, 1], X[1, 1], atol=1e-8, rtol=0)
    torch.testing.assert_close(out[3, 3], X[3, 3], atol=1e-8, rtol=0)
    assert torch.isnan(out).any(-1).sum() == 2
    strict = triangulate_dlt(uv, P, min_views=3)
    assert torch.isnan(strict[1, 1]).all() and torch.isfinite(strict[3, 3]).all()
    assert torch.isnan(strict[3, 3]).sum() == 0
    with pytest.raises(ValueError, match='min_views'):
        triangulate_dlt(uv, P, min_views=1)


def test_weights(scene):
    K, R, t, X, uv = scene
    P = projection_matrices(R, t, K)
    g = torch.Generator().manual_seed(0)
    noisy = uv + 2.0 * torch.randn(uv.shape, generator=g, dtype=uv.dtype)
    w = torch.ones(5, 4, 30, dtype=uv.dtype)
    base = triangulate_dlt(noisy, P, w)
    torch.testing.assert_close(base, triangulate_dlt(noisy, P))
    # A common factor changes nothing.
    torch.testing.assert_close(triangulate_dlt(noisy, P, 7.0 * w), base)
    # Zero weight == absent view == NaN point.
    w0 = w.clone()
    w0[:, 0] = 0.0
    nan_view = noisy.clone()
    nan_view[:, 0] = NAN
    torch.testing.assert_close(triangulate_dlt(noisy, P, w0), triangulate_dlt(nan_view, P))
    # A view with garbage but zero weight does not matter; with weight it does.
    bad = noisy.clone()
    bad[:, 0] += 80.0
    torch.testing.assert_close(triangulate_dlt(bad, P, w0), triangulate_dlt(nan_view, P))
    assert (triangulate_dlt(bad, P, w) - X).norm(dim=-1).median() > \
        2 * (triangulate_dlt(bad, P, w0) - X).norm(dim=-1).median()
    # Up-weighting the clean views pulls the estimate towards them.
    w_hi = w.clone()
    w_hi[:, 1:] = 10.0
    err_hi = (triangulate_dlt(bad, P, w_hi) - X).norm(dim=-1).median()
    err_eq = (triangulate_dlt(bad, P, w) - X).norm(dim=-1).median()
    assert err_hi < err_eq


def test_gradcheck_points_cameras_weights(scene):
    K, R, t, X, uv = scene
    g = torch.Generator().manual_seed(1)
    pts = (uv[:1, :, :2] + torch.randn(uv[:1, :, :2].shape, generator=g,
                                       dtype=uv.dtype)).requires_grad_()
    P = projection_matrices(R, t, K).requires_grad_()
    w = (0.5 + torch.rand(1, 4, 2, generator=g, dtype=uv.dtype)).requires_grad_()
    assert torch.autograd.gradcheck(triangulate_dlt, (pts, P, w))


def test_gradients_finite_next_to_nan_outputs(scene):
    K, R, t, X, uv = scene
    uv = uv[:1].clone()
    uv[0, 1:, 0] = NAN  # point 0 cannot be triangulated
    pts = uv.clone().requires_grad_()
    P = projection_matrices(R, t, K).requires_grad_()
    out = triangulate_dlt(pts, P)
    assert torch.isnan(out[0, 0]).all()
    out[0, 1:].sum().backward()
    assert torch.isfinite(P.grad).all()
    finite = torch.isfinite(uv)
    assert torch.isfinite(pts.grad[finite]).all()
    assert (pts.grad[0, :, 0] == 0).all()


def test_shape_errors(scene):
    K, R, t, X, uv = scene
    with pytest.raises(ValueError, match=r'\(B, C, N, 2\)'):
        triangulate_dlt(uv[0], projection_matrices(R, t, K))
    with pytest.raises(ValueError, match='projections'):
        triangulate_dlt(uv, projection_matrices(R, t, K)[:3])


def test_null_vectors_match_eigh_and_fall_back_where_ill_defined():
    """The adjugate power steps give eigh's eigenvector of the smallest eigenvalue (up
    to sign) where it is well separated; where the two smallest are close it is eigh's
    own (the fallback), and a skipped matrix is left to the caller."""
    from smilfit.cameras import triangulation as tri
    g = torch.Generator().manual_seed(0)
    n = 200
    Q, _ = torch.linalg.qr(torch.randn(n, 4, 4, generator=g, dtype=torch.float64))
    lam = torch.rand(n, 4, generator=g, dtype=torch.float64) + 0.1
    lam[:, 0] = 10.0 ** -torch.randint(3, 17, (n,), generator=g).double()   # separated
    lam[:20, 0] = lam[:20, 1] * 0.999                                        # not
    M = Q @ torch.diag_embed(lam) @ Q.transpose(-1, -2)
    M = M / M.diagonal(dim1=-2, dim2=-1).sum(-1)[:, None, None]
    adj = tri._adjugate4(M.reshape(n, 16).T.contiguous()).T.reshape(n, 4, 4)
    torch.testing.assert_close(adj @ M, torch.linalg.det(M)[:, None, None]
                               * torch.eye(4, dtype=M.dtype).expand(n, 4, 4),
                               atol=1e-14, rtol=0)
    expect = torch.linalg.eigh(M)[1][..., 0]
    v = tri._null_vectors(M)
    torch.testing.assert_close((v * expect).sum(-1).abs(), torch.ones(n, dtype=M.dtype),
                               atol=1e-12, rtol=0)
    skipped = tri._null_vectors(M, skip=torch.arange(n) < 20)   # no fallback there
    torch.testing.assert_close(skipped[20:], v[20:])


def test_triangulation_without_and_with_autograd_agree(scene):
    """Without gradients the smallest eigenvectors come from the adjugate; with them
    from eigh (differentiable): the same points."""
    K, R, t, X, uv = scene
    noisy = uv + 0.5 * torch.randn(uv.shape, generator=torch.Generator().manual_seed(1),
                                   dtype=uv.dtype)
    noisy[0, 1, 3] = NAN
    P = projection_matrices(R, t, K)
    with torch.no_grad():
        fast = triangulate_dlt(noisy, P)
    leaf = noisy.clone().requires_grad_()
    slow = triangulate_dlt(leaf, P)
    torch.testing.assert_close(fast, slow.detach(), atol=1e-9, rtol=0, equal_nan=True)
