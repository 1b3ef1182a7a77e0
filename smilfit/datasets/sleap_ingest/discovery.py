"""Inputs into validated sessions: a sleap-anipose session folder (or a folder of them) or
one labels file (recording sessions and loose single-view videos); session names, video
paths and skeleton pairs kept for the exports."""
from __future__ import annotations

import math
from pathlib import Path, PureWindowsPath
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from .matching import _attach_points3d, _check_frames, _group_obs, _match_views
from .options import IMAGE_EXTS, VIDEO_EXTS, IngestOptions, PathLike, _fail
from .readers import (_default_camera, _frame_instances, _load_anipose_calibration,
                      _load_labels, _load_points3d, _open_video, _resolve_video,
                      _session_cameras, _video_filename)
from .records import _Session, _View


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
    return (int(math.ceil(max(pts[:, 0].max(), 0))) + 1,
            int(math.ceil(max(pts[:, 1].max(), 0))) + 1)
