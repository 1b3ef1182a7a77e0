"""Priors on per-joint scale and bone translation (SMILify's extra shape freedom).

Shapes: B batch, J joints, P symmetric joint pairs. ``log_scale`` is the per-joint,
per-axis log of the anisotropic scale (0 = unscaled); ``bone_trans`` is the offset
added to each joint's bone vector in its parent's frame, in model units.
"""
from __future__ import annotations

from typing import Optional

import torch

from ..registry import LOSSES
from .limb_length import PairSpec, resolve_pairs
from .utils import (ArrayLike, BaseLoss, PerJointL2Loss, as_float_tensor, check_joint_tensor,
                    per_joint_sq_norm, resolve_model_data)


def symmetry_sq(x: torch.Tensor, pairs: torch.Tensor) -> torch.Tensor:
    """(B, J, D) values and (P, 2) left/right pairs -> (B,) ``sum_p |x_l - x_r|^2``."""
    d = x[:, pairs[:, 0]] - x[:, pairs[:, 1]]
    return (d * d).sum((-2, -1))


@LOSSES.register_module()
class LogScalePrior(BaseLoss):
    """L2 on per-joint log-scales towards 0 (no scaling), plus optional symmetry.

    ``loss = sum_j w_j |s_j|^2 + symmetry_weight * sum_(l, r) |s_l - s_r|^2`` with
    ``s_j`` the (3,) log-scale of joint ``j`` and ``(l, r)`` left/right joint pairs
    (``BodyModelData.sym_joint_pairs`` when built from a model). The log makes
    halving and doubling a joint cost the same.

    Args:
        joint_weights: optional (J,) per-joint weights.
        symmetry_pairs: optional (P, 2) joint indices (or names with ``joint_names``).
        joint_names: names of the J joints (only for named pairs).
        symmetry_weight: weight of the symmetry term.
        model_data: optional BodyModelData / SMILModel / model path supplying the
            pairs (``sym_joint_pairs``) and names when not given.
        loss_weight, reduction: see :class:`~smilfit.losses.utils.BaseLoss`.
    """

    def __init__(self, joint_weights: Optional[ArrayLike] = None,
                 symmetry_pairs: Optional[PairSpec] = None, joint_names=None,
                 symmetry_weight: float = 1.0, model_data=None, loss_weight: float = 1.0,
                 reduction: str = 'none') -> None:
        super().__init__(loss_weight, reduction)
        if model_data is not None:
            data = resolve_model_data(model_data)
            joint_names = data.joint_names if joint_names is None else joint_names
            if symmetry_pairs is None and data.sym_joint_pairs is not None:
                symmetry_pairs = data.sym_joint_pairs
        self.symmetry_weight = float(symmetry_weight)
        self.register_buffer('joint_weights',
                             as_float_tensor(joint_weights, 'joint_weights', (None,)))
        self.register_buffer('symmetry_pairs', None if symmetry_pairs is None
                             else resolve_pairs(symmetry_pairs, joint_names))

    @classmethod
    def from_model_data(cls, model_data, **kwargs) -> 'LogScalePrior':
        """Build from a BodyModelData, a SMILModel or a model file path."""
        return cls(model_data=model_data, **kwargs)

    def forward(self, log_scale: torch.Tensor) -> torch.Tensor:
        """(B, J, 3) log-scales -> (B,) weighted loss (or reduced)."""
        n = None if self.joint_weights is None else self.joint_weights.shape[0]
        log_scale = check_joint_tensor(log_scale, 'log_scale', n)
        loss = per_joint_sq_norm(log_scale, self.joint_weights)
        if self.symmetry_pairs is not None and self.symmetry_weight:
            loss = loss + self.symmetry_weight * symmetry_sq(
                log_scale, self.symmetry_pairs.to(log_scale.device))
        return self.finish(loss)


@LOSSES.register_module()
class BoneTranslationPrior(PerJointL2Loss):
    """L2 on bone translations: ``loss = sum_j w_j |t_j|^2`` (model units squared).

    Input: (B, J, 3) bone translations.

    Args:
        joint_weights: optional (J,) per-joint weights.
        loss_weight, reduction: see :class:`~smilfit.losses.utils.BaseLoss`.
    """

    input_name = 'bone_trans'


@LOSSES.register_module()
class KeypointOffsetPrior(PerJointL2Loss):
    """L2 on keypoint offsets from their model points: ``loss = sum_k w_k |o_k|^2``
    (model units squared for joint-frame offsets).

    Input: (B, Kp, 3) offsets (``params['keypoint_offsets']``); e.g. the translation term
    of :class:`~smilfit.handlers.ScaleTranslationPriorHandler` with
    ``bone_trans_key='keypoint_offsets'``.

    Args:
        joint_weights: optional (Kp,) per-keypoint weights.
        loss_weight, reduction: see :class:`~smilfit.losses.utils.BaseLoss`.
    """

    input_name = 'keypoint_offsets'


__all__ = ['symmetry_sq', 'LogScalePrior', 'BoneTranslationPrior', 'KeypointOffsetPrior']
