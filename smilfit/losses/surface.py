"""Surface losses between a body-model mesh and 3D scans: chamfer, point-to-surface, normals.

Shapes: B batch, V mesh vertices, F faces, P scan points (padded; a (B, P) mask marks the
valid ones), k candidate triangles per point. Distances are in model units (squared where
the name says so). The geometry (nearest neighbours and their backends, closest points on
the mesh, normals) lives in :mod:`smilfit.ops`; the names below are re-exported for old
imports.
"""
from __future__ import annotations

from typing import Optional, Sequence, Union

import torch

from ..ops.knn import (DEFAULT_CHUNK_ELEMENTS, NN_BACKENDS, as_padded_points,  # noqa: F401
                       gather_points, knn_indices, nearest_neighbor_sq, pad_point_clouds,
                       resolve_backend)
from ..ops.normals import face_normals, vertex_normals  # noqa: F401
from ..ops.point_mesh import (SURFACE_CANDIDATES, closest_faces,  # noqa: F401
                              closest_point_on_triangle, point_to_surface_sq)
from ..registry import LOSSES
from .keypoint_losses import ROBUST_FUNCTIONS
from .utils import BaseLoss, check_choice

Tensor = torch.Tensor

#: Distances applied to matched pairs.
DISTANCE_KINDS = ('squared', 'l2')
#: How chamfer directions are selected.
CHAMFER_DIRECTIONS = ('both', 'scan_to_model', 'model_to_scan')


# ------------------------------------------------------------------ helpers
def _apply_distance(dist_sq: Tensor, distance: str, robust: Optional[str],
                    sigma: float, eps: float = 1e-12) -> Tensor:
    if robust is not None:
        dist_sq = ROBUST_FUNCTIONS[robust](dist_sq, sigma)
    if distance == 'l2':
        # sqrt has an infinite slope at 0; eps keeps exact matches differentiable.
        return torch.sqrt(dist_sq + eps)
    return dist_sq


def _reduce_points(values: Tensor, valid: Tensor, point_reduction: str) -> Tensor:
    """(B, N) values, (B, N) bool -> (B,) masked mean or sum (0 where nothing is valid)."""
    v = torch.where(valid, values, torch.zeros((), dtype=values.dtype, device=values.device))
    total = v.sum(1)
    if point_reduction == 'sum':
        return total
    return total / valid.sum(1).clamp_min(1).to(values.dtype)


def _normal_term(n_a: Tensor, n_b: Tensor, oriented: bool) -> Tensor:
    cos = (n_a * n_b).sum(-1)
    return 1.0 - (cos if oriented else cos.abs())


def _check_mesh(vertices: Tensor, faces: Optional[Tensor], need_faces: bool,
                name: str) -> Optional[Tensor]:
    if vertices.ndim != 3 or vertices.shape[-1] != 3:
        raise ValueError(f'{name}: vertices must be (B, V, 3), got {tuple(vertices.shape)}')
    if faces is None:
        if need_faces:
            raise ValueError(f'{name}: this configuration needs the mesh faces (F, 3)')
        return None
    faces = torch.as_tensor(faces, device=vertices.device).long()
    if faces.ndim != 2 or faces.shape[1] != 3:
        raise ValueError(f'{name}: faces must be (F, 3), got {tuple(faces.shape)}')
    if faces.numel() and (faces.min() < 0 or faces.max() >= vertices.shape[1]):
        raise ValueError(f'{name}: face vertex index out of range [0, {vertices.shape[1]})')
    return faces


def _model_valid(vertices: Tensor, vertex_mask: Optional[Tensor]) -> Optional[Tensor]:
    if vertex_mask is None:
        return None
    m = torch.as_tensor(vertex_mask, device=vertices.device).to(torch.bool)
    return m.expand(vertices.shape[:2]) if m.ndim == 1 else m


