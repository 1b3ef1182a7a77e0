"""Ingest SLEAP (and other sleap-io readable) pose data into smilfit's HDF5 dataset format.

Inputs (see ``docs/hdf5_schema.md`` for the output):

- **A sessions directory** in the sleap-anipose layout: a session folder holds one folder per
  camera (each with exactly one video and one ``.slp``), ``calibration.toml`` (anipose) and
  optionally ``points3d.h5`` (anipose ``tracks`` (F, T, K, 3), world units, node order of the
  skeleton). Pass the session folder itself, or a parent folder whose sub-folders are
  sessions (each with its own ``calibration.toml``).
- **A single labels file**: a ``.slp`` with recording sessions (multi-view, cameras from the
  file) and/or plain videos (single-view), or anything ``sleap_io.load_file`` reads (DLC
  csv, COCO json, analysis ``.h5``, ...): single-view, one session per video.

One sample is one instance (animal) at one frame: multi-view instances are matched by the
file's instance groups when it has them, else by track name (one untracked instance per view
is matched to the others). Single-view files give one sample per instance.

Everything is validated before anything is written: every problem raises
:class:`DataIngestError` naming the file, and leaves no output (nor partial) file.
"""
from __future__ import annotations

import concurrent.futures
import contextlib
import csv
import dataclasses
import json
import math
import multiprocessing
import re
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path, PureWindowsPath
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import h5py
import numpy as np

from ..cameras.projection import default_intrinsics
from .hdf5_format import DatasetFormatError, DatasetWriter
from .ingest_images import (CROP_MODES, VideoSpec, apply_affine, box_affine, close_readers,
                            crop_box, register_sio_video, render_view_block,
                            undistort_points, worker_init)
from .joint_lookup import JointLookupError, read_joint_lookup
from .video_io import probe_video

#: Image files an image-sequence video may hold (as the .slp export reopens a folder).
IMAGE_EXTS = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff')
#: Video file extensions looked for in camera folders.
VIDEO_EXTS = ('.mp4', '.avi', '.mov', '.mkv', '.mj2', '.webm', '.mpg', '.mpeg')
#: Focal length, in pixels, of an unknown camera: ``DEFAULT_FOCAL_FACTOR * max(W, H)``
#: (about 53 degrees field of view across the longer side). Flagged ``calibrated=False``.
DEFAULT_FOCAL_FACTOR = 1.0
#: Samples per written block (and per decoding job of one view).
BLOCK_SAMPLES = 64

PathLike = Union[str, Path]


class DataIngestError(ValueError):
    """Input data cannot be ingested; the message names the file and the problem."""


@dataclasses.dataclass
class IngestOptions:
    """Options of :func:`ingest_sleap` (the CLI flags of ``tools/preprocess_sleap.py``).

    Attributes:
        max_frames: keep at most this many labelled frames per session (after frame_skip).
        frame_skip: keep every n-th labelled frame of a session.
        min_views: drop samples with fewer valid views (views with a visible keypoint).
        crop_mode: ``default`` (whole frame), ``centred`` (centre square) or ``bbox_crop``
            (square around the instance's keypoints; needs ``target_size``).
        target_size: stored images are ``target_size`` x ``target_size``; None keeps the
            crop's own size (``default``: the original frame).
        bbox_margin: ``bbox_crop`` margin on each side, as a fraction of the box extent.
        undistort: undistort images and keypoints with the calibration (stored dist = 0).
        include_3d: store ``keypoints_3d`` from ``points3d.h5`` / 3D instances.
        confidence_threshold: ``visible = finite & confidence >= threshold``.
        workers: processes decoding/encoding video (0 or 1: in this process).
        jpeg_quality: JPEG quality of stored images.
        images: store images (False: keypoints and cameras only).
        joint_lookup: CSV ``model_joint,data_keypoint``: output keypoints are the model
            joints in this order (empty data name: kept, always missing); other data
            keypoints are dropped.
        shape_betas: CSV ``session,beta_0,...``: stored as ``params/betas`` per sample.
        body_model: name/path of the body model the lookup and betas refer to (stored in
            the ``params`` and root attributes only).
        video_search_paths: folders searched (by file name) for videos a labels file
            references but that do not exist at the stored path.
        points3d: anipose ``points3d.h5`` for a single ``.slp`` recording session.
        units: length unit of calibrations and 3D points (root attr ``units``).
        progress: show a tqdm progress bar.
        checkpoint_every_s: with ``resume``, checkpoint the partial output at most this
            often (0: after every block of samples); a run killed with ``kill -9``
            continues from the last checkpoint (see :class:`DatasetWriter`).
    """
    max_frames: Optional[int] = None
    frame_skip: int = 1
    min_views: int = 1
    crop_mode: str = 'default'
    target_size: Optional[int] = None
    bbox_margin: float = 0.15
    undistort: bool = False
    include_3d: bool = True
    confidence_threshold: float = 0.0
    workers: int = 0
    jpeg_quality: int = 90
    images: bool = True
    joint_lookup: Optional[PathLike] = None
    shape_betas: Optional[PathLike] = None
    body_model: Optional[str] = None
    video_search_paths: Sequence[PathLike] = ()
    points3d: Optional[PathLike] = None
    units: str = 'unknown'
    progress: bool = True
    checkpoint_every_s: float = 60.0

    def validate(self) -> 'IngestOptions':
        if self.crop_mode not in CROP_MODES:
            raise DataIngestError(f'crop_mode must be one of {CROP_MODES}, got '
                                  f'{self.crop_mode!r}')
        if self.crop_mode == 'bbox_crop' and not self.target_size:
            raise DataIngestError('crop_mode bbox_crop needs a target size (--target-size)')
        for name, low in (('frame_skip', 1), ('min_views', 1), ('target_size', 8),
                          ('max_frames', 1)):
            value = getattr(self, name)
            if value is not None and int(value) < low:
                raise DataIngestError(f'{name} must be >= {low}, got {value}')
        if not float(self.checkpoint_every_s) >= 0:
            raise DataIngestError(f'checkpoint_every_s must be >= 0, got '
                                  f'{self.checkpoint_every_s}')
        if not 1 <= int(self.jpeg_quality) <= 100:
            raise DataIngestError(f'jpeg_quality must be in 1..100, got {self.jpeg_quality}')
        return self

    def fingerprint(self) -> str:
        """The options that shape the stored data (a resumed run must use the same)."""
        keys = ('frame_skip', 'min_views', 'crop_mode', 'target_size', 'bbox_margin',
                'undistort', 'include_3d', 'confidence_threshold', 'jpeg_quality', 'images')
        return json.dumps({k: getattr(self, k) for k in keys}, sort_keys=True)


