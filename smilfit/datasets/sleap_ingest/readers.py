"""Readers of the inputs, each failure a :class:`DataIngestError` naming the file: labels
(sleap-io, DeepLabCut CSV beside its pandas ``.h5``), calibrations (anipose TOML, recording
sessions, uncalibrated stand-ins), videos (finding and opening them), instances (points and
confidences per frame) and anipose ``points3d.h5``."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import h5py
import numpy as np

from ...cameras.projection import uncalibrated_camera
from ..ingest_images import VideoSpec, register_sio_video
from ..video_io import probe_video
from .options import DEFAULT_FOCAL_FACTOR, VIDEO_EXTS, DataIngestError, _fail
from .records import _Camera
from smilfit.cameras import CalibrationError, CameraGroup


# ------------------------------------------------------------------------------- labels
def _load_labels(path: Path) -> Any:
    """Read a labels file with sleap-io; every failure becomes a DataIngestError."""
    import sleap_io as sio
    path = _dlc_csv_of(path)
    try:
        if path.suffix.lower() == '.slp':
            labels = sio.load_slp(str(path), open_videos=False)
        else:
            labels = sio.load_file(str(path))
    except Exception as e:  # sleap-io raises anything from KeyError to OSError on bad files
        raise _fail(path, f'cannot read labels ({type(e).__name__}: {e}); the file is '
                          'corrupt, truncated or not a format sleap-io reads') from e
    if not hasattr(labels, 'labeled_frames'):
        raise _fail(path, 'is not a labels file (sleap-io read it as a video)')
    return labels


def _dlc_csv_of(path: Path) -> Path:
    """The CSV DeepLabCut writes beside its ``CollectedData_<scorer>.h5`` (a pandas/PyTables
    table, which needs PyTables to read): the same labels, which sleap-io reads. Any other
    path is returned as is."""
    if path.suffix.lower() != '.h5' or not path.is_file():
        return path
    try:
        with h5py.File(path, 'r') as f:
            pandas_table = any('pandas_type' in f[key].attrs for key in f)
    except (OSError, RuntimeError, KeyError):
        return path                     # not HDF5 or damaged: sleap-io's error names the file
    if not pandas_table:
        return path
    csv_path = path.with_suffix('.csv')
    if not csv_path.is_file():
        raise _fail(path, 'is a pandas table (a DeepLabCut .h5): give the CSV DeepLabCut '
                          f'writes beside it ({csv_path.name}), which holds the same labels')
    return csv_path


# -------------------------------------------------------------------------- calibration
def _cameras_from_group(group: Any) -> List[_Camera]:
    """:class:`smilfit.cameras.CameraGroup` -> per-camera numpy parameters (float64)."""
    K = group.K.detach().double().cpu().numpy()
    dist = group.dist.detach().double().cpu().numpy()
    R = group.R.detach().double().cpu().numpy()
    t = group.t.detach().double().cpu().numpy()
    sizes = group.image_sizes.detach().cpu().numpy()
    return [_Camera(name, K[i], dist[i], R[i], t[i],
                    (int(sizes[i, 0]), int(sizes[i, 1])) if sizes[i].min() > 0 else None, True)
            for i, name in enumerate(group.names)]


def _load_anipose_calibration(path: Path) -> List[_Camera]:
    """Cameras of an anipose ``calibration.toml`` in file order (read by
    :meth:`smilfit.cameras.CameraGroup.from_anipose_toml`)."""
    try:
        group = CameraGroup.from_anipose_toml(path)
    except CalibrationError as e:
        msg = str(e)
        raise DataIngestError(msg if str(path) in msg else f'{path}: {msg}') from e
    except (UnicodeDecodeError, ValueError, TypeError) as e:
        raise _fail(path, f'not a valid anipose calibration TOML ({e})') from e
    return _cameras_from_group(group)


def _session_cameras(rs: Any, path: Path) -> List[_Camera]:
    """Cameras of a sleap-io recording session (read by ``CameraGroup.from_sleap_io``)."""
    try:
        return _cameras_from_group(CameraGroup.from_sleap_io(rs.camera_group))
    except CalibrationError as e:
        raise _fail(path, f'recording session cameras: {e}') from e


def _default_camera(name: str, size: Tuple[int, int]) -> _Camera:
    """An uncalibrated camera: identity R, zero t, f = DEFAULT_FOCAL_FACTOR * max(W, H),
    principal point at the image centre ((W - 1) / 2, (H - 1) / 2)."""
    w, h = size
    cam = uncalibrated_camera(w, h, DEFAULT_FOCAL_FACTOR)
    return _Camera(name, cam['K'], cam['dist'], cam['R'], cam['t'], (int(w), int(h)), False)


# ------------------------------------------------------------------------------- videos
def _video_filename(video: Any) -> str:
    fn = video.filename
    return fn[0] if isinstance(fn, list) and fn else str(fn)


def _resolve_video(video: Any, labels_path: Path, search: Sequence[Path]) -> Optional[Path]:
    """Find a labels file's video: as stored; any tail of the stored path below the labels
    folder or its four parents; or by file name in ``search`` folders. None if not found."""
    if isinstance(video.filename, list):
        return None  # image sequences: sleap-io opens them itself when they exist
    stored = str(video.filename)
    parts = [p for p in re.split(r'[\\/]', stored) if p and not p.endswith(':')]
    if not parts:
        return None
    candidates = [Path(stored)]
    bases = [labels_path.parent, *list(labels_path.parent.parents)[:4]]
    for k in range(len(parts)):
        candidates += [b / Path(*parts[k:]) for b in bases]
    candidates += [Path(d) / parts[-1] for d in search]
    for c in candidates:
        if c.is_file():
            return c
    return None


def _open_video(view_video: Any, path: Optional[Path], key: str, where: Path
                ) -> Tuple[Optional[VideoSpec], Optional[Tuple[int, int]], Optional[int],
                           np.ndarray]:
    """Decide how to decode a video: (spec, decoded (W, H), frame count, pre_affine)."""
    if path is not None and path.suffix.lower() in VIDEO_EXTS and not (
            view_video is not None and view_video.is_cropped):
        try:
            info = probe_video(path)
        except OSError as e:
            raise DataIngestError(str(e)) from e
        return VideoSpec('cv2', str(path)), info.size, info.num_frames, np.eye(3)
    if view_video is None:
        return None, None, None, np.eye(3)
    # Embedded images (.pkg.slp), image sequences, cropped videos: sleap-io decodes them.
    try:
        if path is not None and not view_video.is_cropped:
            view_video.replace_filename(str(path), open=True)
        elif not view_video.is_open:
            if not view_video.exists():
                return None, None, None, np.eye(3)
            view_video.open()
        shape = view_video.shape
        if shape is None:
            return None, None, None, np.eye(3)
    except Exception as e:
        raise _fail(where, f'cannot open video {_video_filename(view_video)} ({e})') from e
    pre = np.eye(3)
    if view_video.is_cropped:
        x1, y1 = view_video.crop_rect[:2]
        pre[:2, 2] = (-x1, -y1)
    spec = register_sio_video(key, view_video)
    return spec, (int(shape[2]), int(shape[1])), int(shape[0]), pre


# ---------------------------------------------------------------------------- instances
def _instance_arrays(inst: Any, node_names: List[str], where: Path
                     ) -> Tuple[np.ndarray, np.ndarray]:
    """(Kd, 2) float64 points (NaN missing) and (Kd,) confidence in ``node_names`` order."""
    from sleap_io import PredictedInstance
    pts = np.asarray(inst.numpy(), dtype=np.float64)
    if isinstance(inst, PredictedInstance):
        conf = np.asarray(inst.points['score'], dtype=np.float64)
        conf = np.where(np.isfinite(conf), conf, 0.0)
    else:
        conf = np.ones(len(pts))
    names = list(inst.skeleton.node_names)
    if names != node_names:
        try:
            order = [names.index(n) for n in node_names]
        except ValueError:
            raise _fail(where, f'instances use different skeletons ({names} vs '
                               f'{node_names})') from None
        pts, conf = pts[order], conf[order]
    finite = np.isfinite(pts).all(-1)
    pts[~finite] = np.nan
    conf = np.where(finite, conf, 0.0)
    return pts, conf


def _frame_instances(labels: Any, video: Any, node_names: List[str], where: Path
                     ) -> Dict[int, List[Tuple[Optional[str], np.ndarray, np.ndarray]]]:
    """Per frame index, the instances of ``video``: (track name or None, points, conf).
    User instances win over predictions they were made from or share a track with."""
    out: Dict[int, List[Tuple[Optional[str], np.ndarray, np.ndarray]]] = {}
    track_order = {id(t): i for i, t in enumerate(labels.tracks)}
    for lf in labels.labeled_frames:
        if lf.video is not video:
            continue
        user = list(lf.user_instances)
        used = {id(u.from_predicted) for u in user if u.from_predicted is not None}
        user_tracks = {id(u.track) for u in user if u.track is not None}
        chosen = user + [p for p in lf.predicted_instances
                         if id(p) not in used and (p.track is None or
                                                   id(p.track) not in user_tracks)]
        chosen.sort(key=lambda i: (i.track is None,
                                   track_order.get(id(i.track), len(track_order))))
        items = out.setdefault(int(lf.frame_idx), [])
        for inst in chosen:
            pts, conf = _instance_arrays(inst, node_names, where)
            items.append((inst.track.name if inst.track is not None else None, pts, conf))
    return out


# ---------------------------------------------------------------------------- 3D points
def _load_points3d(path: Path, num_nodes: int) -> np.ndarray:
    """anipose ``points3d.h5`` ``tracks`` as (F, T, Kd, 3) float64."""
    try:
        with h5py.File(path, 'r') as f:
            if 'tracks' not in f:
                raise _fail(path, "has no 'tracks' dataset (anipose points3d.h5 layout: "
                                  'tracks (frames, tracks, nodes, 3))')
            tracks = np.asarray(f['tracks'][()], dtype=np.float64)
    except (OSError, RuntimeError, KeyError) as e:   # h5py's errors on a damaged file
        raise _fail(path, f'cannot read HDF5 (corrupt or truncated file: {e})') from e
    if tracks.ndim == 3:
        tracks = tracks[:, None]
    if tracks.ndim != 4 or tracks.shape[-1] != 3 or tracks.shape[2] != num_nodes:
        raise _fail(path, f"'tracks' has shape {tracks.shape}; expected (frames, tracks, "
                          f'{num_nodes}, 3) for the {num_nodes}-node skeleton')
    return tracks
