"""Image side of ingestion: crop geometry, frame decoding and JPEG encoding jobs.

The geometry is exact and shared by images, keypoints and cameras: a crop is an integer box
``(x0, y0, w, h)`` of the (undistorted) source frame, padded with black outside the frame,
resized to ``(out_w, out_h)``. In OpenCV's pixel-centre convention (pixel ``i`` covers
``[i - 0.5, i + 0.5]``) that is the affine map::

    x' = (x - x0 + 0.5) * out_w / w - 0.5        y' = (y - y0 + 0.5) * out_h / h - 0.5

which :func:`box_affine` returns as a 3x3 matrix; ``cv2.resize`` samples with the same
convention, so stored keypoints ``A @ [x, y, 1]`` land on the same image content, and the
stored camera is ``K_stored = A @ K``.

Frames are decoded with OpenCV (media files: seek to the first wanted frame, then read
forward) or sleap-io (embedded images in ``.pkg.slp``, image sequences, cropped videos; main
process only). :func:`render_view_block` is a picklable job for ``multiprocessing`` workers.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from .video_io import FrameReader

#: ``--crop-mode`` values: whole frame resized; centred square crop; square box around the
#: instance's keypoints (with margin; padded at the image borders).
CROP_MODES = ('default', 'centred', 'bbox_crop')
#: Smallest side of a ``bbox_crop`` box in source pixels (a single visible point).
MIN_BBOX_SIDE = 32

Box = Tuple[int, int, int, int]


#: ``bbox_crop``'s default margin per side, a fraction of the keypoints' box.
BBOX_MARGIN = 0.15


# -------------------------------------------------------------------------------- geometry
def crop_box(mode: str, frame_size: Tuple[int, int], points: Optional[np.ndarray] = None,
             margin: float = BBOX_MARGIN) -> Box:
    """The integer source box ``(x0, y0, w, h)`` a crop mode takes from a frame.

    Args:
        mode: one of :data:`CROP_MODES`.
        frame_size: (W, H) of the (undistorted) source frame in pixels.
        points: (K, 2) keypoints (x, y) in source pixels, NaN missing; used by
            ``bbox_crop`` (no finite point: falls back to ``centred``).
        margin: ``bbox_crop`` only: the box side is the keypoints' larger extent times
            ``1 + 2 * margin`` (at least :data:`MIN_BBOX_SIDE`).

    Returns:
        ``(x0, y0, w, h)``; may extend outside the frame (``bbox_crop``; padded with black).
    """
    w, h = int(frame_size[0]), int(frame_size[1])
    if mode == 'default':
        return 0, 0, w, h
    if mode == 'bbox_crop' and points is not None:
        finite = points[np.isfinite(points).all(-1)]
        if len(finite):
            lo, hi = finite.min(0), finite.max(0)
            side = max(float((hi - lo).max()) * (1.0 + 2.0 * margin), MIN_BBOX_SIDE)
            side_i = int(math.ceil(side))
            cx, cy = (lo + hi) / 2.0
            return int(round(cx - side_i / 2.0)), int(round(cy - side_i / 2.0)), side_i, side_i
    if mode not in CROP_MODES:
        raise ValueError(f'unknown crop mode {mode!r}; expected one of {CROP_MODES}')
    side = min(w, h)
    return (w - side) // 2, (h - side) // 2, side, side


def box_affine(box: Box, out_size: Tuple[int, int]) -> np.ndarray:
    """(3, 3) float64 affine from source-frame pixels to pixels of the box resized to
    ``out_size`` (W, H), pixel-centre convention (see the module docstring)."""
    x0, y0, bw, bh = box
    sx, sy = out_size[0] / bw, out_size[1] / bh
    return np.array([[sx, 0.0, (0.5 - x0) * sx - 0.5],
                     [0.0, sy, (0.5 - y0) * sy - 0.5],
                     [0.0, 0.0, 1.0]])


def apply_affine(affine: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a (3, 3) affine to (..., 2) points, or (C, 3, 3) affines to (C, N, 2) points
    (NaN stays NaN)."""
    return points @ np.swapaxes(affine[..., :2, :2], -1, -2) + affine[..., None, :2, 2] \
        if affine.ndim == 3 else points @ affine[:2, :2].T + affine[:2, 2]