@dataclasses.dataclass
class IngestSummary:
    """What :func:`ingest_sleap` wrote."""
    path: Path
    num_samples: int
    num_sessions: int
    num_views: int
    keypoint_names: List[str]
    has_images: bool
    has_keypoints_3d: bool
    skipped_existing: int = 0
    notes: List[str] = dataclasses.field(default_factory=list)

    def __str__(self) -> str:
        extra = f', {self.skipped_existing} already present' if self.skipped_existing else ''
        return (f'{self.path}: {self.num_samples} samples{extra}, {self.num_sessions} '
                f'session(s), {self.num_views} view(s), {len(self.keypoint_names)} keypoints, '
                f"images {'yes' if self.has_images else 'no'}, 3D "
                f"{'yes' if self.has_keypoints_3d else 'no'}")


# ------------------------------------------------------------------------ internal model
@dataclasses.dataclass
class _Camera:
    name: str
    K: np.ndarray            # (3, 3) original-image intrinsics
    dist: np.ndarray         # (5,)
    R: np.ndarray            # (3, 3)
    t: np.ndarray            # (3,)
    size: Optional[Tuple[int, int]]  # (W, H) of the calibration
    calibrated: bool


@dataclasses.dataclass
class _View:
    camera: _Camera
    source: str                              # file the labels came from (for messages)
    spec: Optional[VideoSpec] = None         # None: no images for this view
    frame_size: Optional[Tuple[int, int]] = None  # (W, H) of decoded frames
    pre_affine: np.ndarray = dataclasses.field(default_factory=lambda: np.eye(3))
    num_frames: Optional[int] = None
    video_path: Optional[str] = None          # the source video, stored for exports


@dataclasses.dataclass
class _Obs:
    """One sample before geometry: per view (points (Kd, 2), confidence (Kd,)) or None."""
    frame: int
    instance: int
    track: str
    views: List[Optional[Tuple[np.ndarray, np.ndarray]]]
    kp3d: Optional[np.ndarray] = None       # (Kd, 3) world units


@dataclasses.dataclass
class _Session:
    name: str
    source: str
    views: List[_View]
    node_names: List[str]
    obs: List[_Obs]
    betas: Optional[np.ndarray] = None
    # The SLEAP skeleton's edges and symmetries as node-name pairs (kept for exports).
    edges: List[Tuple[str, str]] = dataclasses.field(default_factory=list)
    symmetries: List[Tuple[str, str]] = dataclasses.field(default_factory=list)


# ------------------------------------------------------------------------------ helpers
def _fail(path: Any, problem: str) -> DataIngestError:
    return DataIngestError(f'{path}: {problem}')


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
    except OSError:
        return path                     # not HDF5: sleap-io's error names the file
    if not pandas_table:
        return path
    csv_path = path.with_suffix('.csv')
    if not csv_path.is_file():
        raise _fail(path, 'is a pandas table (a DeepLabCut .h5): give the CSV DeepLabCut '
                          f'writes beside it ({csv_path.name}), which holds the same labels')
    return csv_path


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
    from smilfit.cameras import CalibrationError, CameraGroup
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
    from smilfit.cameras import CalibrationError, CameraGroup
    try:
        return _cameras_from_group(CameraGroup.from_sleap_io(rs.camera_group))
    except CalibrationError as e:
        raise _fail(path, f'recording session cameras: {e}') from e


def _default_camera(name: str, size: Tuple[int, int]) -> _Camera:
    """An uncalibrated camera: identity R, zero t, f = DEFAULT_FOCAL_FACTOR * max(W, H),
    principal point at the image centre ((W - 1) / 2, (H - 1) / 2)."""
    w, h = size
    K = default_intrinsics(w, h, DEFAULT_FOCAL_FACTOR)
    return _Camera(name, K, np.zeros(5), np.eye(3), np.zeros(3), (int(w), int(h)), False)


def _read_csv_rows(path: Path) -> List[List[str]]:
    try:
        with open(path, newline='', encoding='utf-8-sig') as f:
            rows = [[c.strip() for c in row] for row in csv.reader(f)]
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise _fail(path, f'cannot read CSV ({e})') from e
    return [r for r in rows if any(r) and not r[0].startswith('#')]


def load_joint_lookup(path: PathLike) -> List[Tuple[str, str]]:
    """:func:`smilfit.datasets.joint_lookup.read_joint_lookup`, its errors as
    :class:`DataIngestError`."""
    try:
        return read_joint_lookup(path)
    except (JointLookupError, FileNotFoundError) as e:
        raise DataIngestError(str(e)) from None


