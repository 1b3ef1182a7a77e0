"""Cameras of single-image regressors: field-of-view perspective and weak perspective.

Both return pixels in smilfit's (OpenCV's) convention: ``u`` right, ``v`` down, origin at
the centre of the top-left pixel. See ``docs/cameras.md`` for the derivations.

**FoVPerspectiveCameras** use pytorch3d's ``FoVPerspectiveCameras`` convention exactly
(``degrees=True``, ``aspect_ratio=1``):

- world -> view with row vectors: ``X_view = X_world @ R + T``;
- view axes: +X left, +Y up, +Z forward (into the scene, the camera looks along +Z);
- NDC: ``x_ndc = X_view / (Z_view tan(fov / 2))``, ``y_ndc = Y_view / (Z_view tan(fov/2))``
  (+X left, +Y up); ``fov`` is the full field of view, in degrees, across the **shorter**
  image side, which is the vertical one for square and landscape images;
- pixels, for an image of ``W x H`` pixels and ``S = min(W, H)``:
  ``u = W / 2 - 0.5 - (S / 2) x_ndc``, ``v = H / 2 - 0.5 - (S / 2) y_ndc``. (pytorch3d's
  screen coordinates put the origin at the top-left pixel's corner; the ``- 0.5`` moves it
  to the pixel's centre.)

The equivalent pinhole camera has ``fx = fy = S / (2 tan(fov / 2))``, ``cx = (W - 1) / 2``,
``cy = (H - 1) / 2``, no distortion, ``R_cv = F R^T`` and ``t_cv = F T`` with
``F = diag(-1, -1, 1)``.

**WeakPerspectiveCameras** ``(s, tx, ty)`` as predicted by HMR/SPIN-style regressors, for
points already expressed in camera axes (x right, y down, z forward, as OpenCV):

- normalised image coordinates ``x_n = s (X + tx)``, ``y_n = s (Y + ty)``; ``(-1, -1)`` is
  the top-left *corner* of the image and ``(1, 1)`` the bottom-right corner (x across the
  width, y across the height: the ``align_corners=False`` convention of ``grid_sample``);
- pixels ``u = (x_n + 1) W / 2 - 0.5``, ``v = (y_n + 1) H / 2 - 0.5``. Code that writes
  ``(x_n + 1) * res / 2`` counts pixels from the top-left corner (subtract 0.5);
- depth is ignored. For non-square images the map is anisotropic (``W / 2`` vs ``H / 2``
  pixels per unit), as when keypoints are normalised per image axis.

:func:`weak_perspective_to_pinhole` gives the usual perspective stand-in with a long focal
length ``f``: ``t = (tx, ty, 2 f / (s W))``, ``fx = f``, ``fy = f H / W``, centred
principal point. It reproduces the weak perspective exactly for points at ``Z = 0`` and
approaches it as ``f`` grows.
"""
from __future__ import annotations

from typing import Iterable, Optional, Union

import torch
from torch import nn

from smilfit.body_models.rotations import axis_angle_to_matrix, matrix_to_axis_angle
from smilfit.registry import CAMERAS

from .pinhole import (PinholeCameras, TensorLike, _num_cameras, as_float_tensor,
                      expand_cameras, infer_device, infer_dtype)

_FLIP_XY = (-1.0, -1.0, 1.0)


def _learnable_set(learnable: Iterable[str], allowed: Iterable[str], owner: str) -> set:
    names = {learnable} if isinstance(learnable, str) else set(learnable)
    unknown = names - set(allowed)
    if unknown:
        raise ValueError(f'unknown learnable {owner} parameter(s) {sorted(unknown)}; '
                         f'choose from {sorted(allowed)}')
    return names


def _image_size_tensor(image_size: TensorLike, C: int, device) -> torch.Tensor:
    size = torch.as_tensor(image_size if not torch.is_tensor(image_size)
                           else image_size.detach().cpu()).round().long().to(device)
    size = expand_cameras(size, C, (2,), 'image_size')
    if bool((size <= 0).any()):
        raise ValueError(f'image_size must be positive (W, H), got {size.tolist()}')
    return size


