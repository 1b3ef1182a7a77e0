"""Chunked small decompositions: the same results as one torch call, any leading shape."""
import pytest
import torch

from smilfit.ops.linalg import batched_eigh, batched_svd


@pytest.mark.parametrize('chunk', [None, 0, 1, 4, 7, 1000])
def test_chunked_eigh_equals_one_call(chunk):
    g = torch.Generator().manual_seed(0)
    X = torch.randn(3, 5, 4, 4, generator=g, dtype=torch.float64)
    A = X @ X.transpose(-1, -2)
    vals, vecs = batched_eigh(A, chunk=chunk)
    ref_vals, ref_vecs = torch.linalg.eigh(A)
    assert vals.shape == (3, 5, 4) and vecs.shape == (3, 5, 4, 4)
    torch.testing.assert_close(vals, ref_vals)
    torch.testing.assert_close(vecs, ref_vecs)


@pytest.mark.parametrize('chunk', [None, 2, 5])
def test_chunked_svd_equals_one_call_and_is_differentiable(chunk):
    g = torch.Generator().manual_seed(1)
    A = torch.randn(9, 3, 3, generator=g, dtype=torch.float64, requires_grad=True)
    U, S, Vh = batched_svd(A, chunk=chunk)
    rU, rS, rVh = torch.linalg.svd(A, full_matrices=False)
    torch.testing.assert_close(S, rS)
    torch.testing.assert_close(U @ torch.diag_embed(S) @ Vh, A)
    S.sum().backward()
    torch.testing.assert_close(A.grad, rU @ rVh)  # d(sum of singular values)/dA = U V^T