def load_shape_betas(path: PathLike) -> Dict[str, np.ndarray]:
    """Read ``session,beta_0,beta_1,...`` rows (optional header) into session -> (B,) betas."""
    path = Path(path)
    rows = _read_csv_rows(path)
    out: Dict[str, np.ndarray] = {}
    for i, row in enumerate(rows):
        try:
            values = np.array([float(v) for v in row[1:]], dtype=np.float32)
        except ValueError:
            if i == 0:
                continue  # header
            raise _fail(path, f'row {i + 1}: betas must be numbers: {row}') from None
        if values.size == 0:
            raise _fail(path, f'row {i + 1}: no betas for session {row[0]!r}')
        out[row[0]] = values
    if not out:
        raise _fail(path, 'no sessions in the betas table')
    sizes = {v.size for v in out.values()}
    if len(sizes) != 1:
        raise _fail(path, f'rows have different numbers of betas: {sorted(sizes)}')
    return out


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


def _match_views(per_view: List[Dict[int, list]], where: Path, multi_view: bool
                 ) -> List[_Obs]:
    """Samples from per-view frame instances: one per track (multi-view: matched by track
    name; one untracked instance per view is matched too), one per instance single-view."""
    frames = sorted(set().union(*[set(d) for d in per_view]))
    obs: List[_Obs] = []
    for fr in frames:
        lists = [d.get(fr, []) for d in per_view]
        if not multi_view:
            for i, (track, pts, conf) in enumerate(lists[0]):
                obs.append(_Obs(fr, i, track or '', [(pts, conf)]))
            continue
        keys: List[Optional[str]] = []
        for items in lists:
            untracked = [x for x in items if x[0] is None]
            if len(untracked) > 1:
                raise _fail(where, f'frame {fr}: {len(untracked)} untracked instances in one '
                                   'view cannot be matched across views (assign tracks)')
            for track, _, _ in items:
                if track not in keys:
                    keys.append(track)
        keys = [k for k in keys if k is not None] + ([None] if None in keys else [])
        for i, key in enumerate(keys):
            views = []
            for items in lists:
                hit = [x for x in items if x[0] == key]
                views.append((hit[0][1], hit[0][2]) if hit else None)
            obs.append(_Obs(fr, i, key or '', views))
    return obs


def _check_frames(views: List[_View], obs: List[_Obs], where: Path) -> None:
    counts = {v.camera.name: v.num_frames for v in views if v.num_frames is not None}
    if len(set(counts.values())) > 1:
        raise _fail(where, f'frame counts of the views disagree: {counts}')
    for j, v in enumerate(views):
        if v.num_frames is None:
            continue
        bad = [o.frame for o in obs if o.views[j] is not None and o.frame >= v.num_frames]
        if bad:
            raise _fail(v.source, f'labels reference frame {bad[0]} but the video of camera '
                                  f'{v.camera.name!r} has {v.num_frames} frames')


def _load_points3d(path: Path, num_nodes: int) -> np.ndarray:
    """anipose ``points3d.h5`` ``tracks`` as (F, T, Kd, 3) float64."""
    try:
        with h5py.File(path, 'r') as f:
            if 'tracks' not in f:
                raise _fail(path, "has no 'tracks' dataset (anipose points3d.h5 layout: "
                                  'tracks (frames, tracks, nodes, 3))')
            tracks = np.asarray(f['tracks'][()], dtype=np.float64)
    except OSError as e:
        raise _fail(path, f'cannot read HDF5 (corrupt or truncated file: {e})') from e
    if tracks.ndim == 3:
        tracks = tracks[:, None]
    if tracks.ndim != 4 or tracks.shape[-1] != 3 or tracks.shape[2] != num_nodes:
        raise _fail(path, f"'tracks' has shape {tracks.shape}; expected (frames, tracks, "
                          f'{num_nodes}, 3) for the {num_nodes}-node skeleton')
    return tracks


def _attach_points3d(obs: List[_Obs], tracks: np.ndarray, track_names: List[str],
                     path: Path) -> None:
    """anipose 3D points onto samples: track axis in the order of ``track_names`` (one
    track: the frame's only sample)."""
    by_frame: Dict[int, List[_Obs]] = {}
    for o in obs:
        by_frame.setdefault(o.frame, []).append(o)
    n_frames, n_tracks = tracks.shape[:2]
    if obs and max(by_frame) >= n_frames:
        raise _fail(path, f'has {n_frames} frames but labels go up to frame {max(by_frame)}')
    for fr, items in by_frame.items():
        if n_tracks == 1:
            if len(items) == 1:
                items[0].kp3d = tracks[fr, 0]
            continue
        for o in items:
            if o.track in track_names and track_names.index(o.track) < n_tracks:
                o.kp3d = tracks[fr, track_names.index(o.track)]


