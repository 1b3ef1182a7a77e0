"""Fits started from a network's predictions: ``data.init_from = 'predictions.h5'`` (the
output of ``tools/infer.py`` on the same recording).

A trained regressor places and poses the animal in one pass; the fit then starts there
instead of at the rest pose aligned to the triangulated keypoints. The network predicts
the pose of its own template skeleton, and the fit poses the animal's skeleton (the one
estimated for this animal, held fixed): the same parameters put its keypoints elsewhere,
about as far off as the default start on the shared mouse session. So the network's body
pose is also placed on the animal's skeleton where the network's own 3D keypoints are
(:meth:`~smilfit.registrants.SMILRegistrant.place_on_points`, a similarity alignment).

A network is wrong on some frames (an unusual pose, the wrong way round), and a fit
started there could end in the wrong basin, so every frame keeps the best of the starts
(:func:`choose_starts`): the default, the network's parameters as predicted and the
network's pose placed on its keypoints; the one whose keypoints project closest to the
labels (the median pixel error over its views and keypoints). A frame the network got
wrong is fitted as without it; one it got right starts near the answer.

Predictions are joined to the fit's samples by (session name, frame, instance). Where no
session name matches and both sides hold one session (a network run on the session's
videos names its session after the rig), by frame and instance.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Dict, Mapping, NamedTuple, Optional, Tuple, Union

import numpy as np
import torch

from smilfit.body_models.parameters import MODEL_INPUTS
from smilfit.datasets.hdf5.files import read_h5

from .config import FittingConfigError
from .reprojection import point_reprojection_errors

PathLike = Union[str, 'os.PathLike[str]']

#: The per-frame parameters a start sets (the animal's skeleton is the fit's own).
START_PARAMS = ('global_orient', 'body_pose', 'transl', 'global_log_scale')


class NetworkStarts(NamedTuple):
    """A network's predictions aligned with the rows of a dataset (R rows).

    Attributes:
        params: ``{name: (R, ...)}`` the predicted parameters of :data:`START_PARAMS`
            (axis-angle rotations; NaN where not found).
        keypoints: (R, K, 3) the network's own 3D keypoints in the dataset's keypoint
            order, world units (NaN where not found or not predicted), or ``None`` where
            the file has none.
        found: (R,) bool, the rows with a prediction.
    """

    params: Dict[str, np.ndarray]
    keypoints: Optional[np.ndarray]
    found: np.ndarray


def load_network_starts(path: PathLike, reader) -> NetworkStarts:
    """The predictions at ``path`` aligned with the rows of ``reader`` (R rows).

    Returns:
        :class:`NetworkStarts`.

    Raises:
        FileNotFoundError: no such file.
        FittingConfigError: not a ``tools/infer.py`` output, without the parameters or
            sessions it needs, or no prediction matches a sample.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f'data.init_from: {path} does not exist')
    with read_h5(path, 'network predictions (data.init_from)', written_whole=True) as f:
        if f.attrs.get('format') != 'smilfit-inference':
            raise FittingConfigError(f'data.init_from: {path} is not a tools/infer.py '
                                     'predictions file')
        missing = [k for k in ('session', 'frame', 'instance') if k not in f] + \
            [f'params/{k}' for k in START_PARAMS[:3] if f'params/{k}' not in f]
        if missing:
            raise FittingConfigError(f'data.init_from: {path} has no {missing} (made by an '
                                     'older tools/infer.py? run it again)')
        sessions = [s.decode() if isinstance(s, bytes) else str(s) for s in f['session'][:]]
        frames = f['frame'][:].astype(np.int64)
        instances = f['instance'][:].astype(np.int64)
        params = {k: f[f'params/{k}'][:].astype(np.float64) for k in START_PARAMS
                  if f'params/{k}' in f}
        keypoints = _keypoints_in_order(f, path, list(reader.keypoint_names))
    cols = reader.read(np.arange(len(reader)), keys=['session', 'frame', 'instance'])
    names = list(reader.session_names)
    mine = [names[int(s)] for s in cols['session']]
    by_session = not set(sessions).isdisjoint(names)
    if not by_session and not (len(set(sessions)) == 1 and len(names) == 1):
        raise FittingConfigError(
            f'data.init_from: {path} predicts sessions {sorted(set(sessions))[:5]}, the data '
            f'has {names[:5]}: they cannot be matched')
    where = {((s if by_session else ''), int(fr), int(i)): n
             for n, (s, fr, i) in enumerate(zip(sessions, frames, instances))}
    index = np.array([where.get(((s if by_session else ''), int(fr), int(i)), -1)
                      for s, fr, i in zip(mine, cols['frame'], cols['instance'])])
    found = index >= 0
    if not found.any():
        raise FittingConfigError(f'data.init_from: no prediction in {path} is of a sample '
                                 f'of {reader.path} (matched by session, frame, instance)')

    def rows(value):
        aligned = np.full((len(index),) + value.shape[1:], np.nan)
        aligned[found] = value[index[found]]
        return aligned
    return NetworkStarts({name: rows(value) for name, value in params.items()},
                         None if keypoints is None else rows(keypoints), found)


