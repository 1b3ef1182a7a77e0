"""Triangle-mesh normals, batched (torch) and for one mesh (numpy).

Shapes: B batch, V vertices, F faces (int64 vertex indices, counter-clockwise winding seen
from outside gives outward normals).
"""
from __future__ import annotations

import numpy as np
import torch

Tensor = torch.Tensor

__all__ = ['face_normals', 'vertex_normals', 'vertex_normals_np']


# --------------------------------------------------------------- triangles
def face_normals(vertices: Tensor, faces: Tensor, normalize: bool = True) -> Tensor:
    """(B, V, 3) vertices, (F, 3) faces -> (B, F, 3) normals (right-hand rule).

    Unnormalised normals have length twice the triangle area.
    """
    tri = vertices[:, faces]  # (B, F, 3, 3)
    n = torch.cross(tri[:, :, 1] - tri[:, :, 0], tri[:, :, 2] - tri[:, :, 0], dim=-1)
    return torch.nn.functional.normalize(n, dim=-1, eps=1e-12) if normalize else n


def vertex_normals(vertices: Tensor, faces: Tensor) -> Tensor:
    """Area-weighted unit vertex normals of a (B, V, 3) or (V, 3) mesh with (F, 3) faces;
    the result has the shape of ``vertices``."""
    v = vertices if vertices.ndim == 3 else vertices[None]
    n = face_normals(v, faces, normalize=False)
    out = torch.zeros_like(v)
    for corner in range(3):  # three scatter-adds, not a loop over faces
        out = out.index_add(1, faces[:, corner], n)
    out = torch.nn.functional.normalize(out, dim=-1, eps=1e-12)
    return out if vertices.ndim == 3 else out[0]


def vertex_normals_np(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """(V, 3) unit area-weighted vertex normals of one mesh, in float64 numpy."""
    v = torch.from_numpy(np.asarray(vertices, dtype=np.float64))
    f = torch.from_numpy(np.asarray(faces, dtype=np.int64))
    return vertex_normals(v, f).numpy()
