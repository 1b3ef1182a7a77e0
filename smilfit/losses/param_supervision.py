"""Supervision of predicted body-model parameters by ground-truth parameters.

A regressor's ``param`` term: a weighted sum of squared differences between decoded and
ground-truth parameters, per sample. Rotations (``global_orient``, ``body_pose``) are
compared as rotation matrices (squared Frobenius distance, ``rotation='frobenius'``) or as
the head's raw 6D output against the target's 6D (``rotation='raw_6d'``); ``transl`` is
divided by a length (e.g. the body's) so that it is unitless; the other parameters
(``betas``, per-joint scales and translations and their PCA weights) are compared as they
are. Shapes: B samples, J' posed joints.
"""
from __future__ import annotations

from typing import Dict, Mapping, Optional

import torch

from ..body_models.rotations import axis_angle_to_matrix, matrix_to_rotation_6d
from ..registry import LOSSES
from .utils import BaseLoss, check_choice

#: Default weights of the ground-truth parameter loss.
DEFAULT_PARAM_WEIGHTS = dict(global_orient=1.0, body_pose=1.0, betas=0.1, transl=1.0,
                             log_scale=1.0, bone_trans=1.0, scale_weights=0.1,
                             trans_weights=0.1)
#: How the ground-truth parameter loss compares rotations.
ROTATION_LOSSES = ('frobenius', 'raw_6d')
#: Parameters that are rotations (matrices when decoded, axis-angle in the ground truth).
ROTATION_PARAMS = ('global_orient', 'body_pose')


def rotation_geodesic_sq(R1: torch.Tensor, R2: torch.Tensor) -> torch.Tensor:
    """Squared Frobenius distance of rotation matrices (..., 3, 3) -> (...,)
    (``= 8 sin^2(angle / 2)``: smooth everywhere, unlike the angle itself)."""
    d = R1 - R2
    return (d * d).sum((-1, -2))


def resolve_param_weights(param_weights: Optional[Mapping[str, float]] = None
                          ) -> Dict[str, float]:
    """``{param: weight}`` over every known parameter: :data:`DEFAULT_PARAM_WEIGHTS` when
    ``param_weights`` is None, else its weights (0 for the parameters it leaves out).

    Raises:
        KeyError: ``param_weights`` names a parameter that is not known.
    """
    if param_weights is None:
        return dict(DEFAULT_PARAM_WEIGHTS)
    unknown = sorted(set(param_weights) - set(DEFAULT_PARAM_WEIGHTS))
    if unknown:
        raise KeyError(f'param_weights: unknown parameters {unknown}; known: '
                       f'{sorted(DEFAULT_PARAM_WEIGHTS)}')
    return {k: float(param_weights.get(k, 0.0)) for k in DEFAULT_PARAM_WEIGHTS}


@LOSSES.register_module()
class ParamSupervisionLoss(BaseLoss):
    """Weighted squared distance of predicted from ground-truth body parameters.

    ``loss = sum_p w_p sum |pred_p - gt_p|^2`` over the parameters with ``w_p > 0`` present
    in both, with rotations as matrices (``|R - R_gt|_F^2 = 8 sin^2(angle / 2)``) or, with
    ``rotation='raw_6d'`` and the raw body vector given, as the raw (not orthonormalised)
    6D output against the target's first two matrix columns. ``raw_6d`` has no singularity
    where the network is unsure of the heading (the Frobenius loss then pulls the 6D
    columns towards their mean, near zero, where Gram-Schmidt's gradient explodes).

    Args:
        param_weights: ``{param: weight}`` (:data:`DEFAULT_PARAM_WEIGHTS` when None; keys
            left out weigh 0).
        rotation: ``'frobenius'`` or ``'raw_6d'`` (see above).
        length_scale: length (model units, e.g. the body length) ``transl`` differences
            are divided by.
        loss_weight, reduction: see :class:`~smilfit.losses.utils.BaseLoss`.
    """

    def __init__(self, param_weights: Optional[Mapping[str, float]] = None,
                 rotation: str = 'frobenius', length_scale: float = 1.0,
                 loss_weight: float = 1.0, reduction: str = 'none') -> None:
        super().__init__(loss_weight, reduction)
        check_choice('rotation', rotation, ROTATION_LOSSES)
        self.param_weights = resolve_param_weights(param_weights)
        self.rotation = rotation
        self.length_scale = float(length_scale)

    def forward(self, params: Mapping[str, torch.Tensor], gt: Mapping[str, torch.Tensor],
                raw: Optional[Mapping[str, torch.Tensor]] = None,
                reference_R: Optional[torch.Tensor] = None) -> Optional[torch.Tensor]:
        """Per-sample loss, or None when no weighted parameter is in both.

        Args:
            params: decoded parameters (B, ...) (world frame; rotations as (B, J', 3, 3)
                matrices, ``transl`` (B, 3) in model units).
            gt: ground-truth parameters (B, ...) (world frame; rotations axis-angle
                (B, J', 3); ``betas`` padded or cut to the predicted count).
            raw: the raw body vector split per parameter (``BodyParamCodec.split``;
                rotations (B, J', 6)), in the body vector's frame; used by
                ``rotation='raw_6d'`` (None: Frobenius).
            reference_R: (B, 3, 3) world -> body-vector frame rotation (the calibrated
                reference camera's; None: the frames coincide); ``raw_6d`` only.

        Returns:
            (B,) weighted loss (or reduced), or None.
        """
        if self.rotation != 'raw_6d':
            raw = None
        total = None
        for key, w in self.param_weights.items():
            if w <= 0 or key not in params or gt.get(key) is None:
                continue
            pred, target = params[key], gt[key].to(params[key])
            if key in ROTATION_PARAMS:
                target = axis_angle_to_matrix(target)
                if raw is None:
                    term = rotation_geodesic_sq(pred, target)
                else:
                    if key == 'global_orient' and reference_R is not None:
                        target = reference_R.to(target) @ target
                    diff = raw[key].to(target) - matrix_to_rotation_6d(target)
                    term = diff * diff
            else:
                if key == 'betas' and target.shape[-1] != pred.shape[-1]:
                    n = pred.shape[-1]
                    target = torch.nn.functional.pad(target, (0, max(0, n - target.shape[-1])))
                    target = target[..., :n]
                diff = pred - target
                if key == 'transl':
                    diff = diff / self.length_scale
                term = diff * diff
            term = term.reshape(term.shape[0], -1).sum(1) * w
            total = term if total is None else total + term
        return None if total is None else self.finish(total)

    def extra_repr(self) -> str:
        return (f'rotation={self.rotation!r}, length_scale={self.length_scale}, '
                + super().extra_repr())


__all__ = ['DEFAULT_PARAM_WEIGHTS', 'ROTATION_LOSSES', 'ROTATION_PARAMS',
           'rotation_geodesic_sq', 'resolve_param_weights', 'ParamSupervisionLoss']