# ---------------------------------------------------------------------------- discovery
def _session_from_dir(folder: Path, opts: IngestOptions, key_prefix: str) -> _Session:
    calib_path = folder / 'calibration.toml'
    cameras = _load_anipose_calibration(calib_path)
    cam_names = [c.name for c in cameras]
    subdirs = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith('.'))
    camera_like = [p.name for p in subdirs
                   if any(q.suffix.lower() in VIDEO_EXTS + ('.slp',) for q in p.iterdir())]
    extra = [n for n in camera_like if n not in cam_names]
    if extra:
        raise _fail(calib_path, f'camera folder(s) {extra} in {folder} are not cameras of the '
                                f'calibration ({cam_names}); camera folder names must match '
                                'the calibration camera names')
    views: List[_View] = []
    per_view: List[Dict[int, list]] = []
    node_names: Optional[List[str]] = None
    first_labels = None
    for cam in cameras:
        cdir = folder / cam.name
        if not cdir.is_dir():
            raise _fail(cdir, f"missing camera folder for camera '{cam.name}' of "
                              f'{calib_path.name}')
        slps = sorted(cdir.glob('*.slp'))
        vids = sorted(p for p in cdir.iterdir() if p.suffix.lower() in VIDEO_EXTS)
        if not slps:
            raise _fail(cdir, 'no .slp labels file in the camera folder')
        if len(slps) > 1:
            raise _fail(cdir, f'several .slp files, expected one: {[p.name for p in slps]}')
        if not vids:
            raise _fail(cdir, f'no video ({", ".join(VIDEO_EXTS)}) in the camera folder')
        if len(vids) > 1:
            raise _fail(cdir, f'several videos, expected one: {[p.name for p in vids]}')
        labels = _load_labels(slps[0])
        if not labels.skeletons:
            raise _fail(slps[0], 'has no skeleton')
        names = list(labels.skeletons[0].node_names)
        if node_names is None:
            node_names, first_labels = names, labels
        elif names != node_names:
            raise _fail(slps[0], f'skeleton nodes {names} differ from the other cameras\' '
                                 f'{node_names}')
        video = _pick_video(labels, vids[0], slps[0])
        spec, size, n, pre = _open_video(None, vids[0], f'{key_prefix}/{cam.name}', vids[0])
        if cam.size is not None and size is not None and tuple(size) != tuple(cam.size):
            raise _fail(vids[0], f'frames are {size[0]}x{size[1]} but {calib_path.name} '
                                 f'calibrates camera {cam.name!r} at {cam.size[0]}x'
                                 f'{cam.size[1]}')
        views.append(_View(cam, str(slps[0]), spec, size, pre, n,
                           video_path=str(vids[0].resolve())))
        per_view.append(_frame_instances(labels, video, node_names, slps[0])
                        if video is not None else {})
    obs = _match_views(per_view, folder, multi_view=True)
    _check_frames(views, obs, folder)
    p3d = folder / 'points3d.h5'
    if opts.include_3d and p3d.exists():
        tracks = _load_points3d(p3d, len(node_names))
        _attach_points3d(obs, tracks, [t.name for t in first_labels.tracks], p3d)
    return _Session(folder.name, str(folder), views, node_names, obs,
                    **_skeleton_pairs(first_labels))


def _pick_video(labels: Any, video_path: Path, slp: Path) -> Any:
    """The labels' video that belongs to the camera folder's video file."""
    if not labels.videos:
        return None
    if len(labels.videos) == 1:
        return labels.videos[0]
    hits = [v for v in labels.videos
            if PureWindowsPath(_video_filename(v)).name == video_path.name]
    if len(hits) != 1:
        raise _fail(slp, f'{len(labels.videos)} videos in the labels and not exactly one '
                         f'named {video_path.name}')
    return hits[0]


def _sessions_from_labels(path: Path, opts: IngestOptions) -> List[_Session]:
    labels = _load_labels(path)
    if not labels.skeletons:
        raise _fail(path, 'has no skeleton')
    node_names = list(labels.skeletons[0].node_names)
    search = [Path(p) for p in opts.video_search_paths]
    stem = _labels_stem(path)
    sessions: List[_Session] = []
    in_session = set()
    rec_sessions = list(getattr(labels, 'sessions', []) or [])
    for si, rs in enumerate(rec_sessions):
        name = stem if len(rec_sessions) == 1 else f'{stem}/session{si}'
        cams = list(rs.camera_group.cameras)
        views, per_view = [], []
        for cam, camera in zip(cams, _session_cameras(rs, path)):
            video = rs.get_video(cam)
            size = camera.size
            spec, fsize, n, pre = (None, None, None, np.eye(3))
            if video is not None:
                in_session.add(id(video))
                vpath = _resolve_video(video, path, search)
                spec, fsize, n, pre = _open_video(video, vpath, f'{name}/{cam.name}', path)
                spec = spec if opts.images else None
            if size is None:
                size = fsize or _size_from_points(labels, video)
                camera.size = size
            elif fsize is not None and tuple(fsize) != size and np.allclose(pre, np.eye(3)):
                raise _fail(path, f'video of camera {cam.name!r} is {fsize[0]}x{fsize[1]} but '
                                  f'the camera is calibrated at {size[0]}x{size[1]}')
            views.append(_View(camera, str(path), spec, fsize or size, pre, n,
                               video_path=_video_path(video, vpath if video is not None
                                                      else None)))
            per_view.append(_frame_instances(labels, video, node_names, path)
                            if video is not None else {})
        obs = _group_obs(rs, cams, labels, node_names, path, opts)
        if obs is None:
            obs = _match_views(per_view, path, multi_view=True)
        _check_frames(views, obs, path)
        if opts.include_3d and opts.points3d is not None:
            p3d = Path(opts.points3d)
            _attach_points3d(obs, _load_points3d(p3d, len(node_names)),
                             [t.name for t in labels.tracks], p3d)
        sessions.append(_Session(name, str(path), views, node_names, obs,
                                 **_skeleton_pairs(labels)))
    loose = [v for v in labels.videos if id(v) not in in_session]
    loose_names = _loose_video_names(loose, stem, bool(sessions))
    for vi, (video, name) in enumerate(zip(loose, loose_names)):
        vpath = _resolve_video(video, path, search)
        spec, fsize, n, pre = _open_video(video, vpath, f'{name}#{vi}', path)
        spec = spec if opts.images else None
        source_size = fsize
        if video.is_cropped and video.source_video is not None:
            src_shape = video.source_video.shape
            source_size = (int(src_shape[2]), int(src_shape[1])) if src_shape else None
        if source_size is None:
            meta = video.backend_metadata.get('shape') if video.backend_metadata else None
            source_size = (int(meta[2]), int(meta[1])) if meta else \
                _size_from_points(labels, video)
        camera = _default_camera('camera', source_size)
        per_view = [_frame_instances(labels, video, node_names, path)]
        obs = _match_views(per_view, path, multi_view=False)
        view = _View(camera, str(path), spec, fsize or source_size, pre, n,
                     video_path=_video_path(video, vpath))
        _check_frames([view], obs, path)
        sessions.append(_Session(name, str(path), [view], node_names, obs,
                                 **_skeleton_pairs(labels)))
    if not sessions:
        raise _fail(path, 'has no videos/labelled frames')
    return sessions


