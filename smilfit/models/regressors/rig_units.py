"""A real rig's units: the regressor works in model units, the calibration is in its own.

A body model is in units of its own (the SMIL mouse is about 3 long), a calibrated rig in
millimetres or metres, and the animal's size in the rig is not the model's. A regressor
that poses the model in the rig's units would need a body 60 times larger than any it can
predict, and would place it at a depth hundreds of its translation units away. So the
rig is measured once, before training (:func:`estimate_rig_units`, from the training
data's triangulated keypoints and calibration):

- ``scale``: the rig's units per model unit for this animal (the median over samples of
  the similarity (Umeyama) scale from the model's rest keypoints to the 3D keypoints):
  the calibration's translations and the 3D targets are divided by it on the way in
  (:func:`to_model_units`), the predictions multiplied by it on the way out
  (:func:`to_rig_units`; the pose gets ``global_log_scale = log(scale)``, so posing the
  body model with the predicted parameters gives the predicted points in the rig);
- ``depth``: the animal's median depth in the cameras (model units): the body vector
  starts there instead of at the codec's default camera distance.

Projections are unchanged by dividing the world and the cameras' translations by one
number, so 2D terms are the same either way and every 3D term and prior is in model
units, as on synthetic data.
"""
from __future__ import annotations

import math
from dataclasses import replace
from typing import Any, Dict, Mapping, Optional, Tuple

import numpy as np
import torch
from torch import nn

#: 3D points a sample needs for its similarity scale.
MIN_POINTS = 3


def estimate_rig_units(body_model: nn.Module, match, samples: Mapping[str, Any]
                       ) -> Optional[Tuple[float, float]]:
    """The rig's units per model unit and the animal's depth in the cameras (model units),
    or None where no sample has enough 3D points.

    Args:
        body_model: the regressor's body model.
        match: its model-to-data keypoint match (``model_index``, ``data_index``).
        samples: batched arrays: ``keypoints_3d`` (B, N, 3) (rig units; NaN missing) or,
            without it, ``keypoints_2d`` (B, C, N, 2) with the calibration to triangulate
            them; ``R`` (B, C, 3, 3), ``t`` (B, C, 3) and optionally ``K``, ``dist``,
            ``view_valid`` (B, C), ``visible``, ``confidence``.
    """
    from smilfit.registrants.initialization import (global_pose_from_points,
                                                    triangulate_observations)
    dtype = torch.float64
    obs = {k: torch.as_tensor(np.asarray(v), dtype=dtype if np.asarray(v).dtype.kind == 'f'
                              else None)
           for k, v in samples.items() if isinstance(v, (np.ndarray, torch.Tensor))}
    if 'keypoints_3d' in obs and bool(torch.isfinite(obs['keypoints_3d']).any()):
        points = obs['keypoints_3d']
    elif all(k in obs for k in ('keypoints_2d', 'K', 'R', 't')):
        points = triangulate_observations(obs)
    else:
        return None
    data_index = match.data_index.cpu()
    model_index = match.model_index.cpu()
    observed = points.index_select(1, data_index)
    enough = torch.isfinite(observed).all(-1).sum(-1) >= MIN_POINTS
    if not bool(enough.any()):
        return None
    observed = observed[enough]
    with torch.no_grad():
        rest = body_model(return_vertices=False)
    rest_points = rest.keypoints[0].index_select(0, model_index.to(rest.keypoints.device))
    rest_points = rest_points.to(dtype).cpu().expand(observed.shape[0], -1, -1)
    root = rest.joints_kin[0, body_model.levels.root].to(dtype).cpu().expand(
        observed.shape[0], -1)
    log_scale = global_pose_from_points(rest_points, root, observed, with_scale=True)[2]
    scale = float(log_scale.flatten().median().exp())
    # depth of every sample's centre in every valid camera
    finite = torch.isfinite(observed).all(-1, keepdim=True)
    centre = (torch.where(finite, observed, torch.zeros_like(observed)).sum(1)
              / finite.sum(1).clamp_min(1))                                    # (b, 3)
    R, t = obs['R'][enough], obs['t'][enough]
    depth = (torch.einsum('bcij,bj->bci', R, centre) + t)[..., 2]             # (b, C)
    valid = torch.isfinite(depth) & (depth > 0)
    if 'view_valid' in obs:
        valid &= obs['view_valid'][enough].bool()
    if not bool(valid.any()):
        return None
    return scale, float(depth[valid].median()) / scale


def to_model_units(data_samples: Mapping[str, Any], scale: float) -> Dict[str, Any]:
    """``data_samples`` (a batch) with lengths in model units: the cameras' ``t``,
    ``keypoints_3d`` and ground-truth ``params['transl']`` divided by ``scale`` (the
    rig's units per model unit), ``params['global_log_scale']`` less ``log(scale)``."""
    out = dict(data_samples)
    for key in ('t', 'keypoints_3d'):
        if isinstance(out.get(key), torch.Tensor):
            out[key] = out[key] / scale
    params = out.get('params')
    if params:
        params = dict(params)
        if isinstance(params.get('transl'), torch.Tensor):
            params['transl'] = params['transl'] / scale
        if isinstance(params.get('global_log_scale'), torch.Tensor):
            params['global_log_scale'] = params['global_log_scale'] - math.log(scale)
        out['params'] = params
    return out


def to_rig_units(decoded: Mapping[str, Any], keypoints: Mapping[str, torch.Tensor],
                 scale: float) -> Tuple[Dict[str, Any], Dict[str, torch.Tensor]]:
    """A decoded prediction and its keypoints (model units) in the rig's units: points,
    ``transl`` and the cameras' ``t`` times ``scale``; ``params['global_log_scale']`` (B, 1)
    gains ``log(scale)``, so the body model posed with ``params`` gives ``output``."""
    decoded = dict(decoded)
    params = dict(decoded['params'])
    B = params['transl'].shape[0]
    log_scale = params.get('global_log_scale')
    base = torch.zeros(B, 1, dtype=params['transl'].dtype, device=params['transl'].device) \
        if log_scale is None else log_scale
    params['global_log_scale'] = base + math.log(scale)
    params['transl'] = params['transl'] * scale
    decoded['params'] = params
    decoded['cameras'] = dict(decoded['cameras'], t=decoded['cameras']['t'] * scale)
    out = decoded['output']

    def scaled(p):
        return None if p is None else p * scale
    decoded['output'] = replace(out, joints=scaled(out.joints),
                                joints_kin=scaled(out.joints_kin),
                                keypoints=scaled(out.keypoints), vertices=scaled(out.vertices))
    keypoints = dict(keypoints, keypoints_3d=keypoints['keypoints_3d'] * scale)
    return decoded, keypoints


__all__ = ['estimate_rig_units', 'to_model_units', 'to_rig_units', 'MIN_POINTS']
