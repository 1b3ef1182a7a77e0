"""Shape prior handler: Mahalanobis distance of the betas from the model's distribution."""
from __future__ import annotations

import copy
from typing import Any, Mapping, Optional

import torch
from torch import nn

from ..registry import HANDLERS
from .base import BaseHandler, LossSpec, get_param, zeros_like_batch


@HANDLERS.register_module()
class ShapePriorHandler(BaseHandler):
    """``ShapePriorLoss`` on ``params[param]`` (``'betas'``), from the model's prior.

    A loss config without ``model_data`` gets the body model's ``shape_mean`` /
    ``shape_cov`` at :meth:`setup` (a model without them gives the L2 prior). Absent
    betas (not fitted) score 0.

    Args:
        name, loss, weight, check_finite: see :class:`~.base.BaseHandler`
            (``loss`` defaults to ``dict(type='ShapePriorLoss')``).
        param: the params key holding the (B, K') shape coefficients.
    """

    residual_kind = 'params'

    def __init__(self, name: str, loss: Optional[LossSpec] = None, weight: float = 1.0,
                 param: str = 'betas', check_finite: bool = False) -> None:
        loss = dict(type='ShapePriorLoss') if loss is None else loss
        super().__init__(name, loss if isinstance(loss, nn.Module) else None, weight,
                         check_finite)
        self.loss_cfg = None if isinstance(loss, nn.Module) else copy.deepcopy(dict(loss))
        self.param = param

    def setup(self, body_model, data_info: Optional[Mapping[str, Any]] = None) -> None:
        if self.loss_cfg is not None:
            self.loss = self._model_loss(self.loss_cfg, body_model)
        super().setup(body_model, data_info)

    def compute(self, output, observations: Mapping[str, Any],
                params: Mapping[str, Any]) -> torch.Tensor:
        betas = get_param(params, self.param)
        if betas is None or betas.shape[-1] == 0:
            return zeros_like_batch(output)
        return self.loss(betas)


    @property
    def residual_params(self):
        return (self.param,)

    @property
    def affine_param_residuals(self) -> bool:
        return bool(getattr(self.loss, 'affine_residuals', False))

    def param_residuals(self, params: Mapping[str, Any],
                        observations: Mapping[str, Any]) -> torch.Tensor:
        """(B, K') residuals of the shape prior (``ShapePriorLoss.residuals``)."""
        betas = get_param(params, self.param)
        if not hasattr(self.loss, 'residuals'):
            raise NotImplementedError(self._no_residuals())
        if betas is None:
            raise ValueError(f'handler {self.name!r}: params have no {self.param!r}')
        return self.loss.residuals(betas)

__all__ = ['ShapePriorHandler']
