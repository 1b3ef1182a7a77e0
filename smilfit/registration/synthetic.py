"""Synthetic scans from a body model: known shape and pose, resampled surface, noise.

For round-trip tests of registration and model learning: posed meshes are drawn from
a model with random shape (from its shape prior) and pose, their surfaces resampled
area-uniformly into point clouds (so scan points are *not* the model's vertices),
with Gaussian noise along every axis and optional dropped regions.

Shapes: B scans, P points per scan, V vertices, F faces.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional

import torch

from ..ops.normals import face_normals

Tensor = torch.Tensor


def sample_surface_points(vertices: Tensor, faces: Tensor, num_points: int,
                          generator: Optional[torch.Generator] = None
                          ) -> Dict[str, Tensor]:
    """Area-weighted uniform points on a batch of meshes sharing their faces.

    Args:
        vertices: (B, V, 3); faces: (F, 3) long.
        num_points: P points per mesh.

    Returns:
        dict with ``points`` (B, P, 3), ``normals`` (B, P, 3) unit face normals,
        ``face_ids`` (B, P) and ``barycentrics`` (B, P, 3).
    """
    B = vertices.shape[0]
    n = face_normals(vertices, faces, normalize=False)  # length 2 * area
    area = n.norm(dim=-1)
    if bool((area.sum(1) <= 0).any()):
        raise ValueError('a mesh has zero surface area; cannot sample it')
    f = torch.multinomial(area, num_points, replacement=True, generator=generator)
    u = torch.rand(B, num_points, generator=generator, dtype=vertices.dtype)
    v = torch.rand(B, num_points, generator=generator, dtype=vertices.dtype)
    flip = u + v > 1
    u, v = torch.where(flip, 1 - u, u), torch.where(flip, 1 - v, v)
    bary = torch.stack([1 - u - v, u, v], dim=-1).to(vertices.device)
    f = f.to(vertices.device)
    b = torch.arange(B, device=vertices.device)[:, None]
    tri = vertices[b[..., None], faces[f]]  # (B, P, 3, 3)
    points = (bary[..., None] * tri).sum(2)
    normals = torch.nn.functional.normalize(n[b, f], dim=-1)
    return dict(points=points, normals=normals, face_ids=f, barycentrics=bary)


@dataclass
class SyntheticScans:
    """Scans with ground truth.

    Attributes:
        points: (B, P, 3) noisy surface points (NaN where dropped, see ``mask``).
        normals: (B, P, 3) true surface normals at the (noise-free) points.
        mask: (B, P) valid points.
        vertices: (B, V, 3) the true posed meshes.
        params: the model parameters that made them (``global_orient``,
            ``body_pose``, ``betas``, ``transl``).
    """

    points: Tensor
    normals: Tensor
    mask: Tensor
    vertices: Tensor
    params: Dict[str, Tensor]


def generate_synthetic_scans(model, num_scans: int, num_points: int = 5000,
                             noise_std: float = 0.0, pose_std: float = 0.2,
                             global_orient_std: float = 0.5, betas_std: float = 1.0,
                             transl_std: float = 0.0, dropout: float = 0.0,
                             seed: int = 0) -> SyntheticScans:
    """Random posed bodies of ``model`` as point clouds with noise.

    Args:
        model: a :class:`~smilfit.body_models.SMILModel`.
        num_scans, num_points: B and P.
        noise_std: Gaussian noise per coordinate, model units.
        pose_std, global_orient_std: std of axis-angle body / root rotations (rad).
        betas_std: betas drawn from the model's shape prior (``shape_cov``, scaled by
            this) or ``N(0, betas_std^2)`` without one.
        transl_std: std of the translation.
        dropout: fraction of each scan removed as one contiguous region (the points
            nearest a random surface point), like an occluded view; padded with NaN.
        seed: random seed.
    """
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f'dropout must be in [0, 1), got {dropout}')
    g = torch.Generator().manual_seed(seed)
    dt = model.dtype
    B, J, K = num_scans, model.num_joints, model.num_betas
    z = torch.randn(B, K, generator=g, dtype=torch.float64)
    cov = getattr(model.data, 'shape_cov', None)
    if cov is not None and K:
        L = torch.linalg.cholesky(torch.as_tensor(cov[:K, :K], dtype=torch.float64))
        z = z @ L.T
    params = dict(
        global_orient=global_orient_std * torch.randn(B, 3, generator=g, dtype=dt),
        body_pose=pose_std * torch.randn(B, J - 1, 3, generator=g, dtype=dt),
        betas=(betas_std * z).to(dt),
        transl=transl_std * torch.randn(B, 3, generator=g, dtype=dt))
    params = {k: v.to(model.device) for k, v in params.items()}
    with torch.no_grad():
        verts = model(**params).vertices
        s = sample_surface_points(verts, model.faces, num_points, g)
    points = s['points'] + noise_std * torch.randn(s['points'].shape, generator=g,
                                                   dtype=dt).to(verts.device)
    mask = torch.ones(B, num_points, dtype=torch.bool, device=verts.device)
    if dropout > 0:
        drop = int(round(dropout * num_points))
        seed_pt = s['points'][:, torch.randint(num_points, (1,), generator=g).item()]
        d = (s['points'] - seed_pt[:, None]).norm(dim=-1)
        gone = d.topk(drop, dim=1, largest=False).indices
        mask.scatter_(1, gone, False)
        points = points.masked_fill(~mask[..., None], float('nan'))
    return SyntheticScans(points=points, normals=s['normals'], mask=mask, vertices=verts,
                          params=params)


__all__ = ['sample_surface_points', 'generate_synthetic_scans', 'SyntheticScans']
