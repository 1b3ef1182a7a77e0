"""Surface losses: chunked nearest neighbours, chamfer, point-to-surface, normals."""
import subprocess
import sys
import textwrap

import pytest
import torch

from smilfit.body_models import SMILModel, demo_model_data
from smilfit.losses import ChamferLoss, NormalConsistencyLoss, PointToSurfaceLoss
from smilfit.losses.surface import (closest_faces, closest_point_on_triangle,
                                    face_normals, knn_indices, nearest_neighbor_sq,
                                    pad_point_clouds, point_to_surface_sq, resolve_backend)
from smilfit.registration import sample_surface_points
from smilfit.registry import LOSSES

DT = torch.float64


def dense_nn_sq(x, y):
    return torch.cdist(x, y).pow(2).min(-1)


@pytest.fixture(scope='module')
def demo():
    model = SMILModel(data=demo_model_data(), dtype=DT)
    g = torch.Generator().manual_seed(0)
    verts = model(body_pose=0.2 * torch.randn(2, model.num_joints - 1, 3, generator=g,
                                              dtype=DT)).vertices
    return model, verts


@pytest.mark.parametrize('backend', ['torch', 'kdtree'])
@pytest.mark.parametrize('chunk', [1, 7, 1000])
def test_chunked_nearest_equals_dense(chunk, backend):
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(3, 50, 3, generator=g, dtype=DT), torch.randn(3, 40, 3, generator=g,
                                                                      dtype=DT)
    d2, idx = nearest_neighbor_sq(x, y, chunk_size=chunk, backend=backend)
    ref = dense_nn_sq(x, y)
    torch.testing.assert_close(d2, ref.values, rtol=1e-10, atol=1e-12)
    assert torch.equal(idx, ref.indices)
    # k nearest, nearest first, by a memory budget instead of a chunk size
    knn = knn_indices(x, y, k=4, max_chunk_elements=3 * 40 * 5, backend=backend)
    assert torch.equal(knn, torch.cdist(x, y).topk(4, largest=False).indices)


# --------------------------------------------------------- search backends
def test_backend_resolution_and_errors():
    cpu = torch.zeros(1, 2, 3)
    assert resolve_backend('auto', cpu, cpu) == 'kdtree'
    assert resolve_backend('torch', cpu) == 'torch'
    assert resolve_backend('kdtree', cpu) == 'kdtree'
    if torch.cuda.is_available():  # the brute force stays the default on the GPU
        assert resolve_backend('auto', cpu.cuda()) == 'torch'
    with pytest.raises(ValueError, match='backend'):
        knn_indices(cpu, cpu, backend='faiss')
    with pytest.raises(ValueError, match='backend'):
        ChamferLoss(backend='ball_tree')


@pytest.mark.parametrize('k', [1, 6])
def test_kdtree_knn_equals_brute_force_with_masks(k):
    """Random clouds, some references masked or NaN: every index equal, nearest first."""
    g = torch.Generator().manual_seed(11)
    x = torch.randn(4, 300, 3, generator=g, dtype=DT)
    y = torch.randn(4, 200, 3, generator=g, dtype=DT)
    valid = torch.rand(4, 200, generator=g) > 0.3
    y_nan = y.masked_fill(~valid[..., None], float('nan'))  # masked ones also NaN
    brute = knn_indices(x, y, k, valid, backend='torch')
    tree = knn_indices(x, y_nan, k, valid, backend='kdtree')
    assert torch.equal(tree, brute)
    assert valid.gather(1, tree.flatten(1)).all()
    # the dense reference: masked references at infinity
    dense = torch.cdist(x, y).masked_fill(~valid[:, None], float('inf'))
    assert torch.equal(tree, dense.topk(k, largest=False).indices)


