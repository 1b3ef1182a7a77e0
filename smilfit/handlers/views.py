"""Per-view observations and cameras in one layout: leading (B, C) or (1, C).

Observations come from the datasets package: multi-view ``keypoints_2d`` (B, C, K, 2),
``confidence``/``visible`` (B, C, K), ``view_valid`` (B, C), cameras ``K`` (B, C, 3, 3),
``dist`` (B, C, 5), ``R`` (B, C, 3, 3), ``t`` (B, C, 3), or cameras without the batch
axis ((C, ...), one rig shared by all samples). ``PackInputs`` squeezes single-view
samples (``keypoints_2d`` (B, K, 2), ``K`` (B, 3, 3), ``view_valid`` (B,)); those are
read as C = 1.

Fitted cameras override the observed ones: ``params['camera_K' | 'camera_R' |
'camera_t' | 'camera_dist']`` with a leading (B, C) (per sample) or (1, C) (one rig for
the batch); ``camera_R`` may be axis-angle (.., 3), 6D (.., 6) or matrices (.., 3, 3).
"""
from __future__ import annotations

from typing import Any, Dict, Mapping, Optional

import torch

from ..body_models.rotations import to_rotation_matrix

#: Observation key -> fitted-parameter key, and the camera tensor's trailing shape.
CAMERA_KEYS = {'K': ('camera_K', (3, 3)), 'R': ('camera_R', (3, 3)),
               't': ('camera_t', (3,)), 'dist': ('camera_dist', None)}


def is_squeezed_single_view(observations: Mapping[str, Any]) -> bool:
    """True when ``keypoints_2d`` is (B, K, 2): a single-view batch without view axis."""
    kp = observations.get('keypoints_2d')
    return kp is not None and kp.ndim == 3


def _view_axis(x: Optional[torch.Tensor], squeezed: bool, event_ndim: int
               ) -> Optional[torch.Tensor]:
    """Insert the view axis of a squeezed single-view tensor before its event dims."""
    if x is None or not squeezed:
        return x
    return x.unsqueeze(x.ndim - event_ndim)


def view_keypoints(observations: Mapping[str, Any], handler: str) -> Dict[str, Any]:
    """2D keypoint observations with a view axis.

    Returns:
        dict ``keypoints_2d`` (B, C, K, 2), ``confidence`` / ``visible`` (B, C, K) or
        ``None``, ``view_valid`` (B, C) or ``None``, ``squeezed`` (bool).
    """
    if observations.get('keypoints_2d') is None:
        raise KeyError(f'handler {handler!r}: observations have no "keypoints_2d" '
                       f'(keys: {sorted(observations)})')
    sq = is_squeezed_single_view(observations)
    kp = _view_axis(observations['keypoints_2d'], sq, 2)
    if kp.ndim != 4 or kp.shape[-1] != 2:
        raise ValueError(f'handler {handler!r}: keypoints_2d must be (B, C, K, 2) (or '
                         f'(B, K, 2) single-view), got {tuple(kp.shape)}')
    out = dict(keypoints_2d=kp, squeezed=sq)
    B, C, K = kp.shape[:3]
    for key, shape in (('confidence', (B, C, K)), ('visible', (B, C, K)),
                       ('view_valid', (B, C))):
        x = _view_axis(observations.get(key), sq, 1 if key != 'view_valid' else 0)
        if x is not None and tuple(x.shape) != shape:
            raise ValueError(f'handler {handler!r}: observations[{key!r}] must be {shape}, '
                             f'got {tuple(x.shape)}')
        out[key] = x
    return out


def observed_camera(observations: Mapping[str, Any], key: str, C: int, handler: str,
                    dtype: torch.dtype, device, squeezed: bool = False
                    ) -> Optional[torch.Tensor]:
    """The observed camera tensor ``key`` (``'K'``, ``'R'``, ``'t'``, ``'dist'``) as
    (B|1, C, ...), ignoring fitted params (``None`` for an absent ``dist``)."""
    return _camera(observations, {}, key, C, squeezed, handler, dtype, device)


def _camera(observations: Mapping[str, Any], params: Mapping[str, Any], key: str, C: int,
            squeezed: bool, handler: str, dtype, device) -> Optional[torch.Tensor]:
    pkey, event = CAMERA_KEYS[key]
    value = params.get(pkey) if params else None
    if value is not None:  # fitted: always (B | 1, C, ...)
        if key == 'R':
            value = to_rotation_matrix(value, 2, f'params[{pkey!r}]')
        if value.ndim < 2 or value.shape[1] != C:
            raise ValueError(f'handler {handler!r}: params[{pkey!r}] must be (B or 1, {C}, '
                             f'...), got {tuple(value.shape)}')
        return value.to(device=device, dtype=dtype)
    value = observations.get(key)
    if value is None:
        if key == 'dist':
            return None
        raise KeyError(f'handler {handler!r}: no camera {key!r} in observations (and no '
                       f'params[{pkey!r}])')
    value = torch.as_tensor(value)
    ev = 1 if key == 'dist' else len(event)
    value = _view_axis(value, squeezed, ev)
    if value.ndim == ev + 1:   # (C, ...): shared by the batch
        value = value.unsqueeze(0)
    if value.ndim != ev + 2 or value.shape[1] != C or (
            event is not None and tuple(value.shape[2:]) != event):
        want = '(B, C, ' + ('D' if event is None else ', '.join(map(str, event))) + ')'
        raise ValueError(f'handler {handler!r}: camera {key!r} must be {want} or without '
                         f'B, with C = {C}; got {tuple(observations[key].shape)}')
    return value.to(device=device, dtype=dtype)


def view_cameras(observations: Mapping[str, Any], params: Mapping[str, Any], C: int,
                 dtype: torch.dtype, device, handler: str, squeezed: bool = False
                 ) -> Dict[str, Optional[torch.Tensor]]:
    """Cameras ``K`` (B|1, C, 3, 3), ``R`` (B|1, C, 3, 3), ``t`` (B|1, C, 3) and ``dist``
    (B|1, C, 5) or ``None``, fitted ones (``params['camera_*']``) taking precedence."""
    return {key: _camera(observations, params, key, C, squeezed, handler, dtype, device)
            for key in CAMERA_KEYS}


__all__ = ['CAMERA_KEYS', 'is_squeezed_single_view', 'view_keypoints', 'view_cameras',
           'observed_camera']
