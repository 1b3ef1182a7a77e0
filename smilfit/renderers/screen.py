"""Vertices to screen space for the renderers, through any of smilfit's camera models.

A renderer receives ``cameras`` in one of two forms:

- the **dict** of the silhouette handler's contract: ``K`` (B|1, C, 3, 3), ``R``
  (B|1, C, 3, 3), ``t`` (B|1, C, 3), ``dist`` (B|1, C, 5) or None, ``height`` and
  ``width`` (ints). (Tensors without the leading B|1, i.e. (C, ...), are read as one rig
  shared by the batch.) Projection is :func:`smilfit.cameras.project_points`, distortion
  included, and depth :func:`smilfit.cameras.camera_depth`;
- a **camera module**: :class:`~smilfit.cameras.PinholeCameras`,
  :class:`~smilfit.cameras.CameraGroup`, :class:`~smilfit.cameras.FoVPerspectiveCameras`
  or :class:`~smilfit.cameras.WeakPerspectiveCameras` (C cameras shared by the batch).
  Its own ``project`` is used, so every model is rendered exactly as it projects points
  (weak perspective stays orthographic: no long-focal-length stand-in) and its
  ``depth`` (where it has one) culls faces behind the camera. The image size comes from
  the module (``image_size`` / ``image_sizes``, the same for every camera) unless given.

Lens distortion is applied to the **vertices**; triangle edges stay straight lines in
the distorted image. The error is the bending of an edge over its length, about
``|d^2 distortion / dx^2| * edge_length^2 / 8`` pixels, negligible for meshes whose
faces span a few pixels (a 2 px edge near the corner of a ``k1 = -0.3`` camera bends by
well under 0.01 px).
"""
from __future__ import annotations

from typing import Any, Mapping, NamedTuple, Optional, Sequence, Tuple, Union

import torch

from ..cameras import camera_depth, project_points

__all__ = ['ScreenVertices', 'screen_vertices', 'visible_faces', 'non_finite_views',
           'camera_image_size']


class ScreenVertices(NamedTuple):
    """Projected vertices of B meshes in C cameras."""

    points: torch.Tensor  #: (B, C, V, 2) pixels (u, v), OpenCV convention.
    depth: Optional[torch.Tensor]  #: (B, C, V) camera depth (world units), None = no culling.
    height: int  #: image height, pixels.
    width: int  #: image width, pixels.


def camera_image_size(cameras: Any, image_size: Optional[Sequence[int]] = None
                      ) -> Tuple[int, int]:
    """``(height, width)`` of a camera module's images (all cameras alike), or from
    ``image_size`` ``(W, H)`` when given."""
    if image_size is not None:
        W, H = (int(v) for v in image_size)
    else:
        size = getattr(cameras, 'image_size', None)
        if size is None:
            size = getattr(cameras, 'image_sizes', None)
        if size is None or bool((size <= 0).any()):
            raise ValueError(f'{type(cameras).__name__} has no (complete) image size: give '
                             "the renderer image_size=(W, H) or cameras['height'/'width']")
        size = size.reshape(-1, 2)
        if bool((size != size[:1]).any()):
            raise ValueError('the cameras have different image sizes '
                             f'{size.tolist()}; render them separately')
        W, H = (int(v) for v in size[0].tolist())
    if H <= 0 or W <= 0:
        raise ValueError(f'image size must be positive, got (W, H) = ({W}, {H})')
    return H, W


def _camera_tensor(cameras: Mapping[str, Any], key: str, event: Tuple[int, ...],
                   like: torch.Tensor, batch: int) -> Optional[torch.Tensor]:
    value = cameras.get(key)
    if value is None:
        if key == 'dist':
            return None
        raise KeyError(f"cameras has no {key!r}: expected a dict with 'K', 'R', 't', "
                       f"optional 'dist', 'height', 'width' (got keys {sorted(cameras)})")
    value = torch.as_tensor(value).to(device=like.device, dtype=like.dtype)
    if value.ndim == len(event) + 1:  # (C, ...): one rig for the whole batch
        value = value.unsqueeze(0)
    if value.ndim != len(event) + 2 or tuple(value.shape[2:]) != event or \
            value.shape[0] not in (1, batch):
        raise ValueError(f"cameras[{key!r}] must be (B or 1, C, {', '.join(map(str, event))}) "
                         f'with B = {batch}, got {tuple(value.shape)}')
    return value