def _stored_pairs(session: _Session, node_names: List[str], kp_index: np.ndarray
                  ) -> Tuple[List[Tuple[int, int]], List[Tuple[int, int]]]:
    """The skeleton's edges and symmetries as pairs of stored keypoint indices (through
    the joint lookup: pairs with a node that is not stored are dropped)."""
    def stored(pairs):
        out = []
        for a, b in pairs:
            ia = np.flatnonzero(kp_index == node_names.index(a)) if a in node_names else []
            ib = np.flatnonzero(kp_index == node_names.index(b)) if b in node_names else []
            if len(ia) and len(ib):
                out.append((int(ia[0]), int(ib[0])))
        return out
    return stored(session.edges), stored(session.symmetries)


def _skeleton_pairs(labels: Any) -> Dict[str, List[Tuple[str, str]]]:
    """The first skeleton's edges and symmetries as node-name pairs."""
    skeleton = labels.skeletons[0]
    return dict(edges=[tuple(map(str, e)) for e in skeleton.edge_names],
                symmetries=[tuple(str(n.name) for n in sym.nodes)
                            for sym in getattr(skeleton, 'symmetries', [])])


def _loose_video_names(videos: List[Any], stem: str, has_sessions: bool) -> List[str]:
    """Session names of single-view videos: the labels file's stem for a lone video, else
    ``<stem>/<video>`` where ``<video>`` is the video file's stem, or an image sequence's
    folder (a DeepLabCut ``labeled-data/<video>/`` folder), or, when several sequences
    share a folder (COCO images grouped by size), ``<folder>/<first image>``."""
    if len(videos) == 1 and not has_sessions:
        return [stem]

    def folder(video: Any) -> Optional[str]:
        files = video.filename if isinstance(video.filename, list) else None
        parents = {str(PureWindowsPath(f).parent) for f in files} if files else set()
        return PureWindowsPath(files[0]).parent.name if len(parents) == 1 else None

    folders = [folder(v) for v in videos]
    names = []
    for video, name in zip(videos, folders):
        first = PureWindowsPath(_video_filename(video)).stem
        if name is None:
            names.append(f'{stem}/{first}')
        else:
            names.append(f'{stem}/{name}' if folders.count(name) == 1
                         else f'{stem}/{name}/{first}')
    return names


def _video_path(video: Any, resolved: Optional[Path]) -> Optional[str]:
    """Where a view's video is: the resolved file; for an image sequence, its folder when
    the sequence is exactly that folder's images in name order (what exports reopen);
    else the name the labels give (None for other image sequences)."""
    if resolved is not None:
        return str(Path(resolved).resolve())
    if video is None:
        return None
    if isinstance(video.filename, list):
        files = [Path(f) for f in video.filename]
        folder = files[0].parent if files else None
        if folder is None or not folder.is_dir():
            return None
        images = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTS)
        same = [p.resolve() for p in images] == [f.resolve() for f in files]
        return str(folder.resolve()) if same else None
    return _video_filename(video)


def _video_shape(view: _View) -> Tuple[int, int, int]:
    """``(frames, height, width)`` of a view's source video, 0 where unknown."""
    W, H = view.frame_size or view.camera.size or (0, 0)
    return int(view.num_frames or 0), int(H), int(W)


def _labels_stem(path: Path) -> str:
    """Session name of a labels file: its name without ``.slp``/``.pkg.slp``/
    ``.analysis.h5``-style suffixes (``clip.slp`` -> ``clip``)."""
    name = path.name
    for suffix in ('.pkg.slp', '.analysis.h5', '.slp', '.h5', '.json', '.csv', '.nwb'):
        if name.lower().endswith(suffix):
            return name[:-len(suffix)]
    return path.stem


def _size_from_points(labels: Any, video: Any) -> Tuple[int, int]:
    """Image size (W, H) when no video or metadata says it: the keypoints' extent."""
    xy = [inst.numpy() for lf in labels.labeled_frames if lf.video is video
          for inst in lf.instances]
    pts = np.concatenate(xy) if xy else np.zeros((0, 2))
    pts = pts[np.isfinite(pts).all(-1)]
    if not len(pts):
        return 1, 1
    return int(math.ceil(max(pts[:, 0].max(), 0))) + 1, int(math.ceil(max(pts[:, 1].max(), 0))) + 1


