"""Closest points on triangle meshes: point-to-triangle, closest faces, point-to-surface.

Shapes: B batch, P query points, V mesh vertices, F faces, k candidate triangles per point.
Distances in the units of the inputs (squared where the name says so). The closest face
is searched without autograd; the distance to the closest point on it is differentiable.
"""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np
import torch

from .knn import (DEFAULT_CHUNK_ELEMENTS, _build_tree, _chunk_rows, _host_float64,
                  check_choice, resolve_backend)

Tensor = torch.Tensor

__all__ = ['SURFACE_CANDIDATES', 'closest_point_on_triangle', 'closest_faces',
           'point_to_surface_sq']

#: How the closest surface triangle of a point is searched.
SURFACE_CANDIDATES = ('bound', 'all')
#: First candidate query of the k-d tree triangle search: this many times ``k`` nearest
#: centroids (measured on the stick insect, k=32: 6 % of scan points need a second query
#: at 4x, half of them at 2x).
FACE_QUERY_FACTOR = 4


def _safe_div(num: Tensor, den: Tensor) -> Tensor:
    # Branches that torch.where discards must still have finite gradients.
    ok = den.abs() > 1e-30
    return torch.where(ok, num, torch.zeros_like(num)) / torch.where(ok, den, torch.ones_like(den))


def closest_point_on_triangle(p: Tensor, a: Tensor, b: Tensor, c: Tensor) -> Tensor:
    """Closest point to ``p`` on triangle ``(a, b, c)``, all (..., 3), broadcast.

    Ericson's region test (Real-Time Collision Detection, 5.1.5), evaluated for every
    region at once and selected with ``torch.where``; differentiable in every input.
    Degenerate triangles fall back to an edge or vertex.
    """
    dot = lambda u, v: (u * v).sum(-1, keepdim=True)  # noqa: E731
    ab, ac, ap = b - a, c - a, p - a
    d1, d2 = dot(ab, ap), dot(ac, ap)
    bp = p - b
    d3, d4 = dot(ab, bp), dot(ac, bp)
    cp = p - c
    d5, d6 = dot(ab, cp), dot(ac, cp)
    va = d3 * d6 - d5 * d4
    vb = d5 * d2 - d1 * d6
    vc = d1 * d4 - d3 * d2
    # Inside the face (the last resort); then override region by region, most specific last.
    denom = va + vb + vc
    out = a + ab * _safe_div(vb, denom) + ac * _safe_div(vc, denom)
    bc_w = _safe_div(d4 - d3, (d4 - d3) + (d5 - d6))
    out = torch.where((va <= 0) & (d4 - d3 >= 0) & (d5 - d6 >= 0), b + (c - b) * bc_w, out)
    out = torch.where((vb <= 0) & (d2 >= 0) & (d6 <= 0), a + ac * _safe_div(d2, d2 - d6), out)
    out = torch.where((d6 >= 0) & (d5 <= d6), c, out)
    out = torch.where((vc <= 0) & (d1 >= 0) & (d3 <= 0), a + ab * _safe_div(d1, d1 - d3), out)
    out = torch.where((d3 >= 0) & (d4 <= d3), b, out)
    out = torch.where((d1 <= 0) & (d2 <= 0), a, out)
    return out


def _best_candidate(p: Tensor, tri: Tensor, cand: Tensor) -> Tensor:
    """(B, c, 3) points, (B, F, 3, 3) triangles, (B, c, k) candidate faces -> (B, c)
    the candidate whose closest point is nearest (the first of equals)."""
    bidx = torch.arange(p.shape[0], device=p.device)[:, None, None]
    t = tri[bidx, cand]  # (B, c, k, 3, 3)
    q = closest_point_on_triangle(p[:, :, None], t[..., 0, :], t[..., 1, :], t[..., 2, :])
    d = ((q - p[:, :, None]) ** 2).sum(-1)
    return torch.gather(cand, 2, d.argmin(-1, keepdim=True))[..., 0]