# -------------------------------------------------------------------- losses
class _SurfaceLossBase(BaseLoss):
    """Shared options of the surface losses (see :class:`ChamferLoss`)."""

    def __init__(self, distance: str = 'squared', robust: Optional[str] = None,
                 sigma: float = 1.0, point_reduction: str = 'mean',
                 normal_weight: float = 0.0, oriented_normals: bool = False,
                 chunk_size: Optional[int] = None,
                 max_chunk_elements: int = DEFAULT_CHUNK_ELEMENTS,
                 backend: str = 'auto', workers: int = 1,
                 loss_weight: float = 1.0, reduction: str = 'none') -> None:
        super().__init__(loss_weight, reduction)
        resolve_backend(backend)  # an unknown backend, or 'kdtree' without scipy, fails here
        check_choice('distance', distance, DISTANCE_KINDS)
        if robust is not None:
            check_choice('robust', robust, tuple(ROBUST_FUNCTIONS))
        check_choice('point_reduction', point_reduction, ('mean', 'sum'))
        if not sigma > 0:
            raise ValueError(f'sigma must be > 0, got {sigma}')
        if normal_weight < 0:
            raise ValueError(f'normal_weight must be >= 0, got {normal_weight}')
        self.distance = distance
        self.robust = robust
        self.sigma = float(sigma)
        self.point_reduction = point_reduction
        self.normal_weight = float(normal_weight)
        self.oriented_normals = bool(oriented_normals)
        self.chunk_size = chunk_size
        self.max_chunk_elements = int(max_chunk_elements)
        self.backend = backend
        self.workers = int(workers)

    def _dist(self, dist_sq: Tensor) -> Tensor:
        return _apply_distance(dist_sq, self.distance, self.robust, self.sigma)

    def extra_repr(self) -> str:
        return (f'{super().extra_repr()}, distance={self.distance!r}, robust={self.robust!r}, '
                f'normal_weight={self.normal_weight}')


@LOSSES.register_module()
class ChamferLoss(_SurfaceLossBase):
    """Chamfer distance between model vertices and scan points, both directions, chunked.

    ``scan_to_model``: every valid scan point to its nearest model vertex;
    ``model_to_scan``: every (unmasked) model vertex to its nearest valid scan point.
    Per direction the per-point distances ``d`` (``'squared'`` or ``'l2'``, optionally
    through the Geman-McClure penalty of the squared distance, scale ``sigma`` in model
    units) are averaged (``point_reduction='mean'``) or summed over the valid points;
    the loss is ``w_s2m * D_s2m + w_m2s * D_m2s`` per sample. With ``normal_weight > 0``
    and scan normals, ``normal_weight * mean(1 - |n_scan . n_model|)`` over the matched
    pairs is added (``oriented_normals``: ``1 - n_scan . n_model``); model normals are
    area-weighted vertex normals, which need ``faces``.

    Nearest neighbours are searched without autograd; only the matched pairs are
    differentiated. ``backend='kdtree'`` (the default on CPU) builds a k-d tree per
    sample and direction, O((P + V) log(P + V)); ``'torch'`` (the default on CUDA)
    searches by brute force in chunks of at most ``max_chunk_elements`` distances (or
    ``chunk_size`` query points). Memory: O(chunk x max(P, V)) (torch) or O(P + V)
    (k-d tree) for the search and O(B (P + V)) for autograd.

    Args:
        direction: ``'both'``, ``'scan_to_model'`` or ``'model_to_scan'``.
        scan_to_model_weight, model_to_scan_weight: weights of the two directions.
        distance, robust, sigma, point_reduction, normal_weight: see above.
        oriented_normals, chunk_size, max_chunk_elements: see above.
        backend: ``'auto'``, ``'torch'`` or ``'kdtree'`` (see :func:`knn_indices`).
        workers: k-d tree query threads (scipy's ``workers``; ``-1``: all cores).
        loss_weight, reduction: see :class:`~.utils.BaseLoss`.
    """

    def __init__(self, direction: str = 'both', scan_to_model_weight: float = 1.0,
                 model_to_scan_weight: float = 1.0, **kwargs) -> None:
        super().__init__(**kwargs)
        check_choice('direction', direction, CHAMFER_DIRECTIONS)
        self.direction = direction
        self.scan_to_model_weight = float(scan_to_model_weight)
        self.model_to_scan_weight = float(model_to_scan_weight)

    def forward(self, vertices: Tensor, points: Union[Tensor, Sequence[Tensor]],
                faces: Optional[Tensor] = None, points_mask: Optional[Tensor] = None,
                points_normals: Optional[Union[Tensor, Sequence[Tensor]]] = None,
                vertex_mask: Optional[Tensor] = None) -> Tensor:
        """Per-sample chamfer loss.

        Args:
            vertices: (B, V, 3) model vertices.
            points: (B, P, 3) padded scan points (NaN = missing) or a list of (P_i, 3).
            faces: (F, 3) mesh faces (only for the normal term).
            points_mask: (B, P) valid scan points.
            points_normals: (B, P, 3) scan normals (or a list like ``points``).
            vertex_mask: (V,) or (B, V) model vertices that take part (e.g. the part
                of the body a partial scan covers).

        Returns:
            (B,) loss (or reduced, see ``reduction``).
        """
        use_normals = self.normal_weight > 0 and points_normals is not None
        faces = _check_mesh(vertices, faces, use_normals, 'ChamferLoss')
        points, valid = as_padded_points(points, points_mask, 'ChamferLoss points')
        if points.shape[0] != vertices.shape[0]:
            raise ValueError(f'ChamferLoss: {points.shape[0]} scans for {vertices.shape[0]} '
                             'meshes')
        points = points.to(vertices.dtype)
        v_valid = _model_valid(vertices, vertex_mask)
        loss = vertices.new_zeros(vertices.shape[0])
        normals_v = normals_p = None
        if use_normals:
            normals_v = vertex_normals(vertices, faces)
            normals_p, _ = as_padded_points(points_normals, None, 'ChamferLoss normals')
            normals_p = torch.nn.functional.normalize(normals_p.to(vertices.dtype), dim=-1)
        if self.direction in ('both', 'scan_to_model'):
            d2, idx = nearest_neighbor_sq(points, vertices, v_valid, self.chunk_size,
                                          self.max_chunk_elements, self.backend,
                                          self.workers)
            ok = valid if v_valid is None else valid & v_valid.any(1, keepdim=True)
            term = _reduce_points(self._dist(d2), ok, self.point_reduction)
            if use_normals:
                nt = _normal_term(normals_p, gather_points(normals_v, idx),
                                  self.oriented_normals)
                term = term + self.normal_weight * _reduce_points(nt, ok, 'mean')
            loss = loss + self.scan_to_model_weight * term
        if self.direction in ('both', 'model_to_scan'):
            d2, idx = nearest_neighbor_sq(vertices, points, valid, self.chunk_size,
                                          self.max_chunk_elements, self.backend,
                                          self.workers)
            ok = valid.any(1, keepdim=True).expand(d2.shape)
            if v_valid is not None:
                ok = ok & v_valid
            term = _reduce_points(self._dist(d2), ok, self.point_reduction)
            if use_normals:
                nt = _normal_term(normals_v, gather_points(normals_p, idx),
                                  self.oriented_normals)
                term = term + self.normal_weight * _reduce_points(nt, ok, 'mean')
            loss = loss + self.model_to_scan_weight * term
        return self.finish(loss)


