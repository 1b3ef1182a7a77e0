"""Write model keypoints as SLEAP predicted instances (``.slp``, read by SLEAP and sleap-io).

A regressor's or a fit's 2D keypoints become :class:`sleap_io.PredictedInstance` objects on
the videos they were predicted from, so they can be opened in SLEAP's GUI beside (or
instead of) the tracker's own predictions, proofread, or used as training labels::

    writer = SlpPredictionWriter(node_names=['nose', 'tail'], edges=[('nose', 'tail')],
                                 videos=['cam0.mp4', 'cam1.mp4'])
    writer.add(video=0, frame_idx=12, points=kp (I, N, 2), point_scores=None)
    writer.add(video=1, frame_idx=12, points=kp2)
    writer.save('predictions.slp')            # atomic: temp file renamed into place

Points are pixels ``(x, y)`` of the video frame (the convention of smilfit's HDF5 format
and of SLEAP); NaN marks a point that is not predicted (SLEAP shows it as missing). One
``add`` call holds the instances of one (video, frame); adding the same (video, frame)
twice appends instances. Tracks (one per instance slot) are optional. Only arrays are kept
until :meth:`SlpPredictionWriter.save` (about 20 bytes per point), so long videos stay
cheap; sleap-io objects are built at save time.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from smilfit.utils.atomic import atomic_path

PathLike = Union[str, os.PathLike]
#: What a video can be given as: a path, or ``dict(filename=..., shape=(T, H, W, C))``
#: for a video that does not exist here (sleap-io then never opens it).
VideoRef = Union[PathLike, Dict[str, Any]]

__all__ = ['SlpPredictionWriter', 'write_predictions_slp', 'SlpExportError']

#: Video files SLEAP opens with its MediaVideo backend (OpenCV / ffmpeg).
MEDIA_EXTS = ('.mp4', '.avi', '.mov', '.mkv', '.mj2', '.webm', '.mpg', '.mpeg')


class SlpExportError(ValueError):
    """Inputs that cannot be written as SLEAP predictions; the message names them."""


def _video(ref: VideoRef, index: int):
    """A sleap-io ``Video`` for ``ref`` (opened lazily: never decoded here)."""
    import sleap_io as sio
    if isinstance(ref, dict):
        if 'filename' not in ref:
            raise SlpExportError(f'video {index}: a dict video needs a filename, got '
                                 f'{sorted(ref)}')
        if Path(str(ref['filename'])).is_dir():
            return _video(str(ref['filename']), index)
        meta = {}
        if Path(str(ref['filename'])).suffix.lower() in MEDIA_EXTS:
            # What SLEAP itself writes for a video file (its MediaVideo backend), so SLEAP
            # opens the exported file like one of its own.
            meta = dict(grayscale=False, bgr=True, dataset='', input_format='')
        if ref.get('shape') is not None:
            shape = tuple(int(s) for s in ref['shape'])
            if len(shape) != 4:
                raise SlpExportError(f'video {index}: shape must be (frames, height, width, '
                                     f'channels), got {shape}')
            meta.update(shape=shape, grayscale=shape[3] == 1)
        return sio.Video(filename=str(ref['filename']), backend=None,
                         backend_metadata=meta, open_backend=False)
    path = Path(ref)
    if path.is_dir():     # a folder of images: sleap-io's image-sequence video
        files = sorted(str(p) for p in path.iterdir()
                       if p.suffix.lower() in ('.png', '.jpg', '.jpeg', '.bmp', '.tif',
                                               '.tiff'))
        if not files:
            raise SlpExportError(f'video {index}: folder {path} holds no images')
        # Opened: sleap-io stores an image sequence's file list only from its backend.
        return sio.Video.from_filename(files)
    return sio.Video(filename=str(path), backend=None, open_backend=False)


def _recording_session(session: Dict[str, Any], videos: List[Any],
                       frames: Dict[Tuple[int, int], Tuple[Any, np.ndarray]],
                       points_3d: Dict[int, Dict[int, np.ndarray]], skeleton):
    """A sleap-io ``RecordingSession`` of calibrated cameras, each with its video, and a
    ``FrameGroup`` per frame whose ``InstanceGroup`` s join one animal's instances across
    the cameras (with its 3D points as a ``PredictedInstance3D`` where given)."""
    import cv2
    import sleap_io as sio
    cameras = []
    for cam in session['cameras']:
        rvec = cv2.Rodrigues(np.asarray(cam['R'], np.float64))[0].reshape(3)
        size = cam.get('size')
        cameras.append(sio.Camera(matrix=np.asarray(cam['K'], np.float64),
                                  dist=np.asarray(cam.get('dist', np.zeros(5)), np.float64),
                                  size=None if size is None else tuple(int(x) for x in size),
                                  rvec=rvec, tvec=np.asarray(cam['t'], np.float64).reshape(3),
                                  name=str(cam.get('name', ''))))
    frame_groups = {}
    for f in sorted({f for (v, f) in frames if v in session['videos']}):
        by_camera, groups = {}, {}
        for v, camera in zip(session['videos'], cameras):
            if (v, f) not in frames:
                continue
            frame, grp = frames[(v, f)]
            by_camera[camera] = frame
            for instance, g in zip(frame.instances, grp.tolist()):
                if g >= 0:
                    groups.setdefault(g, {})[camera] = instance
        instance_groups = []
        for g, members in sorted(groups.items()):
            pts = points_3d.get(f, {}).get(g)
            instance_3d = None if pts is None else sio.PredictedInstance3D(
                points=pts, skeleton=skeleton, score=1.0)
            instance_groups.append(sio.InstanceGroup(instance_by_camera=members,
                                                     instance_3d=instance_3d))
        frame_groups[f] = sio.FrameGroup(frame_idx=f, instance_groups=instance_groups,
                                         labeled_frame_by_camera=by_camera)
    out = sio.RecordingSession(camera_group=sio.CameraGroup(cameras=cameras),
                               frame_group_by_frame_idx=frame_groups)
    for v, camera in zip(session['videos'], cameras):
        out.add_video(videos[v], camera)
    return out


class SlpPredictionWriter:
    """Collect predicted keypoints per (video, frame) and save them as one ``.slp`` file.

    Args:
        node_names: the N keypoint names (the skeleton's nodes, in the points' order).
        videos: the videos (paths, image folders or ``dict(filename, shape)``); ``add``
            refers to them by index.
        edges: optional skeleton edges as (name, name) or (index, index) pairs.
        symmetries: optional left/right node pairs, like ``edges``.
        sessions: optional multi-camera recording sessions, each
            ``dict(videos=[video index per camera], cameras=[dict(name, K (3, 3),
            dist (5,), R (3, 3), t (3,), size (W, H))])`` (OpenCV convention, the camera
            maps world to camera coordinates): stored as sleap-io ``RecordingSession`` with
            its ``CameraGroup``, so SLEAP sees the calibration.
        skeleton_name: the skeleton's name in the file.
        tracks: None; the number of instance slots to put on tracks ``track_0`` ...:
            instance ``i`` of every frame goes on track ``i`` (e.g. one animal per crop);
            or the track names (``track_ids`` of :meth:`add` index them).
        provenance: extra metadata stored in the file (JSON-compatible values).

    Raises:
        SlpExportError: names are empty or repeated, an edge names an unknown node.
    """

    def __init__(self, node_names: Sequence[str], videos: Sequence[VideoRef],
                 edges: Sequence[Tuple[Union[int, str], Union[int, str]]] = (),
                 skeleton_name: str = 'smilfit',
                 tracks: Union[None, int, Sequence[str]] = None,
                 provenance: Optional[Dict[str, Any]] = None,
                 symmetries: Sequence[Tuple[Union[int, str], Union[int, str]]] = (),
                 sessions: Sequence[Dict[str, Any]] = ()) -> None:
        self.node_names = [str(n) for n in node_names]
        if not self.node_names:
            raise SlpExportError('node_names is empty: a skeleton needs at least one node')
        dup = sorted({n for n in self.node_names if self.node_names.count(n) > 1})
        if dup:
            raise SlpExportError(f'node_names repeats {dup}; SLEAP nodes must be unique')
        self.videos = list(videos)
        if not self.videos:
            raise SlpExportError('videos is empty: predictions need the video they are on')
        self.edges = [self._edge(e) for e in edges]
        self.symmetries = [self._edge(e) for e in symmetries]
        self.sessions = [self._session(s, i) for i, s in enumerate(sessions)]
        self.skeleton_name = str(skeleton_name)
        if tracks is None or isinstance(tracks, (int, np.integer)):
            self.track_names = [f'track_{i}' for i in range(int(tracks or 0))]
        else:
            self.track_names = [str(t) for t in tracks]
            if len(set(self.track_names)) != len(self.track_names):
                raise SlpExportError(f'track names repeat: {self.track_names}')
        self.tracks = len(self.track_names) if tracks is not None else None
        self.provenance = dict(provenance or {})
        # (video, frame) -> list of (points (I, N, 2), point scores (I, N), scores (I,),
        # track ids (I,)): small arrays only; sleap-io objects are made at save time.
        self._frames: Dict[Tuple[int, int], List[Tuple[np.ndarray, ...]]] = {}
        # (session, frame) -> list of (points (I, N, 3), group ids (I,)).
        self._frames_3d: Dict[Tuple[int, int], List[Tuple[np.ndarray, np.ndarray]]] = {}

    def _edge(self, edge) -> Tuple[int, int]:
        if len(edge) != 2:
            raise SlpExportError(f'edge {edge!r} must be a pair')
        out = []
        for end in edge:
            if isinstance(end, str):
                if end not in self.node_names:
                    raise SlpExportError(f'edge {edge!r}: unknown node {end!r}; nodes: '
                                         f'{self.node_names}')
                out.append(self.node_names.index(end))
            else:
                if not 0 <= int(end) < len(self.node_names):
                    raise SlpExportError(f'edge {edge!r}: node index {end} out of range '
                                         f'for {len(self.node_names)} nodes')
                out.append(int(end))
        return out[0], out[1]

    def _session(self, session: Dict[str, Any], index: int) -> Dict[str, Any]:
        videos, cameras = list(session.get('videos', ())), list(session.get('cameras', ()))
        if len(videos) != len(cameras) or not videos:
            raise SlpExportError(f'session {index}: give one camera per video, got '
                                 f'{len(videos)} videos and {len(cameras)} cameras')
        for v in videos:
            if not 0 <= int(v) < len(self.videos):
                raise SlpExportError(f'session {index}: video index {v} out of range')
        return dict(videos=[int(v) for v in videos], cameras=cameras)

    def _session_3d(self, session: int) -> Dict[int, Dict[int, np.ndarray]]:
        """frame -> group id -> (N, 3) points of one session."""
        out: Dict[int, Dict[int, np.ndarray]] = {}
        for (s, f), parts in self._frames_3d.items():
            if s == session:
                for pts, grp in parts:
                    out.setdefault(f, {}).update(zip(grp.tolist(), pts))
        return out

    @property
    def num_frames(self) -> int:
        """Number of distinct (video, frame) pairs added."""
        return len(self._frames)

    @property
    def num_instances(self) -> int:
        return sum(part[0].shape[0] for parts in self._frames.values() for part in parts)

    def add(self, video: int, frame_idx: int, points: Any, point_scores: Any = None,
            scores: Any = None, track_ids: Any = None, groups: Any = None) -> None:
        """Add the predicted instances of one frame of one video.

        Args:
            video: index into ``videos``.
            frame_idx: frame number in that video (>= 0).
            points: (I, N, 2) or (N, 2) pixels (x, y); NaN = not predicted.
            point_scores: optional (I, N) (or (N,)) per-point scores (default 1 where the
                point is finite, 0 elsewhere).
            scores: optional (I,) instance scores (default: mean point score).
            track_ids: optional (I,) track numbers (< ``tracks``; -1: none); default:
                instance ``i`` on track ``i`` when the writer has tracks.
            groups: optional (I,) ids: in a session's frame, the instances with the same id
                on its cameras are one animal (a sleap-io ``InstanceGroup``, with the 3D
                points of :meth:`add_3d` for that id); -1 or None: ungrouped.

        Raises:
            SlpExportError: a bad video index, frame number or shape (the message says
                which).
        """
        if not 0 <= int(video) < len(self.videos):
            raise SlpExportError(f'video index {video} out of range for {len(self.videos)} '
                                 'videos')
        if int(frame_idx) < 0:
            raise SlpExportError(f'frame_idx must be >= 0, got {frame_idx}')
        pts = np.asarray(points, dtype=np.float64)
        if pts.ndim == 2:
            pts = pts[None]
        N = len(self.node_names)
        if pts.ndim != 3 or pts.shape[1:] != (N, 2):
            raise SlpExportError(f'points of video {video} frame {frame_idx} must be (I, {N}, '
                                 f'2) for {N} nodes, got {np.shape(points)}')
        finite = np.isfinite(pts).all(-1)
        pts = np.where(finite[..., None], pts, np.nan)
        if point_scores is None:
            ps = finite.astype(np.float64)
        else:
            ps = np.asarray(point_scores, dtype=np.float64).reshape(pts.shape[:2])
        if scores is None:
            sc = np.where(finite.any(1), np.nanmean(np.where(finite, ps, np.nan), 1)
                          if finite.any() else 0.0, 0.0)
        else:
            sc = np.asarray(scores, dtype=np.float64).reshape(pts.shape[0])
        I = pts.shape[0]
        if track_ids is None:
            tid = np.arange(I) if self.tracks else np.full(I, -1)
        else:
            tid = np.asarray(track_ids, dtype=np.int64).reshape(I)
        if np.any(tid >= (self.tracks or 0)):
            raise SlpExportError(f'track_ids {tid.tolist()} of video {video} frame '
                                 f'{frame_idx}: the writer has {self.tracks or 0} tracks')
        grp = (np.full(I, -1, np.int64) if groups is None
               else np.asarray(groups, dtype=np.int64).reshape(I))
        self._frames.setdefault((int(video), int(frame_idx)), []).append(
            (pts, ps, np.nan_to_num(sc), tid, grp))

    def add_3d(self, session: int, frame_idx: int, points: Any, groups: Any) -> None:
        """Add 3D points of grouped instances (see ``groups`` of :meth:`add`).

        Args:
            session: index into ``sessions``.
            frame_idx: frame number.
            points: (I, N, 3) in the calibration's units; NaN = not predicted.
            groups: (I,) the group ids the 2D instances of these animals carry.
        """
        if not 0 <= int(session) < len(self.sessions):
            raise SlpExportError(f'session index {session} out of range for '
                                 f'{len(self.sessions)} sessions')
        pts = np.asarray(points, dtype=np.float64).reshape(-1, len(self.node_names), 3)
        grp = np.asarray(groups, dtype=np.int64).reshape(pts.shape[0])
        self._frames_3d.setdefault((int(session), int(frame_idx)), []).append((pts, grp))

    def build_labels(self):
        """The sleap-io ``Labels`` of everything added (frames sorted by video, frame)."""
        import sleap_io as sio
        skeleton = sio.Skeleton(nodes=list(self.node_names), name=self.skeleton_name)
        for a, b in self.edges:
            skeleton.add_edge(self.node_names[a], self.node_names[b])
        for a, b in self.symmetries:
            skeleton.add_symmetry(self.node_names[a], self.node_names[b])
        videos = [_video(v, i) for i, v in enumerate(self.videos)]
        tracks = [sio.Track(name=name) for name in self.track_names]
        frames, by_key = [], {}
        for (v, f) in sorted(self._frames):
            parts = self._frames[(v, f)]
            pts, ps, sc, tid, grp = (np.concatenate([part[k] for part in parts])
                                     for k in range(5))
            instances = []
            for i in range(pts.shape[0]):
                track = tracks[tid[i]] if tid[i] >= 0 else None
                instances.append(sio.PredictedInstance.from_numpy(
                    points_data=pts[i], skeleton=skeleton, point_scores=ps[i],
                    score=float(sc[i]), track=track))
            frame = sio.LabeledFrame(video=videos[v], frame_idx=int(f), instances=instances)
            frames.append(frame)
            by_key[(v, f)] = (frame, grp)
        sessions = [_recording_session(s, videos, by_key, self._session_3d(k), skeleton)
                    for k, s in enumerate(self.sessions)]
        labels = sio.Labels(labeled_frames=frames, videos=videos, skeletons=[skeleton],
                            tracks=tracks, sessions=sessions)
        labels.provenance.update(dict(self.provenance, source='smilfit'))
        return labels

    def save(self, path: PathLike, overwrite: bool = True) -> Path:
        """Write the ``.slp`` file atomically (:func:`smilfit.utils.atomic.atomic_path`).

        Raises:
            FileExistsError: ``path`` exists and ``overwrite`` is False.
            SlpExportError: ``path`` does not end in ``.slp``.
        """
        path = Path(path)
        if path.suffix != '.slp':
            raise SlpExportError(f'{path}: a SLEAP labels file must end in .slp')
        if path.exists() and not overwrite:
            raise FileExistsError(f'{path} exists; pass overwrite=True to replace it')
        import sleap_io as sio
        labels = self.build_labels()
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path, suffix='.slp') as tmp:
            sio.save_slp(labels, tmp, verbose=False)
        return path


def write_predictions_slp(path: PathLike, keypoints: Any, node_names: Sequence[str],
                          videos: Sequence[VideoRef], frame_indices: Any,
                          video_indices: Any = None, point_scores: Any = None,
                          edges: Sequence[Tuple[Any, Any]] = (), tracks: bool = False,
                          instance_valid: Any = None, overwrite: bool = True) -> Path:
    """Write arrays of predicted keypoints as a ``.slp`` in one call.

    Args:
        path: output ``.slp``.
        keypoints: (F, I, N, 2) (or (F, N, 2): one instance) pixels per labelled frame.
        node_names: N names.
        videos: the videos (see :class:`SlpPredictionWriter`).
        frame_indices: (F,) frame numbers.
        video_indices: (F,) video index per row (default 0).
        point_scores: optional (F, I, N) scores.
        edges: skeleton edges.
        tracks: put instance slot ``i`` on track ``i``.
        instance_valid: optional (F, I) bool: False drops that instance (e.g. padding).
        overwrite: replace an existing file.

    Returns:
        The written path.
    """
    kp = np.asarray(keypoints, dtype=np.float64)
    if kp.ndim == 3:
        kp = kp[:, None]
    if kp.ndim != 4:
        raise SlpExportError(f'keypoints must be (F, I, N, 2) or (F, N, 2), got {kp.shape}')
    F, I = kp.shape[:2]
    frames = np.asarray(frame_indices).reshape(-1)
    vids = np.zeros(F, np.int64) if video_indices is None else \
        np.asarray(video_indices).reshape(-1)
    if len(frames) != F or len(vids) != F:
        raise SlpExportError(f'frame_indices ({len(frames)}) and video_indices ({len(vids)}) '
                             f'must have one entry per keypoint row ({F})')
    valid = np.ones((F, I), bool) if instance_valid is None else \
        np.asarray(instance_valid, bool).reshape(F, I)
    scores = None if point_scores is None else np.asarray(point_scores).reshape(F, I, -1)
    writer = SlpPredictionWriter(node_names, videos, edges=edges, tracks=I if tracks else None)
    for r in range(F):
        keep = valid[r]
        if not keep.any():
            continue
        writer.add(int(vids[r]), int(frames[r]), kp[r][keep],
                   None if scores is None else scores[r][keep],
                   track_ids=np.flatnonzero(keep) if tracks else None)
    return writer.save(path, overwrite=overwrite)
