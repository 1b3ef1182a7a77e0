"""A regressor's loss terms: built from its config, weighted, and computed per sample.

The terms are the fitting handlers (``HANDLERS``: ``Keypoint2DHandler`` through the
predicted cameras, ``Keypoint3DHandler``, ``ShapePriorHandler``, ``PosePriorHandler``,
``SilhouetteHandler`` when a renderer is configured, ...; :func:`build_handlers`) plus the
built-in terms (:data:`BUILTIN_TERMS`, :func:`build_builtin_losses`): ``param``
(ground-truth parameters, when the batch has them;
:class:`~smilfit.losses.ParamSupervisionLoss`), ``triangulation`` (the 2D observations
triangulated through the predicted cameras against the predicted 3D keypoints;
:class:`~smilfit.losses.TriangulationConsistencyLoss`) and ``heading`` (MultiBin heading).
Their default weights are :func:`default_loss_weights`; a weight set later is checked by
:func:`checked_loss_weight`. :func:`handler_terms` and :func:`triangulation_term` compute
the unweighted per-sample (B,) terms of one prediction.
"""
from __future__ import annotations

import math
from typing import Any, Dict, Iterable, Mapping, Optional, Sequence

import torch
from torch import nn

from smilfit.registry import HANDLERS, LOSSES
from smilfit.utils.batch_tree import slice_batch

from .keypoints import matched_observations
from .options import ModuleSpec, build_part

#: Loss terms computed by the regressor itself (besides its handlers).
BUILTIN_TERMS = ('param', 'triangulation', 'heading')


def build_handlers(losses: Sequence[ModuleSpec]) -> nn.ModuleDict:
    """The ``HANDLERS`` of a regressor's ``losses``, by their unique ``name``."""
    handlers = nn.ModuleDict()
    for spec in losses:
        handler = build_part(HANDLERS, spec, 'handler')
        if handler.name in handlers or handler.name in BUILTIN_TERMS:
            raise ValueError(f'loss name {handler.name!r} is used twice (or is one of '
                             f'the built-in terms {BUILTIN_TERMS})')
        handlers[handler.name] = handler
    return handlers


def build_builtin_losses(param_weights: Optional[Mapping[str, float]], rotation_loss: str,
                         body_length: float) -> nn.ModuleDict:
    """The built-in terms' losses ``param`` and ``triangulation`` (no parameters, no
    state-dict entries), in units of the body's length."""
    return nn.ModuleDict(dict(
        param=LOSSES.build(dict(type='ParamSupervisionLoss', param_weights=param_weights,
                                rotation=rotation_loss, length_scale=body_length)),
        triangulation=LOSSES.build(dict(type='TriangulationConsistencyLoss',
                                        scale=body_length))))


def default_loss_weights(handler_names: Iterable[str], heading: bool,
                         extra: Mapping[str, float]) -> Dict[str, float]:
    """1 for every handler and ``param``, 0 for ``triangulation``, 1 for ``heading`` when
    MultiBin heading is on, then a subclass's ``extra`` terms."""
    weights: Dict[str, float] = {name: 1.0 for name in handler_names}
    weights.update(param=1.0, triangulation=0.0)
    if heading:
        weights['heading'] = 1.0
    weights.update(extra)
    return weights


def checked_loss_weight(name: str, weight: float, known: Iterable[str]) -> float:
    """``weight`` as a float, when ``name`` is a known term and the weight finite and
    >= 0 (KeyError / ValueError otherwise)."""
    if name not in known:
        raise KeyError(f'unknown loss {name!r}; known: {sorted(known)}')
    weight = float(weight)
    if not math.isfinite(weight) or weight < 0:
        raise ValueError(f'loss weight {name!r} must be finite and >= 0, got {weight}')
    return weight


def handler_terms(handlers: Mapping[str, nn.Module], loss_weights: Mapping[str, float],
                  output, data_samples: Mapping[str, Any], params: Mapping[str, torch.Tensor],
                  rows: int, iterations: int = 1) -> Dict[str, torch.Tensor]:
    """Unweighted per-row terms of the handlers with a positive weight.

    With ``iterations`` T > 1 the ``rows`` hold T stacked predictions of the same samples
    (iteration-major); a handler whose loss couples the samples of a batch
    (``couples_samples``, e.g. a temporal term over a sequence) sees one iteration at a
    time.
    """
    out: Dict[str, torch.Tensor] = {}
    B = rows // iterations
    for name, handler in handlers.items():
        if loss_weights.get(name, 0.0) <= 0:
            continue
        if iterations > 1 and getattr(handler, 'couples_samples', False):
            parts = [handler(*slice_batch((output, data_samples, params),
                                          t * B, (t + 1) * B, rows))
                     for t in range(iterations)]
            out[name] = torch.cat(parts)
        else:
            out[name] = handler(output, data_samples, params)
    return out


def triangulation_term(loss: nn.Module, decoded: Mapping[str, Any],
                       data_samples: Mapping[str, Any], match, num_views: int
                       ) -> Optional[torch.Tensor]:
    """(B,) the ``triangulation`` term of one prediction, or None with one view or no 2D
    keypoints; ``match`` pairs the model's keypoints with the data's."""
    if num_views < 2 or data_samples.get('keypoints_2d') is None:
        return None
    kp, w = matched_observations(data_samples, match, decoded['body'].shape[0], num_views)
    cams = decoded['cameras']
    pts = decoded['output'].keypoints.index_select(1, match.model_index.to(kp.device))
    return loss(kp, w, cams['K'], cams['R'], cams['t'], cams['dist'], pts)


__all__ = ['BUILTIN_TERMS', 'build_handlers', 'build_builtin_losses', 'default_loss_weights',
           'checked_loss_weight', 'handler_terms', 'triangulation_term']