# ------------------------------------------------------------------ FoV perspective
@CAMERAS.register_module()
class FoVPerspectiveCameras(nn.Module):
    """C perspective cameras in pytorch3d's FoV parameterisation (see the module docs).

    Args:
        fov: (C,) or scalar full field of view in degrees across the shorter image side.
        R: (C, 3, 3) or (3, 3) rotation, row-vector convention ``X_view = X @ R + T``
            (default identity).
        T: (C, 3) or (3,) translation (default 0).
        image_size: (C, 2) or (2,) ``(W, H)`` in pixels. Note: **(W, H)**, as everywhere in
            smilfit; pytorch3d's ``image_size`` is (H, W).
        learnable: any of ``'fov', 'R', 'T'`` (R as an axis-angle parameter ``rvec``).
        dtype, device: as for :class:`PinholeCameras`.
    """

    def __init__(self, fov: TensorLike = 60.0, R: Optional[TensorLike] = None,
                 T: Optional[TensorLike] = None, image_size: TensorLike = (256, 256), *,
                 learnable: Iterable[str] = (), dtype: Optional[torch.dtype] = None,
                 device: Optional[Union[str, torch.device]] = None) -> None:
        super().__init__()
        dtype = dtype or infer_dtype(fov, R, T)
        device = infer_device(fov, R, T, default=device)
        C = _num_cameras(fov=(fov, ()), R=(R, (3, 3)), T=(T, (3,)),
                         image_size=(image_size, (2,)))
        learn = _learnable_set(learnable, ('fov', 'R', 'T'), 'FoV camera')

        def tensor(value, tail, name):
            return expand_cameras(as_float_tensor(value, dtype, device), C, tail, name)

        fov_t = tensor(fov, (), 'fov')
        if bool(((fov_t.detach() <= 0) | (fov_t.detach() >= 180)).any()):
            raise ValueError(f'fov must be in (0, 180) degrees, got {fov_t.tolist()}')
        R_t = tensor(R, (3, 3), 'R') if R is not None else \
            torch.eye(3, dtype=dtype, device=device).expand(C, 3, 3).clone()
        T_t = tensor(T, (3,), 'T') if T is not None else \
            torch.zeros(C, 3, dtype=dtype, device=device)
        if 'fov' in learn:
            self.fov = nn.Parameter(fov_t.detach().clone())
        else:
            self.register_buffer('fov', fov_t.clone())
        if 'R' in learn:
            self.rvec = nn.Parameter(matrix_to_axis_angle(R_t).detach().clone())
            self.register_buffer('rotation_matrix', None)
        else:
            self.register_parameter('rvec', None)
            self.register_buffer('rotation_matrix', R_t.clone())
        if 'T' in learn:
            self.T = nn.Parameter(T_t.detach().clone())
        else:
            self.register_buffer('T', T_t.clone())
        self.register_buffer('image_size', _image_size_tensor(image_size, C, device))

    @property
    def num_cameras(self) -> int:
        return self.T.shape[0]

    def __len__(self) -> int:
        return self.num_cameras

    @property
    def R(self) -> torch.Tensor:
        """(C, 3, 3) rotation in the row-vector convention ``X_view = X @ R + T``."""
        return axis_angle_to_matrix(self.rvec) if self.rvec is not None else \
            self.rotation_matrix

    def focal_length_pixels(self) -> torch.Tensor:
        """(C,) focal length in pixels, ``min(W, H) / (2 tan(fov / 2))``."""
        short = self.image_size.min(-1).values.to(self.fov)
        return short / (2.0 * torch.tan(torch.deg2rad(self.fov) / 2.0))

    def world_to_view(self, points: torch.Tensor, per_camera: bool = False) -> torch.Tensor:
        """(..., N, 3) world points -> (..., C, N, 3) pytorch3d view coordinates.

        With ``per_camera=True`` the points are (..., C, N, 3), one set per camera.
        """
        pts = points if per_camera else points[..., None, :, :]
        return torch.matmul(pts, self.R.to(points)) + self.T.to(points)[:, None, :]

    def depth(self, points: torch.Tensor, per_camera: bool = False) -> torch.Tensor:
        """(..., C, N) depth ``Z_view`` (positive in front of the camera)."""
        return self.world_to_view(points, per_camera)[..., 2]

    def project_ndc(self, points: torch.Tensor, per_camera: bool = False) -> torch.Tensor:
        """(..., C, N, 2) pytorch3d NDC ``(x, y)``: +x left, +y up, ±1 at the shorter side."""
        view = self.world_to_view(points, per_camera)
        tan_half = torch.tan(torch.deg2rad(self.fov.to(points)) / 2.0)[:, None, None]
        return view[..., :2] / (view[..., 2:] * tan_half)

    def project(self, points: torch.Tensor, per_camera: bool = False) -> torch.Tensor:
        """(..., C, N, 2) pixels (OpenCV convention) of (..., N, 3) world points.

        ``per_camera=True`` takes (..., C, N, 3) points (one set per camera, e.g. one
        camera per sample of a regressor's batch).
        """
        ndc = self.project_ndc(points, per_camera)
        size = self.image_size.to(points)
        half_short = size.min(-1, keepdim=True).values / 2.0  # (C, 1)
        offset = size / 2.0 - 0.5  # (C, 2)
        return offset[:, None, :] - half_short[:, None, :] * ndc

    def to_pinhole(self, learnable: Iterable[str] = ()) -> PinholeCameras:
        """The equivalent :class:`PinholeCameras` (see :func:`fov_to_pinhole`)."""
        return fov_to_pinhole(self.fov, self.R, self.T, self.image_size, learnable=learnable)

    def extra_repr(self) -> str:
        return f'num_cameras={self.num_cameras}'


