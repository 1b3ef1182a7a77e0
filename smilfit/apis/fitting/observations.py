"""What a dataset fit reads from the dataset: a reader batch as the observation dict the
handlers read (:func:`observations_from_batch`), views whose cameras are not finite left
out (:func:`drop_non_finite_cameras`), and the names of each sample's view slots
(:func:`camera_name`, :func:`sample_camera_names`)."""
from __future__ import annotations

import os
import warnings
from typing import Any, Dict, List, Mapping, Sequence, Union

import numpy as np

PathLike = Union[str, os.PathLike]

#: Dataset keys the handlers read, renamed where the HDF5 reader differs.
_OBSERVATION_KEYS = {'keypoints_2d': 'keypoints_2d', 'confidence': 'confidence',
                     'visible': 'visible', 'valid': 'view_valid', 'K': 'K', 'dist': 'dist',
                     'R': 'R', 't': 't', 'keypoints_3d': 'keypoints_3d'}


def observations_from_batch(batch: Mapping[str, Any]) -> Dict[str, np.ndarray]:
    """Reader batch -> the observation dict handlers read (arrays, renamed keys)."""
    return {new: np.asarray(batch[old]) for old, new in _OBSERVATION_KEYS.items()
            if old in batch}


def camera_name(reader, session: int, view: int) -> str:
    """The name of view slot ``view`` in ``session`` of a dataset reader; ``view<c>``
    where the session has fewer cameras than view slots."""
    names = reader.camera_names[int(session)]
    return names[view] if view < len(names) else f'view{view}'


def sample_camera_names(reader, sessions: Sequence[int], num_views: int) -> List[List[str]]:
    """The names of the ``num_views`` view slots of each sample (by its session)."""
    return [[camera_name(reader, s, c) for c in range(num_views)] for s in sessions]


def drop_non_finite_cameras(observations: Dict[str, np.ndarray]) -> np.ndarray:
    """Mark views whose camera has a non-finite entry invalid, in place; return them.

    A NaN in one camera must not turn a whole sample (or batch) into NaN: the view is
    dropped (``view_valid`` false, its camera replaced by a finite placeholder that no
    handler reads) and the other views are fitted.

    Args:
        observations: the dict of :func:`observations_from_batch` (``K``, ``R``, ``t``,
            ``dist`` (B, C, ...), ``view_valid`` (B, C)).

    Returns:
        (B, C) bool, the views dropped.
    """
    if 'K' not in observations:
        return np.zeros((len(next(iter(observations.values()))), 0), bool)
    B, C = observations['K'].shape[:2]
    finite = np.ones((B, C), bool)
    for key in ('K', 'R', 't', 'dist'):
        if key in observations:
            finite &= np.isfinite(observations[key]).reshape(B, C, -1).all(-1)
    valid = np.asarray(observations.get('view_valid', np.ones((B, C), bool)), bool)
    bad = valid & ~finite
    if bad.any():
        placeholder = dict(K=np.eye(3), R=np.eye(3), t=np.array([0.0, 0.0, 1.0]))
        for key in ('K', 'R', 't', 'dist'):
            if key in observations:
                arr = np.array(observations[key], copy=True)
                arr[~finite] = placeholder.get(key, 0.0)
                observations[key] = arr
        observations['view_valid'] = valid & finite
    return bad


def warn_bad_cameras(bad: np.ndarray, indices: np.ndarray, sessions: np.ndarray, reader,
                     path: PathLike) -> None:
    """Warn which views (sample and camera) :func:`drop_non_finite_cameras` left out."""
    names = []
    for b, c in zip(*np.nonzero(bad)):
        cams = reader.camera_names[int(sessions[b])]
        names.append(f'sample {int(indices[b])} camera {cams[c] if c < len(cams) else c}')
    warnings.warn(f'{path}: non-finite camera parameters; these views are left out of the '
                  f'fit: {", ".join(names[:10])}{" ..." if len(names) > 10 else ""}',
                  stacklevel=2)


__all__ = ['observations_from_batch', 'camera_name', 'sample_camera_names',
           'drop_non_finite_cameras', 'warn_bad_cameras']