def test_kdtree_fewer_valid_references_than_k():
    """Sample 0 has 2 valid references (k=3): those come first, nearest first; the rest
    are in range (arbitrary, as documented). Sample 1 has none."""
    x = torch.tensor([[[0.0, 0, 0]], [[0.0, 0, 0]]], dtype=DT)
    y = torch.tensor([[[5.0, 0, 0], [1.0, 0, 0], [2.0, 0, 0], [9.0, 0, 0]]] * 2, dtype=DT)
    valid = torch.tensor([[True, True, False, False], [False] * 4])
    idx = knn_indices(x, y, 3, valid, backend='kdtree')
    assert idx[0, 0, :2].tolist() == [1, 0]
    assert ((idx >= 0) & (idx < 4)).all()
    d2, _ = nearest_neighbor_sq(x, y, valid, backend='kdtree')
    assert d2[0, 0] == 1.0 and d2[1, 0] == float('inf')


def test_chamfer_backends_same_loss_and_gradients():
    """The pairs do not depend on autograd: both backends give bit-identical losses and
    gradients (padding, NaN points, a vertex mask and the normal term included)."""
    g = torch.Generator().manual_seed(12)
    verts = torch.randn(3, 60, 3, generator=g, dtype=DT)
    clouds = [torch.randn(n, 3, generator=g, dtype=DT) for n in (80, 35, 50)]
    clouds[1][4] = float('nan')
    normals = [torch.randn(c.shape, generator=g, dtype=DT) for c in clouds]
    faces = torch.randint(0, 60, (90, 3), generator=g)
    vmask = torch.rand(60, generator=g) > 0.2
    grads, losses = [], []
    for backend in ('torch', 'kdtree'):
        v = verts.clone().requires_grad_()
        loss = ChamferLoss(distance='l2', normal_weight=0.5, backend=backend)
        out = loss(v, clouds, faces=faces, points_normals=normals, vertex_mask=vmask)
        out.sum().backward()
        losses.append(out.detach())
        grads.append(v.grad)
    assert torch.equal(losses[0], losses[1])
    assert torch.equal(grads[0], grads[1])
    assert grads[1].abs().sum() > 0


def test_closest_faces_kdtree_equals_brute_force(demo):
    """Scan-like points (surface + noise) and far outliers, which fail the first
    candidate query and take the second (ball-counted) one: the same faces, the same
    distances and the same gradients as the brute-force bound search."""
    model, verts = demo
    g = torch.Generator().manual_seed(13)
    pts = sample_surface_points(verts, model.faces, 300, g)['points']
    pts = pts + 2.0 * torch.randn(pts.shape, generator=g, dtype=DT)
    pts[:, :30] = 80.0 * torch.randn(2, 30, 3, generator=g, dtype=DT)  # outliers
    for k in (4, 32):
        brute = closest_faces(pts, verts, model.faces, k=k, backend='torch')
        tree = closest_faces(pts, verts, model.faces, k=k, backend='kdtree', chunk_size=64)
        assert torch.equal(tree, brute), k
    grads = []
    for backend in ('torch', 'kdtree'):
        v = verts.clone().requires_grad_()
        PointToSurfaceLoss(backend=backend, normal_weight=0.1)(
            v, pts, faces=model.faces, points_normals=pts).sum().backward()
        grads.append(v.grad)
    assert torch.equal(grads[0], grads[1])


def test_chamfer_hand_computed():
    verts = torch.tensor([[[0.0, 0.0, 0.0], [10.0, 0.0, 0.0]]], dtype=DT)
    points = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [7.0, 0.0, 0.0]]], dtype=DT)
    # scan -> model: 1, 4, 9 -> mean 14/3; model -> scan: 1, 9 -> mean 5
    s2m = ChamferLoss(direction='scan_to_model')(verts, points)
    m2s = ChamferLoss(direction='model_to_scan')(verts, points)
    both = ChamferLoss(scan_to_model_weight=2.0, model_to_scan_weight=0.5)(verts, points)
    torch.testing.assert_close(s2m, torch.tensor([14 / 3], dtype=DT))
    torch.testing.assert_close(m2s, torch.tensor([5.0], dtype=DT))
    torch.testing.assert_close(both, torch.tensor([2 * 14 / 3 + 2.5], dtype=DT))
    l2 = ChamferLoss(direction='scan_to_model', distance='l2', point_reduction='sum')
    torch.testing.assert_close(l2(verts, points), torch.tensor([6.0], dtype=DT))


