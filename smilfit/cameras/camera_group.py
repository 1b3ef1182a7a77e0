"""A calibrated multi-camera rig: anipose/sleap-io IO, projection, triangulation, reports.

Shapes: B batch (frames), C cameras, N points. Conventions (OpenCV's and anipose's):
``x_cam = R X + t`` with ``R = Rodrigues(rotation)``, pixels with the origin at the
centre of the top-left pixel, distortion ``(k1, k2, p1, p2, k3)``.

anipose calibration files (``calibration.toml``) hold one table per camera::

    [cam_0]
    name = "back"
    size = [1280, 1024]                       # (W, H) pixels
    matrix = [[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]]
    distortions = [k1, k2, p1, p2, k3]        # OpenCV order
    rotation = [rx, ry, rz]                   # Rodrigues vector, world -> camera
    translation = [tx, ty, tz]                # world -> camera, world units

    [metadata]                                # anything; kept verbatim

Cameras are taken in file order (as sleap-io does). aniposelib's ``CameraGroup.load``
instead sorts the table names as strings (``cam_10`` before ``cam_2``); pass
``order='aniposelib'`` to reproduce that for rigs of more than 10 cameras.
"""
from __future__ import annotations

import datetime
import math
import os
import tomllib
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Union

import numpy as np
import tomli_w
import torch
from torch import nn

from smilfit.body_models.rotations import axis_angle_to_matrix, matrix_to_axis_angle
from smilfit.registry import CAMERAS
from smilfit.utils.atomic import write_text

from .pinhole import PinholeCameras
from .projection import (camera_centers, camera_depth, pixels_to_normalized, project_points,
                         projection_matrices, undistort_normalized, undistort_pixels)
from .triangulation import triangulate_dlt

PathLike = Union[str, os.PathLike]

#: The keys of an anipose camera table that smilfit interprets (others are kept).
CAMERA_KEYS = ('name', 'size', 'matrix', 'distortions', 'rotation', 'translation')


class CalibrationError(ValueError):
    """A calibration file or camera description is malformed (the message names the field)."""


