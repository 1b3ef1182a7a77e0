"""Reading scans (meshes or point clouds) with trimesh, and batching them.

A scan is a set of 3D points with optional normals and faces, in the units of its file.
Meshes (``.obj``, ``.ply``, ``.stl``, ``.off``, ``.glb``) and point clouds (``.ply``,
``.xyz``-like text through trimesh) are loaded without trimesh's processing, so vertex
order is kept (registrations in correspondence stay in correspondence).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from smilfit.utils.atomic import atomic_open

PathLike = Union[str, 'os.PathLike[str]']

#: Extensions :func:`load_scan` accepts (anything trimesh reads works; these are tested).
SCAN_EXTENSIONS = ('.obj', '.ply', '.stl', '.off', '.glb', '.gltf')


class ScanError(ValueError):
    """A scan file cannot be used; the message names the file."""


@dataclass
class Scan:
    """One scan.

    Attributes:
        points: (P, 3) float64 points (mesh vertices or cloud points).
        normals: (P, 3) unit normals or ``None``.
        faces: (F, 3) int64 triangles (meshes) or ``None`` (point clouds).
        path: where it came from (``None`` when made in memory).
    """

    points: np.ndarray
    normals: Optional[np.ndarray] = None
    faces: Optional[np.ndarray] = None
    path: Optional[str] = None

    @property
    def num_points(self) -> int:
        return int(self.points.shape[0])

    def to_trimesh(self):
        """A ``trimesh.Trimesh`` (with faces) or ``trimesh.PointCloud``."""
        import trimesh
        if self.faces is not None:
            return trimesh.Trimesh(self.points, self.faces, process=False)
        return trimesh.PointCloud(self.points)


def load_scan(path: PathLike, num_points: Optional[int] = None, sample: str = 'surface',
              seed: int = 0) -> Scan:
    """Load a mesh or point cloud.

    Args:
        path: the scan file.
        num_points: resample to this many points: ``sample='surface'`` draws
            area-weighted points on a mesh's triangles (with face normals),
            ``'vertices'`` a random subset of the points. ``None`` keeps the points.
        sample: ``'surface'`` or ``'vertices'``.
        seed: random seed of the resampling.

    Raises:
        FileNotFoundError: no such file.
        ScanError: trimesh cannot read it, or it holds no points.
    """
    import trimesh
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f'scan file not found: {path}')
    if sample not in ('surface', 'vertices'):
        raise ValueError(f"sample must be 'surface' or 'vertices', got {sample!r}")
    try:
        geom = trimesh.load(str(path), process=False)
    except Exception as err:  # trimesh raises many types for unreadable files
        raise ScanError(f'{path}: trimesh cannot read it ({type(err).__name__}: {err})') from err
    if isinstance(geom, trimesh.Scene):
        meshes = [g for g in geom.dump() if isinstance(g, trimesh.Trimesh)]
        if not meshes:
            raise ScanError(f'{path}: the scene holds no triangle mesh')
        geom = trimesh.util.concatenate(meshes)
    points = np.asarray(getattr(geom, 'vertices', np.zeros((0, 3))), dtype=np.float64)
    if points.ndim != 2 or points.shape[0] == 0:
        raise ScanError(f'{path}: no points')
    if not np.all(np.isfinite(points)):
        raise ScanError(f'{path}: {int((~np.isfinite(points).all(1)).sum())} point(s) are '
                        'NaN/inf')
    faces = None
    normals = None
    if isinstance(geom, trimesh.Trimesh) and len(geom.faces):
        faces = np.asarray(geom.faces, dtype=np.int64)
        normals = np.asarray(geom.vertex_normals, dtype=np.float64)
    scan = Scan(points=points, normals=normals, faces=faces, path=str(path))
    if num_points is None:
        return scan
    rng = np.random.default_rng(seed)
    if sample == 'surface' and faces is not None:
        pts, fn = sample_mesh_surface(points, faces, num_points, rng)
        return Scan(points=pts, normals=fn, faces=None, path=str(path))
    idx = rng.choice(points.shape[0], size=num_points, replace=num_points > points.shape[0])
    return Scan(points=points[idx], normals=None if normals is None else normals[idx],
                faces=None, path=str(path))


def sample_mesh_surface(vertices: np.ndarray, faces: np.ndarray, num_points: int,
                        rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
    """Area-weighted uniform points on a triangle mesh, with their face normals."""
    tri = vertices[faces]
    cross = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    area = 0.5 * np.linalg.norm(cross, axis=1)
    if not area.sum() > 0:
        raise ScanError('the mesh has zero surface area; cannot sample its surface')
    f = rng.choice(len(faces), size=num_points, p=area / area.sum())
    u, v = rng.random(num_points), rng.random(num_points)
    flip = u + v > 1  # reflect into the triangle: uniform barycentrics
    u, v = np.where(flip, 1 - u, u), np.where(flip, 1 - v, v)
    t = tri[f]
    pts = t[:, 0] + u[:, None] * (t[:, 1] - t[:, 0]) + v[:, None] * (t[:, 2] - t[:, 0])
    n = cross[f] / np.maximum(np.linalg.norm(cross[f], axis=1, keepdims=True), 1e-300)
    return pts, n


def load_scans(paths: Sequence[PathLike], num_points: Optional[int] = None,
               sample: str = 'surface', seed: int = 0, progress: bool = False) -> List[Scan]:
    """:func:`load_scan` for many files (seed ``seed + i`` for the i-th)."""
    from tqdm import tqdm
    return [load_scan(p, num_points, sample, seed + i)
            for i, p in enumerate(tqdm(list(paths), desc='loading scans',
                                       disable=not progress))]


def batch_scans(scans: Sequence[Scan], dtype: torch.dtype = torch.float32,
                device: Optional[torch.device] = None
                ) -> Tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
    """Scans with different point counts -> padded tensors.

    Returns:
        ``(points (B, P, 3), mask (B, P) bool, normals (B, P, 3) or None)``; padding is
        zero and masked out; normals only when every scan has them.
    """
    if not scans:
        raise ValueError('batch_scans: no scans')
    B, P = len(scans), max(s.num_points for s in scans)
    points = torch.zeros(B, P, 3, dtype=dtype, device=device)
    mask = torch.zeros(B, P, dtype=torch.bool, device=device)
    have_normals = all(s.normals is not None for s in scans)
    normals = torch.zeros(B, P, 3, dtype=dtype, device=device) if have_normals else None
    for i, s in enumerate(scans):
        n = s.num_points
        points[i, :n] = torch.as_tensor(s.points, dtype=dtype)
        mask[i, :n] = True
        if have_normals:
            normals[i, :n] = torch.as_tensor(s.normals, dtype=dtype)
    return points, mask, normals


def save_scan(scan: Scan, path: PathLike) -> None:
    """Write a scan with trimesh (format from the extension), atomically.

    Point clouds need a format that stores points without faces (``.ply``).
    """
    path = Path(path)
    ext = path.suffix.lower()
    if scan.faces is None and ext != '.ply':
        raise ScanError(f'{path}: a point cloud can only be written as .ply')
    if not path.parent.is_dir():
        raise FileNotFoundError(f'output directory does not exist: {path.parent}')
    payload = scan.to_trimesh().export(file_type=ext[1:])
    if isinstance(payload, str):
        payload = payload.encode('utf-8')
    with atomic_open(path, 'wb') as f:
        f.write(payload)


__all__ = ['Scan', 'ScanError', 'load_scan', 'load_scans', 'batch_scans', 'save_scan',
           'sample_mesh_surface', 'SCAN_EXTENSIONS']
