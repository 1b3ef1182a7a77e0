"""A dataset fit as SLEAP predictions: :func:`export_fit_slp` projects the fitted 3D
keypoints of ``fit_results.h5`` into every camera, back in the source videos' pixels, and
writes one ``.slp`` (videos, tracks, calibrated recording sessions)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch

from smilfit.cameras import project_points
from smilfit.datasets import DatasetReader, SlpPredictionWriter

from .config import FittingConfigError
from .results import read_fitted_keypoints
from .observations import camera_name

PathLike = Union[str, os.PathLike]


def export_fit_slp(results: PathLike, out_path: PathLike, dataset: Optional[PathLike] = None,
                   overwrite: bool = True) -> Path:
    """Write a fit's keypoints as SLEAP predictions (one video per session and camera).

    The fitted 3D keypoints (``fitted_keypoints_3d``, in the data's keypoint order) are
    projected through each sample's stored cameras and mapped back to the original
    frames' pixels with the inverse of the stored ``crop``, through the source video's
    distortion (``sessions/video_dist``; also when the stored images were undistorted).
    The videos are the source videos recorded at ingestion (``sessions/video_paths``, with
    their ``sessions/video_shape``), else ``<session>/<camera>`` placeholders to relink
    in SLEAP. The skeleton keeps the source skeleton's edges and symmetries (where the data
    has none, the edges of the body model's kinematic tree between the fitted keypoints,
    which the fit recorded), instances keep
    their tracks, and every multi-camera session is stored as a ``RecordingSession`` with
    its calibration (the cameras of the session's first fitted sample, in the exported
    pixels).

    Args:
        results: ``fit_results.h5`` from :func:`fit_dataset`.
        out_path: the ``.slp`` to write (atomically).
        dataset: the HDF5 dataset (default: the one recorded in ``results``).
        overwrite: replace an existing file.
    """
    fit = read_fitted_keypoints(results, FittingConfigError, 'fit with a 2D keypoint '
                                'handler, with this smilfit version')
    points, index = fit['points'], fit['index']
    dataset = dataset or fit['attrs']['dataset']
    reader = DatasetReader(dataset)
    batch = reader.read(index, keys=['K', 'R', 't', 'dist', 'crop', 'valid', 'session',
                                     'frame', 'image_size', 'track'])
    sessions = list(reader.session_names)
    C = batch['K'].shape[1]
    session_of = np.asarray(batch['session']).astype(int)
    back = np.linalg.inv(batch['crop'].astype(np.float64))               # stored -> original
    K_video = back @ batch['K']
    # The source video's distortion (stored images may have been undistorted).
    dist_video = (batch['dist'] if reader.video_dist is None
                  else reader.video_dist[session_of])                    # (B, C, 5)
    original = project_points(torch.as_tensor(points)[:, None], torch.as_tensor(K_video),
                              torch.as_tensor(batch['R']), torch.as_tensor(batch['t']),
                              torch.as_tensor(dist_video)).numpy()       # (B, C, K, 2)
    shapes = reader.video_shapes
    videos, slot, first = [], {}, {}
    for b, s in enumerate(session_of):
        first.setdefault(s, b)
        for c in range(C):
            if (s, c) not in slot and batch['valid'][b, c]:
                name = camera_name(reader, s, c)
                stored = reader.video_paths[s][c] if reader.video_paths else ''
                slot[(s, c)] = len(videos)
                shape = None if shapes is None or shapes[s, c].min() <= 0 else \
                    (*shapes[s, c].tolist(), 3)
                videos.append(dict(filename=stored or f'{sessions[s]}/{name}', shape=shape))
    rigs, rig_of = [], {}
    for s, b in first.items():
        views = [c for c in range(C) if (s, c) in slot]
        if len(views) < 2:
            continue
        rig_of[s] = len(rigs)
        rigs.append(dict(videos=[slot[(s, c)] for c in views], cameras=[dict(
            name=camera_name(reader, s, c),
            K=K_video[b, c], dist=dist_video[b, c], R=batch['R'][b, c], t=batch['t'][b, c],
            size=_video_size(videos[slot[(s, c)]]['shape'], batch['image_size'][b, c],
                             batch['crop'][b, c])) for c in views]))
    track_names = [str(t) for t in batch['track']]
    tracks = sorted({t for t in track_names if t})
    writer = SlpPredictionWriter(node_names=list(reader.keypoint_names), videos=videos,
                                 edges=reader.skeleton_edges or fit['edges'] or (),
                                 symmetries=reader.skeleton_symmetries, sessions=rigs,
                                 tracks=tracks or None)
    for b, s in enumerate(session_of):
        frame = int(batch['frame'][b])
        track = [tracks.index(track_names[b]) if track_names[b] else -1] if tracks else None
        # The sample is the group: its views are one animal, its fit the 3D instance.
        for c in range(C):
            if batch['valid'][b, c]:
                writer.add(video=slot[(s, c)], frame_idx=frame, points=original[b, c][None],
                           groups=[b], track_ids=track)
        if s in rig_of:
            writer.add_3d(rig_of[s], frame, points[b][None], groups=[b])
    return writer.save(out_path, overwrite=overwrite)


def _video_size(shape: Optional[tuple], stored: np.ndarray, crop: np.ndarray):
    """A camera's (W, H): its video's ``(frames, H, W, 3)`` shape, else the stored image's
    when that is the uncropped frame, else None (unknown)."""
    if shape:
        return shape[2], shape[1]
    return stored if np.allclose(crop, np.eye(3)) else None


__all__ = ['export_fit_slp']