def fov_to_pinhole(fov: TensorLike, R: TensorLike, T: TensorLike, image_size: TensorLike,
                   learnable: Iterable[str] = ()) -> PinholeCameras:
    """pytorch3d-style FoV cameras -> equivalent OpenCV :class:`PinholeCameras`.

    Args:
        fov: (C,) degrees across the shorter image side.
        R: (C, 3, 3) row-vector rotation (``X_view = X @ R + T``, +X left, +Y up).
        T: (C, 3) translation.
        image_size: (C, 2) or (2,) ``(W, H)``.
        learnable: passed to :class:`PinholeCameras`.

    Returns:
        Cameras with ``fx = fy = min(W, H) / (2 tan(fov / 2))``, ``cx = (W - 1) / 2``,
        ``cy = (H - 1) / 2``, ``R_cv = F R^T``, ``t_cv = F T``, ``F = diag(-1, -1, 1)``,
        no distortion. Differentiable in ``fov, R, T`` (unless made learnable).
    """
    dtype = infer_dtype(fov, R, T)
    R = as_float_tensor(R, dtype)
    device = R.device
    C = _num_cameras(fov=(fov, ()), R=(R, (3, 3)), T=(T, (3,)), image_size=(image_size, (2,)))
    fov = expand_cameras(as_float_tensor(fov, dtype, device), C, (), 'fov')
    R = expand_cameras(R, C, (3, 3), 'R')
    T = expand_cameras(as_float_tensor(T, dtype, device), C, (3,), 'T')
    size = _image_size_tensor(image_size, C, device)
    flip = R.new_tensor(_FLIP_XY)
    f = size.min(-1).values.to(dtype) / (2.0 * torch.tan(torch.deg2rad(fov) / 2.0))
    sizef = size.to(dtype)
    return PinholeCameras(fx=f, fy=f, cx=(sizef[:, 0] - 1.0) / 2.0, cy=(sizef[:, 1] - 1.0) / 2.0,
                          skew=torch.zeros_like(f), R=flip[:, None] * R.transpose(-1, -2),
                          t=flip * T, image_size=size, learnable=learnable, dtype=dtype)