def screen_vertices(vertices: torch.Tensor, cameras: Union[Mapping[str, Any], torch.nn.Module],
                    image_size: Optional[Sequence[int]] = None) -> ScreenVertices:
    """Project (B, V, 3) world vertices into every camera.

    Args:
        vertices: (B, V, 3) world coordinates.
        cameras: a camera dict or module (see the module docs).
        image_size: ``(W, H)`` overriding the cameras' image size (modules), or filling in
            missing ``height``/``width`` (dicts).

    Returns:
        :class:`ScreenVertices` with ``points`` (B, C, V, 2) and ``depth`` (B, C, V).
    """
    if vertices.ndim != 3 or vertices.shape[-1] != 3:
        raise ValueError(f'vertices must be (B, V, 3), got {tuple(vertices.shape)}')
    B = vertices.shape[0]
    if isinstance(cameras, Mapping):
        K = _camera_tensor(cameras, 'K', (3, 3), vertices, B)
        R = _camera_tensor(cameras, 'R', (3, 3), vertices, B)
        t = _camera_tensor(cameras, 't', (3,), vertices, B)
        dist = _camera_tensor(cameras, 'dist', (cameras['dist'].shape[-1],)
                              if cameras.get('dist') is not None else (5,), vertices, B)
        C = K.shape[1]
        for name, value in (('R', R), ('t', t), ('dist', dist)):
            if value is not None and value.shape[1] != C:
                raise ValueError(f"cameras[{name!r}] has {value.shape[1]} cameras, K has {C}")
        if 'height' in cameras and 'width' in cameras:
            H, W = int(cameras['height']), int(cameras['width'])
        elif image_size is not None:
            W, H = (int(v) for v in image_size)
        else:
            raise KeyError("cameras needs 'height' and 'width' (ints, pixels)")
        if H <= 0 or W <= 0:
            raise ValueError(f'image size must be positive, got height={H}, width={W}')
        pts = vertices[:, None]  # (B, 1, V, 3) against (B|1, C, ...)
        points = project_points(pts, K, R, t, dist)
        depth = camera_depth(pts, R, t)
        return ScreenVertices(points.expand(B, C, -1, -1), depth.expand(B, C, -1), H, W)
    if not hasattr(cameras, 'project'):
        raise TypeError('cameras must be a dict (K, R, t, dist, height, width) or a camera '
                        f'module with project(); got {type(cameras).__name__}')
    H, W = camera_image_size(cameras, image_size)
    points = cameras.project(vertices)  # (B, C, V, 2)
    depth = cameras.depth(vertices) if hasattr(cameras, 'depth') else None
    return ScreenVertices(points, depth, H, W)


def _in_front(screen: ScreenVertices, near: float) -> Optional[torch.Tensor]:
    return None if screen.depth is None else screen.depth > near


def visible_faces(screen: ScreenVertices, faces: torch.Tensor, near: float) -> torch.Tensor:
    """(B, C, F) bool: faces whose three vertices are in front of ``near`` and finite.

    Faces are not clipped: a face crossing the near plane is dropped whole (keep
    cameras outside the mesh).
    """
    ok = torch.isfinite(screen.points).all(-1)  # (B, C, V)
    front = _in_front(screen, near)
    if front is not None:
        ok = ok & front
    return ok[..., faces].all(-1)


def non_finite_views(screen: ScreenVertices, near: float) -> torch.Tensor:
    """(B, C) bool: views with a vertex whose projection is NaN/inf although it is not
    behind the near plane (NaN vertices or cameras); their images must not be trusted."""
    bad = ~torch.isfinite(screen.points).all(-1)  # (B, C, V)
    if screen.depth is not None:
        bad = bad & ~(screen.depth <= near)  # NaN depth stays bad
    return bad.any(-1)