def _face_bounds(tri: Tensor) -> Tuple[Tensor, Tensor]:
    """(B, F, 3, 3) triangles -> centroids (B, F, 3) and radii about them (B, F)."""
    centroid = tri.mean(2)
    return centroid, (tri - centroid[:, :, None]).norm(dim=-1).amax(-1)


def _bound_candidates_kdtree(points: Tensor, centroid: Tensor, radius: Tensor, k: int,
                             rows: int, workers: int) -> Tensor:
    """The ``k`` faces of smallest bound ``|p - centroid| - radius`` per point, smallest
    first, as :func:`closest_faces` ranks them by brute force, found with a k-d tree
    over the centroids. Returns (B, P, k) long.

    Exact by a ball argument: with ``b_k`` the k-th smallest bound among the ``K``
    nearest centroids, a face in the true top k has ``|p - c| <= b_k + max radius``. If
    the K-th nearest centroid lies beyond that ball, the K nearest hold the top k;
    otherwise the point is queried again with ``K`` = the number of centroids in the
    ball (counted by the tree).
    """
    B, P = points.shape[:2]
    F = centroid.shape[1]
    ps, cs, rs = _host_float64(points), _host_float64(centroid), _host_float64(radius)
    ps = np.where(np.isfinite(ps).all(-1, keepdims=True), ps, 0.0)
    out = np.empty((B, P, k), dtype=np.int64)

    def top_k(q: np.ndarray, tree, kq: int, r: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        dist, nn = tree.query(q, k=kq, workers=workers)
        dist, nn = dist.reshape(len(q), kq), nn.reshape(len(q), kq)
        bound = torch.from_numpy(dist - r[nn])
        # torch.topk as in the brute force: same candidates, same order (ties aside).
        best = bound.topk(k, dim=1, largest=False)
        return (np.take_along_axis(nn, best.indices.numpy(), 1), best.values[:, -1].numpy(),
                dist[:, -1])

    for b in range(B):  # one tree per sample, built and queried in C (see _knn_kdtree)
        tree = _build_tree(cs[b])
        r_max = float(rs[b].max())
        k0 = min(F, FACE_QUERY_FACTOR * k)
        for s in range(0, P, rows):
            q = ps[b, s:s + rows]
            cand, kth, far = top_k(q, tree, k0, rs[b])
            out[b, s:s + rows] = cand
            if k0 == F:
                continue
            # A relative margin so float rounding can only send more points to the
            # second, exact query.
            rho = (kth + r_max) * (1 + 1e-9) + 1e-300
            again = np.flatnonzero(far <= rho)
            if again.size == 0:
                continue
            need = tree.query_ball_point(q[again], rho[again], return_length=True)
            # Points that need many candidates (far from the mesh) are queried in
            # groups of similar need, keeping the (points x K) arrays small.
            order = again[np.argsort(need)]
            need = np.sort(need)
            step = max(1, rows // 4)
            for g in range(0, order.size, step):
                kq = int(min(F, max(k, need[g:g + step].max())))
                idx = order[g:g + step]
                out[b, s + idx] = top_k(q[idx], tree, kq, rs[b])[0]
    return torch.from_numpy(out).to(points.device)


@torch.no_grad()
def closest_faces(points: Tensor, vertices: Tensor, faces: Tensor,
                  candidates: str = 'bound', k: int = 32, chunk_size: Optional[int] = None,
                  max_chunk_elements: int = DEFAULT_CHUNK_ELEMENTS,
                  backend: str = 'auto', workers: int = 1) -> Tensor:
    """Index of the closest triangle of every point (no autograd).

    ``'bound'``: the ``k`` triangles with the smallest lower bound of the distance
    (``|p - centroid| - radius``) are tested exactly: O(P F) cheap bound evaluations
    plus O(P k) triangle tests (exact unless more than ``k`` triangles have a bound
    below the true distance). ``'all'``: every triangle is tested (exact, O(P F)
    triangle tests, about 20x slower). Both chunked over points.

    With ``backend='kdtree'`` (the default for CPU tensors, see :func:`resolve_backend`)
    the ``k`` smallest bounds of ``'bound'`` are found with a k-d tree over the
    triangle centroids instead of evaluating all F bounds: the same candidates in the
    same order, so the same faces (ties aside). ``'all'`` always runs in torch.

    Args:
        points: (B, P, 3); vertices: (B, V, 3); faces: (F, 3) long.
        backend, workers: see :func:`knn_indices`.

    Returns:
        (B, P) long face indices.
    """
    check_choice('candidates', candidates, SURFACE_CANDIDATES)
    B, P = points.shape[:2]
    F = faces.shape[0]
    tri = vertices[:, faces]  # (B, F, 3, 3)
    out = torch.empty(B, P, dtype=torch.long, device=points.device)
    if candidates == 'all':
        rows = _chunk_rows(B, F * 8, chunk_size, max_chunk_elements)
        for s in range(0, P, rows):
            p = points[:, s:s + rows, None]  # (B, c, 1, 3)
            q = closest_point_on_triangle(p, tri[:, None, :, 0], tri[:, None, :, 1],
                                          tri[:, None, :, 2])
            out[:, s:s + rows] = ((q - p) ** 2).sum(-1).argmin(-1)
        return out
    k = min(int(k), F)
    # Lower bound of a triangle's distance: |p - centroid| - circumradius about the
    # centroid. The k smallest bounds are the candidates: robust for long, thin
    # triangles where "faces around the nearest vertices" misses the closest one.
    centroid, radius = _face_bounds(tri)
    if resolve_backend(backend, points, vertices) == 'kdtree':
        rows = _chunk_rows(1, FACE_QUERY_FACTOR * k * 4, chunk_size, max_chunk_elements)
        cand = _bound_candidates_kdtree(points, centroid, radius, k, rows, workers)
        rows = _chunk_rows(B, k * 32, chunk_size, max_chunk_elements)
        for s in range(0, P, rows):
            out[:, s:s + rows] = _best_candidate(points[:, s:s + rows], tri,
                                                 cand[:, s:s + rows])
        return out
    cc = (centroid * centroid).sum(-1)
    ct = centroid.transpose(1, 2)
    rows = _chunk_rows(B, F, chunk_size, max_chunk_elements)
    for s in range(0, P, rows):
        p = points[:, s:s + rows]
        d2 = torch.baddbmm(cc[:, None, :], p, ct, alpha=-2.0) + (p * p).sum(-1, keepdim=True)
        bound = d2.clamp_min(0).sqrt() - radius[:, None, :]
        cf = bound.topk(k, dim=-1, largest=False).indices  # (B, c, k)
        out[:, s:s + rows] = _best_candidate(p, tri, cf)
    return out


def point_to_surface_sq(points: Tensor, vertices: Tensor, faces: Tensor,
                        candidates: str = 'bound', k: int = 32,
                        chunk_size: Optional[int] = None,
                        max_chunk_elements: int = DEFAULT_CHUNK_ELEMENTS,
                        backend: str = 'auto', workers: int = 1
                        ) -> Tuple[Tensor, Tensor]:
    """Squared distance of every point to the mesh surface (not just its vertices).

    The closest triangle is found without autograd (:func:`closest_faces`); the
    distance to the closest point on it is differentiable in ``points`` and
    ``vertices``.

    Args:
        points: (B, P, 3); vertices: (B, V, 3); faces: (F, 3) long.
        candidates, k, chunk_size, max_chunk_elements, backend, workers: see
            :func:`closest_faces`.

    Returns:
        ``(dist_sq (B, P), face_idx (B, P))``.
    """
    face_idx = closest_faces(points.detach(), vertices.detach(), faces, candidates, k,
                             chunk_size, max_chunk_elements, backend, workers)
    B = points.shape[0]
    bidx = torch.arange(B, device=points.device)[:, None]
    t = vertices[bidx[..., None], faces[face_idx]]  # (B, P, 3, 3)
    q = closest_point_on_triangle(points, t[..., 0, :], t[..., 1, :], t[..., 2, :])
    diff = points - q
    return (diff * diff).sum(-1), face_idx