def pinhole_to_fov(cameras: PinholeCameras, atol: float = 1e-6,
                   learnable: Iterable[str] = ()) -> FoVPerspectiveCameras:
    """OpenCV pinhole cameras -> pytorch3d-style :class:`FoVPerspectiveCameras`.

    Defined only for cameras that have a FoV form: known ``image_size``, ``fx == fy``,
    zero skew, principal point at the image centre ``((W - 1) / 2, (H - 1) / 2)`` and no
    distortion (each within ``atol``, pixels or coefficient units).

    Raises:
        ValueError: naming the camera index and the condition that fails.
    """
    if cameras.image_size is None:
        raise ValueError('pinhole_to_fov needs cameras with a known image_size')
    m = cameras.to_matrices()
    size = m.image_size.to(m.K)
    fx, fy = m.K[:, 0, 0], m.K[:, 1, 1]
    checks = [
        ('fx != fy', (fx - fy).abs() > atol),
        ('non-zero skew', m.K[:, 0, 1].abs() > atol),
        ('principal point not at ((W - 1) / 2, (H - 1) / 2)',
         ((m.K[:, :2, 2] - (size - 1.0) / 2.0).abs() > atol).any(-1)),
        ('non-zero distortion', (m.dist.abs() > atol).any(-1)),
    ]
    for what, bad in checks:
        if bool(bad.any()):
            idx = torch.nonzero(bad).flatten().tolist()
            raise ValueError(f'camera(s) {idx} have no FoV form: {what}')
    fov = torch.rad2deg(2.0 * torch.atan(size.min(-1).values / (2.0 * fx)))
    flip = m.R.new_tensor(_FLIP_XY)
    R = m.R.transpose(-1, -2) * flip  # R_p3d = R_cv^T F (scales columns)
    T = flip * m.t
    return FoVPerspectiveCameras(fov=fov, R=R, T=T, image_size=m.image_size,
                                 learnable=learnable, dtype=m.K.dtype)


# ----------------------------------------------------------------- weak perspective
@CAMERAS.register_module()
class WeakPerspectiveCameras(nn.Module):
    """C weak-perspective (scaled orthographic) cameras ``(s, tx, ty)``.

    ``x_n = s (X + tx)``, ``y_n = s (Y + ty)`` with (-1, -1) / (1, 1) the top-left /
    bottom-right image corners; points in camera axes (x right, y down). See the module
    docs for the pixel mapping.

    Args:
        s: (C,) or scalar scale (normalised units per world unit).
        tx, ty: (C,) or scalar translations (world units, added before scaling).
        image_size: (C, 2) or (2,) ``(W, H)`` pixels.
        learnable: any of ``'s', 'tx', 'ty'``.
    """

    def __init__(self, s: TensorLike = 1.0, tx: TensorLike = 0.0, ty: TensorLike = 0.0,
                 image_size: TensorLike = (224, 224), *, learnable: Iterable[str] = (),
                 dtype: Optional[torch.dtype] = None,
                 device: Optional[Union[str, torch.device]] = None) -> None:
        super().__init__()
        dtype = dtype or infer_dtype(s, tx, ty)
        device = infer_device(s, tx, ty, default=device)
        C = _num_cameras(s=(s, ()), tx=(tx, ()), ty=(ty, ()), image_size=(image_size, (2,)))
        learn = _learnable_set(learnable, ('s', 'tx', 'ty'), 'weak-perspective camera')
        for name, value in (('s', s), ('tx', tx), ('ty', ty)):
            t = expand_cameras(as_float_tensor(value, dtype, device), C, (), name)
            if name in learn:
                setattr(self, name, nn.Parameter(t.detach().clone()))
            else:
                self.register_buffer(name, t.clone())
        self.register_buffer('image_size', _image_size_tensor(image_size, C, device))

    @classmethod
    def from_vector(cls, cam: torch.Tensor, image_size: TensorLike,
                    **kwargs) -> 'WeakPerspectiveCameras':
        """From a regressor's (C, 3) output ``[s, tx, ty]`` (graph kept unless learnable)."""
        return cls(s=cam[..., 0], tx=cam[..., 1], ty=cam[..., 2], image_size=image_size,
                   **kwargs)

    @property
    def num_cameras(self) -> int:
        return self.s.shape[0]

    def __len__(self) -> int:
        return self.num_cameras

    def project_normalized(self, points: torch.Tensor, per_camera: bool = False) -> torch.Tensor:
        """(..., C, N, 2) normalised coordinates ``s (X[:2] + (tx, ty))``, [-1, 1] on the image."""
        pts = points if per_camera else points[..., None, :, :]
        s = self.s.to(points)[:, None, None]
        shift = torch.stack([self.tx, self.ty], dim=-1).to(points)[:, None, :]
        return s * (pts[..., :2] + shift)

    def project(self, points: torch.Tensor, per_camera: bool = False) -> torch.Tensor:
        """(..., C, N, 2) pixels: ``((x_n, y_n) + 1) (W, H) / 2 - 0.5``."""
        xy = self.project_normalized(points, per_camera)
        size = self.image_size.to(points)[:, None, :]
        return (xy + 1.0) * size / 2.0 - 0.5

    def to_pinhole(self, focal_length: float = 5000.0,
                   learnable: Iterable[str] = ()) -> PinholeCameras:
        """Perspective stand-in, see :func:`weak_perspective_to_pinhole`."""
        return weak_perspective_to_pinhole(self.s, self.tx, self.ty, self.image_size,
                                           focal_length, learnable=learnable)

    def extra_repr(self) -> str:
        return f'num_cameras={self.num_cameras}'


