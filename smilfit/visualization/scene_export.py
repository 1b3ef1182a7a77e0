"""A :class:`~smilfit.visualization.scene.Scene` as a glTF binary (``.glb``, trimesh).

One node per exported frame, ``frame_<label>``, holding for every animal present its mesh
(``animal_<a>``), the fitted keypoints as small spheres coloured by error
(``fitted_keypoints``), the observed ones as octahedra (same colours)
(``observed_keypoints``), and the scan points (``scan_points``) of registrations. The
cameras of the first exported frame are ``cameras/<name>``: a wire frustum and a textured
quad with the view's image. Opens in Blender, three.js editors, macOS Quick Look...; a
``.glb`` has no timeline, so several frames overlap: export one with ``--frames N``.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import List, Optional, Sequence, Union

import numpy as np

from ..utils.atomic import atomic_open
from .scene import Scene, camera_frustum_pose, error_point_colours

__all__ = ['export_glb', 'scene_to_trimesh', 'frame_node_name']

PathLike = Union[str, os.PathLike]


def frame_node_name(label: str) -> str:
    """``'frame 12'`` -> ``'frame_12'``: a node name of a timeline label."""
    return re.sub(r'[^\w.\-]+', '_', str(label)).strip('_') or 'frame'


def _markers(points: np.ndarray, colours: np.ndarray, radius: float, subdivisions: int):
    """One mesh of a sphere (``subdivisions`` >= 1) or octahedron (0) at each point,
    with per-vertex colours; None when no point is finite."""
    import trimesh
    ok = np.isfinite(points).all(-1)
    if not ok.any():
        return None
    if subdivisions > 0:
        unit = trimesh.creation.icosphere(subdivisions=subdivisions, radius=radius)
    else:   # an octahedron: tells observed from fitted keypoints at a glance
        unit = trimesh.Trimesh(vertices=np.array([[1, 0, 0], [-1, 0, 0], [0, 1, 0],
                                                  [0, -1, 0], [0, 0, 1], [0, 0, -1]],
                                                 float) * radius,
                               faces=np.array([[0, 2, 4], [2, 1, 4], [1, 3, 4], [3, 0, 4],
                                               [2, 0, 5], [1, 2, 5], [3, 1, 5], [0, 3, 5]]),
                               process=False)
    pts, col = points[ok].astype(np.float64), colours[ok]
    n, v = len(pts), len(unit.vertices)
    verts = (unit.vertices[None] + pts[:, None]).reshape(-1, 3)
    faces = (unit.faces[None] + (np.arange(n) * v)[:, None, None]).reshape(-1, 3)
    rgba = np.concatenate([np.repeat(col, v, axis=0), np.full((n * v, 1), 255, np.uint8)],
                          axis=1)
    return trimesh.Trimesh(vertices=verts, faces=faces, vertex_colors=rgba, process=False)


def _frustum(K: np.ndarray, R: np.ndarray, t: np.ndarray, size: np.ndarray, depth: float,
             image: Optional[np.ndarray]):
    """A camera's wire frustum (Path3D) and its image quad (textured Trimesh or None)."""
    import trimesh
    rot, centre = camera_frustum_pose(R, t)
    w, h = float(size[0]), float(size[1])
    corners_px = np.array([[0, 0], [w, 0], [w, h], [0, h]], float)
    rays = np.linalg.solve(K, np.concatenate([corners_px, np.ones((4, 1))], 1).T).T
    corners = centre + (rays * depth / rays[:, 2:3]) @ rot.T           # (4, 3) world
    lines = [np.stack([centre, c]) for c in corners]
    lines += [np.stack([corners[i], corners[(i + 1) % 4]]) for i in range(4)]
    wire = trimesh.load_path(np.stack(lines))
    quad = None
    if image is not None:
        from PIL import Image
        uv = np.array([[0, 1], [1, 1], [1, 0], [0, 0]], float)    # image top = v 1
        material = trimesh.visual.material.SimpleMaterial(
            image=Image.fromarray(np.ascontiguousarray(image[..., :3])))
        quad = trimesh.Trimesh(vertices=corners, faces=[[0, 2, 1], [0, 3, 2]],
                               visual=trimesh.visual.TextureVisuals(uv=uv, material=material),
                               process=False)
    return wire, quad