def predicted_keypoint_names(f, path: PathLike) -> Optional[list]:
    """The names of the keypoints in ``keypoints_3d`` of an open ``predictions.h5`` ``f``
    (its ``keypoint_names`` attribute: JSON, or a list of strings), or ``None`` where the
    file has no 3D keypoints or names.

    Raises:
        FittingConfigError: the attribute is no list of names.
    """
    if 'keypoints_3d' not in f or 'keypoint_names' not in f.attrs:
        return None
    stored = f.attrs['keypoint_names']
    try:
        return json.loads(stored) if isinstance(stored, str) else [
            n.decode() if isinstance(n, bytes) else str(n) for n in stored]
    except ValueError as err:
        raise FittingConfigError(f'data.init_from: {path}: keypoint_names is not a list of '
                                 f'names ({err})') from err


def _keypoints_in_order(f, path: Path, names) -> Optional[np.ndarray]:
    """(N, K, 3) the predictions' 3D keypoints in the order of the dataset's keypoint
    ``names`` (NaN for a name the network does not predict), or ``None`` where the file
    has no 3D keypoints or names."""
    predicted = predicted_keypoint_names(f, path)
    if predicted is None:
        return None
    points = f['keypoints_3d']
    if points.ndim != 3 or points.shape[1:] != (len(predicted), 3):
        raise FittingConfigError(f'data.init_from: {path}: keypoints_3d has shape '
                                 f'{points.shape}, not (N, {len(predicted)}, 3) for its '
                                 f'{len(predicted)} keypoint_names')
    points = points[:].astype(np.float64)
    where = {str(n): i for i, n in enumerate(predicted)}
    out = np.full((points.shape[0], len(names), 3), np.nan)
    for k, name in enumerate(names):
        if name in where:
            out[:, k] = points[:, where[name]]
    return out


def choose_starts(registrant, observations: Mapping[str, torch.Tensor],
                  default: Mapping[str, torch.Tensor], network: Mapping[str, torch.Tensor],
                  found: torch.Tensor, groups: torch.Tensor,
                  keypoints: Optional[torch.Tensor] = None
                  ) -> Tuple[Dict[str, torch.Tensor], torch.Tensor]:
    """Every sample's best start: of the default, the network's parameters as predicted
    and (given ``keypoints``) the network's pose placed where its keypoints are, the one
    whose keypoints project closest to the labels (median pixel error; a tie keeps the
    earlier).

    Args:
        registrant: the :class:`~smilfit.registrants.SMILRegistrant` fitting the batch.
        observations: the batch's observations (tensors).
        default: its starting parameters (``registrant.initial_params``; shared ones per
            group).
        network: (B, ...) the network's :data:`START_PARAMS` (NaN where not found).
        found: (B,) bool, the samples with a prediction.
        groups: (B,) the samples' groups (animals).
        keypoints: (B, K, 3) the network's 3D keypoints in the data's keypoint order
            (NaN where missing), or ``None``.

    Returns:
        The chosen parameters (as ``default``) and (B,) bool, where a start from the
        network won.
    """
    handler = registrant.keypoint_handler()
    proposed = dict(default)
    for name, value in network.items():
        if name in default and name not in registrant.shared:
            value = value.to(default[name])
            proposed[name] = torch.where(found.view(-1, *([1] * (value.dim() - 1))),
                                         torch.nan_to_num(value), default[name])
    candidates = [default, proposed]
    if keypoints is not None:
        candidates.append(registrant.place_on_points(proposed, keypoints, groups))
    # Every candidate posed and scored in one pass over the body model (n * B samples).
    n, B = len(candidates), int(found.shape[0])
    expanded = {k: torch.cat([c[k][groups] if k in registrant.shared else c[k]
                              for c in candidates]) for k in default}
    with torch.no_grad():
        output = registrant.body_model(**{k: v for k, v in expanded.items()
                                          if k in MODEL_INPUTS}, return_vertices=False)
        points = handler.points(output, expanded)
        err = point_reprojection_errors(points, _tiled(observations, n, B),
                                        handler.model_index, handler.data_index)
    errors = torch.nan_to_num(err.flatten(1).nanmedian(1).values, nan=float('inf'))
    # argmin keeps the first of equal errors: the default wherever nothing is closer
    best = errors.view(n, B).argmin(0)
    best = torch.where(found, best, torch.zeros_like(best))
    chosen = dict(default)
    for name in network:
        if name in default and name not in registrant.shared:
            value = default[name]
            for i in range(1, len(candidates)):
                mask = (best == i).view(-1, *([1] * (value.dim() - 1)))
                value = torch.where(mask, candidates[i][name], value)
            chosen[name] = value
    return chosen, best > 0


#: What :func:`~.reprojection.point_reprojection_errors` reads of the observations.
_SCORED = ('keypoints_2d', 'K', 'R', 't', 'dist', 'visible', 'view_valid')


def _tiled(observations: Mapping[str, torch.Tensor], n: int, B: int
           ) -> Dict[str, torch.Tensor]:
    """The scored (B, ...) observations repeated ``n`` times along the batch
    (n * B, ...), in the candidates' order."""
    return {k: observations[k].repeat(n, *([1] * (observations[k].dim() - 1)))
            for k in _SCORED if k in observations}


__all__ = ['START_PARAMS', 'NetworkStarts', 'load_network_starts', 'choose_starts',
           'predicted_keypoint_names']