def test_chamfer_padding_list_nan_and_chunks_agree():
    g = torch.Generator().manual_seed(2)
    verts = torch.randn(2, 30, 3, generator=g, dtype=DT)
    clouds = [torch.randn(25, 3, generator=g, dtype=DT), torch.randn(12, 3, generator=g,
                                                                      dtype=DT)]
    loss = ChamferLoss()
    per_sample = torch.cat([loss(verts[i:i + 1], c[None]) for i, c in enumerate(clouds)])
    torch.testing.assert_close(loss(verts, clouds), per_sample)
    padded, mask = pad_point_clouds(clouds)
    torch.testing.assert_close(loss(verts, padded, points_mask=mask), per_sample)
    nan_padded = padded.masked_fill(~mask[..., None], float('nan'))
    torch.testing.assert_close(ChamferLoss(chunk_size=3)(verts, nan_padded), per_sample)


def test_chamfer_gradients_finite_and_correct():
    g = torch.Generator().manual_seed(3)
    verts = torch.randn(2, 15, 3, generator=g, dtype=DT, requires_grad=True)
    points = torch.randn(2, 20, 3, generator=g, dtype=DT)
    points[1, 3] = float('nan')
    loss = ChamferLoss(chunk_size=4)
    assert torch.autograd.gradcheck(lambda v: loss(v, points), (verts,))
    loss(verts, points).sum().backward()
    assert torch.isfinite(verts.grad).all()


@pytest.mark.parametrize('p, expect', [
    ((0.2, 0.2, 1.0), (0.2, 0.2, 0.0)),     # above the face
    ((-1.0, -1.0, 0.5), (0.0, 0.0, 0.0)),   # beyond vertex a
    ((3.0, -0.5, 0.0), (1.0, 0.0, 0.0)),    # beyond vertex b
    ((0.5, -2.0, 0.0), (0.5, 0.0, 0.0)),    # beyond edge ab
    ((1.0, 1.0, 0.0), (0.5, 0.5, 0.0)),     # beyond edge bc
    ((-2.0, 0.5, 0.3), (0.0, 0.5, 0.0)),    # beyond edge ac
])
def test_closest_point_on_triangle_regions(p, expect):
    a, b, c = (torch.tensor(v, dtype=DT) for v in ((0, 0, 0), (1, 0, 0), (0, 1, 0)))
    q = closest_point_on_triangle(torch.tensor(p, dtype=DT), a, b, c)
    torch.testing.assert_close(q, torch.tensor(expect, dtype=DT))


def test_point_to_surface_offsets_along_normals(demo):
    model, verts = demo
    g = torch.Generator().manual_seed(4)
    s = sample_surface_points(verts, model.faces, 400, g)
    d2, _ = point_to_surface_sq(s['points'], verts, model.faces)
    assert d2.max() < 1e-20  # points on the surface
    # Moving a point by h along its face normal puts it at distance <= h; for small h
    # on a (locally) convex-enough mesh it is exactly h for most points.
    h = 0.05
    d2, _ = point_to_surface_sq(s['points'] + h * s['normals'], verts, model.faces)
    assert d2.max() <= h * h + 1e-12
    assert (d2 > 0.99 * h * h).float().mean() > 0.9


def test_point_to_surface_bound_matches_exhaustive(demo):
    model, verts = demo
    g = torch.Generator().manual_seed(5)
    pts = sample_surface_points(verts, model.faces, 120, g)['points']
    pts = pts + 0.5 * torch.randn(pts.shape, generator=g, dtype=DT)
    fast, _ = point_to_surface_sq(pts, verts, model.faces, candidates='bound', k=16)
    exact, _ = point_to_surface_sq(pts, verts, model.faces, candidates='all')
    torch.testing.assert_close(fast, exact, rtol=0, atol=1e-12)
    loss = LOSSES.build(dict(type='PointToSurfaceLoss'))
    torch.testing.assert_close(loss(verts, pts, faces=model.faces), exact.mean(1))


