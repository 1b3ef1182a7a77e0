"""Camera prior handler: fitted cameras stay near their initial (calibrated) values."""
from __future__ import annotations

from typing import Any, Mapping, Optional

import torch

from ..registry import HANDLERS
from .base import BaseHandler, LossSpec, batch_size, get_param, zeros_like_batch
from .views import is_squeezed_single_view, observed_camera

#: Fitted params key -> observation key of its initial value.
_INIT_KEYS = {'camera_R': 'R', 'camera_t': 't', 'camera_K': 'K'}


@HANDLERS.register_module()
class CameraPriorHandler(BaseHandler):
    """``CameraPriorLoss`` between fitted cameras and their initial values.

    Fitted cameras are ``params['camera_R']`` (B|1, C, 3 | 6 | 3x3),
    ``params['camera_t']`` (B|1, C, 3) and optionally ``params['camera_K']``
    (B|1, C, 3, 3) (its focal lengths ``fx, fy`` are compared). Initial values are
    ``params['camera_R_init']`` etc. when present, else the observed cameras
    ``observations['R' | 't' | 'K']`` (B, C, ...) or (C, ...). Absent fitted
    parameters are skipped; with none at all the handler scores 0.

    Per-sample cameras (leading B) are weighted by ``observations['view_valid']``. A
    rig shared by the batch (leading 1) is scored once: each sample gets ``1 / B`` of
    it, so the batch sum is the prior of the rig (compared with the first sample's
    observed cameras when those carry a batch axis).

    Args:
        name, loss, weight, check_finite: see :class:`~.base.BaseHandler`
            (``loss`` defaults to ``dict(type='CameraPriorLoss')``).
    """

    def __init__(self, name: str, loss: Optional[LossSpec] = None, weight: float = 1.0,
                 check_finite: bool = False) -> None:
        super().__init__(name, dict(type='CameraPriorLoss') if loss is None else loss,
                         weight, check_finite)

    def _init(self, key: str, cur: torch.Tensor, observations, params, squeezed: bool
              ) -> torch.Tensor:
        init = get_param(params, key + '_init')
        if init is None:
            init = observed_camera(observations, _INIT_KEYS[key], cur.shape[1], self.name,
                                   cur.dtype, cur.device, squeezed)
        init = init.to(device=cur.device, dtype=cur.dtype)
        if cur.shape[0] == 1 and init.shape[0] > 1:
            init = init[:1]
        return init

    def compute(self, output, observations: Mapping[str, Any],
                params: Mapping[str, Any]) -> torch.Tensor:
        B = batch_size(output)
        squeezed = is_squeezed_single_view(observations)
        kwargs = {}
        lead = None
        for key, arg in (('camera_R', 'rotation'), ('camera_t', 'translation'),
                         ('camera_K', 'focal')):
            cur = get_param(params, key)
            if cur is None:
                continue
            if cur.ndim < 3 or cur.shape[0] not in (1, B):
                raise ValueError(f'handler {self.name!r}: params[{key!r}] must be (B or 1, '
                                 f'C, ...), got {tuple(cur.shape)}')
            if lead is not None and cur.shape[0] != lead:
                raise ValueError(f'handler {self.name!r}: camera params mix per-sample and '
                                 'shared (leading 1) tensors')
            lead = cur.shape[0]
            init = self._init(key, cur, observations, params, squeezed)
            if key == 'camera_K':
                cur = torch.stack([cur[..., 0, 0], cur[..., 1, 1]], -1)
                init = torch.stack([init[..., 0, 0], init[..., 1, 1]], -1)
            if key != 'camera_R':  # rotations may differ in representation
                init = torch.broadcast_to(init, cur.shape)
            elif init.shape[0] != cur.shape[0]:
                init = init.expand((cur.shape[0],) + init.shape[1:])
            kwargs[arg] = cur
            kwargs['init_' + arg] = init
        if not kwargs:
            return zeros_like_batch(output)
        if lead == 1:
            shared = self.loss(**kwargs)                      # (1,): the rig once
            return shared.expand(B) / B
        valid = observations.get('view_valid')
        if valid is not None:
            valid = valid.to(torch.bool)
            if squeezed:
                valid = valid.reshape(B, 1)
            kwargs['weight'] = valid.to(kwargs[next(iter(kwargs))].device)
        return self.loss(**kwargs)


__all__ = ['CameraPriorHandler']