def _group_obs(rs: Any, cams: List[Any], labels: Any, node_names: List[str], path: Path,
               opts: IngestOptions) -> Optional[List[_Obs]]:
    """Samples from a recording session's instance groups (None when it has none)."""
    groups = getattr(rs, 'frame_groups', None) or {}
    if not groups:
        return None
    cam_index = {id(c): j for j, c in enumerate(cams)}
    obs: List[_Obs] = []
    for fr in sorted(groups):
        for gi, ig in enumerate(groups[fr].instance_groups):
            views: List[Optional[Tuple[np.ndarray, np.ndarray]]] = [None] * len(cams)
            track = ''
            for cam, inst in ig.instance_by_camera.items():
                if id(cam) not in cam_index:
                    continue
                views[cam_index[id(cam)]] = _instance_arrays(inst, node_names, path)
                if not track and inst.track is not None:
                    track = inst.track.name
            kp3d = None
            i3d = getattr(ig, 'instance_3d', None)
            if opts.include_3d and i3d is not None and i3d.points is not None:
                kp3d = np.asarray(i3d.numpy(), dtype=np.float64)
                if kp3d.shape != (len(node_names), 3):
                    raise _fail(path, f'frame {fr}: 3D instance has shape {kp3d.shape}')
            obs.append(_Obs(int(fr), gi, track, views, kp3d))
    return obs


def discover(input_path: PathLike, opts: IngestOptions) -> List[_Session]:
    """Find and validate the sessions of an input (see the module docstring)."""
    path = Path(input_path)
    if not path.exists():
        raise _fail(path, 'does not exist')
    if path.is_dir():
        if (path / 'calibration.toml').is_file():
            return [_session_from_dir(path, opts, path.name)]
        subs = sorted(p for p in path.iterdir()
                      if p.is_dir() and (p / 'calibration.toml').is_file())
        if subs:
            return [_session_from_dir(p, opts, p.name) for p in subs]
        camera_like = [p for p in path.iterdir() if p.is_dir() and any(p.glob('*.slp'))]
        if camera_like:
            raise _fail(path / 'calibration.toml', 'missing: a session folder needs the '
                                                   'anipose calibration of its cameras')
        raise _fail(path, 'no session found (a session folder holds calibration.toml and '
                          'one folder per camera; or give a labels file)')
    return _sessions_from_labels(path, opts)


# ----------------------------------------------------------------------------- geometry
@dataclasses.dataclass
class _Prepared:
    """Everything but the images, for the kept samples of one session."""
    session: _Session
    arrays: Dict[str, np.ndarray]
    boxes: np.ndarray          # (N, C, 4) int crop boxes in decoded-frame pixels
    out_sizes: np.ndarray      # (N, C, 2) stored (W, H)
    frames: np.ndarray         # (N,)
    session_index: int = -1    # index in the written file
    skipped: int = 0           # samples already in the file (resume)


def _keypoint_map(node_names: List[str], opts: IngestOptions,
                  lookup: Optional[List[Tuple[str, str]]]) -> Tuple[List[str], np.ndarray]:
    if lookup is None:
        return list(node_names), np.arange(len(node_names))
    missing = [d for _, d in lookup if d and d not in node_names]
    if missing:
        raise _fail(opts.joint_lookup, f'data keypoints {missing} are not in the skeleton '
                                       f'(nodes: {node_names})')
    return [m for m, _ in lookup], np.array([node_names.index(d) if d else -1
                                             for _, d in lookup])


def _prepare(session: _Session, opts: IngestOptions, num_views: int,
             kp_index: np.ndarray) -> Optional[_Prepared]:
    frames = sorted({o.frame for o in session.obs})[::opts.frame_skip]
    if opts.max_frames:
        frames = frames[:opts.max_frames]
    keep_frames = set(frames)
    obs = [o for o in session.obs if o.frame in keep_frames]
    n, c, k = len(obs), num_views, len(kp_index)
    if n == 0:
        return None
    mapped = kp_index >= 0
    kp = np.full((n, c, k, 2), np.nan)
    conf = np.zeros((n, c, k))
    for i, o in enumerate(obs):
        for j, v in enumerate(o.views):
            if v is not None:
                kp[i, j, mapped] = v[0][kp_index[mapped]]
                conf[i, j, mapped] = v[1][kp_index[mapped]]
    K = np.broadcast_to(np.eye(3), (n, c, 3, 3)).copy()
    dist = np.zeros((n, c, 5))
    R = np.broadcast_to(np.eye(3), (n, c, 3, 3)).copy()
    t = np.zeros((n, c, 3))
    crop = np.broadcast_to(np.eye(3), (n, c, 3, 3)).copy()
    calibrated = np.zeros((n, c), bool)
    boxes = np.zeros((n, c, 4), np.int64)
    out_sizes = np.zeros((n, c, 2), np.int32)
    for j, view in enumerate(session.views):
        cam = view.camera
        src = kp[:, j]                       # (n, k, 2) original-image pixels
        if opts.undistort and cam.calibrated and np.any(cam.dist != 0):
            if not np.allclose(view.pre_affine, np.eye(3)):
                raise _fail(view.source, 'undistorting a cropped video is not supported')
            src = undistort_points(src, cam.K, cam.dist)   # same K, no distortion
        else:
            dist[:, j] = cam.dist
        decoded = apply_affine(view.pre_affine, src)         # pixels of decoded frames
        frame_size = view.frame_size or cam.size
        for i in range(n):
            box = crop_box(opts.crop_mode, frame_size, decoded[i], opts.bbox_margin)
            size = (opts.target_size, opts.target_size) if opts.target_size else box[2:]
            boxes[i, j] = box
            out_sizes[i, j] = size
            crop[i, j] = box_affine(box, size) @ view.pre_affine
        kp[:, j] = np.einsum('nab,nkb->nka', crop[:, j, :2, :2], src) + crop[:, j, None, :2, 2]
        K[:, j] = crop[:, j] @ cam.K
        R[:, j] = cam.R
        t[:, j] = cam.t
        calibrated[:, j] = cam.calibrated
    finite = np.isfinite(kp).all(-1)
    conf = np.where(finite, conf, 0.0)
    visible = finite & (conf >= opts.confidence_threshold)
    valid = visible.any(-1)
    valid[:, len(session.views):] = False
    keep = valid.sum(-1) >= opts.min_views
    if not keep.any():
        return None
    kp3d = None
    if opts.include_3d and any(o.kp3d is not None for o in obs):
        kp3d = np.full((n, k, 3), np.nan)
        for i, o in enumerate(obs):
            if o.kp3d is not None:
                kp3d[i, mapped] = o.kp3d[kp_index[mapped]]
    idx = np.flatnonzero(keep)
    arrays = {
        'frame': np.array([obs[i].frame for i in idx], np.int64),
        'instance': np.array([obs[i].instance for i in idx], np.int32),
        'track': np.array([obs[i].track for i in idx], dtype=object),
        'valid': valid[idx], 'calibrated': calibrated[idx],
        'keypoints_2d': kp[idx].astype(np.float32), 'confidence': conf[idx].astype(np.float32),
        'visible': visible[idx], 'K': K[idx], 'dist': dist[idx], 'R': R[idx], 't': t[idx],
        'image_size': out_sizes[idx], 'crop': crop[idx],
    }
    if kp3d is not None:
        arrays['keypoints_3d'] = kp3d[idx].astype(np.float32)
    if session.betas is not None:
        arrays['betas'] = np.broadcast_to(session.betas, (len(idx),) + session.betas.shape)
    return _Prepared(session, arrays, boxes[idx], out_sizes[idx], arrays['frame'])