def _number_array(value: Any, shape: tuple, where: str) -> np.ndarray:
    """A finite float64 array of ``shape`` from nested lists, else CalibrationError."""
    try:
        arr = np.array(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise CalibrationError(f'{where} must be numbers of shape {shape}, got {value!r}') \
            from None
    if arr.shape != shape:
        raise CalibrationError(f'{where} must have shape {shape}, got shape {arr.shape}: '
                               f'{value!r}')
    if not np.isfinite(arr).all():
        raise CalibrationError(f'{where} has non-finite values: {value!r}')
    return arr


def _parse_camera(table: Any, where: str) -> Dict[str, Any]:
    """Validate one anipose camera table (``where`` names it, e.g. ``file.toml [cam_0]``)."""
    if not isinstance(table, Mapping):
        raise CalibrationError(f'{where} must be a table, got {type(table).__name__}')
    for key in CAMERA_KEYS:
        if key not in table:
            raise CalibrationError(f'{where} is missing {key!r}')
    if table.get('fisheye', False):
        raise CalibrationError(f'{where} is a fisheye camera (fisheye = true), which smilfit '
                               'does not support')
    name = table['name']
    if isinstance(name, bool) or not isinstance(name, (str, int)) or str(name) == '':
        raise CalibrationError(f'{where}.name must be a non-empty string, got {name!r}')
    size = table['size']
    if size is None or size == '':  # sleap-io writes '' for an unknown size
        size = [0, 0]
    elif (not isinstance(size, (list, tuple)) or len(size) != 2
            or not all(isinstance(v, (int, float, np.integer, np.floating))
                       and not isinstance(v, bool) and float(v).is_integer() and v > 0
                       for v in size)):
        raise CalibrationError(f'{where}.size must be [width, height] in whole pixels, '
                               f'got {size!r}')
    matrix = _number_array(table['matrix'], (3, 3), f'{where}.matrix')
    if not np.array_equal(matrix[2], [0.0, 0.0, 1.0]) or matrix[1, 0] != 0.0:
        raise CalibrationError(f'{where}.matrix must be [[fx, skew, cx], [0, fy, cy], '
                               f'[0, 0, 1]], got {matrix.tolist()}')
    if matrix[0, 0] == 0.0 or matrix[1, 1] == 0.0:
        raise CalibrationError(f'{where}.matrix has a zero focal length: {matrix.tolist()}')
    dist = table['distortions']
    if isinstance(dist, (list, tuple)) and len(dist) == 4:  # (k1, k2, p1, p2): k3 = 0
        dist = list(dist) + [0.0]
    return dict(
        name=str(name),
        size=[int(v) for v in size],
        matrix=matrix,
        dist=_number_array(dist, (5,), f'{where}.distortions'),
        rvec=_number_array(table['rotation'], (3,), f'{where}.rotation'),
        tvec=_number_array(table['translation'], (3,), f'{where}.translation'),
        extra={k: v for k, v in table.items() if k not in CAMERA_KEYS},
    )


def _check_unique(names: Sequence[str], where: Sequence[str], source: str = '') -> None:
    seen: Dict[str, str] = {}
    for name, loc in zip(names, where):
        if name in seen:
            raise CalibrationError(f'{source + ": " if source else ""}duplicate camera name '
                                   f'{name!r} in {seen[name]} and {loc}')
        seen[name] = loc


def _nan_stats(values: torch.Tensor) -> Dict[str, float]:
    finite = values[torch.isfinite(values)].double()
    n = int(finite.numel())
    if n == 0:
        return dict(median=math.nan, mean=math.nan, p90=math.nan, count=0)
    return dict(median=float(finite.quantile(0.5)), mean=float(finite.mean()),
                p90=float(finite.quantile(0.9)), count=n)



def _toml_ready(value: Any, where: str) -> Any:
    """``value`` with numpy arrays and scalars as plain Python (tomli-w takes neither).

    Raises:
        TypeError: naming the key at ``where``: a non-string key, or a value TOML has no
            spelling for (``None``, arbitrary objects).
    """
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f'TOML keys must be strings, got {key!r} at '
                                f'{where or "top level"}')
            out[key] = _toml_ready(item, f'{where}.{key}' if where else key)
        return out
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, (list, tuple)):
        return [_toml_ready(v, f'{where}[{i}]') for i, v in enumerate(value)]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, (bool, int, float, str, datetime.date, datetime.time)):
        return value
    raise TypeError(f'cannot write {where} = {value!r} ({type(value).__name__}) as TOML')