@LOSSES.register_module()
class PointToSurfaceLoss(_SurfaceLossBase):
    """Distance of scan points to the model's surface (triangles, not vertices).

    For every valid scan point, the closest point on the closest triangle (exactly
    tested among the ``k`` triangles with the smallest distance lower bound, or among
    all triangles with ``candidates='all'``); the per-point distances are reduced as in
    :class:`ChamferLoss`. ``model_to_scan_weight > 0`` adds the model-vertex-to-nearest-
    scan-point direction (a scan is a point cloud, so that direction is point-based).
    With scan normals and ``normal_weight > 0``, ``mean(1 - |n_scan . n_face|)`` over the
    matched (point, triangle) pairs is added.

    Args:
        candidates: ``'bound'`` (default) or ``'all'``.
        k: candidate triangles per point (``'bound'``).
        model_to_scan_weight: weight of the reverse, point-based direction (0: off).
        distance, robust, sigma, point_reduction, normal_weight: see :class:`ChamferLoss`.
        oriented_normals, chunk_size, max_chunk_elements, backend, workers: likewise.
        loss_weight, reduction: likewise.
    """

    def __init__(self, candidates: str = 'bound', k: int = 32,
                 model_to_scan_weight: float = 0.0, **kwargs) -> None:
        super().__init__(**kwargs)
        check_choice('candidates', candidates, SURFACE_CANDIDATES)
        if k < 1:
            raise ValueError(f'k must be >= 1, got {k}')
        self.candidates = candidates
        self.k = int(k)
        self.model_to_scan_weight = float(model_to_scan_weight)

    def forward(self, vertices: Tensor, points: Union[Tensor, Sequence[Tensor]],
                faces: Optional[Tensor] = None, points_mask: Optional[Tensor] = None,
                points_normals: Optional[Union[Tensor, Sequence[Tensor]]] = None,
                vertex_mask: Optional[Tensor] = None) -> Tensor:
        """Per-sample loss; arguments as :meth:`ChamferLoss.forward` (``faces`` required).

        ``vertex_mask`` applies to the reverse direction only.
        """
        faces = _check_mesh(vertices, faces, True, 'PointToSurfaceLoss')
        points, valid = as_padded_points(points, points_mask, 'PointToSurfaceLoss points')
        if points.shape[0] != vertices.shape[0]:
            raise ValueError(f'PointToSurfaceLoss: {points.shape[0]} scans for '
                             f'{vertices.shape[0]} meshes')
        points = points.to(vertices.dtype)
        d2, face_idx = point_to_surface_sq(points, vertices, faces, self.candidates, self.k,
                                           self.chunk_size, self.max_chunk_elements, self.backend,
                                           self.workers)
        loss = _reduce_points(self._dist(d2), valid, self.point_reduction)
        if self.normal_weight > 0 and points_normals is not None:
            normals_p, _ = as_padded_points(points_normals, None, 'PointToSurfaceLoss normals')
            normals_p = torch.nn.functional.normalize(normals_p.to(vertices.dtype), dim=-1)
            fn = gather_points(face_normals(vertices, faces), face_idx)
            nt = _normal_term(normals_p, fn, self.oriented_normals)
            loss = loss + self.normal_weight * _reduce_points(nt, valid, 'mean')
        if self.model_to_scan_weight > 0:
            v_valid = _model_valid(vertices, vertex_mask)
            d2m, _ = nearest_neighbor_sq(vertices, points, valid, self.chunk_size,
                                         self.max_chunk_elements, self.backend,
                                         self.workers)
            ok = valid.any(1, keepdim=True).expand(d2m.shape)
            if v_valid is not None:
                ok = ok & v_valid
            loss = loss + self.model_to_scan_weight * _reduce_points(
                self._dist(d2m), ok, self.point_reduction)
        return self.finish(loss)


