"""Geometry operations shared by losses, registration, rendering and data tools:
nearest neighbours (:mod:`.knn`), mesh normals (:mod:`.normals`), closest points on
meshes (:mod:`.point_mesh`), similarity alignment (:mod:`.alignment`), small batched
decompositions with bounded GPU workspace (:mod:`.linalg`) and batched Cholesky
factorisations in place (:mod:`.cholesky`). Pure functions on tensors; nothing here is
registered."""
from .alignment import similarity_align
from .knn import (DEFAULT_CHUNK_ELEMENTS, NN_BACKENDS, as_padded_points, gather_points,
                  knn_indices, nearest_neighbor_sq, pad_point_clouds, resolve_backend)
from .linalg import batched_eigh, batched_svd
from .normals import face_normals, vertex_normals, vertex_normals_np
from .point_mesh import (SURFACE_CANDIDATES, closest_faces, closest_point_on_triangle,
                         point_to_surface_sq)

__all__ = ['DEFAULT_CHUNK_ELEMENTS', 'NN_BACKENDS', 'SURFACE_CANDIDATES', 'as_padded_points',
           'gather_points', 'knn_indices', 'nearest_neighbor_sq', 'pad_point_clouds',
           'resolve_backend', 'face_normals', 'vertex_normals', 'vertex_normals_np',
           'closest_faces', 'closest_point_on_triangle', 'point_to_surface_sq',
           'batched_eigh', 'batched_svd', 'similarity_align']
