"""Per-frame mesh files (``.obj`` / ``.ply``) of a fitted sequence, through trimesh.

Meshes are written with ``process=False`` so trimesh neither merges nor reorders
vertices: vertex ``i`` of every file is vertex ``i`` of the body model, and files of a
sequence share one topology (load them with ``trimesh.load(path, process=False,
maintain_order=True)``). PLY is binary float32 (exact for float32 vertices); OBJ is text
with 8 decimals. Each file is written under a temporary name and renamed.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, List, Optional, Sequence, Union

import numpy as np
from ..utils.atomic import atomic_path

__all__ = ['export_meshes', 'MESH_FORMATS']

PathLike = Union[str, os.PathLike]
MESH_FORMATS = ('obj', 'ply')
_SAFE_NAME = re.compile(r'^[\w.\-]+$')


def _to_numpy(x: Any) -> np.ndarray:
    if hasattr(x, 'detach'):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def export_meshes(out_dir: PathLike, vertices: Any, faces: Any,
                  names: Optional[Sequence[str]] = None, fmt: str = 'obj',
                  vertex_colours: Any = None, progress: bool = False) -> List[Path]:
    """Write one mesh file per frame.

    Args:
        out_dir: folder for the files (created).
        vertices: (T, V, 3) vertices per frame (model units), numpy or torch.
        faces: (F, 3) vertex indices, shared by every frame.
        names: T file names without extension (letters, digits, ``_ . -``); default
            ``frame_00000`` ... in order.
        fmt: ``'obj'`` or ``'ply'``.
        vertex_colours: optional (V, 3) or (T, V, 3) uint8 RGB colours per vertex.
        progress: show a tqdm progress bar.

    Returns:
        The T paths written, in frame order.

    Raises:
        ValueError: a shape, a face index, a name or the format is wrong.
    """
    import trimesh
    from tqdm import tqdm

    if fmt not in MESH_FORMATS:
        raise ValueError(f'export_meshes: fmt must be one of {MESH_FORMATS}, got {fmt!r}')
    verts = _to_numpy(vertices)
    faces = _to_numpy(faces).astype(np.int64)
    if verts.ndim == 2:
        raise ValueError(f'export_meshes: vertices must be (T, V, 3) (one frame: '
                         f'vertices[None]), got {verts.shape}')
    if verts.ndim != 3 or verts.shape[2] != 3:
        raise ValueError(f'export_meshes: vertices must be (T, V, 3), got {verts.shape}')
    T, V = verts.shape[:2]
    if faces.ndim != 2 or faces.shape[1] != 3:
        raise ValueError(f'export_meshes: faces must be (F, 3), got {faces.shape}')
    if faces.size and (faces.min() < 0 or faces.max() >= V):
        raise ValueError(f'export_meshes: faces index vertices 0..{V - 1}, got '
                         f'{faces.min()}..{faces.max()}')
    if not np.isfinite(verts).all():
        bad = np.nonzero(~np.isfinite(verts).all(axis=(1, 2)))[0]
        raise ValueError(f'export_meshes: non-finite vertices in frames {bad[:10].tolist()}')
    if names is None:
        names = [f'frame_{i:05d}' for i in range(T)]
    names = [str(n) for n in names]
    if len(names) != T:
        raise ValueError(f'export_meshes: {len(names)} names for {T} frames')
    bad_names = [n for n in names if not _SAFE_NAME.match(n) or n in ('.', '..')]
    if bad_names:
        raise ValueError(f'export_meshes: names may hold letters, digits, "_", "." and "-" '
                         f'only, got {bad_names[:5]}')
    if len(set(names)) != T:
        raise ValueError('export_meshes: names are not unique')
    colours = None if vertex_colours is None else _to_numpy(vertex_colours)
    if colours is not None:
        if colours.shape not in ((V, 3), (T, V, 3)):
            raise ValueError(f'export_meshes: vertex_colours must be ({V}, 3) or ({T}, {V}, 3)'
                             f', got {colours.shape}')
        colours = np.broadcast_to(colours, (T, V, 3)).astype(np.uint8)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in tqdm(range(T), desc=f'meshes ({fmt})', disable=not progress):
        mesh = trimesh.Trimesh(vertices=verts[i], faces=faces, process=False,
                               vertex_colors=None if colours is None else colours[i])
        path = out_dir / f'{names[i]}.{fmt}'
        with atomic_path(path) as tmp:
            mesh.export(tmp, file_type=fmt)
        paths.append(path)
    return paths
