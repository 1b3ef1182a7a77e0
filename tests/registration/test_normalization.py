"""Batched scan normalisation: centring, scaling, PCA alignment, manual override."""
import math

import pytest
import torch

from smilfit.registration import normalize_scans

DT = torch.float64


def random_rotation(g):
    q, r = torch.linalg.qr(torch.randn(3, 3, generator=g, dtype=DT))
    q = q * torch.sign(torch.diagonal(r))
    return q if torch.linalg.det(q) > 0 else -q


def skewed_cloud(g, n=3000):
    """Anisotropic (std 3, 2, 1), skewed along every axis (so PCA signs are defined)."""
    x = torch.randn(n, 3, generator=g, dtype=DT) * torch.tensor([3.0, 2.0, 1.0], dtype=DT)
    return x + 0.3 * x ** 2 / torch.tensor([3.0, 2.0, 1.0], dtype=DT)


def test_pose_and_scale_invariance():
    g = torch.Generator().manual_seed(0)
    base = skewed_cloud(g)
    R = torch.stack([random_rotation(g) for _ in range(3)])
    scale = torch.tensor([1.0, 0.01, 250.0], dtype=DT)
    shift = torch.randn(3, 3, generator=g, dtype=DT) * 100
    clouds = scale[:, None, None] * base @ R.transpose(1, 2) + shift[:, None]
    out, tf = normalize_scans(clouds)
    torch.testing.assert_close(out[1], out[0], atol=1e-8, rtol=0)
    torch.testing.assert_close(out[2], out[0], atol=1e-8, rtol=0)
    # RMS radius 1, variances descending along x, y, z; proper rotations; invertible
    torch.testing.assert_close(out.pow(2).sum(-1).mean(1), torch.ones(3, dtype=DT))
    var = out.var(1)
    assert (var[:, 0] > var[:, 1]).all() and (var[:, 1] > var[:, 2]).all()
    torch.testing.assert_close(torch.linalg.det(tf.rotation), torch.ones(3, dtype=DT))
    torch.testing.assert_close(tf.inverse(out), clouds)


def test_mask_padding_nan_and_manual_rotation():
    g = torch.Generator().manual_seed(1)
    base = skewed_cloud(g, 500)
    padded = torch.cat([base, torch.full((100, 3), 1e6, dtype=DT)])[None]
    mask = torch.zeros(1, 600, dtype=torch.bool)
    mask[0, :500] = True
    ref, _ = normalize_scans(base[None])
    out, _ = normalize_scans(padded, mask)
    torch.testing.assert_close(out[:, :500], ref)
    assert (out[0, 500:] == 1e6).all()  # invalid points are left as they were
    nan = padded.clone()
    nan[0, 500:] = float('nan')
    torch.testing.assert_close(normalize_scans(nan)[0][:, :500], ref)
    # manual override: rotate 90 degrees about z, no PCA, fixed scale, bbox centre
    Rz = torch.tensor([[0.0, -1, 0], [1, 0, 0], [0, 0, 1]], dtype=DT)
    pts = torch.tensor([[[0.0, 0, 0], [2, 0, 0], [2, 4, 0]]], dtype=DT)
    out, tf = normalize_scans(pts, center='bbox', scale=0.5, rotation=Rz)
    expect = 0.5 * (pts - torch.tensor([1.0, 2, 0], dtype=DT)) @ Rz.T
    torch.testing.assert_close(out, expect)
    with pytest.raises(ValueError, match='proper rotation'):
        normalize_scans(pts, rotation=-torch.eye(3, dtype=DT))


def test_axes_permutation_and_bbox_scale():
    g = torch.Generator().manual_seed(2)
    x = skewed_cloud(g, 800)[None]
    out, tf = normalize_scans(x, scale='bbox', target_size=2.0, axes=(2, 0, 1))
    var = out.var(1)[0]
    assert var[2] > var[0] > var[1]  # largest variance on z, then x, then y
    assert math.isclose(float(torch.linalg.det(tf.rotation[0])), 1.0, abs_tol=1e-9)
    extent = (out.amax(1) - out.amin(1)).norm(dim=-1)
    torch.testing.assert_close(extent, torch.tensor([2.0], dtype=DT))
    with pytest.raises(ValueError, match='fewer than 3'):
        normalize_scans(x, torch.zeros(1, 800, dtype=torch.bool))