# ------------------------------------------------------------------------------- driver
def _check_output(output: Path, overwrite: bool, resume: bool) -> None:
    if output.exists() and not (overwrite or resume):
        raise _fail(output, 'already exists (use --overwrite to replace it or --resume to '
                            'add missing samples)')
    if output.is_dir():
        raise _fail(output, 'is a directory; give the dataset file path (e.g. out.h5)')


def ingest_sleap(input_path: PathLike, output_path: PathLike, *, overwrite: bool = False,
                 resume: bool = False, options: Optional[IngestOptions] = None,
                 **option_kwargs: Any) -> IngestSummary:
    """Convert SLEAP data into a smilfit HDF5 dataset (see the module docstring).

    Args:
        input_path: a session folder, a folder of session folders, or a labels file.
        output_path: the dataset file to write (atomically, via ``<output>.partial``).
        overwrite: replace an existing output.
        resume: continue an interrupted ``--resume`` run (``<output>.partial``) or add the
            samples missing from an existing output; already written samples (same session,
            frame and instance) are skipped without decoding their video frames. The shaping
            options (crop, size, thresholds, ...) must be the same as before.
        options: :class:`IngestOptions`; or give its fields as keyword arguments.

    Returns:
        An :class:`IngestSummary`.

    Raises:
        DataIngestError: any problem with the inputs; nothing is written then.
    """
    opts = dataclasses.replace(options or IngestOptions(), **option_kwargs).validate()
    output = Path(output_path)
    _check_output(output, overwrite, resume)
    lookup = load_joint_lookup(opts.joint_lookup) if opts.joint_lookup else None
    betas = load_shape_betas(opts.shape_betas) if opts.shape_betas else None
    try:
        sessions = discover(input_path, opts)
        return _ingest(sessions, input_path, output, overwrite, resume, opts, lookup, betas)
    except DatasetFormatError as e:  # e.g. resuming a file written with other options
        raise DataIngestError(str(e)) from e
    finally:
        close_readers()