def scene_to_trimesh(scene: Scene, frames: Optional[Sequence[int]] = None,
                     error_scale: Optional[float] = None, images: bool = True):
    """A ``trimesh.Scene`` of the given timeline positions (default all); see the module
    docstring for the node layout. ``error_scale``: error at the red end of the colours
    (default: the 95th percentile of the scene's errors)."""
    import trimesh
    frames = list(range(scene.num_frames)) if frames is None else [int(f) for f in frames]
    if error_scale is None:
        errs = [] if scene.errors is None else [scene.errors.ravel()]
        errs += [e.ravel() for e in (scene.point_errors or [])]
        values = np.concatenate(errs) if errs else np.zeros(0)
        values = values[np.isfinite(values)]
        error_scale = float(max(np.percentile(values, 95), 1e-6)) if len(values) else 1.0
    out = trimesh.Scene()
    radius = 0.006 * scene.scale()
    for f in frames:
        root = frame_node_name(scene.frame_labels[f])
        if f'{root}' in out.graph.nodes:
            root = f'{root}_{f}'
        out.graph.update(frame_to=root, frame_from=out.graph.base_frame)

        def add(geometry, name: str) -> None:
            if geometry is not None:
                out.add_geometry(geometry, node_name=f'{root}/{name}',
                                 geom_name=f'{root}/{name}', parent_node_name=root)

        if scene.vertices is not None and scene.faces is not None:
            for a in range(scene.num_animals):
                verts = scene.vertices[f, a]
                if np.isfinite(verts).all():
                    colour = np.array([70, 140, 230, 255], np.uint8)
                    add(trimesh.Trimesh(vertices=verts.astype(np.float64), faces=scene.faces,
                                        face_colors=np.tile(colour, (len(scene.faces), 1)),
                                        process=False), f'animal_{a}')
        errors = None if scene.errors is None else scene.errors[f].reshape(-1)
        if scene.fitted is not None:
            pts = scene.fitted[f].reshape(-1, 3)
            add(_markers(pts, error_point_colours(errors, error_scale, len(pts)), radius, 1),
                'fitted_keypoints')
        if scene.observed is not None:
            pts = scene.observed[f].reshape(-1, 3)
            add(_markers(pts, error_point_colours(errors, error_scale, len(pts),
                                                  (30, 30, 30)), radius * 1.2, 0),
                'observed_keypoints')
        if scene.points is not None and len(scene.points[f]):
            pts = scene.points[f]
            add(trimesh.PointCloud(pts, colors=error_point_colours(
                scene.point_errors[f], error_scale, len(pts))), 'scan_points')
    if scene.cameras is not None and frames:
        f = frames[0]
        cams = scene.cameras
        pictures = scene.images(f) if images else None
        out.graph.update(frame_to='cameras', frame_from=out.graph.base_frame)
        for c, name in enumerate(cams.names):
            if not cams.valid[f, c] or not np.isfinite(cams.R[f, c]).all():
                continue
            image = None if pictures is None or c >= len(pictures) else pictures[c]
            wire, quad = _frustum(cams.K[f, c], cams.R[f, c], cams.t[f, c],
                                  cams.image_size[f, c], 0.15 * scene.scale(), image)
            node = f'cameras/{frame_node_name(name)}'
            out.add_geometry(wire, node_name=f'{node}/frustum', geom_name=f'{node}/frustum',
                             parent_node_name='cameras')
            if quad is not None:
                out.add_geometry(quad, node_name=f'{node}/image', geom_name=f'{node}/image',
                                 parent_node_name='cameras')
    return out


def export_glb(scene: Scene, path: PathLike, frames: Optional[Sequence[int]] = None,
               error_scale: Optional[float] = None, images: bool = True) -> Path:
    """Write :func:`scene_to_trimesh` of ``frames`` (default all) to ``path`` (``.glb``),
    atomically."""
    path = Path(path)
    data = scene_to_trimesh(scene, frames, error_scale, images).export(file_type='glb')
    with atomic_open(path, 'wb') as f:
        f.write(data)
    return path
