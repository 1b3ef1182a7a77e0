"""Temporal smoothness handler: the batch is one sequence of T frames of one track."""
from __future__ import annotations

from typing import Any, Mapping, Optional

import torch
import torch.nn.functional as F

from ..losses.temporal import TemporalSmoothnessLoss, finite_differences, frame_valid
from ..registry import HANDLERS
from .base import BaseHandler, LossSpec, get_param, zeros_like_batch

#: Targets read from the body-model output; any other target is a params key.
OUTPUT_TARGETS = ('joints', 'keypoints', 'joints_kin')


def per_frame_smoothness(loss: TemporalSmoothnessLoss, x: torch.Tensor,
                         valid: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Split a :class:`TemporalSmoothnessLoss` of one sequence into per-frame parts.

    Every difference term (velocity over frames ``t, t+1``; acceleration over
    ``t-1, t, t+1``) is shared equally among the frames it involves, so the parts sum
    to ``loss(x[None], valid[None])`` (weights and ``normalize='mean'`` included) and
    have the same gradient in total.

    Args:
        loss: the temporal loss (its weights and normalisation are used).
        x: (T, ...) one sequence.
        valid: optional (T,) booleans; false marks a gap.

    Returns:
        (T,) per-frame contributions.
    """
    T = x.shape[0]
    seq = x[None]
    ok = frame_valid(seq, None if valid is None else valid[None])
    flat = seq.reshape(1, T, -1)
    out = x.new_zeros(T)
    for order, w in ((1, loss.velocity_weight), (2, loss.acceleration_weight)):
        if w == 0 or T <= order:
            continue
        d, d_ok = finite_differences(flat, ok, order)
        term = (d * d).sum(-1)[0]                                  # (T - order,)
        if loss.normalize == 'mean':
            term = term / d_ok.to(x.dtype).sum().clamp_min(1.0)
        share = w * term / (order + 1)
        for k in range(order + 1):                                 # frames t-k .. of term t
            out = out + F.pad(share, (k, order - k))
    return out * loss.loss_weight


@HANDLERS.register_module()
class TemporalHandler(BaseHandler):
    """Temporal smoothness over a batch that is one sequence of T frames of one track.

    ``target``: ``'joints'`` (``output.joints``), ``'keypoints'``, ``'joints_kin'``, or a
    params key such as ``'body_pose'`` / ``'transl'`` (an absent param scores 0).
    ``observations['frame_valid']`` (T,) (optional) marks usable frames; no difference
    spans an invalid frame. Returns (T,) per-frame contributions whose sum is the
    sequence loss (see :func:`per_frame_smoothness`); with a loss other than
    ``TemporalSmoothnessLoss`` the sequence loss is shared equally among the valid
    frames.

    Args:
        name, loss, weight, check_finite: see :class:`~.base.BaseHandler`
            (``loss`` defaults to ``dict(type='TemporalSmoothnessLoss')``).
        target: what is smoothed (see above).
        valid_key: observation key of the (T,) frame validity.
    """

    couples_samples = True

    def __init__(self, name: str, loss: Optional[LossSpec] = None, weight: float = 1.0,
                 target: str = 'joints', valid_key: str = 'frame_valid',
                 check_finite: bool = False) -> None:
        super().__init__(name, dict(type='TemporalSmoothnessLoss') if loss is None else loss,
                         weight, check_finite)
        self.target = str(target)
        self.valid_key = valid_key

    def sequence(self, output, params: Mapping[str, Any]) -> Optional[torch.Tensor]:
        """(T, ...) the smoothed sequence, or ``None`` when the param is absent."""
        if self.target in OUTPUT_TARGETS:
            x = getattr(output, self.target)
            if x is None:
                raise ValueError(f'handler {self.name!r}: the body model output has no '
                                 f'{self.target}')
            return x
        return get_param(params, self.target)

    def compute(self, output, observations: Mapping[str, Any],
                params: Mapping[str, Any]) -> torch.Tensor:
        x = self.sequence(output, params)
        if x is None:
            return zeros_like_batch(output)
        T = output.joints.shape[0]
        if x.shape[0] != T:
            raise ValueError(f'handler {self.name!r}: {self.target} has {x.shape[0]} frames, '
                             f'the batch {T}')
        valid = observations.get(self.valid_key)
        if valid is not None:
            valid = valid.to(device=x.device, dtype=torch.bool).reshape(-1)
            if valid.shape[0] != T:
                raise ValueError(f'handler {self.name!r}: observations[{self.valid_key!r}] '
                                 f'must be ({T},), got {tuple(observations[self.valid_key].shape)}')
        if isinstance(self.loss, TemporalSmoothnessLoss):
            return per_frame_smoothness(self.loss, x, valid)
        total = self.loss(x[None], None if valid is None else valid[None]).reshape(())
        share = (torch.ones(T, dtype=x.dtype, device=x.device) if valid is None
                 else valid.to(x.dtype))
        return total * share / share.sum().clamp_min(1.0)


__all__ = ['OUTPUT_TARGETS', 'per_frame_smoothness', 'TemporalHandler']