@CAMERAS.register_module()
class CameraGroup(nn.Module):
    """C calibrated cameras (intrinsics, distortion, extrinsics, names, image sizes).

    Tensors are buffers (``.to(device/dtype)``, ``state_dict``); names and metadata are
    plain attributes. The rotation is stored as the Rodrigues vector ``rvec`` so that
    calibration files round-trip exactly; ``R`` is computed from it.

    Args:
        names: C unique camera names.
        K: (C, 3, 3) intrinsics ``[[fx, skew, cx], [0, fy, cy], [0, 0, 1]]`` (pixels).
        dist: (C, 5) ``(k1, k2, p1, p2, k3)`` or None (zeros).
        R: (C, 3, 3) world -> camera rotations, or ``rvec`` (C, 3) Rodrigues vectors.
        t: (C, 3) world -> camera translations (world units).
        image_sizes: (C, 2) ``(W, H)`` pixels; 0 where unknown.
        metadata: group metadata (anipose's ``[metadata]`` table), kept verbatim.
        camera_metadata: C dicts of extra per-camera keys, written back verbatim.
        dtype: floating dtype of the buffers (float64 by default: calibrations are exact).
    """

    def __init__(self, names: Sequence[str], K, dist=None, R=None, t=None, image_sizes=None,
                 *, rvec=None, metadata: Optional[Mapping] = None,
                 camera_metadata: Optional[Sequence[Mapping]] = None,
                 dtype: torch.dtype = torch.float64, device=None) -> None:
        super().__init__()
        names = [str(n) for n in names]
        C = len(names)
        if C == 0:
            raise CalibrationError('a CameraGroup needs at least one camera')
        _check_unique(names, [f'camera {i}' for i in range(C)])
        if (R is None) == (rvec is None):
            raise ValueError('give exactly one of R (C, 3, 3) and rvec (C, 3)')

        def tensor(value, tail, field):
            v = torch.as_tensor(value if not torch.is_tensor(value) else value.detach(),
                                dtype=dtype, device=device)
            if tuple(v.shape) != (C,) + tail:
                raise CalibrationError(f'{field} must have shape {(C,) + tail} for {C} '
                                       f'cameras, got {tuple(v.shape)}')
            if not torch.isfinite(v).all():
                raise CalibrationError(f'{field} has non-finite values')
            return v.clone()

        self.names: List[str] = names
        self.register_buffer('K', tensor(K, (3, 3), 'K'))
        self.register_buffer('dist', tensor(dist, (5,), 'dist') if dist is not None
                             else torch.zeros(C, 5, dtype=dtype, device=device))
        if rvec is None:
            rvec = matrix_to_axis_angle(tensor(R, (3, 3), 'R'))
        self.register_buffer('rvec', tensor(rvec, (3,), 'rvec'))
        self.register_buffer('t', tensor(t, (3,), 't') if t is not None
                             else torch.zeros(C, 3, dtype=dtype, device=device))
        if image_sizes is None:
            sizes = torch.zeros(C, 2, dtype=torch.long)
        else:
            sizes = torch.as_tensor(image_sizes).detach().to(torch.float64).round().long()
            if tuple(sizes.shape) != (C, 2):
                raise CalibrationError(f'image_sizes must have shape {(C, 2)} (W, H), '
                                       f'got {tuple(sizes.shape)}')
        self.register_buffer('image_sizes', sizes.to(device))
        self.metadata: Dict[str, Any] = dict(metadata or {})
        if camera_metadata is None:
            camera_metadata = [{} for _ in names]
        if len(camera_metadata) != C:
            raise CalibrationError(f'camera_metadata must have {C} entries, '
                                   f'got {len(camera_metadata)}')
        self.camera_metadata: List[Dict[str, Any]] = [dict(m) for m in camera_metadata]

    # ------------------------------------------------------------------ basics
    @property
    def num_cameras(self) -> int:
        return len(self.names)

    def __len__(self) -> int:
        return self.num_cameras

    @property
    def R(self) -> torch.Tensor:
        """(C, 3, 3) world -> camera rotations, ``Rodrigues(rvec)``."""
        return axis_angle_to_matrix(self.rvec)

    def index(self, name: str) -> int:
        """Position of the camera called ``name``."""
        try:
            return self.names.index(str(name))
        except ValueError:
            raise KeyError(f'no camera named {name!r}; cameras are {self.names}') from None

    def subset(self, names: Iterable[Union[str, int]]) -> 'CameraGroup':
        """A new group with the given cameras (names or indices), in the given order."""
        idx = [n if isinstance(n, int) else self.index(n) for n in names]
        sel = torch.as_tensor(idx, dtype=torch.long, device=self.K.device)
        return CameraGroup([self.names[i] for i in idx], self.K[sel], self.dist[sel],
                           rvec=self.rvec[sel], t=self.t[sel], image_sizes=self.image_sizes[sel],
                           metadata=self.metadata,
                           camera_metadata=[self.camera_metadata[i] for i in idx],
                           dtype=self.K.dtype, device=self.K.device)

    def projection_matrices(self, normalized: bool = True) -> torch.Tensor:
        """(C, 3, 4) ``[R | t]`` (for undistorted normalised coordinates) or ``K [R | t]``."""
        return projection_matrices(self.R, self.t, None if normalized else self.K)

    def centers(self) -> torch.Tensor:
        """(C, 3) camera centres in world coordinates."""
        return camera_centers(self.R, self.t)

    def to_pinhole(self, learnable: Iterable[str] = ()) -> PinholeCameras:
        """The cameras as :class:`PinholeCameras` (e.g. to refine them by gradient descent)."""
        sizes = None if bool((self.image_sizes <= 0).any()) else self.image_sizes
        return PinholeCameras(K=self.K, rvec=self.rvec, t=self.t, dist=self.dist,
                              image_size=sizes, learnable=learnable, dtype=self.K.dtype)

    def extra_repr(self) -> str:
        return f'names={self.names}'

    # --------------------------------------------------------------- geometry
    def _cams(self, like: torch.Tensor):
        cast = dict(dtype=like.dtype, device=like.device)
        return (self.K.to(**cast), self.dist.to(**cast), self.R.to(**cast), self.t.to(**cast))

    def project(self, points: torch.Tensor) -> torch.Tensor:
        """(..., N, 3) world points -> (..., C, N, 2) distorted pixels in every camera.

        Not clamped; points behind a camera are projected too (mask with :meth:`depth`).
        """
        K, dist, R, t = self._cams(points)
        return project_points(points[..., None, :, :], K, R, t, dist)

    def depth(self, points: torch.Tensor) -> torch.Tensor:
        """(..., N, 3) -> (..., C, N) depth along each camera's optical axis."""
        _, _, R, t = self._cams(points)
        return camera_depth(points[..., None, :, :], R, t)

    def undistort_points(self, points2d: torch.Tensor, normalized: bool = False,
                         iterations: int = 20) -> torch.Tensor:
        """Remove lens distortion from (..., C, N, 2) pixels.

        Returns:
            (..., C, N, 2) pixels of ideal pinhole cameras with the same ``K``
            (``normalized=False``), or undistorted normalised coordinates
            (``normalized=True``, what ``cv2.undistortPoints(uv, K, dist)`` returns).
            NaN stays NaN.
        """
        K, dist, _, _ = self._cams(points2d)
        if normalized:
            return undistort_normalized(pixels_to_normalized(points2d, K), dist, iterations)
        return undistort_pixels(points2d, K, dist, iterations)

    def triangulate(self, points2d: torch.Tensor, confidence: Optional[torch.Tensor] = None,
                    min_views: int = 2) -> torch.Tensor:
        """Triangulate (B, C, N, 2) distorted pixels (NaN = not seen) -> (B, N, 3).

        Undistorts to normalised coordinates and runs :func:`triangulate_dlt` with
        ``[R | t]``. ``confidence`` (B, C, N) weights the views (0 = absent). Points seen
        in fewer than ``min_views`` cameras are NaN. Differentiable in the 2D points, the
        confidences (and the cameras, through :func:`triangulate_dlt` directly).
        Also accepts (C, N, 2) -> (N, 3).
        """
        single = points2d.dim() == 3
        if single:
            points2d = points2d[None]
            confidence = None if confidence is None else confidence[None]
        if points2d.shape[-3] != self.num_cameras:
            raise ValueError(f'points2d has {points2d.shape[-3]} views, the group has '
                             f'{self.num_cameras} cameras ({self.names})')
        xy = self.undistort_points(points2d, normalized=True)
        _, _, R, t = self._cams(points2d)
        out = triangulate_dlt(xy, projection_matrices(R, t), confidence, min_views=min_views)
        return out[0] if single else out

    def reprojection_error(self, points3d: torch.Tensor, points2d: torch.Tensor) -> torch.Tensor:
        """(B, C, N) pixel distances between projected (B, N, 3) and observed (B, C, N, 2).

        NaN where the 2D or the 3D point is NaN.
        """
        return torch.linalg.vector_norm(self.project(points3d) - points2d, dim=-1)

    def reprojection_report(self, points3d: torch.Tensor,
                            points2d: torch.Tensor) -> Dict[str, Dict[str, float]]:
        """Per camera name: ``median``, ``mean``, ``p90`` pixel error and ``count`` points.

        A badly calibrated camera stands out by a median several times the others'.
        """
        err = self.reprojection_error(points3d, points2d).detach()
        err = err.movedim(-2, 0).reshape(self.num_cameras, -1)
        return {name: _nan_stats(err[i]) for i, name in enumerate(self.names)}

    @staticmethod
    def format_report(report: Mapping[str, Mapping[str, float]]) -> str:
        """A small text table of :meth:`reprojection_report`'s result."""
        width = max([len('camera')] + [len(n) for n in report])
        lines = [f'{"camera":<{width}}  {"median":>8}  {"mean":>8}  {"p90":>8}  {"count":>7}']
        for name, s in report.items():
            lines.append(f'{name:<{width}}  {s["median"]:8.2f}  {s["mean"]:8.2f}  '
                         f'{s["p90"]:8.2f}  {s["count"]:7d}')
        return '\n'.join(lines)

    # ------------------------------------------------------------ anipose TOML
    @classmethod
    def from_anipose_dict(cls, document: Mapping[str, Any], source: str = '<dict>',
                          order: str = 'file', **kwargs) -> 'CameraGroup':
        """From a parsed anipose calibration (``{'cam_0': {...}, ..., 'metadata': {...}}``).

        Args:
            document: the parsed TOML.
            source: name used in error messages (e.g. the file path).
            order: ``'file'`` (tables in document order, as sleap-io) or ``'aniposelib'``
                (table names sorted as strings, as ``aniposelib.CameraGroup.load``).
            **kwargs: ``dtype``, ``device``.

        Raises:
            CalibrationError: naming the file, table and field that is wrong.
        """
        if order not in ('file', 'aniposelib'):
            raise ValueError(f"order must be 'file' or 'aniposelib', got {order!r}")
        keys = [k for k in document if k != 'metadata']
        if order == 'aniposelib':
            keys = sorted(keys)
        if not keys:
            raise CalibrationError(f'{source}: no camera tables (expected [cam_0], [cam_1], ...)')
        metadata = document.get('metadata', {})
        if not isinstance(metadata, Mapping):
            raise CalibrationError(f'{source}: metadata must be a table, got {metadata!r}')
        cams = [_parse_camera(document[k], f'{source} [{k}]') for k in keys]
        _check_unique([c['name'] for c in cams], [f'[{k}]' for k in keys], source)
        return cls([c['name'] for c in cams], np.stack([c['matrix'] for c in cams]),
                   np.stack([c['dist'] for c in cams]), rvec=np.stack([c['rvec'] for c in cams]),
                   t=np.stack([c['tvec'] for c in cams]),
                   image_sizes=[c['size'] for c in cams], metadata=metadata,
                   camera_metadata=[c['extra'] for c in cams], **kwargs)

    @classmethod
    def from_anipose_toml(cls, path: PathLike, order: str = 'file', **kwargs) -> 'CameraGroup':
        """Read an anipose ``calibration.toml`` (see the module docs; errors name the field)."""
        path = Path(path)
        try:
            with open(path, 'rb') as f:
                document = tomllib.load(f)
        except tomllib.TOMLDecodeError as e:
            raise CalibrationError(f'{path}: not valid TOML: {e}') from None
        except UnicodeDecodeError:
            raise CalibrationError(f'{path}: not a text file, so not an anipose '
                                   'calibration (TOML is UTF-8 text)') from None
        except RecursionError:
            raise CalibrationError(f'{path}: nested too deeply to be a calibration (a '
                                   'corrupt or crafted file)') from None
        return cls.from_anipose_dict(document, source=str(path), order=order, **kwargs)

    def to_anipose_dict(self) -> Dict[str, Any]:
        """``{'cam_0': {...}, ..., 'metadata': {...}}`` with plain Python numbers."""
        K = self.K.detach().cpu().double().numpy()
        dist = self.dist.detach().cpu().double().numpy()
        rvec = self.rvec.detach().cpu().double().numpy()
        t = self.t.detach().cpu().double().numpy()
        sizes = self.image_sizes.detach().cpu().numpy()
        document: Dict[str, Any] = {}
        for i, name in enumerate(self.names):
            table = dict(name=name, size=[int(v) for v in sizes[i]], matrix=K[i].tolist(),
                         distortions=dist[i].tolist(), rotation=rvec[i].tolist(),
                         translation=t[i].tolist())
            table.update(self.camera_metadata[i])
            document[f'cam_{i}'] = table
        document['metadata'] = dict(self.metadata)
        return document

    def to_anipose_toml(self, path: PathLike) -> None:
        """Write an anipose ``calibration.toml`` (float64 values written exactly), atomically.

        Written by ``tomli-w``: on every anipose/aniposelib calibration and config file of the
        team's test data, what it writes reads back identical with :mod:`tomllib` and with
        the ``toml`` package anipose reads calibrations with (TOML 0.5). It writes one number
        per line, so files are longer than anipose's own (a 3x3 matrix takes 17 lines);
        anipose does not care.

        Raises:
            TypeError: naming the key, for metadata TOML cannot hold (``None``, objects).
        """
        write_text(path, tomli_w.dumps(_toml_ready(self.to_anipose_dict(), '')))

    # --------------------------------------------------------------- sleap-io
    @classmethod
    def from_sleap_io(cls, camera_group: Any, **kwargs) -> 'CameraGroup':
        """From a ``sleap_io.CameraGroup`` (e.g. ``labels.sessions[0].camera_group``).

        Uses each ``sleap_io.Camera``'s ``name``, ``size`` (W, H or None -> 0),
        ``matrix``, ``dist``, ``rvec``, ``tvec`` and ``metadata``.
        """
        cameras = list(getattr(camera_group, 'cameras', []))
        if not cameras:
            raise CalibrationError('the sleap-io camera group has no cameras')
        parsed, where = [], []
        for i, cam in enumerate(cameras):
            loc = f'sleap-io camera {i} ({cam.name!r})'
            table = dict(name=cam.name if cam.name is not None else f'cam_{i}',
                         size=None if cam.size is None else list(cam.size),
                         matrix=np.asarray(cam.matrix).tolist(),
                         distortions=np.asarray(cam.dist).ravel().tolist(),
                         rotation=np.asarray(cam.rvec).ravel().tolist(),
                         translation=np.asarray(cam.tvec).ravel().tolist())
            p = _parse_camera(table, loc)
            p['extra'] = dict(getattr(cam, 'metadata', {}) or {})
            parsed.append(p)
            where.append(loc)
        _check_unique([p['name'] for p in parsed], where)
        return cls([p['name'] for p in parsed], np.stack([p['matrix'] for p in parsed]),
                   np.stack([p['dist'] for p in parsed]),
                   rvec=np.stack([p['rvec'] for p in parsed]),
                   t=np.stack([p['tvec'] for p in parsed]),
                   image_sizes=[p['size'] for p in parsed],
                   metadata=dict(getattr(camera_group, 'metadata', {}) or {}),
                   camera_metadata=[p['extra'] for p in parsed], **kwargs)

    @classmethod
    def from_slp(cls, path: PathLike, session: int = 0, **kwargs) -> 'CameraGroup':
        """The cameras of recording session ``session`` of a SLEAP ``.slp`` file."""
        import sleap_io as sio

        labels = sio.load_slp(str(path))
        sessions = list(labels.sessions)
        if not sessions:
            raise CalibrationError(f'{path}: holds no recording session (no calibration)')
        if not -len(sessions) <= session < len(sessions):
            raise CalibrationError(f'{path}: has {len(sessions)} recording session(s), '
                                   f'asked for session {session}')
        return cls.from_sleap_io(sessions[session].camera_group, **kwargs)

    def to_sleap_io(self) -> Any:
        """A ``sleap_io.CameraGroup`` with the same cameras (sizes 0 -> None)."""
        import sleap_io as sio

        doc = self.to_anipose_dict()
        cameras = []
        for i, name in enumerate(self.names):
            table = doc[f'cam_{i}']
            size = tuple(table['size']) if all(v > 0 for v in table['size']) else None
            cameras.append(sio.Camera(matrix=table['matrix'], dist=table['distortions'],
                                      size=size, rvec=table['rotation'],
                                      tvec=table['translation'], name=name,
                                      metadata=dict(self.camera_metadata[i])))
        return sio.CameraGroup(cameras=cameras, metadata=dict(self.metadata))


@CAMERAS.register_module(name='AniposeCalibration')
def load_anipose_calibration(path: PathLike, names: Optional[Sequence[str]] = None,
                             order: str = 'file', **kwargs) -> CameraGroup:
    """Config entry point: ``dict(type='AniposeCalibration', path=..., names=[...])``.

    Reads the calibration and, with ``names``, keeps those cameras in that order.
    """
    group = CameraGroup.from_anipose_toml(path, order=order, **kwargs)
    return group.subset(names) if names is not None else group


__all__ = ['CameraGroup', 'CalibrationError', 'load_anipose_calibration', 'CAMERA_KEYS']
