"""Pose prior handlers: any pose prior on ``body_pose``, and joint limits by joint name."""
from __future__ import annotations

import copy
from typing import Any, Dict, Mapping, Optional

import torch
from torch import nn

from ..body_models.rotations import matrix_to_axis_angle, to_rotation_matrix
from ..registry import HANDLERS
from .base import BaseHandler, LossSpec, get_param, zeros_like_batch


def pose_to_axis_angle(pose: torch.Tensor, name: str = 'body_pose') -> torch.Tensor:
    """(B, N, 3 | 6 | 3x3) rotations -> (B, N, 3) axis-angle (flattened (B, D) as is).

    The pose priors are defined on axis-angle; 6D and matrix poses are converted
    (differentiably, through quaternions).
    """
    if pose.ndim == 2 or (pose.ndim == 3 and pose.shape[-1] == 3):
        return pose
    return matrix_to_axis_angle(to_rotation_matrix(pose, 2, name))


@HANDLERS.register_module()
class PosePriorHandler(BaseHandler):
    """Any pose prior loss (``PoseL2Prior``, ``GaussianPosePrior``,
    ``MaxMixturePosePrior``, a plugin) on ``params[param]`` (``'body_pose'``).

    6D / matrix poses are converted to axis-angle first. An absent pose scores 0.

    Args:
        name, loss, weight, check_finite: see :class:`~.base.BaseHandler`
            (``loss`` defaults to ``dict(type='PoseL2Prior')``).
        param: the params key of the pose.
    """

    def __init__(self, name: str, loss: Optional[LossSpec] = None, weight: float = 1.0,
                 param: str = 'body_pose', check_finite: bool = False) -> None:
        super().__init__(name, dict(type='PoseL2Prior') if loss is None else loss, weight,
                         check_finite)
        self.param = param

    @property
    def residual_kind(self):
        # Least-squares form where the loss has one (the L2 prior), for LM stages.
        return 'params' if hasattr(self.loss, 'residuals') else None

    @property
    def residual_params(self):
        return (self.param,)

    @property
    def affine_param_residuals(self) -> bool:
        # the residuals are the loss's, of the axis-angle pose itself
        return bool(getattr(self.loss, 'affine_residuals', False))

    def param_residuals(self, params: Mapping[str, Any],
                        observations: Mapping[str, Any]) -> torch.Tensor:
        pose = get_param(params, self.param)
        if pose is None or not hasattr(self.loss, 'residuals'):
            raise NotImplementedError(self._no_residuals())
        if not (pose.ndim == 2 or pose.shape[-1] == 3):
            raise NotImplementedError(f'handler {self.name!r}: residuals need axis-angle poses')
        return self.loss.residuals(pose)

    def compute(self, output, observations: Mapping[str, Any],
                params: Mapping[str, Any]) -> torch.Tensor:
        pose = get_param(params, self.param)
        if pose is None:
            return zeros_like_batch(output)
        return self.loss(pose_to_axis_angle(pose, self.param))


@HANDLERS.register_module()
class JointLimitHandler(BaseHandler):
    """``JointLimitPrior`` on ``params['body_pose']``, limits from the model or by name.

    At :meth:`setup` a loss config without ``model_data``/``joint_names`` gets the
    body model: its ``joint_limits`` are the defaults and ``limits`` (here or in the
    loss config) override them by joint name, e.g.
    ``limits={'femur_L': [[-0.5, 0.5], None, [0.0, 1.2]]}`` (None = unlimited).

    Args:
        name, loss, weight, check_finite: see :class:`~.base.BaseHandler`
            (``loss`` defaults to ``dict(type='JointLimitPrior')``).
        limits: optional ``{joint_name: [[min, max]] * 3}`` or (N, 3, 2) array; put
            into the loss config.
        param: the params key of the pose.
    """

    def __init__(self, name: str, loss: Optional[LossSpec] = None, weight: float = 1.0,
                 limits: Optional[Any] = None, param: str = 'body_pose',
                 check_finite: bool = False) -> None:
        loss = dict(type='JointLimitPrior') if loss is None else loss
        module = isinstance(loss, nn.Module)
        if module and limits is not None:
            raise ValueError(f'handler {name!r}: limits need a loss config, not a built '
                             'module')
        super().__init__(name, loss if module else None, weight, check_finite)
        self.loss_cfg: Optional[Dict[str, Any]] = None
        if not module:
            self.loss_cfg = copy.deepcopy(dict(loss))
            if limits is not None:
                if 'limits' in self.loss_cfg:
                    raise ValueError(f'handler {name!r}: limits given twice (handler and '
                                     'loss config)')
                self.loss_cfg['limits'] = limits
        self.param = param

    def setup(self, body_model, data_info: Optional[Mapping[str, Any]] = None) -> None:
        if self.loss_cfg is not None:
            self.loss = self._model_loss(self.loss_cfg, body_model, blockers=('joint_names',))
        super().setup(body_model, data_info)

    def compute(self, output, observations: Mapping[str, Any],
                params: Mapping[str, Any]) -> torch.Tensor:
        pose = get_param(params, self.param)
        if pose is None:
            return zeros_like_batch(output)
        return self.loss(pose_to_axis_angle(pose, self.param))


__all__ = ['pose_to_axis_angle', 'PosePriorHandler', 'JointLimitHandler']