def _ingest(sessions: List[_Session], input_path: PathLike, output: Path, overwrite: bool,
            resume: bool, opts: IngestOptions, lookup: Optional[List[Tuple[str, str]]],
            betas: Optional[Dict[str, np.ndarray]]) -> IngestSummary:
    names = [s.name for s in sessions]
    if len(set(names)) != len(names):
        raise _fail(input_path, f'session names are not unique: {names}')
    node_names = sessions[0].node_names
    for s in sessions[1:]:
        if s.node_names != node_names:
            raise _fail(s.source, f'skeleton nodes {s.node_names} differ from {node_names} '
                                  f'of {sessions[0].source}')
    out_names, kp_index = _keypoint_map(node_names, opts, lookup)
    if betas is not None:
        missing = [s.name for s in sessions if s.name not in betas]
        if missing:
            raise _fail(opts.shape_betas, f'no betas for session(s) {missing} (sessions: '
                                          f'{names})')
        for s in sessions:
            s.betas = betas[s.name]
    num_views = max(len(s.views) for s in sessions)
    prepared = [p for p in (_prepare(s, opts, num_views, kp_index) for s in sessions)
                if p is not None]
    if not prepared:
        raise _fail(input_path, 'no sample has a visible keypoint in at least '
                                f'{opts.min_views} view(s): all selected keypoints are NaN '
                                f'(or below confidence {opts.confidence_threshold})'
                                + (f' after the joint lookup {opts.joint_lookup}'
                                   if lookup else ''))
    has_images = opts.images and any(v.spec is not None for p in prepared
                                     for v in p.session.views)
    has_3d = any('keypoints_3d' in p.arrays for p in prepared)
    notes = [f'{p.session.name}/{v.camera.name}: video not found, no images'
             for p in prepared for v in p.session.views if v.spec is None and opts.images]
    attrs = {'ingest_options': opts.fingerprint(), 'crop_mode': opts.crop_mode,
             'target_size': int(opts.target_size or 0), 'undistorted': bool(opts.undistort),
             'confidence_threshold': float(opts.confidence_threshold)}
    if opts.body_model:
        attrs['body_model'] = str(opts.body_model)
    params_attrs = {'body_model': str(opts.body_model or 'unknown')}
    total = sum(len(p.frames) for p in prepared)
    with DatasetWriter(output, keypoint_names=out_names, num_views=num_views,
                       overwrite=overwrite, resume=resume, source=f'sleap: {input_path}',
                       units=opts.units, attrs=attrs, params_attrs=params_attrs,
                       created_by='smilfit.datasets.ingest_sleap',
                       checkpoint_every_s=opts.checkpoint_every_s) as writer, \
            _progress(total, opts.progress) as bar, _pool(opts.workers) as pool:
        try:
            for p in prepared:
                cams = [v.camera.name for v in p.session.views]
                p.session_index = writer.add_session(
                    p.session.name, cams,
                    video_paths=[v.video_path or '' for v in p.session.views],
                    video_shapes=[_video_shape(v) for v in p.session.views],
                    video_dist=[v.camera.dist for v in p.session.views])
            writer.set_skeleton(*_stored_pairs(sessions[0], node_names, kp_index))
            for p, block, blobs in _render(prepared, writer, opts, pool):
                arrays = {k: v[block] for k, v in p.arrays.items() if k != 'betas'}
                arrays['session'] = np.full(len(block), p.session_index, np.int32)
                if blobs is not None:
                    arrays['images'] = blobs
                if 'betas' in p.arrays:
                    arrays['params'] = {'betas': p.arrays['betas'][block]}
                writer.add_samples(arrays)
                bar.update(len(block))
            n_written = writer.num_samples
            skipped = sum(p.skipped for p in prepared)
        except (OSError, DatasetFormatError) as e:
            raise DataIngestError(str(e)) from e
        except BrokenProcessPool as e:
            raise DataIngestError(f'a video worker process died ({e}); retry with '
                                  '--workers 0') from e
        writer.commit()
    return IngestSummary(output, n_written, len(prepared), num_views, out_names, has_images,
                         has_3d, skipped, notes)


@contextlib.contextmanager
def _progress(total: int, enabled: bool) -> Iterator[Any]:
    from tqdm import tqdm
    bar = tqdm(total=total, unit='sample', desc='preprocess', disable=not enabled,
               dynamic_ncols=True)
    try:
        yield bar
    finally:
        bar.close()


@contextlib.contextmanager
def _pool(workers: int) -> Iterator[Optional[Any]]:
    """A ``spawn`` process pool for video jobs (None for ``workers <= 1``).

    Not ``fork``: a child forked after this process has used OpenCV's (or FFmpeg's) thread
    pools can deadlock. Spawned workers import smilfit once (a few seconds) and run OpenCV
    single-threaded; a worker that dies raises ``BrokenProcessPool`` instead of hanging.
    """
    if workers is None or workers <= 1:
        yield None
        return
    pool = concurrent.futures.ProcessPoolExecutor(
        int(workers), mp_context=multiprocessing.get_context('spawn'), initializer=worker_init)
    try:
        yield pool
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _render(prepared: List[_Prepared], writer: DatasetWriter, opts: IngestOptions,
            pool: Optional[Any]) -> Iterator[Tuple[_Prepared, np.ndarray,
                                                   Optional[List[List[bytes]]]]]:
    """Yield (session, sample indices of a block, images per sample and view) in order.

    Blocks of up to BLOCK_SAMPLES samples; each view of a block is one job. With a pool,
    jobs run in parallel and come back in submission order (deterministic output)."""
    plan: List[Tuple[_Prepared, np.ndarray]] = []
    for p in prepared:
        todo = np.array([i for i in range(len(p.frames))
                         if not writer.contains(p.session.name, int(p.frames[i]),
                                                int(p.arrays['instance'][i]))], np.int64)
        p.skipped = len(p.frames) - len(todo)
        for s in range(0, len(todo), BLOCK_SAMPLES):
            plan.append((p, todo[s:s + BLOCK_SAMPLES]))
    c = writer.num_views

    def job(p: _Prepared, block: np.ndarray, j: int):
        view = p.session.views[j]
        spec = view.spec
        if opts.undistort and view.camera.calibrated and np.any(view.camera.dist != 0):
            spec = dataclasses.replace(spec, K=tuple(map(tuple, view.camera.K)),
                                       dist=tuple(view.camera.dist))
        items = [(int(p.frames[i]), tuple(int(x) for x in p.boxes[i, j]),
                  tuple(int(x) for x in p.out_sizes[i, j])) for i in block]
        return spec, items, opts.jpeg_quality

    def jobs_for_pool():
        for p, block in plan:
            for j, view in enumerate(p.session.views):
                if view.spec is not None and view.spec.kind == 'cv2':
                    yield job(p, block, j)

    results = None
    if pool is not None and opts.images:
        results = pool.map(_run_job, jobs_for_pool())
    for p, block in plan:
        if not opts.images or all(v.spec is None for v in p.session.views):
            yield p, block, None
            continue
        blobs = [[b''] * c for _ in block]
        for j, view in enumerate(p.session.views):
            if view.spec is None:
                continue
            if results is not None and view.spec.kind == 'cv2':
                encoded = next(results)
            else:
                encoded = _run_job(job(p, block, j))
            for r, data in enumerate(encoded):
                blobs[r][j] = data
        yield p, block, blobs


def _run_job(args: Tuple[VideoSpec, list, int]) -> List[bytes]:
    spec, items, quality = args
    return render_view_block(spec, items, quality)
