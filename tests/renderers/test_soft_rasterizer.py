"""The soft rasterizer on screen-space triangles: exact coverage, analytic values,
chunking invariance and gradients (against finite differences and a dense reference)."""
import math

import numpy as np
import pytest
import torch

from smilfit.renderers import (cutoff_logit, cutoff_margin, rasterize_soft_silhouettes,
                               soft_silhouette_logsum)
from smilfit.renderers.soft_rasterizer import window_sizes
from smilfit.renderers.zbuffer import rasterize

DT = torch.float64


def dense_reference(points, faces, height, width, sigma, cutoff):
    """Every pixel against every face with plain autograd ops (point-to-segment
    projection, barycentric-free inside test): an independent implementation."""
    x_cut = cutoff_logit(cutoff)
    rows, cols = torch.meshgrid(torch.arange(height, dtype=points.dtype),
                                torch.arange(width, dtype=points.dtype), indexing='ij')
    p = torch.stack([cols, rows], -1).reshape(-1, 1, 1, 2)  # (P, 1, 1, 2)
    tri = points[:, faces]  # (N, F, 3, 2)
    a = tri[:, None]  # (N, 1, F, 3, 2)
    e = a.roll(-1, dims=-2) - a
    w = p - a  # (N, P, F, 3, 2)
    t = ((w * e).sum(-1) / (e * e).sum(-1)).clamp(0, 1)
    d2 = ((w - t[..., None] * e) ** 2).sum(-1).min(-1).values  # (N, P, F)
    cross = e[..., 0] * w[..., 1] - e[..., 1] * w[..., 0]  # (N, P, F, 3)
    inside = (cross > 0).all(-1) | (cross < 0).all(-1)
    x = torch.where(inside, d2, -d2) / sigma
    share = torch.nn.functional.softplus(x.clamp(min=x_cut)) - math.log1p(math.exp(x_cut))
    return 1 - torch.exp(-share.sum(-1)).reshape(-1, height, width)


def random_mesh(seed=0, n_faces=12, size=(20, 24), dtype=DT):
    g = torch.Generator().manual_seed(seed)
    H, W = size
    centres = torch.rand(n_faces, 1, 2, generator=g, dtype=dtype) * torch.tensor(
        [W + 4.0, H + 4.0], dtype=dtype) - 2.0
    tri = centres + 4.0 * torch.randn(n_faces, 3, 2, generator=g, dtype=dtype)
    return tri.reshape(1, -1, 2), torch.arange(3 * n_faces).reshape(n_faces, 3)


def test_triangle_covers_exactly_the_pixels_inside():
    # Right triangle (2.5, 2.5), (12.7, 2.5), (2.5, 12.7): pixel centres (column j, row i)
    # inside are i, j >= 3 with i + j <= 15 (the hypotenuse passes 0.14 px beyond).
    pts = torch.tensor([[[2.5, 2.5], [12.7, 2.5], [2.5, 12.7]]], dtype=DT)
    sil = rasterize_soft_silhouettes(pts, torch.tensor([[0, 1, 2]]), 20, 24, sigma=1e-3)[0]
    i, j = torch.meshgrid(torch.arange(20), torch.arange(24), indexing='ij')
    expected = (i >= 3) & (j >= 3) & (i + j <= 15)
    assert int(expected.sum()) == 55
    assert torch.equal(sil > 0.5, expected)
    assert float(sil[expected].min()) > 0.999 and float(sil[~expected].max()) < 1e-3
    # Either winding gives the same silhouette.
    flipped = rasterize_soft_silhouettes(pts, torch.tensor([[0, 2, 1]]), 20, 24, sigma=1e-3)
    assert torch.equal(flipped[0], sil)


def test_edge_profile_is_the_sigmoid_of_signed_squared_distance():
    # A big triangle whose right edge is the vertical line u = 10.3 near row 10.
    pts = torch.tensor([[[-50.0, -40.0], [10.3, -40.0], [10.3, 60.0]]], dtype=DT)
    sigma, cutoff = 2.0, 1e-4
    sil = rasterize_soft_silhouettes(pts, torch.tensor([[0, 1, 2]]), 20, 24, sigma, cutoff)
    j = torch.arange(24, dtype=DT)
    d = j - 10.3
    x = torch.where(d < 0, d * d, -d * d) / sigma  # inside left of the edge
    x_cut = cutoff_logit(cutoff)
    share = torch.nn.functional.softplus(x.clamp(min=x_cut)) - math.log1p(math.exp(x_cut))
    expected = 1 - torch.exp(-share)
    near_edge = (j > 6) & (j < 23)  # right of the hypotenuse's influence
    torch.testing.assert_close(sil[0, 10][near_edge], expected[near_edge], rtol=0, atol=1e-12)
    # ... which is sigmoid(x) to within the cutoff, and 0 beyond the cutoff distance.
    assert float((sil[0, 10] - torch.sigmoid(x))[near_edge].abs().max()) < 2 * cutoff
    margin = cutoff_margin(sigma, cutoff)
    assert float(sil[0, 10][d > margin].abs().max()) == 0.0


def test_overlapping_faces_aggregate_probabilistically():
    pts, faces = random_mesh(1, n_faces=1)
    one = rasterize_soft_silhouettes(pts, faces, 20, 24, sigma=3.0)
    two = rasterize_soft_silhouettes(pts, torch.tensor([[0, 1, 2], [0, 1, 2]]), 20, 24,
                                     sigma=3.0)
    torch.testing.assert_close(two, 1 - (1 - one) ** 2, rtol=0, atol=1e-12)


