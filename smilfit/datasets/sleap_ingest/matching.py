"""Samples from the instances of a frame's views: matched by instance group, by track name
(one untracked instance per view), or one per instance single-view; frame checks and
anipose 3D points attached to the matched samples."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from .options import IngestOptions, _fail
from .readers import _instance_arrays
from .records import _Obs, _View


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
