"""Multi-start fitting: every sample from several camera-facing headings, the best kept.

For views that cannot be triangulated (one camera: front/back and mirror ambiguities)
:class:`~smilfit.registrants.SMILRegistrant` with ``multi_start=dict(...)`` runs its
first stages from ``num_headings`` upright orientations per sample
(:func:`~smilfit.registrants.initialization.heading_hypotheses`) and keeps, per
sample, the hypothesis with the lowest score handler loss.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import torch

from smilfit.body_models.parameters import MODEL_INPUTS as _MODEL_INPUTS
from smilfit.body_models.quadruped import camera_facing_orientations
from smilfit.handlers import Keypoint2DHandler
from smilfit.handlers.views import view_cameras, view_keypoints
from .initialization import heading_hypotheses

Tensor = torch.Tensor

#: Keys a ``multi_start`` config may have.
MULTI_START_KEYS = ('num_headings', 'elevation_deg', 'body_extent', 'stages', 'score')


def check_multi_start(cfg: Optional[Mapping[str, Any]], handler_names: Sequence[str],
                      num_stages: int, shared: Sequence[str]) -> Optional[Dict[str, Any]]:
    """Validate a ``multi_start`` config and fill its defaults (``None`` passes through).

    Args:
        cfg: the config dict or ``None``.
        handler_names: the registrant's handler names (``score`` must be one).
        num_stages: the registrant's number of stages (``stages`` is at most that).
        shared: the registrant's shared parameters (must be none).
    """
    if cfg is None:
        return None
    cfg = dict(cfg)
    unknown = sorted(set(cfg) - set(MULTI_START_KEYS))
    if unknown:
        raise ValueError(f'multi_start: unknown key(s) {unknown}; allowed: '
                         f'{list(MULTI_START_KEYS)}')
    out = dict(num_headings=int(cfg.get('num_headings', 8)),
               elevation_deg=float(cfg.get('elevation_deg', 0.0)),
               body_extent=cfg.get('body_extent'), stages=int(cfg.get('stages', 1)),
               score=cfg.get('score'))
    if out['num_headings'] < 1:
        raise ValueError(f'multi_start.num_headings must be >= 1, got {out["num_headings"]}')
    if not 1 <= out['stages'] <= num_stages:
        raise ValueError(f'multi_start.stages must be between 1 and the number of stages '
                         f'({num_stages}), got {out["stages"]}')
    if out['body_extent'] is not None and not float(out['body_extent']) > 0:
        raise ValueError(f'multi_start.body_extent must be > 0, got {out["body_extent"]}')
    if out['score'] is not None and out['score'] not in handler_names:
        raise ValueError(f'multi_start.score {out["score"]!r} is not a handler; handlers: '
                         f'{list(handler_names)}')
    if shared:
        raise ValueError('multi_start fits each sample alone from several starts: it '
                         f'cannot be combined with shared parameters {sorted(shared)}')
    return out


def best_start(settings: Mapping[str, Any], body_model, handler, handlers: Mapping[str, Any],
               initial_params: Callable[..., Dict[str, Tensor]],
               run_stages: Callable[..., Tuple[Dict[str, Tensor], Tensor]],
               obs: Mapping[str, Tensor], batch: int, history: List[Dict[str, Any]]
               ) -> Tuple[Dict[str, Tensor], Tensor]:
    """``multi_start``: the first stages from every heading; each sample's best.

    Args:
        settings: the checked ``multi_start`` config (:func:`check_multi_start`).
        body_model: the registrant's body model.
        handler: its keypoint handler (a :class:`~smilfit.handlers.Keypoint2DHandler`).
        handlers: handler name -> handler (``settings['score']`` names one).
        initial_params: ``(observations, batch, groups, starts) -> params``, the
            registrant's starting parameters.
        run_stages: ``(params, observations, groups, diverged, history) -> (params,
            diverged)``, the registrant's first ``settings['stages']`` stages.
        obs: the batch's observations; batch: B; history: stage records (appended to).

    Returns:
        ``(params, diverged (B,))`` of every sample's best hypothesis.
    """
    ms = settings
    Y = ms['num_headings']
    if not isinstance(handler, Keypoint2DHandler) or 'keypoints_2d' not in obs:
        raise ValueError('multi_start needs 2D keypoints and a Keypoint2DHandler')
    m = body_model
    views = view_keypoints(obs, handler.name)        # (B, C, ...) layout
    C = views['keypoints_2d'].shape[1]
    uv = handler.select_data(views['keypoints_2d'], 2)[:, 0]
    visible = views['visible']
    visible = (torch.ones(uv.shape[:2], dtype=torch.bool, device=uv.device)
               if visible is None else handler.select_data(visible, 2)[:, 0].bool())
    cams = view_cameras(obs, {}, C, m.dtype, m.device, handler.name, views['squeezed'])
    cams = {k: cams[k][:, 0].expand((batch,) + cams[k].shape[2:])
            for k in ('K', 'R', 't')}                 # the first view's camera
    with torch.no_grad():
        rest = m(return_vertices=False)
    rest_joints = rest.joints_kin[0]
    extent = ms['body_extent']
    if extent is None:
        extent = float((rest_joints.amax(0) - rest_joints.amin(0)).amax())
    starts = heading_hypotheses(
        uv, visible, cams['K'], cams['R'], cams['t'],
        camera_facing_orientations(Y, ms['elevation_deg'], dtype=m.dtype),
        rest_joints, m.levels.root, float(extent))
    hyp_obs = {k: (v.repeat_interleave(Y, 0) if v.dim() and v.shape[0] == batch else v)
               for k, v in obs.items()}
    groups = torch.zeros(batch * Y, dtype=torch.long, device=m.device)
    params = initial_params(hyp_obs, batch * Y, groups, starts)
    diverged = torch.zeros(batch * Y, dtype=torch.bool, device=m.device)
    params, diverged = run_stages(params, hyp_obs, groups, diverged, history)
    for record in history:
        record['hypotheses'] = Y
    score_handler = handlers[ms['score']] if ms['score'] else handler
    with torch.no_grad():
        output = m(**{k: params[k] for k in _MODEL_INPUTS if k in params},
                   return_vertices=bool(getattr(score_handler, 'needs_vertices', False)))
        score = score_handler.compute(output, hyp_obs, params)
        behind = ~handler.project(output, hyp_obs, params)[1]       # (BY, C, M)
        hv = view_keypoints(hyp_obs, handler.name)['visible']
        if hv is not None:
            behind = behind & handler.select_data(hv, 2).bool()
        behind = behind.flatten(1).any(1)
    score = torch.where(behind | diverged | ~torch.isfinite(score),
                        torch.full_like(score, float('inf')), score)
    best = score.reshape(batch, Y).argmin(1) + torch.arange(batch, device=m.device) * Y
    return {k: v[best] for k, v in params.items()}, diverged[best]


__all__ = ['MULTI_START_KEYS', 'check_multi_start', 'best_start']