def undistort_points(points: np.ndarray, K: np.ndarray, dist: np.ndarray,
                     tol: float = 0.01) -> np.ndarray:
    """Undistort (..., 2) pixel points of a camera ``(K, dist)``.

    The result is in pixels of the undistorted image with the same ``K`` (what
    ``cv2.undistort`` / ``cv2.initUndistortRectifyMap(K, dist, None, K)`` produce). NaN stays
    NaN. Points the distortion model cannot invert (strong barrel distortion folds back
    beyond some radius, typically near the image corners) come back NaN: every result is
    re-distorted and kept only if it lands within ``tol`` pixels of the input.
    """
    out = np.full(points.shape, np.nan, dtype=np.float64)
    flat, res = points.reshape(-1, 2), out.reshape(-1, 2)
    ok = np.isfinite(flat).all(-1)
    if ok.any():
        src = flat[ok].astype(np.float64)
        crit = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 100, 1e-12)
        und = cv2.undistortPoints(src.reshape(-1, 1, 2), K, dist, R=None, P=K,
                                  criteria=crit).reshape(-1, 2)
        rays = np.concatenate([und, np.ones((len(und), 1))], 1) @ np.linalg.inv(K).T
        back = cv2.projectPoints(rays.reshape(-1, 1, 3), np.zeros(3), np.zeros(3), K,
                                 dist)[0].reshape(-1, 2)
        und[np.linalg.norm(back - src, axis=-1) > tol] = np.nan
        res[ok] = und
    return out


