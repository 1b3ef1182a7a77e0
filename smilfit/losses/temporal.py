"""Temporal smoothness of sequences (joints, keypoints or pose parameters).

Shapes: B batch (sequences), T frames, ``...`` any per-frame shape (e.g. (J, 3)).
Differences are taken per frame step (no time unit); they are Euclidean on the values
given (for rotations: on the parameters, e.g. axis-angle, not on the rotation group).
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch

from ..registry import LOSSES
from .utils import BaseLoss, check_choice, masked, sum_nonbatch, valid_mask

#: Normalisations of :class:`TemporalSmoothnessLoss` over time.
TEMPORAL_NORMALIZATIONS = ('sum', 'mean')


def frame_valid(x: torch.Tensor, valid: Optional[torch.Tensor] = None) -> torch.Tensor:
    """(B, T, ...) sequence -> (B, T) frames that are finite and marked ``valid``."""
    ok = valid_mask(x.reshape(x.shape[:2] + (-1,)), 1)
    if valid is not None:
        ok = ok & valid.to(torch.bool)
    return ok


def finite_differences(x: torch.Tensor, valid: torch.Tensor, order: int
                       ) -> Tuple[torch.Tensor, torch.Tensor]:
    """Masked forward differences of ``order`` 1 (velocity) or 2 (acceleration).

    Args:
        x: (B, T, F) sequence (may hold NaN where not ``valid``).
        valid: (B, T) usable frames.
        order: 1 -> ``x[t+1] - x[t]``; 2 -> ``x[t+1] - 2 x[t] + x[t-1]``.

    Returns:
        ``(diff (B, T - order, F), ok (B, T - order))``; a difference is ``ok`` only
        when every frame it uses is valid (no term bridges a gap), and is exactly 0
        with zero gradient otherwise.
    """
    x = masked(x, valid)
    if order == 1:
        d = x[:, 1:] - x[:, :-1]
        ok = valid[:, 1:] & valid[:, :-1]
    elif order == 2:
        d = x[:, 2:] - 2.0 * x[:, 1:-1] + x[:, :-2]
        ok = valid[:, 2:] & valid[:, 1:-1] & valid[:, :-2]
    else:
        raise ValueError(f'order must be 1 or 2, got {order}')
    return masked(d, ok), ok


@LOSSES.register_module()
class TemporalSmoothnessLoss(BaseLoss):
    """Penalise velocity and/or acceleration along the time axis.

    ``loss = w_v sum_t |x_{t+1} - x_t|^2 + w_a sum_t |x_{t+1} - 2 x_t + x_{t-1}|^2``
    over the differences whose frames are all valid (``normalize='mean'`` divides each
    term by its number of valid differences instead). Frames with NaN values or a false
    ``valid`` entry are gaps: no difference spans them.

    Args:
        velocity_weight: weight ``w_v`` of the first-difference term.
        acceleration_weight: weight ``w_a`` of the second-difference term.
        normalize: ``'sum'`` or ``'mean'`` over time.
        loss_weight, reduction: see :class:`~smilfit.losses.utils.BaseLoss`.
    """

    def __init__(self, velocity_weight: float = 1.0, acceleration_weight: float = 0.0,
                 normalize: str = 'sum', loss_weight: float = 1.0,
                 reduction: str = 'none') -> None:
        super().__init__(loss_weight, reduction)
        check_choice('normalize', normalize, TEMPORAL_NORMALIZATIONS)
        self.velocity_weight = float(velocity_weight)
        self.acceleration_weight = float(acceleration_weight)
        self.normalize = normalize

    def forward(self, x: torch.Tensor, valid: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Per-sequence smoothness.

        Args:
            x: (B, T, ...) sequence.
            valid: optional (B, T) booleans; false marks a gap.

        Returns:
            (B,) weighted loss (or reduced).
        """
        if x.ndim < 2:
            raise ValueError(f'x: expected (B, T, ...), got {tuple(x.shape)}')
        ok = frame_valid(x, valid)
        flat = x.reshape(x.shape[0], x.shape[1], -1)
        loss = x.new_zeros(x.shape[0])
        for order, w in ((1, self.velocity_weight), (2, self.acceleration_weight)):
            if w == 0 or x.shape[1] <= order:
                continue
            d, d_ok = finite_differences(flat, ok, order)
            term = sum_nonbatch(d * d)
            if self.normalize == 'mean':
                term = term / sum_nonbatch(d_ok.to(x.dtype)).clamp_min(1.0)
            loss = loss + w * term
        return self.finish(loss)

    def extra_repr(self) -> str:
        return (f'velocity_weight={self.velocity_weight}, '
                f'acceleration_weight={self.acceleration_weight}, '
                f'normalize={self.normalize!r}, ' + super().extra_repr())


__all__ = ['TEMPORAL_NORMALIZATIONS', 'frame_valid', 'finite_differences',
           'TemporalSmoothnessLoss']
