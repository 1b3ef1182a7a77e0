"""Priors on per-joint log-scale and bone translation (SMILify's extra shape freedom)."""
from __future__ import annotations

import copy
from typing import Any, Mapping, Optional

import torch
from torch import nn

from ..registry import HANDLERS
from .base import BaseHandler, LossSpec, get_param, zeros_like_batch


@HANDLERS.register_module()
class ScaleTranslationPriorHandler(BaseHandler):
    """``LogScalePrior`` on ``params['log_scale']`` + ``BoneTranslationPrior`` on
    ``params['bone_trans']``.

    A ``LogScalePrior`` config without ``model_data``/``symmetry_pairs`` gets the body
    model at :meth:`setup`, so its symmetry term uses the model's ``sym_joint_pairs``
    (none when the model has none). Each term scores 0 when its parameter is absent; set
    a loss to ``None`` to drop its term.

    Args:
        name, weight, check_finite: see :class:`~.base.BaseHandler`.
        loss: the log-scale prior (default ``dict(type='LogScalePrior')``) or ``None``.
        bone_trans_loss: the bone-translation prior (default
            ``dict(type='BoneTranslationPrior')``) or ``None``.
        log_scale_key, bone_trans_key: params keys.
    """

    _DEFAULT = object()

    def __init__(self, name: str, loss: Optional[LossSpec] = _DEFAULT, weight: float = 1.0,
                 bone_trans_loss: Optional[LossSpec] = _DEFAULT,
                 log_scale_key: str = 'log_scale', bone_trans_key: str = 'bone_trans',
                 check_finite: bool = False) -> None:
        if loss is self._DEFAULT:
            loss = dict(type='LogScalePrior')
        if bone_trans_loss is self._DEFAULT:
            bone_trans_loss = dict(type='BoneTranslationPrior')
        if loss is None and bone_trans_loss is None:
            raise ValueError(f'handler {name!r}: both priors are None')
        module = isinstance(loss, nn.Module)
        super().__init__(name, loss if module else None, weight, check_finite)
        self.loss_cfg = None if (module or loss is None) else copy.deepcopy(dict(loss))
        self.bone_trans_loss = (None if bone_trans_loss is None
                                else self._make_loss(bone_trans_loss))
        self.log_scale_key = log_scale_key
        self.bone_trans_key = bone_trans_key

    def setup(self, body_model, data_info: Optional[Mapping[str, Any]] = None) -> None:
        if self.loss_cfg is not None:
            self.loss = self._model_loss(self.loss_cfg, body_model,
                                         blockers=('symmetry_pairs',))
        super().setup(body_model, data_info)

    def compute(self, output, observations: Mapping[str, Any],
                params: Mapping[str, Any]) -> torch.Tensor:
        total = zeros_like_batch(output)
        log_scale = get_param(params, self.log_scale_key)
        if self.loss is not None and log_scale is not None:
            total = total + self.loss(log_scale)
        bone_trans = get_param(params, self.bone_trans_key)
        if self.bone_trans_loss is not None and bone_trans is not None:
            total = total + self.bone_trans_loss(bone_trans)
        return total


__all__ = ['ScaleTranslationPriorHandler']
