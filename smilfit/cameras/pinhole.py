"""A batch of OpenCV-style pinhole cameras as an ``nn.Module`` (any parameter learnable).

Shapes: C cameras, N points. Conventions as in :mod:`smilfit.cameras.projection`:
``x_cam = R X + t``, pixels ``(u, v)`` with the origin at the centre of the top-left
pixel, distortion ``(k1, k2, p1, p2, k3)``.
"""
from __future__ import annotations

from typing import Iterable, NamedTuple, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from smilfit.body_models.rotations import axis_angle_to_matrix, matrix_to_axis_angle
from smilfit.registry import CAMERAS

from .projection import (camera_centers, camera_depth, project_points, projection_matrices,
                         undistort_pixels)

TensorLike = Union[torch.Tensor, Sequence, float]

#: Names accepted by ``learnable`` and what each one makes trainable.
LEARNABLE_GROUPS = {
    'fx': ('fx',), 'fy': ('fy',), 'cx': ('cx',), 'cy': ('cy',), 'skew': ('skew',),
    'focal': ('fx', 'fy'), 'principal_point': ('cx', 'cy'),
    'K': ('fx', 'fy', 'cx', 'cy', 'skew'), 'intrinsics': ('fx', 'fy', 'cx', 'cy', 'skew'),
    'R': ('R',), 't': ('t',), 'extrinsics': ('R', 't'), 'dist': ('dist',),
}


class CameraMatrices(NamedTuple):
    """Plain tensors of C cameras (see :meth:`PinholeCameras.to_matrices`)."""

    K: torch.Tensor  #: (C, 3, 3) intrinsics, pixels.
    R: torch.Tensor  #: (C, 3, 3) world -> camera rotations.
    t: torch.Tensor  #: (C, 3) world -> camera translations, world units.
    dist: torch.Tensor  #: (C, 5) (k1, k2, p1, p2, k3).
    image_size: Optional[torch.Tensor]  #: (C, 2) (W, H) pixels, or None.


def as_float_tensor(value: TensorLike, dtype: torch.dtype,
                    device: Optional[torch.device] = None) -> torch.Tensor:
    """Lists, numpy arrays, numbers or tensors -> a tensor of ``dtype`` (graph kept)."""
    if torch.is_tensor(value):
        return value.to(dtype=dtype, device=device)
    return torch.as_tensor(value, dtype=dtype, device=device)


def infer_dtype(*values, default: Optional[torch.dtype] = None) -> torch.dtype:
    """The dtype of the first floating tensor among ``values``, else ``default``."""
    for value in values:
        if torch.is_tensor(value) and value.is_floating_point():
            return value.dtype
    return default or torch.get_default_dtype()


def infer_device(*values, default=None) -> Optional[torch.device]:
    """The device of the first tensor among ``values``, else ``default``."""
    if default is not None:
        return torch.device(default)
    for value in values:
        if torch.is_tensor(value):
            return value.device
    return None


def expand_cameras(value: torch.Tensor, C: int, tail: Tuple[int, ...], name: str) -> torch.Tensor:
    """Broadcast ``value`` of shape ``tail`` or ``(C or 1,) + tail`` to ``(C,) + tail``."""
    if tuple(value.shape) == tail:
        value = value.unsqueeze(0)
    if value.dim() != len(tail) + 1 or tuple(value.shape[1:]) != tail:
        raise ValueError(f'{name} must have shape {tail} or {("C",) + tail}, '
                         f'got {tuple(value.shape)}')
    if value.shape[0] not in (1, C):
        raise ValueError(f'{name} has {value.shape[0]} cameras, expected {C}')
    return value.expand((C,) + tail).clone() if value.shape[0] != C else value


def _num_cameras(**shapes) -> int:
    """Number of cameras from the leading dimension of whichever batched input is given."""
    counts = set()
    for name, (value, tail) in shapes.items():
        if value is None:
            continue
        shape = tuple(torch.as_tensor(value).shape) if not torch.is_tensor(value) \
            else tuple(value.shape)
        if len(shape) == len(tail) + 1 and shape[0] != 1:
            counts.add(shape[0])
    if len(counts) > 1:
        raise ValueError(f'inconsistent numbers of cameras in the inputs: {sorted(counts)}')
    return counts.pop() if counts else 1


def _expand_learnable(learnable: Iterable[str]) -> set:
    if isinstance(learnable, str):
        learnable = (learnable,)
    names = set()
    for item in learnable:
        if item not in LEARNABLE_GROUPS:
            raise ValueError(f'unknown learnable camera parameter {item!r}; '
                             f'choose from {sorted(LEARNABLE_GROUPS)}')
        names.update(LEARNABLE_GROUPS[item])
    return names


