"""Prior keeping camera parameters near their initial (e.g. calibrated) values.

Shapes: B batch, C cameras per sample. Rotations are (B, C, 3) axis-angle,
(B, C, 6) 6D or (B, C, 3, 3) matrices (see :mod:`smilfit.body_models.rotations`);
translations (B, C, 3) in scene units; focal lengths (B, C) or (B, C, 2) in pixels.
"""
from __future__ import annotations

from typing import Optional

import torch

from ..body_models.rotations import matrix_to_axis_angle, to_rotation_matrix
from ..registry import LOSSES
from .utils import BaseLoss, check_choice, masked, valid_mask

#: Rotation distances of :class:`CameraPriorLoss`.
ROTATION_MODES = ('geodesic', 'chordal', 'axis_angle')
#: Focal-length distances of :class:`CameraPriorLoss`.
FOCAL_MODES = ('relative', 'log', 'abs')


def rotation_distance_sq(rot: torch.Tensor, init: torch.Tensor, mode: str = 'geodesic',
                         batch_ndim: int = 2) -> torch.Tensor:
    """Squared distance between rotations, per rotation.

    - ``'geodesic'``: ``theta^2``, the squared angle of ``R0^T R`` (radians^2), with a
      finite gradient at ``R = R0`` (computed through unit quaternions);
    - ``'chordal'``: ``|R - R0|_F^2 = 4 (1 - cos theta)``;
    - ``'axis_angle'``: ``|a - a0|^2`` of the axis-angle vectors (cheap, but not a
      distance on rotations far from the identity).

    Args:
        rot, init: ``(*batch, 3)``, ``(*batch, 6)`` or ``(*batch, 3, 3)`` rotations.
        mode: one of :data:`ROTATION_MODES`.
        batch_ndim: number of leading batch dimensions.

    Returns:
        ``(*batch)`` squared distances.
    """
    R = to_rotation_matrix(rot, batch_ndim, 'rotation')
    R0 = to_rotation_matrix(init, batch_ndim, 'init_rotation').to(R)
    if mode == 'geodesic':
        aa = matrix_to_axis_angle(R0.transpose(-1, -2) @ R)
        return (aa * aa).sum(-1)
    if mode == 'chordal':
        d = R - R0
        return (d * d).sum((-2, -1))
    if mode == 'axis_angle':
        a = rot if rot.shape[-1] == 3 and rot.ndim == batch_ndim + 1 else matrix_to_axis_angle(R)
        a0 = (init if init.shape[-1] == 3 and init.ndim == batch_ndim + 1
              else matrix_to_axis_angle(R0)).to(a)
        d = a - a0
        return (d * d).sum(-1)
    raise ValueError(f'mode must be one of {ROTATION_MODES}, got {mode!r}')


def focal_distance_sq(focal: torch.Tensor, init: torch.Tensor, mode: str = 'relative'
                      ) -> torch.Tensor:
    """(B, C[, 2]) focal lengths -> (B, C) squared deviations, summed over fx/fy.

    ``'relative'``: ``((f - f0) / f0)^2``; ``'log'``: ``(log f - log f0)^2`` (needs
    f > 0); ``'abs'``: ``(f - f0)^2`` (pixels^2).
    """
    init = init.to(focal)
    if mode == 'relative':
        d = (focal - init) / init
    elif mode == 'log':
        d = torch.log(focal) - torch.log(init)
    elif mode == 'abs':
        d = focal - init
    else:
        raise ValueError(f'mode must be one of {FOCAL_MODES}, got {mode!r}')
    d = d * d
    return d.reshape(d.shape[:2] + (-1,)).sum(-1)