def test_point_to_surface_gradcheck():
    verts = torch.tensor([[[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]]], dtype=DT,
                         requires_grad=True)
    faces = torch.tensor([[0, 1, 2], [0, 3, 1], [0, 2, 3], [1, 3, 2]])
    pts = torch.tensor([[[0.2, 0.3, -0.5], [0.9, 0.9, 0.9], [-0.3, 0.4, 0.2]]], dtype=DT)
    loss = PointToSurfaceLoss()
    assert torch.autograd.gradcheck(lambda v: loss(v, pts, faces=faces), (verts,))


def test_normal_consistency(demo):
    model, verts = demo
    g = torch.Generator().manual_seed(6)
    s = sample_surface_points(verts, model.faces, 200, g)
    loss = NormalConsistencyLoss()
    same = loss(verts, s['points'], faces=model.faces, points_normals=s['normals'])
    flipped = loss(verts, s['points'], faces=model.faces, points_normals=-s['normals'])
    oriented = NormalConsistencyLoss(oriented_normals=True)(
        verts, s['points'], faces=model.faces, points_normals=-s['normals'])
    assert same.max() < 1e-10 and flipped.max() < 1e-10
    torch.testing.assert_close(oriented, torch.full((2,), 2.0, dtype=DT))
    # the chamfer normal term: face normals vs vertex normals differ a little, not much
    ch = ChamferLoss(direction='scan_to_model', normal_weight=1.0)
    plain = ChamferLoss(direction='scan_to_model')
    diff = ch(verts, s['points'], faces=model.faces, points_normals=s['normals']) - \
        plain(verts, s['points'])
    assert (diff > 0).all() and (diff < 0.2).all()
    torch.testing.assert_close(face_normals(verts, model.faces).norm(dim=-1),
                               torch.ones(2, model.faces.shape[0], dtype=DT))


def test_errors_name_the_input():
    v = torch.zeros(1, 4, 3)
    with pytest.raises(ValueError, match='faces'):
        PointToSurfaceLoss()(v, torch.zeros(1, 5, 3))
    with pytest.raises(ValueError, match='scans for'):
        ChamferLoss()(v, torch.zeros(2, 5, 3))
    with pytest.raises(ValueError, match='direction'):
        ChamferLoss(direction='forward')


MEMORY_SCRIPT = textwrap.dedent('''
    import resource, sys, time, torch
    torch.set_num_threads(1)
    from smilfit.losses import ChamferLoss
    g = torch.Generator().manual_seed(0)
    verts = torch.randn(1, 10_000, 3, generator=g).requires_grad_()
    points = torch.randn(1, 100_000, 3, generator=g)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t = time.perf_counter()
    loss = ChamferLoss(backend=sys.argv[1])(verts, points).sum()
    loss.backward()
    dt = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print((peak - base) / 1024.0, dt, bool(torch.isfinite(verts.grad).all()))
''')


@pytest.mark.slow
@pytest.mark.parametrize('backend', ['torch', 'kdtree'])
def test_chamfer_100k_points_10k_vertices_bounded_memory(backend):
    """A dense (100k, 10k) float32 matrix alone is 4000 MB; chunking (torch) or the
    k-d tree keep it far below."""
    out = subprocess.run([sys.executable, '-c', MEMORY_SCRIPT, backend], capture_output=True,
                         text=True, timeout=600, check=True)
    extra_mb, seconds, finite = out.stdout.split()
    print(f'chamfer 100k x 10k, {backend}: peak extra memory {float(extra_mb):.0f} MB, '
          f'{float(seconds):.1f} s forward+backward')
    assert finite == 'True'
    assert float(extra_mb) < 400