@CAMERAS.register_module()
class PinholeCameras(nn.Module):
    """C pinhole cameras with OpenCV distortion: intrinsics, extrinsics, image sizes.

    Parameters are stored per camera as ``fx, fy, cx, cy, skew`` (C,) in pixels, the
    rotation (a (C, 3, 3) buffer, or a (C, 3) axis-angle ``rvec`` parameter when learnable,
    so it stays a rotation under gradient descent), ``t`` (C, 3) and ``dist`` (C, 5). Any
    of them becomes an ``nn.Parameter`` with ``learnable``; the others are buffers, so
    ``.to(device/dtype)`` and ``state_dict`` carry everything.

    Args:
        K: (C, 3, 3) or (3, 3) intrinsics ``[[fx, skew, cx], [0, fy, cy], [0, 0, 1]]``;
            or give ``fx, fy, cx, cy, skew`` separately (they override ``K``'s entries).
        R: (C, 3, 3) world -> camera rotations (default identity), or ``rvec`` (C, 3)
            axis-angle (Rodrigues vector) instead.
        t: (C, 3) world -> camera translations (default 0).
        dist: (C, 5) ``(k1, k2, p1, p2, k3)`` (OpenCV order; default 0).
        image_size: (C, 2) or (2,) ``(W, H)`` pixels, or None (unknown).
        fx, fy, cx, cy, skew: (C,) or scalars.
        learnable: names to make trainable: ``'fx', 'fy', 'cx', 'cy', 'skew', 'focal'``
            (fx, fy), ``'principal_point'``, ``'K'``/``'intrinsics'`` (all five),
            ``'R'``, ``'t'``, ``'extrinsics'`` (R, t), ``'dist'``.
        dtype: floating dtype (default: that of the first floating tensor given, else
            torch's default dtype).
        device: device of the tensors.

    Config example::

        CAMERAS.build(dict(type='PinholeCameras', fx=1000., fy=1000., cx=639.5, cy=511.5,
                           t=[[0., 0., 500.]], image_size=[1280, 1024], learnable=['t']))
    """

    def __init__(self, K: Optional[TensorLike] = None, R: Optional[TensorLike] = None,
                 t: Optional[TensorLike] = None, dist: Optional[TensorLike] = None,
                 image_size: Optional[TensorLike] = None, *,
                 fx: Optional[TensorLike] = None, fy: Optional[TensorLike] = None,
                 cx: Optional[TensorLike] = None, cy: Optional[TensorLike] = None,
                 skew: Optional[TensorLike] = None, rvec: Optional[TensorLike] = None,
                 learnable: Iterable[str] = (), dtype: Optional[torch.dtype] = None,
                 device: Optional[Union[str, torch.device]] = None) -> None:
        super().__init__()
        if R is not None and rvec is not None:
            raise ValueError('give either R or rvec, not both')
        dtype = infer_dtype(K, R, t, dist, fx, fy, cx, cy, skew, rvec, default=dtype) \
            if dtype is None else dtype
        device = infer_device(K, R, t, dist, fx, fy, cx, cy, skew, rvec, default=device)
        C = _num_cameras(K=(K, (3, 3)), R=(R, (3, 3)), rvec=(rvec, (3,)), t=(t, (3,)),
                         dist=(dist, (5,)), image_size=(image_size, (2,)), fx=(fx, ()),
                         fy=(fy, ()), cx=(cx, ()), cy=(cy, ()), skew=(skew, ()))

        def tensor(value, tail, name):
            return expand_cameras(as_float_tensor(value, dtype, device), C, tail, name)

        learn = _expand_learnable(learnable)
        if K is not None:
            Kt = tensor(K, (3, 3), 'K')
            last = Kt[:, 2].detach()
            if not torch.equal(last, last.new_tensor([0.0, 0.0, 1.0]).expand_as(last)) or \
                    bool((Kt[:, 1, 0] != 0).any()):
                raise ValueError('K must be [[fx, skew, cx], [0, fy, cy], [0, 0, 1]], got '
                                 f'{Kt.detach().cpu().tolist()}')
            defaults = dict(fx=Kt[:, 0, 0], fy=Kt[:, 1, 1], cx=Kt[:, 0, 2], cy=Kt[:, 1, 2],
                            skew=Kt[:, 0, 1])
        else:
            zero = torch.zeros(C, dtype=dtype, device=device)
            defaults = dict(fx=zero + 1.0, fy=zero + 1.0, cx=zero, cy=zero, skew=zero)
        given = dict(fx=fx, fy=fy, cx=cx, cy=cy, skew=skew)
        for name in ('fx', 'fy', 'cx', 'cy', 'skew'):
            value = defaults[name] if given[name] is None else tensor(given[name], (), name)
            self._store(name, value, name in learn)
        if bool((self.fx.detach() == 0).any() or (self.fy.detach() == 0).any()):
            raise ValueError('focal lengths fx, fy must be non-zero')

        if rvec is not None:
            rvec_t = tensor(rvec, (3,), 'rvec')
            R_t = axis_angle_to_matrix(rvec_t)
        else:
            R_t = tensor(R, (3, 3), 'R') if R is not None else \
                torch.eye(3, dtype=dtype, device=device).expand(C, 3, 3).clone()
            rvec_t = None
        if 'R' in learn:
            self.rvec = nn.Parameter(
                (rvec_t if rvec_t is not None else matrix_to_axis_angle(R_t)).detach().clone())
            self.register_buffer('rotation_matrix', None)
        else:
            self.register_parameter('rvec', None)
            self.register_buffer('rotation_matrix', R_t.clone())
        self._store('t', tensor(t, (3,), 't') if t is not None else
                    torch.zeros(C, 3, dtype=dtype, device=device), 't' in learn)
        self._store('dist', tensor(dist, (5,), 'dist') if dist is not None else
                    torch.zeros(C, 5, dtype=dtype, device=device), 'dist' in learn)
        if image_size is not None:
            size = torch.as_tensor(image_size if not torch.is_tensor(image_size)
                                   else image_size.detach().cpu()).round().long()
            size = expand_cameras(size.to(device), C, (2,), 'image_size')
            if bool((size <= 0).any()):
                raise ValueError(f'image_size must be positive (W, H), got {size.tolist()}')
            self.register_buffer('image_size', size)
        else:
            self.register_buffer('image_size', None)

    def _store(self, name: str, value: torch.Tensor, learnable: bool) -> None:
        # Buffers own their memory (no views of the caller's tensors, no expanded
        # strides) but keep the autograd graph: cameras built from a regressor's output
        # stay differentiable in it.
        if learnable:
            setattr(self, name, nn.Parameter(value.detach().clone()))
        else:
            self.register_buffer(name, value.clone())

    # ------------------------------------------------------------------ matrices
    @property
    def num_cameras(self) -> int:
        return self.t.shape[0]

    def __len__(self) -> int:
        return self.num_cameras

    @property
    def K(self) -> torch.Tensor:
        """(C, 3, 3) intrinsics built from ``fx, fy, cx, cy, skew``."""
        zero = torch.zeros_like(self.fx)
        one = torch.ones_like(self.fx)
        return torch.stack([self.fx, self.skew, self.cx, zero, self.fy, self.cy,
                            zero, zero, one], dim=-1).reshape(-1, 3, 3)

    @property
    def R(self) -> torch.Tensor:
        """(C, 3, 3) world -> camera rotations."""
        if self.rvec is not None:
            return axis_angle_to_matrix(self.rvec)
        return self.rotation_matrix

    def to_matrices(self) -> CameraMatrices:
        """``CameraMatrices(K, R, t, dist, image_size)`` (differentiable views)."""
        return CameraMatrices(self.K, self.R, self.t, self.dist, self.image_size)

    def projection_matrices(self, normalized: bool = False) -> torch.Tensor:
        """(C, 3, 4) ``K [R | t]`` (pixels) or ``[R | t]`` (normalised coordinates)."""
        return projection_matrices(self.R, self.t, None if normalized else self.K)

    def centers(self) -> torch.Tensor:
        """(C, 3) camera centres in world coordinates."""
        return camera_centers(self.R, self.t)

    # ---------------------------------------------------------------- projection
    def _cast(self, points: torch.Tensor) -> CameraMatrices:
        m = self.to_matrices()
        return CameraMatrices(*(v.to(points) if v is not None and v.is_floating_point() else v
                                for v in m))

    def project(self, points: torch.Tensor, per_camera: bool = False) -> torch.Tensor:
        """Project world points to pixels.

        Args:
            points: (..., N, 3) world points, seen by every camera (``per_camera=False``),
                or (..., C, N, 3) with one point set per camera (``per_camera=True``; a
                size-1 camera dimension broadcasts), e.g. one camera per sample for
                single-image regression.

        Returns:
            (..., C, N, 2) pixels. Not clamped; mask with :meth:`depth`.
        """
        m = self._cast(points)
        pts = points if per_camera else points[..., None, :, :]
        return project_points(pts, m.K, m.R, m.t, m.dist)

    def depth(self, points: torch.Tensor, per_camera: bool = False) -> torch.Tensor:
        """(..., C, N) depth of each point along each camera's optical axis."""
        m = self._cast(points)
        pts = points if per_camera else points[..., None, :, :]
        return camera_depth(pts, m.R, m.t)

    def undistort(self, uv: torch.Tensor, iterations: int = 20) -> torch.Tensor:
        """(..., C, N, 2) distorted pixels -> pixels of the ideal pinhole with the same K."""
        m = self._cast(uv)
        return undistort_pixels(uv, m.K, m.dist, iterations)

    def extra_repr(self) -> str:
        learn = [n for n, _ in self.named_parameters(recurse=False)]
        return f'num_cameras={self.num_cameras}, learnable={learn}'


__all__ = ['PinholeCameras', 'CameraMatrices', 'LEARNABLE_GROUPS', 'as_float_tensor', 'infer_dtype',
           'infer_device', 'expand_cameras']
