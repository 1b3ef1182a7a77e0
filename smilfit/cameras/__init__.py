"""Cameras, multi-view geometry and calibration IO (torch, batched, differentiable).

- :mod:`.projection`: pure functions, OpenCV's pinhole + distortion model
  (:func:`project_points`, :func:`distort_normalized`, :func:`undistort_normalized`,
  :func:`undistort_pixels`, :func:`camera_depth`, ...).
- :mod:`.triangulation`: :func:`triangulate_dlt`, batched weighted NaN-aware DLT;
  :func:`triangulate_observations`, the same on a batch of multi-view observations.
- :class:`PinholeCameras`: C OpenCV cameras as an ``nn.Module``, any parameter learnable.
- :class:`FoVPerspectiveCameras`, :class:`WeakPerspectiveCameras` and conversions to and
  from pinhole cameras (regressor camera models).
- :class:`CameraGroup`: a calibrated rig; anipose TOML and sleap-io IO, projection,
  undistortion, triangulation and per-camera reprojection reports.

Conventions are in ``docs/cameras.md``: ``x_cam = R X + t``; pixels ``(u, v)`` with the
origin at the centre of the top-left pixel (OpenCV); distortion ``(k1, k2, p1, p2, k3)``.
"""
from .camera_group import CAMERA_KEYS, CalibrationError, CameraGroup, load_anipose_calibration
from .fov import (FoVPerspectiveCameras, WeakPerspectiveCameras, fov_to_pinhole, pinhole_to_fov,
                  weak_perspective_to_pinhole, weak_perspective_translation)
from .pinhole import LEARNABLE_GROUPS, CameraMatrices, PinholeCameras
from .projection import (camera_centers, camera_depth, distort_normalized, normalized_to_pixels,
                         pixels_to_normalized, project_points, projection_matrices,
                         undistort_normalized, undistort_pixels, world_to_camera)
from .triangulation import triangulate_dlt, triangulate_observations

__all__ = [
    'distort_normalized', 'undistort_normalized', 'normalized_to_pixels', 'pixels_to_normalized',
    'world_to_camera', 'camera_depth', 'project_points', 'undistort_pixels',
    'projection_matrices', 'camera_centers', 'triangulate_dlt', 'triangulate_observations',
    'PinholeCameras', 'CameraMatrices', 'LEARNABLE_GROUPS', 'FoVPerspectiveCameras',
    'WeakPerspectiveCameras',
    'fov_to_pinhole', 'pinhole_to_fov', 'weak_perspective_to_pinhole',
    'weak_perspective_translation', 'CameraGroup', 'CalibrationError',
    'load_anipose_calibration', 'CAMERA_KEYS',
]