def crop_frame(frame: np.ndarray, box: Box, out_size: Tuple[int, int]) -> np.ndarray:
    """Cut ``box`` out of ``frame`` (black outside it) and resize it to ``out_size`` (W, H)."""
    x0, y0, bw, bh = box
    h, w = frame.shape[:2]
    xa, ya, xb, yb = max(x0, 0), max(y0, 0), min(x0 + bw, w), min(y0 + bh, h)
    if (xa, ya, xb, yb) == (x0, y0, x0 + bw, y0 + bh):
        crop = frame[y0:y0 + bh, x0:x0 + bw]
    else:
        crop = np.zeros((bh, bw) + frame.shape[2:], dtype=frame.dtype)
        if xb > xa and yb > ya:
            crop[ya - y0:yb - y0, xa - x0:xb - x0] = frame[ya:yb, xa:xb]
    if (bw, bh) == tuple(out_size):
        return np.ascontiguousarray(crop)
    shrink = out_size[0] < bw or out_size[1] < bh
    return cv2.resize(crop, tuple(int(s) for s in out_size),
                      interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


# ---------------------------------------------------------------------------- video access
@dataclasses.dataclass(frozen=True)
class VideoSpec:
    """How to decode one view's frames (picklable for ``kind='cv2'``).

    Attributes:
        kind: ``'cv2'`` (media file read by OpenCV, any process) or ``'sio'`` (a sleap-io
            ``Video`` registered with :func:`register_sio_video`, main process only).
        path: media file path (cv2) or registry key (sio).
        K: (3, 3) intrinsics to undistort with, or None (no undistortion).
        dist: (5,) distortion coefficients to undistort with, or None.
    """
    kind: str
    path: str
    K: Optional[Tuple[Tuple[float, ...], ...]] = None
    dist: Optional[Tuple[float, ...]] = None


_CV2_READERS: Dict[str, FrameReader] = {}
_SIO_VIDEOS: Dict[str, Any] = {}
_UNDISTORT_MAPS: Dict[Tuple[Any, ...], Tuple[np.ndarray, np.ndarray]] = {}


def register_sio_video(key: str, video: Any) -> VideoSpec:
    """Register an opened sleap-io ``Video`` under ``key``; return its (main-process) spec."""
    _SIO_VIDEOS[key] = video
    return VideoSpec('sio', key)


def close_readers() -> None:
    """Release every OpenCV capture this process holds (and forget sleap-io videos)."""
    for reader in _CV2_READERS.values():
        reader.close()
    _CV2_READERS.clear()
    _SIO_VIDEOS.clear()
    _UNDISTORT_MAPS.clear()


def read_frame_bgr(spec: VideoSpec, index: int) -> np.ndarray:
    """Frame ``index`` of a view as (H, W, 3) uint8 BGR (before undistortion/cropping).

    Media files (``'cv2'``) are read by :class:`.video_io.FrameReader`; what only sleap-io
    decodes (``'sio'``: embedded images, image sequences, cropped videos) by its ``Video``.
    """
    if spec.kind == 'cv2':
        reader = _CV2_READERS.get(spec.path)
        if reader is None:
            reader = _CV2_READERS[spec.path] = FrameReader(spec.path)
        return reader.read(int(index))
    video = _SIO_VIDEOS[spec.path]
    try:
        frame = np.asarray(video[int(index)])
    except Exception as e:  # sleap-io raises assorted errors for unreadable frames
        raise OSError(f'{video.filename}: cannot read frame {index} ({e})') from e
    if frame.ndim == 4:
        frame = frame[0]
    if frame.ndim == 2 or frame.shape[2] == 1:
        return cv2.cvtColor(frame.reshape(frame.shape[:2]).astype(np.uint8), cv2.COLOR_GRAY2BGR)
    return cv2.cvtColor(frame.astype(np.uint8), cv2.COLOR_RGB2BGR)  # sleap-io gives RGB


def _undistort(spec: VideoSpec, frame: np.ndarray) -> np.ndarray:
    if spec.K is None:
        return frame
    h, w = frame.shape[:2]
    key = (spec.K, spec.dist, w, h)
    maps = _UNDISTORT_MAPS.get(key)
    if maps is None:
        K = np.array(spec.K, dtype=np.float64)
        maps = cv2.initUndistortRectifyMap(K, np.array(spec.dist, dtype=np.float64), None, K,
                                           (w, h), cv2.CV_16SC2)
        _UNDISTORT_MAPS[key] = maps
    return cv2.remap(frame, maps[0], maps[1], cv2.INTER_LINEAR,
                     borderMode=cv2.BORDER_CONSTANT)


def render_view_block(spec: VideoSpec, items: Sequence[Tuple[int, Box, Tuple[int, int]]],
                      jpeg_quality: int = 90) -> List[bytes]:
    """Decode, undistort, crop, resize and JPEG-encode one view of a block of samples.

    Args:
        spec: the view's video.
        items: per sample ``(frame index, box, out_size)``.
        jpeg_quality: JPEG quality.

    Returns:
        One JPEG (encoded from the RGB image, see :func:`~.hdf5_format.encode_image`) per item.
    """
    out: List[bytes] = []
    params = [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)]
    cache: Optional[Tuple[int, np.ndarray]] = None
    for frame_idx, box, out_size in items:
        if cache is None or cache[0] != frame_idx:
            cache = (frame_idx, _undistort(spec, read_frame_bgr(spec, frame_idx)))
        img = crop_frame(cache[1], tuple(box), tuple(out_size))
        # The frame is BGR (OpenCV order) and imencode expects BGR: the JPEG holds the true
        # RGB colours, exactly what encode_image(rgb) writes.
        ok, buf = cv2.imencode('.jpg', img, params)
        if not ok:
            raise OSError(f'{spec.path}: JPEG encoding failed at frame {frame_idx}')
        out.append(buf.tobytes())
    return out


def worker_init() -> None:
    """Pool initializer: one OpenCV thread per worker process (the pool is the parallelism)."""
    cv2.setNumThreads(1)