def weak_perspective_translation(s: TensorLike, tx: TensorLike, ty: TensorLike,
                                 image_width: TensorLike,
                                 focal_length: TensorLike = 5000.0) -> torch.Tensor:
    """(..., 3) camera translation ``(tx, ty, 2 f / (s W))`` standing in for ``(s, tx, ty)``.

    The usual "translation from weak perspective" of HMR/SPIN-style code (with
    ``img_res = W``), for a pinhole camera with ``R = I`` and ``fx = f``.
    """
    s = torch.as_tensor(s)
    dtype = infer_dtype(s, tx, ty)
    s = s.to(dtype)
    tx, ty = as_float_tensor(tx, dtype, s.device), as_float_tensor(ty, dtype, s.device)
    width = as_float_tensor(image_width, dtype, s.device)
    tz = 2.0 * as_float_tensor(focal_length, dtype, s.device) / (s * width)
    return torch.stack(torch.broadcast_tensors(tx, ty, tz), dim=-1)


def weak_perspective_to_pinhole(s: TensorLike, tx: TensorLike, ty: TensorLike,
                                image_size: TensorLike, focal_length: float = 5000.0,
                                learnable: Iterable[str] = ()) -> PinholeCameras:
    """Weak perspective ``(s, tx, ty)`` -> a long-focal-length :class:`PinholeCameras`.

    ``R = I``, ``t = (tx, ty, 2 f / (s W))``, ``fx = f``, ``fy = f H / W`` (``= f`` for
    square images), ``cx = (W - 1) / 2``, ``cy = (H - 1) / 2``, no distortion. Projections
    agree exactly for points with ``Z = 0`` and to ``O(Z / t_z)`` relative otherwise.

    Args:
        s, tx, ty: (C,) or scalars.
        image_size: (C, 2) or (2,) ``(W, H)`` pixels.
        focal_length: ``f`` in pixels (5000 as in SPIN; larger is closer to orthographic).
        learnable: passed to :class:`PinholeCameras`.
    """
    dtype = infer_dtype(s, tx, ty)
    s = as_float_tensor(s, dtype)
    device = s.device
    C = _num_cameras(s=(s, ()), tx=(tx, ()), ty=(ty, ()), image_size=(image_size, (2,)))
    s = expand_cameras(s, C, (), 's')
    tx = expand_cameras(as_float_tensor(tx, dtype, device), C, (), 'tx')
    ty = expand_cameras(as_float_tensor(ty, dtype, device), C, (), 'ty')
    size = _image_size_tensor(image_size, C, device)
    W, H = size.to(dtype).unbind(-1)
    f = torch.full_like(W, float(focal_length))
    t = weak_perspective_translation(s, tx, ty, W, focal_length)
    return PinholeCameras(fx=f, fy=f * H / W, cx=(W - 1.0) / 2.0, cy=(H - 1.0) / 2.0,
                          skew=torch.zeros_like(f), t=t, image_size=size, learnable=learnable,
                          dtype=dtype)


__all__ = ['FoVPerspectiveCameras', 'WeakPerspectiveCameras', 'fov_to_pinhole',
           'pinhole_to_fov', 'weak_perspective_to_pinhole', 'weak_perspective_translation']
