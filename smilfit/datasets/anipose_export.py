"""A fit's 3D keypoints in anipose's formats, so analysis code written for anipose reads them.

Two files per session (and animal, where a session has several):

- ``<session>.csv``: anipose's ``pose-3d`` table (``anipose triangulate``): for every data
  keypoint ``{kp}_x``, ``{kp}_y``, ``{kp}_z`` (the fitted point, in the calibration's units),
  ``{kp}_error`` (mean reprojection error in pixels over the views that observed it),
  ``{kp}_ncams`` (those views) and ``{kp}_score`` (the lowest 2D confidence among them); then
  ``M_00`` ... ``M_22`` (identity: no axis alignment) and ``center_0..2`` (zeros), and
  ``fnum``, one row per video frame (of the shortest source video when ingestion recorded
  their lengths, else up to the last fitted frame; NaN rows where no frame was fitted).
  As ``anipose triangulate`` with ``optim = true`` (its model-based mode, the one a fit
  resembles) writes them: every point has coordinates, ``ncams`` is 0 and ``error`` and
  ``score`` are empty (NaN) where no view saw it.
- ``<session>_points3d.h5``: sleap-anipose's layout, dataset ``tracks`` (frames, animals,
  keypoints, 3) float64 with its ``Description`` attribute.
"""
from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import Dict, List, Optional, Union

import h5py
import numpy as np

from ..utils.atomic import atomic_path, write_text
from .hdf5.files import read_h5
from .hdf5_format import DatasetReader

PathLike = Union[str, 'os.PathLike[str]']

__all__ = ['export_fit_anipose', 'anipose_table']


def anipose_table(points: np.ndarray, errors: np.ndarray, ncams: np.ndarray,
                  scores: np.ndarray, keypoint_names: List[str]) -> str:
    """anipose's pose-3d CSV text.

    Args:
        points: (F, K, 3) per video frame (NaN where not fitted).
        errors, scores: (F, K), NaN where no view observed the keypoint.
        ncams: (F, K) views that observed it (NaN in rows of frames not fitted).
        keypoint_names: (K,).
    """
    header = [f'{kp}_{c}' for kp in keypoint_names
              for c in ('x', 'y', 'z', 'error', 'ncams', 'score')]
    header += [f'M_{i}{j}' for i in range(3) for j in range(3)]
    header += [f'center_{i}' for i in range(3)] + ['fnum']
    F, K = points.shape[:2]
    per_kp = np.concatenate([points, errors[..., None], ncams[..., None], scores[..., None]],
                            axis=2).reshape(F, K * 6)
    fixed = np.concatenate([np.eye(3).ravel(), np.zeros(3)])
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator='\n')
    writer.writerow(header)
    for f in range(F):
        writer.writerow([_cell(v) for v in per_kp[f]] + [_cell(v) for v in fixed] + [f])
    return buf.getvalue()


def _cell(value: float) -> str:
    return '' if not np.isfinite(value) else repr(float(value))


def export_fit_anipose(results: PathLike, out_dir: PathLike,
                       dataset: Optional[PathLike] = None) -> List[Path]:
    """Write a fit's keypoints as anipose CSVs and sleap-anipose ``points3d.h5`` files.

    Args:
        results: ``fit_results.h5`` (needs ``fitted_keypoints_3d``: a fit with a 2D keypoint
            handler).
        out_dir: folder for the files (created).
        dataset: the fitted dataset (default: the one recorded in ``results``).

    Returns:
        The files written.

    Raises:
        ValueError: the results hold no fitted keypoints.
    """
    with read_h5(results, 'fit results', written_whole=True) as f:
        if 'fitted_keypoints_3d' not in f:
            raise ValueError(f'{results} has no fitted_keypoints_3d (fit with a 2D keypoint '
                             'handler)')
        points = f['fitted_keypoints_3d'][:].astype(np.float64)            # (N, K, 3)
        index = f['samples/index'][:]
        point_px = (f['metrics/reprojection_point_px'][:].astype(np.float64)
                    if 'metrics/reprojection_point_px' in f else None)     # (N, C, K)
        dataset = dataset or f.attrs['dataset']
    reader = DatasetReader(dataset)
    batch = reader.read(index, keys=['session', 'frame', 'instance', 'visible', 'valid',
                                     'confidence'])
    seen = batch['visible'].astype(bool) & batch['valid'].astype(bool)[..., None]  # (N, C, K)
    if point_px is not None:
        seen &= np.isfinite(point_px)
    ncams = seen.sum(1).astype(np.float64)                                  # (N, K)
    if point_px is None:
        errors = np.full_like(ncams, np.nan)
    else:
        with np.errstate(invalid='ignore', divide='ignore'):
            errors = np.where(seen, point_px, 0.0).sum(1) / ncams
    scores = np.where(seen, batch['confidence'], np.inf).min(1)
    none = ncams == 0
    errors[none], scores[none] = np.nan, np.nan
    names = list(reader.keypoint_names)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: List[Path] = []
    sessions = np.asarray(batch['session']).astype(int)
    instances = np.asarray(batch['instance']).astype(int)
    frames = np.asarray(batch['frame']).astype(int)
    for s in np.unique(sessions):
        rows = np.flatnonzero(sessions == s)
        animals = np.unique(instances[rows])
        n_frames = int(frames[rows].max()) + 1
        if reader.video_shapes is not None:   # as anipose: one row per frame of the videos
            known = reader.video_shapes[s, :, 0][reader.video_shapes[s, :, 0] > 0]
            n_frames = max(n_frames, int(known.min()) if len(known) else 0)
        tracks = np.full((n_frames, len(animals), len(names), 3), np.nan)
        name = reader.session_names[s]
        for a, animal in enumerate(animals):
            mine = rows[instances[rows] == animal]
            table: Dict[str, np.ndarray] = {
                'points': np.full((n_frames, len(names), 3), np.nan),
                'errors': np.full((n_frames, len(names)), np.nan),
                'ncams': np.full((n_frames, len(names)), np.nan),
                'scores': np.full((n_frames, len(names)), np.nan)}
            for key, values in (('points', points), ('errors', errors), ('ncams', ncams),
                                ('scores', scores)):
                table[key][frames[mine]] = values[mine]
            tracks[:, a] = table['points']
            stem = name if len(animals) == 1 else f'{name}_animal{animal}'
            path = out_dir / f'{stem}.csv'
            write_text(path, anipose_table(table['points'], table['errors'], table['ncams'],
                                           table['scores'], names))
            written.append(path)
        h5_path = out_dir / f'{name}_points3d.h5'
        with atomic_path(h5_path) as tmp:
            with h5py.File(tmp, 'w') as f:
                ds = f.create_dataset('tracks', data=tracks)
                ds.attrs['Description'] = 'Shape: (n_frames, n_tracks, n_nodes, 3).'
        written.append(h5_path)
    return written
