"""A Lambert mesh renderer for looking at fits (overlays, videos), on smilfit's z-buffer.

The rasteriser itself lives in :mod:`smilfit.renderers.zbuffer` (shared with the synthetic
data generator); this module re-exports its names (``rasterize``, ``Rasterization``,
``distortion_fold_radius2``) and ``vertex_normals`` so that older imports keep working.
:func:`render_mesh` shades a rasterisation with a headlight, fast enough for video on one
CPU thread (a 6.5k-face mouse at 512 x 512 in a few tens of ms).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
from torch import Tensor

from smilfit.ops.normals import vertex_normals
from smilfit.renderers.zbuffer import (ArrayLike, Rasterization, as_detached_tensor,
                                       distortion_fold_radius2, rasterize)

__all__ = ['Rasterization', 'MeshRender', 'rasterize', 'render_mesh', 'vertex_normals',
           'distortion_fold_radius2']


@dataclass
class MeshRender:
    """What :func:`render_mesh` returns (numpy arrays, ready for images and videos).

    Attributes:
        image: (H, W, 3) uint8 RGB, the shaded mesh over the background colour.
        mask: (H, W) bool, pixels covered by the mesh.
        depth: (H, W) float64 camera depth of the visible surface, ``inf`` elsewhere.
    """

    image: np.ndarray
    mask: np.ndarray
    depth: np.ndarray


def _rgb01(colour: ArrayLike, name: str) -> Tensor:
    c = torch.as_tensor(np.asarray(colour, dtype=np.float64))
    if c.shape[-1] != 3:
        raise ValueError(f'{name} must be RGB (..., 3), got shape {tuple(c.shape)}')
    return c / 255.0 if float(c.max()) > 1.0 else c


def render_mesh(vertices: ArrayLike, faces: ArrayLike, K: ArrayLike, R: ArrayLike,
                t: ArrayLike, dist: Optional[ArrayLike] = None, *, height: int, width: int,
                colour: ArrayLike = (0.55, 0.7, 0.95),
                vertex_colours: Optional[ArrayLike] = None, smooth: bool = True,
                ambient: float = 0.25, background: ArrayLike = (0, 0, 0),
                near: float = 1e-6) -> MeshRender:
    """Render a mesh with Lambert shading from a headlight (a light at the camera centre).

    Brightness at a surface point is ``ambient + (1 - ambient) |n . l|`` with ``n`` the
    (smoothly interpolated or flat) unit normal and ``l`` the unit direction from the
    point to the camera centre: a surface facing the camera is the brightest, shading is
    two-sided (meshes of any winding look right).

    Args:
        vertices: (V, 3) world coordinates.
        faces: (F, 3) vertex indices.
        K, R, t, dist: one OpenCV camera (see :func:`~smilfit.renderers.zbuffer.rasterize`).
        height, width: image size in pixels.
        colour: RGB surface colour, in [0, 1] (or 0-255 when any value exceeds 1).
        vertex_colours: optional (V, 3) per-vertex RGB (same scale rules), interpolated
            over the faces; overrides ``colour``.
        smooth: interpolate vertex normals (True) or use flat face normals.
        ambient: fraction of the colour lit without the light, in [0, 1].
        background: RGB of the uncovered pixels (0-255).
        near: near clipping plane (see :func:`~smilfit.renderers.zbuffer.rasterize`).

    Returns:
        :class:`MeshRender` with (H, W, 3) uint8 ``image``, (H, W) bool ``mask`` and the
        depth map.
    """
    if not 0.0 <= ambient <= 1.0:
        raise ValueError(f'render_mesh: ambient must be in [0, 1], got {ambient}')
    device = vertices.device if isinstance(vertices, Tensor) else None
    v = as_detached_tensor(vertices, 'vertices', device=device)
    f = as_detached_tensor(faces, 'faces', dtype=torch.int64, device=device)
    raster = rasterize(v, f, K, R, t, dist, height=height, width=width, near=near)
    Rm = as_detached_tensor(R, 'R', device=device)
    tv = as_detached_tensor(t, 't', device=device).reshape(3)
    H, W = int(height), int(width)
    bg = np.broadcast_to(np.asarray(background, dtype=np.float64), (3,))
    image = np.empty((H, W, 3), dtype=np.uint8)
    image[:] = np.clip(np.rint(bg), 0, 255).astype(np.uint8)
    mask = raster.mask
    pix = torch.nonzero(mask.flatten()).flatten()
    if pix.numel():
        cam = v @ Rm.T + tv                                           # (V, 3)
        b = raster.bary.view(-1, 3).index_select(0, pix)              # (P, 3)
        corners = f.index_select(0, raster.face_index.view(-1).index_select(0, pix))

        def at_pixels(table: Tensor) -> Tensor:
            """(V, k) per-vertex values -> (P, k) interpolated at the covered pixels."""
            return sum(b[:, k:k + 1] * table.index_select(0, corners[:, k]) for k in range(3))

        point = at_pixels(cam)                                        # seen surface point
        if smooth:
            n = at_pixels(vertex_normals(cam, f))
        else:
            c0, c1, c2 = (cam.index_select(0, corners[:, k]) for k in range(3))
            n = torch.cross(c1 - c0, c2 - c0, dim=1)
        # |n . l| / (|n| |l|) with l = -point, the direction to the camera centre.
        lam = (n * point).sum(1).abs() / (n.norm(dim=1) * point.norm(dim=1)).clamp_min(1e-24)
        shade = ambient + (1.0 - ambient) * lam                       # (P,)
        if vertex_colours is not None:
            vc = _rgb01(vertex_colours, 'vertex_colours').to(v)
            if vc.shape != (v.shape[0], 3):
                raise ValueError(f'render_mesh: vertex_colours must be ({v.shape[0]}, 3), '
                                 f'got {tuple(vc.shape)}')
            rgb = at_pixels(vc)
        else:
            rgb = _rgb01(colour, 'colour').to(v).expand(pix.numel(), 3)
        values = (255.0 * rgb * shade[:, None]).round().clamp(0, 255).to(torch.uint8)
        image.reshape(-1, 3)[pix.cpu().numpy()] = values.cpu().numpy()
    return MeshRender(image=image, mask=mask.cpu().numpy(),
                      depth=raster.depth.cpu().numpy())
