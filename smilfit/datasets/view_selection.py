"""Which cameras a fit uses: ``data = dict(..., views=[...])`` or ``exclude_views=[...]``.

Camera names are those stored in the prepared dataset (``sessions/camera_names``, e.g. the
anipose calibration's names). :func:`view_mask` checks the selection against the dataset
and gives, per session, the view slots kept; :func:`select_views` removes the others from a
batch of observations.

A view left out is *removed*, not down-weighted: its 2D keypoints become NaN, its
confidences 0, ``visible`` and ``view_valid`` (and ``mask_valid``) false. The camera axis
(C) is kept, so results stay aligned with the dataset's cameras (the quality table and
exports name the right cameras) and sessions with other camera orders need no special
case; every handler and the triangulation initialisation already skip invalid views, and
with the data gone a view cannot leak into the fit even where one did not.
"""
from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np

__all__ = ['ViewSelectionError', 'view_mask', 'select_views', 'camera_universe']


class ViewSelectionError(ValueError):
    """``data.views`` / ``data.exclude_views`` name cameras the dataset does not have, or
    both are given, or they leave a session without cameras; the message says which."""


def camera_universe(camera_names: Sequence[Sequence[str]]) -> List[str]:
    """Every camera name of a dataset, in order of first appearance over its sessions."""
    seen: Dict[str, None] = {}
    for row in camera_names:
        for name in row:
            seen.setdefault(str(name), None)
    return list(seen)


def _names(value: Any, key: str) -> List[str]:
    if isinstance(value, str):       # views='back': one camera, not the letters b, a, c, k
        value = [value]
    try:
        names = [str(v) for v in value]
    except TypeError:
        raise ViewSelectionError(f'{key} must be a list of camera names, got '
                                 f'{value!r}') from None
    if not all(isinstance(v, str) for v in value):
        raise ViewSelectionError(f'{key} must be a list of camera names (strings), got '
                                 f'{value!r}')
    return list(dict.fromkeys(names))


def view_mask(camera_names: Sequence[Sequence[str]], num_views: int,
              views: Optional[Sequence[str]] = None,
              exclude_views: Optional[Sequence[str]] = None, where: str = 'data',
              session_names: Optional[Sequence[str]] = None) -> Optional[np.ndarray]:
    """The view slots a fit uses, per session.

    Args:
        camera_names: per session, the names of its view slots (``DatasetReader.camera_names``;
            slot ``c`` of every sample of session ``s`` is camera ``camera_names[s][c]``).
        num_views: C, the dataset's view slots per sample.
        views: the cameras to use (all others are left out), or None.
        exclude_views: the cameras to leave out, or None.
        where: prefix of the keys in error messages (the config dict or file they come from).
        session_names: for error messages.

    Returns:
        (S, C) bool, True where a session's view slot is used; None when neither key is
        given (use everything).

    Raises:
        ViewSelectionError: both keys given; a name no session has (the message lists the
            available ones); an empty ``views``; a session left without any camera.
    """
    if views is None and exclude_views is None:
        return None
    if views is not None and exclude_views is not None:
        raise ViewSelectionError(f'{where}.views and {where}.exclude_views are both set; give '
                                 'one of them')
    key = f'{where}.views' if views is not None else f'{where}.exclude_views'
    chosen = _names(views if views is not None else exclude_views, key)
    available = camera_universe(camera_names)
    unknown = [n for n in chosen if n not in available]
    if unknown:
        raise ViewSelectionError(f'{key} names camera(s) {", ".join(map(repr, unknown))} that '
                                 f'the dataset does not have; its cameras are '
                                 f'{", ".join(map(repr, available))}')
    if views is not None and not chosen:
        raise ViewSelectionError(f'{key} is empty: name at least one camera of '
                                 f'{", ".join(map(repr, available))}')
    chosen_set = set(chosen)
    mask = np.zeros((len(camera_names), int(num_views)), bool)
    for s, row in enumerate(camera_names):
        for c, name in enumerate(row[:num_views]):
            mask[s, c] = (name in chosen_set) == (views is not None)
    empty = [s for s in range(len(camera_names)) if not mask[s].any()]
    if empty:
        label = [session_names[s] if session_names is not None else str(s) for s in empty]
        raise ViewSelectionError(f'{key} leaves session(s) {", ".join(label)} without any '
                                 f'camera (they have {", ".join(camera_names[empty[0]])})')
    return mask


#: Per-view keys and the value a removed view gets.
_REMOVED = {'keypoints_2d': np.nan, 'confidence': 0.0, 'visible': False}


def select_views(observations: Mapping[str, Any], keep: Optional[np.ndarray]
                 ) -> Dict[str, Any]:
    """Remove the views not in ``keep`` from a batch of observations (a new dict; the
    input is not modified).

    Args:
        observations: numpy arrays with leading (B, C): ``keypoints_2d`` (B, C, K, 2),
            ``confidence`` / ``visible`` (B, C, K), ``view_valid`` (B, C), optional
            ``mask_valid`` (B, C); other keys (cameras, masks) are passed through.
        keep: (B, C) bool, the views to keep (e.g. ``view_mask(...)[sessions]``), or None
            (keep everything).

    Returns:
        The observations with every other view removed: keypoints NaN, confidence 0,
        ``visible``, ``view_valid`` and ``mask_valid`` false; and the samples' given 3D
        keypoints (``keypoints_3d``) NaN where one of their valid views was removed (they
        were triangulated with it).
    """
    out = dict(observations)
    if keep is None:
        return out
    keep = np.asarray(keep, bool)
    B, C = np.asarray(out['keypoints_2d']).shape[:2]
    if keep.shape != (B, C):
        raise ValueError(f'keep must be ({B}, {C}) for these observations, got {keep.shape}')
    for key, fill in _REMOVED.items():
        if key in out:
            arr = np.array(out[key], copy=True)
            arr[~keep] = fill
            out[key] = arr
    valid = np.asarray(out.get('view_valid', np.ones((B, C), bool)), bool)
    out['view_valid'] = valid & keep
    if 'mask_valid' in out:
        out['mask_valid'] = np.asarray(out['mask_valid'], bool) & keep
    if 'keypoints_3d' in out:
        # 3D points that came with the data were triangulated from every view (anipose's
        # are): where a view is removed they would carry it into the fit.
        lost = (valid & ~keep).any(1)
        points = np.array(out['keypoints_3d'], copy=True)
        points[lost] = np.nan
        out['keypoints_3d'] = points
    return out