@LOSSES.register_module()
class CameraPriorLoss(BaseLoss):
    """Squared deviations of camera parameters from their initial values.

    Per camera ``l = w_R d_R(R, R0) + w_t |t - t0|^2 + w_f d_f(f, f0)`` (see
    :func:`rotation_distance_sq` and :func:`focal_distance_sq`); per sample
    ``loss = sum_c v_c l_c`` with ``v`` the optional camera ``weight`` (B, C) (0/False
    for absent cameras). Terms whose parameters are not passed are skipped.

    Args:
        rotation_weight, translation_weight, focal_weight: term weights.
        rotation_mode: one of :data:`ROTATION_MODES`.
        focal_mode: one of :data:`FOCAL_MODES`.
        loss_weight, reduction: see :class:`~smilfit.losses.utils.BaseLoss`.
    """

    def __init__(self, rotation_weight: float = 1.0, translation_weight: float = 1.0,
                 focal_weight: float = 1.0, rotation_mode: str = 'geodesic',
                 focal_mode: str = 'relative', loss_weight: float = 1.0,
                 reduction: str = 'none') -> None:
        super().__init__(loss_weight, reduction)
        check_choice('rotation_mode', rotation_mode, ROTATION_MODES)
        check_choice('focal_mode', focal_mode, FOCAL_MODES)
        self.rotation_weight = float(rotation_weight)
        self.translation_weight = float(translation_weight)
        self.focal_weight = float(focal_weight)
        self.rotation_mode = rotation_mode
        self.focal_mode = focal_mode

    def forward(self, rotation: Optional[torch.Tensor] = None,
                translation: Optional[torch.Tensor] = None,
                focal: Optional[torch.Tensor] = None,
                init_rotation: Optional[torch.Tensor] = None,
                init_translation: Optional[torch.Tensor] = None,
                init_focal: Optional[torch.Tensor] = None,
                weight: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Per-sample camera prior.

        Args:
            rotation, init_rotation: (B, C, 3 | 6 | 3x3) current and initial rotations.
            translation, init_translation: (B, C, 3).
            focal, init_focal: (B, C) or (B, C, 2).
            weight: optional (B, C) per-camera weights or validity (bool).

        Returns:
            (B,) weighted loss (or reduced).
        """
        cam_ok = None
        if weight is not None:
            cam_ok = (weight if weight.dtype == torch.bool
                      else (weight != 0) & torch.isfinite(weight))
        terms = []
        for name, cur, init, w in (('rotation', rotation, init_rotation, self.rotation_weight),
                                   ('translation', translation, init_translation,
                                    self.translation_weight),
                                   ('focal', focal, init_focal, self.focal_weight)):
            if cur is None or w == 0:
                continue
            if init is None:
                raise ValueError(f'CameraPriorLoss: {name} given without init_{name}')
            if cur.ndim < 2:
                raise ValueError(f'{name}: expected (B, C, ...), got {tuple(cur.shape)}')
            init = init.to(cur)
            if name == 'rotation' and cur.shape != init.shape:  # mixed representations
                cur = to_rotation_matrix(cur, 2, 'rotation')
                init = to_rotation_matrix(init, 2, 'init_rotation')
            if cur.shape != init.shape:
                raise ValueError(f'{name} {tuple(cur.shape)} and init_{name} '
                                 f'{tuple(init.shape)} must have the same shape')
            # Absent cameras may carry NaN initial values: replace them before any
            # arithmetic (by the current value: zero deviation, zero gradient).
            ok = valid_mask(init, init.ndim - 2)
            if cam_ok is not None:
                ok = ok & torch.broadcast_to(cam_ok, ok.shape)
            init = torch.where(ok.reshape(ok.shape + (1,) * (init.ndim - 2)), init,
                               cur.detach())
            if name == 'rotation':
                d = rotation_distance_sq(cur, init, self.rotation_mode, batch_ndim=2)
            elif name == 'translation':
                d = ((cur - init) ** 2).sum(-1)
            else:
                d = focal_distance_sq(cur, init, self.focal_mode)
            terms.append(w * torch.where(ok, d, torch.zeros_like(d)))
        if not terms:
            raise ValueError('CameraPriorLoss: pass at least one of rotation, translation, '
                             'focal (with a non-zero weight)')
        per_cam = torch.stack(torch.broadcast_tensors(*terms)).sum(0)
        if weight is not None and weight.dtype != torch.bool:
            per_cam = per_cam * masked(torch.broadcast_to(weight, per_cam.shape).to(
                per_cam.dtype), torch.broadcast_to(cam_ok, per_cam.shape))
        return self.finish(per_cam.sum(-1))


__all__ = ['ROTATION_MODES', 'FOCAL_MODES', 'rotation_distance_sq', 'focal_distance_sq',
           'CameraPriorLoss']
