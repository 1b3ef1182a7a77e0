"""Videos of fits: an atomic ``.mp4`` writer and the session-level :func:`render_fit_video`.

:class:`VideoWriter` encodes with ffmpeg (H.264, through ``imageio-ffmpeg``; OpenCV's
``mp4v`` when that is not installed) into a hidden temporary file beside the target and
renames it onto the target only when the ``with`` block ends without an error: a
half-written video never carries the final name.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Iterable, List, Mapping, Optional, Sequence, Union

import numpy as np

from smilfit.utils.atomic import publish, temp_beside
from .overlay import draw_keypoints, grey_image, overlay_mesh, view_grid
from .zbuffer import render_mesh

__all__ = ['VideoWriter', 'render_fit_video', 'render_fit_frame']

PathLike = Union[str, os.PathLike]
FrameSource = Union[None, Callable[[int], Any], Iterable[Any]]


def _to_numpy(x: Any, name: str) -> Optional[np.ndarray]:
    if x is None:
        return None
    if hasattr(x, 'detach'):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


class VideoWriter:
    """Write RGB frames to an ``.mp4`` file, atomically.

    Use as a context manager::

        with VideoWriter('fit.mp4', fps=25) as video:
            for frame in frames:          # (H, W, 3) uint8 RGB, all the same size
                video.write(frame)

    Frames with odd sizes are padded with black to even sizes (H.264 in yuv420p needs
    them). The file appears under its name only when the block exits normally; on an
    exception the temporary file is deleted and the exception propagates.

    Args:
        path: target ``.mp4`` path (its folder is created).
        fps: frames per second.
        quality: ffmpeg quality 0-10 (10 best; imageio-ffmpeg's scale).
        backend: ``'ffmpeg'`` (imageio-ffmpeg, H.264), ``'cv2'`` (OpenCV, mp4v) or
            ``'auto'`` (ffmpeg when importable).
    """

    def __init__(self, path: PathLike, fps: float = 25.0, quality: float = 7,
                 backend: str = 'auto') -> None:
        self.path = Path(path)
        if self.path.suffix.lower() != '.mp4':
            raise ValueError(f'VideoWriter: {self.path} must end in .mp4')
        if not fps > 0:
            raise ValueError(f'VideoWriter: fps must be positive, got {fps}')
        if backend not in ('auto', 'ffmpeg', 'cv2'):
            raise ValueError(f"VideoWriter: backend must be 'auto', 'ffmpeg' or 'cv2', got "
                             f'{backend!r}')
        if backend == 'auto':
            import importlib.util
            backend = 'ffmpeg' if importlib.util.find_spec('imageio_ffmpeg') else 'cv2'
        self.backend = backend
        self.fps = float(fps)
        self.quality = quality
        # the file being encoded, beside the target (named when the first frame comes)
        self.tmp_path: Optional[Path] = None
        self.num_frames = 0
        self._size = None          # (H, W) of the first frame, before padding
        self._writer = None
        self._closed = False

    def __enter__(self) -> 'VideoWriter':
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is None:
            self.close()
        else:
            self.abort()
        return False

    def _open(self, height: int, width: int) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # this process's own: two renders of one video do not write into one file
        self.tmp_path = Path(temp_beside(self.path, '.mp4'))
        if self.backend == 'ffmpeg':
            import imageio_ffmpeg
            self._writer = imageio_ffmpeg.write_frames(
                str(self.tmp_path), (width, height), fps=self.fps, quality=self.quality,
                codec='libx264', pix_fmt_in='rgb24', pix_fmt_out='yuv420p',
                macro_block_size=2, ffmpeg_log_level='error')
            self._writer.send(None)
        else:
            import cv2
            self._writer = cv2.VideoWriter(str(self.tmp_path), cv2.VideoWriter_fourcc(*'mp4v'),
                                           self.fps, (width, height))
            if not self._writer.isOpened():
                raise RuntimeError(f'VideoWriter: OpenCV cannot open {self.tmp_path} for mp4v')

    def write(self, frame: np.ndarray) -> None:
        """Append one (H, W, 3) uint8 RGB frame (the first frame fixes the size)."""
        if self._closed:
            raise RuntimeError(f'VideoWriter: {self.path} is already closed')
        frame = np.asarray(frame)
        if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
            raise ValueError(f'VideoWriter: frame {self.num_frames} must be (H, W, 3) uint8 '
                             f'RGB, got shape {frame.shape} and dtype {frame.dtype}')
        if self._size is None:
            self._size = frame.shape[:2]
            self._open(frame.shape[0] + frame.shape[0] % 2, frame.shape[1] + frame.shape[1] % 2)
        elif frame.shape[:2] != self._size:
            raise ValueError(f'VideoWriter: frame {self.num_frames} is {frame.shape[:2]} but '
                             f'the video is {self._size} (H, W)')
        H, W = frame.shape[:2]
        if H % 2 or W % 2:
            frame = np.pad(frame, ((0, H % 2), (0, W % 2), (0, 0)))
        if self.backend == 'ffmpeg':
            self._writer.send(np.ascontiguousarray(frame))
        else:
            import cv2
            self._writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
        self.num_frames += 1

    def _release(self) -> None:
        if self._writer is not None:
            if self.backend == 'ffmpeg':
                self._writer.close()
            else:
                self._writer.release()
            self._writer = None

    def close(self) -> Path:
        """Finish the file and give it its name; returns the path."""
        if self._closed:
            return self.path
        self._closed = True
        try:
            self._release()
        except BaseException:
            self._remove_tmp()
            raise
        if self.num_frames == 0:
            self._remove_tmp()
            raise ValueError(f'VideoWriter: no frames were written to {self.path}')
        publish(self.tmp_path, self.path)
        return self.path

    def abort(self) -> None:
        """Stop and delete the temporary file (the target is left as it was)."""
        self._closed = True
        try:
            self._release()
        finally:
            self._remove_tmp()

    def _remove_tmp(self) -> None:
        if self.tmp_path is not None and self.tmp_path.exists():
            self.tmp_path.unlink()


def _per_frame(x: Optional[np.ndarray], T: int, name: str, trailing: int) -> Optional[np.ndarray]:
    """Check a (T or 1, ...) array; returns it (indexing with ``min(t, len - 1)``)."""
    if x is None:
        return None
    if x.ndim < trailing + 1 or x.shape[0] not in (1, T):
        raise ValueError(f'render_fit_video: {name} must have a leading dimension of {T} '
                         f'frames or 1, got shape {x.shape}')
    return x


def _pick(x: Optional[np.ndarray], t: int) -> Optional[np.ndarray]:
    return None if x is None else x[min(t, x.shape[0] - 1)]


def _frame_images(source: FrameSource, T: int):
    """Yield per-frame view images (or None) from the ``frames`` argument."""
    if source is None:
        for _ in range(T):
            yield None
    elif callable(source):
        for t in range(T):
            yield source(t)
    else:
        it = iter(source)
        for t in range(T):
            try:
                yield next(it)
            except StopIteration:
                raise ValueError(f'render_fit_video: frames gave {t} entries for {T} '
                                 'frames') from None


def render_fit_frame(vertices: np.ndarray, faces: np.ndarray, K: np.ndarray, R: np.ndarray,
                     t: np.ndarray, dist: Optional[np.ndarray] = None,
                     images: Optional[Sequence[Optional[np.ndarray]]] = None,
                     image_size: Optional[np.ndarray] = None,
                     observed: Optional[np.ndarray] = None,
                     fitted: Optional[np.ndarray] = None, *,
                     camera_names: Optional[Sequence[str]] = None,
                     view_valid: Optional[np.ndarray] = None, alpha: float = 0.6,
                     mesh_colour: Sequence[float] = (0.55, 0.7, 0.95),
                     error_scale_px: float = 10.0,
                     skeleton: Optional[Sequence[Sequence[int]]] = None,
                     label: Optional[str] = None, ncols: Optional[int] = None) -> np.ndarray:
    """One frame of a fit video: every view's image with the mesh and keypoints, in a grid.

    Args:
        vertices: (V, 3) world vertices; None draws no mesh.
        faces: (F, 3).
        K, R, t: (C, 3, 3), (C, 3, 3), (C, 3) cameras; ``dist`` (C, 5) or None.
        images: C images (H, W, 3) uint8 RGB (None entries: grey), or None (all grey).
        image_size: (C, 2) ``(width, height)`` of the views without an image; ``(0, 0)``
            marks an empty camera slot (an empty grid cell).
        observed, fitted: (C, N, 2) pixels (NaN where missing), or None.
        camera_names: C labels.
        view_valid: (C,) bool; an invalid view is drawn as its bare image.
        alpha, mesh_colour, error_scale_px, skeleton: see :func:`overlay_mesh` and
            :func:`draw_keypoints`.
        label: text prefixed to every view label (e.g. ``'frame 12'``).
        ncols: columns of the grid.

    Returns:
        (H, W, 3) uint8 RGB grid image.
    """
    C = K.shape[0]
    tiles: List[Optional[np.ndarray]] = []
    for c in range(C):                          # a few cameras, each a vectorised render
        image = None if images is None else images[c]
        if image is None:
            if image_size is None:
                raise ValueError(f'render_fit_frame: view {c} has no image and no image_size')
            w, h = (int(s) for s in np.asarray(image_size)[c])
            if w <= 0 or h <= 0:                # an empty camera slot: an empty cell
                tiles.append(None)
                continue
            image = grey_image(h, w)
        image = np.asarray(image)
        if view_valid is None or bool(view_valid[c]):
            if vertices is not None:
                render = render_mesh(vertices, faces, K[c], R[c], t[c],
                                     None if dist is None else dist[c],
                                     height=image.shape[0], width=image.shape[1],
                                     colour=mesh_colour)
                image = overlay_mesh(image, render, alpha)
            if observed is not None or fitted is not None:
                image = draw_keypoints(image, None if observed is None else observed[c],
                                       None if fitted is None else fitted[c],
                                       error_scale_px=error_scale_px, skeleton=skeleton)
        tiles.append(image)
    names = list(camera_names) if camera_names is not None else [f'view {c}' for c in range(C)]
    if label:
        names = [f'{label}  {n}' for n in names]
    return view_grid(tiles, names, ncols=ncols)


def render_fit_video(out_path: PathLike, vertices: Any, faces: Any,
                     cameras: Mapping[str, Any], frames: FrameSource = None, *,
                     image_size: Any = None, keypoints_observed: Any = None,
                     keypoints_fitted: Any = None, view_valid: Any = None,
                     camera_names: Optional[Sequence[str]] = None,
                     frame_labels: Optional[Sequence[str]] = None, fps: float = 25.0,
                     alpha: float = 0.6, mesh_colour: Sequence[float] = (0.55, 0.7, 0.95),
                     error_scale_px: float = 10.0,
                     skeleton: Optional[Sequence[Sequence[int]]] = None,
                     ncols: Optional[int] = None, quality: float = 7,
                     progress: bool = True) -> Path:
    """Render a fitted sequence over its camera views into one ``.mp4`` (a grid of views).

    Args:
        out_path: the ``.mp4`` to write (atomically, see :class:`VideoWriter`).
        vertices: (T, V, 3) fitted vertices per frame (world, model units), or None for
            keypoints only.
        faces: (F, 3) mesh faces.
        cameras: ``K`` (T or 1, C, 3, 3), ``R`` (T or 1, C, 3, 3), ``t`` (T or 1, C, 3)
            and optional ``dist`` (T or 1, C, 5), OpenCV convention.
        frames: the images under the overlays: None (grey backgrounds of ``image_size``),
            a callable ``t -> views``, or an iterable giving ``views`` per frame, where
            ``views`` is a (C, H, W, 3) uint8 array or C images (None entries: grey).
        image_size: (2,), (C, 2) or (T, C, 2) ``(width, height)`` of views without image
            (the dataset convention).
        keypoints_observed: (T, C, N, 2) observed pixels (NaN where missing), or None.
        keypoints_fitted: (T, C, N, 2) reprojected fitted keypoints, or None.
        view_valid: (T or 1, C) bool; invalid views show their bare image.
        camera_names: C labels.
        frame_labels: T labels (e.g. ``'frame 12'``) written on the views.
        fps: frames per second.
        alpha, mesh_colour: mesh overlay opacity and colour.
        error_scale_px: keypoint error at the end of the colour scale, in pixels.
        skeleton: (E, 2) keypoint index pairs drawn as bones.
        ncols: columns of the view grid.
        quality: ffmpeg quality 0-10.
        progress: show a tqdm progress bar.

    Returns:
        The path of the video.
    """
    from tqdm import tqdm

    V = _to_numpy(vertices, 'vertices')
    K = _to_numpy(cameras.get('K'), 'K')
    R = _to_numpy(cameras.get('R'), 'R')
    tr = _to_numpy(cameras.get('t'), 't')
    if K is None or R is None or tr is None:
        raise ValueError("render_fit_video: cameras needs 'K', 'R' and 't'")
    obs = _to_numpy(keypoints_observed, 'keypoints_observed')
    fit = _to_numpy(keypoints_fitted, 'keypoints_fitted')
    lengths = [x.shape[0] for x in (V, obs, fit) if x is not None]
    if not lengths:
        raise ValueError('render_fit_video: give vertices and/or keypoints (T frames)')
    T = lengths[0]
    if any(n != T for n in lengths):
        raise ValueError(f'render_fit_video: vertices and keypoints disagree on the number '
                         f'of frames: {lengths}')
    if V is not None and (V.ndim != 3 or V.shape[2] != 3):
        raise ValueError(f'render_fit_video: vertices must be (T, V, 3), got {V.shape}')
    F = None if faces is None else _to_numpy(faces, 'faces').astype(np.int64)
    if V is not None and F is None:
        raise ValueError('render_fit_video: vertices given without faces')
    K = _per_frame(K, T, 'K', 3)
    R = _per_frame(R, T, 'R', 3)
    tr = _per_frame(tr, T, 't', 2)
    dist = _per_frame(_to_numpy(cameras.get('dist'), 'dist'), T, 'dist', 2)
    valid = _per_frame(_to_numpy(view_valid, 'view_valid'), T, 'view_valid', 1)
    C = K.shape[1]
    size = _to_numpy(image_size, 'image_size')
    if size is not None:
        size = np.broadcast_to(size, (T, C, 2)) if size.ndim < 3 else size
    for name, x in (('keypoints_observed', obs), ('keypoints_fitted', fit)):
        if x is not None and (x.ndim != 4 or x.shape[1] != C or x.shape[3] != 2):
            raise ValueError(f'render_fit_video: {name} must be (T, {C}, N, 2), got {x.shape}')
    if frame_labels is not None and len(frame_labels) != T:
        raise ValueError(f'render_fit_video: {len(frame_labels)} frame labels for {T} frames')

    with VideoWriter(out_path, fps=fps, quality=quality) as video:
        sources = _frame_images(frames, T)
        for ti in tqdm(range(T), desc=f'video {Path(out_path).name}', disable=not progress):
            views = next(sources)
            if views is not None and len(views) != C:
                raise ValueError(f'render_fit_video: frame {ti} has {len(views)} views, the '
                                 f'cameras {C}')
            grid = render_fit_frame(
                None if V is None else V[ti], F, _pick(K, ti), _pick(R, ti), _pick(tr, ti),
                _pick(dist, ti), views, None if size is None else size[ti],
                _pick(obs, ti), _pick(fit, ti), camera_names=camera_names,
                view_valid=_pick(valid, ti), alpha=alpha, mesh_colour=mesh_colour,
                error_scale_px=error_scale_px, skeleton=skeleton,
                label=None if frame_labels is None else frame_labels[ti], ncols=ncols)
            video.write(grid)
    return Path(out_path)