@LOSSES.register_module()
class NormalConsistencyLoss(_SurfaceLossBase):
    """Only the normal term: ``mean(1 - |n_scan . n_model|)`` over matched pairs.

    Scan points are matched to the closest triangle (``match='surface'``, face normals)
    or the nearest vertex (``match='vertex'``, area-weighted vertex normals).

    Args:
        match: ``'surface'`` or ``'vertex'``.
        candidates, k: see :class:`PointToSurfaceLoss`.
        oriented_normals: use ``1 - n_scan . n_model`` (normals point the same way).
        chunk_size, max_chunk_elements, backend, workers, loss_weight, reduction: see
            :class:`ChamferLoss`.
    """

    def __init__(self, match: str = 'surface', candidates: str = 'bound', k: int = 32,
                 oriented_normals: bool = False, chunk_size: Optional[int] = None,
                 max_chunk_elements: int = DEFAULT_CHUNK_ELEMENTS,
                 backend: str = 'auto', workers: int = 1,
                 loss_weight: float = 1.0, reduction: str = 'none') -> None:
        super().__init__(oriented_normals=oriented_normals, chunk_size=chunk_size,
                         max_chunk_elements=max_chunk_elements, backend=backend,
                         workers=workers, loss_weight=loss_weight, reduction=reduction)
        check_choice('match', match, ('surface', 'vertex'))
        check_choice('candidates', candidates, SURFACE_CANDIDATES)
        self.match = match
        self.candidates = candidates
        self.k = int(k)

    def forward(self, vertices: Tensor, points: Union[Tensor, Sequence[Tensor]],
                faces: Optional[Tensor] = None, points_mask: Optional[Tensor] = None,
                points_normals: Optional[Union[Tensor, Sequence[Tensor]]] = None,
                vertex_mask: Optional[Tensor] = None) -> Tensor:
        """Per-sample loss; ``faces`` and ``points_normals`` are required."""
        faces = _check_mesh(vertices, faces, True, 'NormalConsistencyLoss')
        if points_normals is None:
            raise ValueError('NormalConsistencyLoss: points_normals (B, P, 3) are required')
        points, valid = as_padded_points(points, points_mask, 'NormalConsistencyLoss points')
        normals_p, n_valid = as_padded_points(points_normals, None,
                                              'NormalConsistencyLoss normals')
        valid = valid & n_valid
        points = points.to(vertices.dtype)
        normals_p = torch.nn.functional.normalize(normals_p.to(vertices.dtype), dim=-1)
        if self.match == 'surface':
            face_idx = closest_faces(points.detach(), vertices.detach(), faces,
                                     self.candidates, self.k, self.chunk_size,
                                     self.max_chunk_elements, self.backend,
                                     self.workers)
            model_n = gather_points(face_normals(vertices, faces), face_idx)
        else:
            idx = knn_indices(points, vertices.detach(), 1, _model_valid(vertices, vertex_mask),
                              self.chunk_size, self.max_chunk_elements, self.backend,
                              self.workers)[..., 0]
            model_n = gather_points(vertex_normals(vertices, faces), idx)
        nt = _normal_term(normals_p, model_n, self.oriented_normals)
        return self.finish(_reduce_points(nt, valid, 'mean'))


__all__ = ['ChamferLoss', 'PointToSurfaceLoss', 'NormalConsistencyLoss', 'knn_indices',
           'nearest_neighbor_sq', 'point_to_surface_sq', 'closest_faces', 'resolve_backend',
           'closest_point_on_triangle', 'face_normals', 'vertex_normals',
           'gather_points', 'pad_point_clouds', 'as_padded_points',
           'DISTANCE_KINDS', 'CHAMFER_DIRECTIONS', 'SURFACE_CANDIDATES',
           'DEFAULT_CHUNK_ELEMENTS', 'NN_BACKENDS']