def test_hard_limit_matches_the_z_buffer_rasterizer():
    pts, faces = random_mesh(2, n_faces=30, size=(40, 48))
    sil = rasterize_soft_silhouettes(pts, faces, 40, 48, sigma=1e-4)[0]
    # The screen-space points as camera points at depth 1 seen with K = R = I, t = 0: the
    # z-buffer draws them at exactly those pixels.
    cam = torch.cat([pts[0], torch.ones(pts.shape[1], 1, dtype=pts.dtype)], 1)
    ref = rasterize(cam, faces, torch.eye(3, dtype=DT), torch.eye(3, dtype=DT),
                    torch.zeros(3, dtype=DT), height=40, width=48).mask.numpy()
    assert ref.sum() > 300
    assert np.array_equal((sil > 0.5).numpy(), ref)


@pytest.mark.parametrize('sigma', [0.7, 4.0])
def test_values_and_gradients_match_a_dense_autograd_reference(sigma):
    pts, faces = random_mesh(3, n_faces=10)
    pts = pts.requires_grad_(True)
    ours = rasterize_soft_silhouettes(pts, faces, 20, 24, sigma, cutoff=1e-4)
    ref_pts = pts.detach().clone().requires_grad_(True)
    ref = dense_reference(ref_pts, faces, 20, 24, sigma, cutoff=1e-4)
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-12)
    weights = torch.rand(ours.shape, generator=torch.Generator().manual_seed(0), dtype=DT)
    (ours * weights).sum().backward()
    (ref * weights).sum().backward()
    assert float(pts.grad.abs().max()) > 0.1
    torch.testing.assert_close(pts.grad, ref_pts.grad, rtol=1e-9, atol=1e-10)


def test_finite_differences_on_a_small_mesh():
    # Two triangles sharing an edge, a third overlapping them, off integer positions.
    pts = torch.tensor([[[3.3, 2.2], [11.6, 4.1], [5.2, 10.7], [12.9, 11.8], [8.1, 1.3]]],
                       dtype=DT, requires_grad=True)
    faces = torch.tensor([[0, 1, 2], [1, 3, 2], [4, 3, 0]])
    valid = torch.ones(1, 3, dtype=torch.bool)
    # Three random projections of the image keep gradcheck to three backward passes.
    project = torch.randn(14 * 16, 3, generator=torch.Generator().manual_seed(0), dtype=DT)
    assert torch.autograd.gradcheck(
        lambda p: soft_silhouette_logsum(p, faces, valid, 14, 16, sigma=2.0, cutoff=1e-6,
                                         max_pairs=37).reshape(-1) @ project,
        (pts,), eps=1e-6, atol=1e-6)


def test_chunk_size_changes_nothing():
    # Tiny chunks split buckets into many chunks and big windows into row bands.
    pts, faces = random_mesh(4, n_faces=15, size=(30, 20))
    pts = torch.cat([pts, torch.tensor([[[-30.0, -30.0], [80.0, -5.0], [5.0, 90.0]]],
                                       dtype=DT)], 1)  # one face larger than the image
    faces = torch.cat([faces, torch.tensor([[45, 46, 47]])])
    results = []
    for max_pairs in (7, 64, 1 << 16):
        p = pts.clone().requires_grad_(True)
        sil = rasterize_soft_silhouettes(p, faces, 30, 20, sigma=1.5, max_pairs=max_pairs)
        (sil * torch.linspace(0, 1, sil.numel(), dtype=DT).view_as(sil)).sum().backward()
        results.append((sil.detach(), p.grad))
    for sil, grad in results[1:]:
        torch.testing.assert_close(sil, results[0][0], rtol=0, atol=1e-12)
        torch.testing.assert_close(grad, results[0][1], rtol=0, atol=1e-10)


def test_degenerate_offscreen_and_invalid_faces():
    # A zero-area triangle has no inside: only the blur of its segment, below 0.5.
    seg = torch.tensor([[[3.0, 5.0], [15.0, 5.0], [9.0, 5.0]]], dtype=DT, requires_grad=True)
    sil = rasterize_soft_silhouettes(seg, torch.tensor([[0, 1, 2]]), 10, 20, sigma=1.0)
    assert float(sil.detach().max()) == pytest.approx(0.5, abs=2e-4)  # D(0) = sigmoid(0)
    sil.sum().backward()
    assert torch.isfinite(seg.grad).all()
    # Off-screen faces and faces flagged invalid draw nothing.
    off = torch.tensor([[[-40.0, -40.0], [-30.0, -41.0], [-35.0, -30.0]]], dtype=DT)
    blank = rasterize_soft_silhouettes(off, torch.tensor([[0, 1, 2]]), 10, 20)
    assert float(blank.abs().max()) == 0
    pts, faces = random_mesh(5, n_faces=4)
    valid = torch.tensor([[True, False, True, False]])
    torch.testing.assert_close(
        rasterize_soft_silhouettes(pts, faces, 20, 24, face_valid=valid),
        rasterize_soft_silhouettes(pts, faces[valid[0]], 20, 24), rtol=0, atol=0)


def test_window_sizes_grow_by_at_most_one_and_a_half():
    assert window_sizes(1) == [1]
    assert window_sizes(10) == [1, 2, 3, 4, 6, 8, 12]
    sizes = window_sizes(1000)
    assert sizes[-1] >= 1000 and all(b / a <= 1.5 for a, b in zip(sizes[2:], sizes[3:]))


def test_bad_sharpness_settings_are_refused():
    with pytest.raises(ValueError, match='cutoff'):
        cutoff_logit(0.7)
